"""MLflow tracking (training/tracking.py) against a real `mlflow server`: SQLite for runs, a local
folder for artifacts, on loopback, started from local/mlflow/Dockerfile's own command
(local/tracking.py) out of the pinned .venv-mlflow that `make test` installs. Runs are read back
through MLflow's REST API, the logged model through mlflow.sklearn. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import requests

from function.core.store import ModelStore
from local import tracking as tracking_server
from tests.conftest import (
    KEY,
    PYTHON,
    ROOT,
    descendants,
    free_port,
    require_binary,
    run_training,
    wait_until,
)
from tests.inprocess import in_process
from tests.support.churn import TARGET, notebook_pipeline
from training.__main__ import _parser as training_parser
from training.__main__ import main
from training.churn import churn
from training.errors import EXIT_GATE
from training.tracking import shown

pytestmark = pytest.mark.slow  # every test here starts a server or a process


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_binary(str(tracking_server.MLFLOW))  # `make test` installs it
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    with tracking_server.server(tracking_server.command(root, port), root / "log", port) as url:
        yield url


def api(url: str, endpoint: str, **params: str) -> dict[str, Any]:
    response = requests.get(f"{url}/api/2.0/mlflow/{endpoint}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def read_run(url: str, run_id: str) -> tuple[dict[str, Any], dict[str, str], dict[str, float]]:
    """The run's info (with its datasets), its params and its tags (as dicts), and its metrics."""
    run = api(url, "runs/get", run_id=run_id)["run"]
    data = run["data"]
    params = {p["key"]: p["value"] for p in data.get("params", [])}
    tags = {t["key"]: t["value"] for t in data.get("tags", [])}
    metrics = {m["key"]: m["value"] for m in data.get("metrics", [])}
    info = {**run["info"], "datasets": run.get("inputs", {}).get("dataset_inputs", [])}
    return info, {**params, **{f"tag:{k}": v for k, v in tags.items()}}, metrics


def artifact_bytes(url: str, info: dict[str, Any], path: str) -> bytes:
    """A file of the run, downloaded through the server's artifact proxy."""
    root = info["artifact_uri"].removeprefix("mlflow-artifacts:/")
    response = requests.get(f"{url}/api/2.0/mlflow-artifacts/artifacts/{root}/{path}", timeout=30)
    assert response.status_code == 200, response.text
    return response.content


@pytest.fixture(scope="module")
def iris_run(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("tracked") / "iris"
    done = run_training("train", "--out", str(out), "--gate", "accuracy>=0.9", "--no-onnx",
                        env={"MLFLOW_TRACKING_URI": mlflow_server})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return out, done.stdout


def test_train_logs_one_run_read_back_through_the_rest_api(
    mlflow_server: str, iris_run: tuple[Path, str]
) -> None:
    out, said = iris_run
    metadata = json.loads((out / "metadata.json").read_text())
    tracked = metadata["mlflow"]

    info, params, metrics = read_run(mlflow_server, tracked["run_id"])
    experiment = api(mlflow_server, "experiments/get", experiment_id=info["experiment_id"])

    assert info["status"] == "FINISHED"
    assert experiment["experiment"]["name"] == "iris" == tracked["experiment"]
    assert tracked["run_url"] in said and tracked["version"] in said
    # The estimator's parameters by their own names; modelrun's settings and the data's identity.
    assert params["C"] == "1.0" and params["max_iter"] == str(metadata["params"]["max_iter"])
    assert params["modelrun.estimator"] == "logistic_regression"
    assert params["modelrun.seed"] == "42" and params["modelrun.cv_folds"] == "5"
    assert params["modelrun.gates"] == "accuracy>=0.9"
    for key, value in metadata["dataset"].items():
        assert params[f"modelrun.dataset.{key}"] == str(value), key
    # The metrics under the names --gate takes.
    for name, value in metadata["metrics"]["holdout"].items():
        assert metrics[name] == pytest.approx(value), name
    for name, cv in metadata["metrics"]["cv"].items():
        assert metrics[f"cv_{name}"] == pytest.approx(cv["mean"])
        assert metrics[f"cv_{name}_std"] == pytest.approx(cv["std"])
    [used] = info["datasets"]  # what MLflow's UI lists as the run's dataset
    assert used["dataset"]["name"] == metadata["dataset"]["source"]  # not a file: named as is
    assert used["dataset"]["digest"] == metadata["dataset"]["sha256"][:12]
    assert {t["key"]: t["value"] for t in used["tags"]}["rows"] == "150"
    assert params["tag:modelrun.gates_passed"] == "true"
    assert params["tag:modelrun.version"] == tracked["version"]
    assert params["tag:modelrun.sha256"] == metadata["sha256"]


def test_the_run_holds_the_artifact_report_and_plots_byte_for_byte(
    mlflow_server: str, iris_run: tuple[Path, str]
) -> None:
    out, _ = iris_run
    metadata = json.loads((out / "metadata.json").read_text())
    info, _, _ = read_run(mlflow_server, metadata["mlflow"]["run_id"])

    listed = api(mlflow_server, "artifacts/list", run_id=info["run_id"], path="modelrun")
    names = {Path(f["path"]).name for f in listed["files"]}

    assert names == {*metadata["files"], "metadata.json"}
    assert {"report.html", "confusion_matrix.png", "permutation_importance.png"} <= names
    for name, record in metadata["files"].items():
        data = artifact_bytes(mlflow_server, info, f"modelrun/{name}")
        assert hashlib.sha256(data).hexdigest() == record["sha256"], name
    assert (
        artifact_bytes(mlflow_server, info, "modelrun/metadata.json")
        == (out / "metadata.json").read_bytes()
    )


def test_the_logged_model_predicts_as_the_artifact_with_a_signature_and_example(
    mlflow_server: str, iris_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris

    out, _ = iris_run
    metadata = json.loads((out / "metadata.json").read_text())
    model_uri = metadata["mlflow"]["model_uri"]
    model_id = model_uri.removeprefix("models:/")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)

    logged = api(mlflow_server, f"logged-models/{model_id}")["model"]
    loaded = mlflow.sklearn.load_model(model_uri)
    info = mlflow.models.get_model_info(model_uri)
    ours = joblib.load(out / "model.joblib")
    X = load_iris().data

    assert logged["info"]["source_run_id"] == metadata["mlflow"]["run_id"]
    assert np.array_equal(loaded.predict(X), ours.predict(X))
    assert np.array_equal(loaded.predict_proba(X), ours.predict_proba(X))
    assert info.signature is not None and info.signature.inputs.to_dict()[0]["type"] == "tensor"
    assert info.saved_input_example_info is not None


def test_a_published_version_takes_the_tagged_id_and_model_shows_the_run(
    iris_run: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = iris_run
    tracked = json.loads((out / "metadata.json").read_text())["mlflow"]
    store = tmp_path / "store"

    done = run_training("publish", "--store", store.as_uri(), str(out), "--promote")
    shown_card = None
    with in_process({"MODEL_URI": f"{store.as_uri()}/iris", "API_KEYS": KEY}) as running:
        shown_card = running.client.get("/model", headers={"X-API-Key": KEY}).get_json()

    assert done.returncode == 0, done.stderr
    assert f"versions/{tracked['version']} (MLflow run {tracked['run_id']})" in done.stdout
    assert (
        ModelStore(f"{store.as_uri()}/iris").metadata(tracked["version"]).raw["mlflow"] == tracked
    )
    assert shown_card["version"] == tracked["version"]
    assert shown_card["mlflow"]["run_id"] == tracked["run_id"]
    # Published again (forced), the copy needs an id of its own: publish says the tag is elsewhere.
    again = run_training("publish", "--store", store.as_uri(), str(out), "--force")
    assert again.returncode == 0, again.stderr
    assert f"tagged modelrun.version={tracked['version']}, not " in again.stderr


def test_a_refused_gate_is_a_failed_run_with_its_metrics_and_no_artifact(
    mlflow_server: str, tmp_path: Path
) -> None:
    done = run_training("train", "--out", str(tmp_path / "out"), "--no-report", "--no-onnx",
                        "--gate", "accuracy>=0.999", "--mlflow", mlflow_server)  # fmt: skip
    experiments = api(mlflow_server, "experiments/get-by-name", experiment_name="iris")
    runs = requests.post(
        f"{mlflow_server}/api/2.0/mlflow/runs/search",
        json={
            "experiment_ids": [experiments["experiment"]["experiment_id"]],
            "filter": "tags.`modelrun.gates_passed` = 'false'",
        },
        timeout=30,
    ).json()["runs"]

    assert done.returncode == EXIT_GATE
    assert not (tmp_path / "out").exists()
    assert len(runs) == 1
    info, params, metrics = read_run(mlflow_server, runs[0]["info"]["run_id"])
    assert info["status"] == "FAILED"
    assert params["tag:modelrun.gate_failure"].startswith("quality gate accuracy>=0.999 failed")
    assert 0 < metrics["accuracy"] < 0.999
    assert "tag:modelrun.version" not in params  # nothing to publish


def test_package_logs_a_users_pipeline_with_a_named_column_signature(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.sklearn

    frame = churn(800, seed=11)
    frame.to_csv(csv := tmp_path / "churn.csv", index=False)
    joblib.dump(notebook_pipeline(pd.read_csv(csv)), tmp_path / "churn.joblib")
    done = run_training("package", str(tmp_path / "churn.joblib"), "--data", str(csv), "--target",
                        TARGET, "--no-report", "--no-onnx", "--out", str(tmp_path / "artifact"),
                        "--mlflow", mlflow_server)  # fmt: skip
    assert done.returncode == 0, done.stderr
    metadata = json.loads((tmp_path / "artifact" / "metadata.json").read_text())
    _, params, _ = read_run(mlflow_server, metadata["mlflow"]["run_id"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    info = mlflow.models.get_model_info(metadata["mlflow"]["model_uri"])
    loaded = mlflow.sklearn.load_model(metadata["mlflow"]["model_uri"])
    rows = pd.read_csv(csv).drop(columns=TARGET)

    assert metadata["mlflow"]["experiment"] == "churn"
    assert params["modelrun.packaged_from"] == str(tmp_path / "churn.joblib")
    assert params["modelrun.estimator_class"] == "HistGradientBoostingClassifier"
    assert [c["name"] for c in info.signature.inputs.to_dict()] == metadata["feature_names"]
    ours = joblib.load(tmp_path / "artifact" / "model.joblib")
    assert np.array_equal(loaded.predict_proba(rows), ours.predict_proba(rows))


def test_the_image_server_answers_its_compose_name_and_refuses_others(mlflow_server: str) -> None:
    def status(host: str) -> int:
        response = requests.get(
            f"{mlflow_server}/api/2.0/mlflow/experiments/search",
            params={"max_results": "1"},
            headers={"Host": host},
            timeout=30,
        )
        return response.status_code

    assert status("mlflow:5000") == 200  # the function and training containers' address
    assert status("localhost:5000") == 200  # the published port
    assert status("attacker.example") == 403  # DNS rebinding: refused


# --- without a server ----------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has stopped; only its parent has not reaped it yet


def test_make_tracking_stops_the_whole_server_on_sigterm(tmp_path: Path) -> None:
    require_binary(str(tracking_server.MLFLOW))  # `make test` installs it
    port = free_port()
    log = tmp_path / "tracking.log"
    with open(log, "w") as out:
        tracking = subprocess.Popen(
            [PYTHON, "-m", "local.tracking", "--port", str(port), "--root", str(tmp_path / "ml")],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server: set[int] = set()
    try:
        health = f"http://127.0.0.1:{port}/health"
        tracking_server.wait_for(health, tracking_server.START_SECONDS)
        server = descendants(tracking.pid)
        assert len(server) >= 2, log.read_text()  # mlflow server and its workers
        tracking.send_signal(signal.SIGTERM)  # as make passes it on
        assert tracking.wait(30) == 0, log.read_text()
        wait_until(lambda: not any(map(alive, server)), 30, "every server process to stop")
    finally:
        for pid in [tracking.pid, *server]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_an_unreachable_server_fails_before_training_in_one_line(tmp_path: Path) -> None:
    uri = f"http://someone:s3cret@127.0.0.1:{free_port()}"
    done = run_training("train", "--out", str(tmp_path / "out"), env={"MLFLOW_TRACKING_URI": uri})

    assert done.returncode == 1
    assert done.stdout == ""  # nothing trained
    assert not (tmp_path / "out").exists()
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith(f"error: MLflow tracking server {shown(uri)} cannot be reached: ")
    assert "Connection refused" in lines[0] and "--mlflow-optional" in lines[0]
    assert "s3cret" not in done.stderr + done.stdout


def test_optional_tracking_warns_and_trains_untracked(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    done = run_training("train", "--out", str(tmp_path / "out"), "--no-report", "--no-onnx",
                        "--mlflow", uri, "--mlflow-optional")  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert f"warning: MLflow tracking server {uri} cannot be reached" in done.stderr
    assert "mlflow" not in json.loads((tmp_path / "out" / "metadata.json").read_text())


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("localhost:5000", "has no known scheme: give http://HOST:PORT"),
        ("ftp://tracking.example", "has no known scheme"),
    ],
)
def test_a_tracking_uri_without_a_scheme_is_refused(
    uri: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--out", str(tmp_path / "out"), "--mlflow", uri])

    assert code == 1
    said = capsys.readouterr().err
    assert message in said and uri in said
    assert not (tmp_path / "out").exists()


def test_without_a_uri_nothing_imports_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training untracked, in a fresh process: MLflow is never imported (import time, and no
    hard dependency). Set but empty, the variable means off too."""
    code = (
        "import sys\n"
        "from training.__main__ import main\n"
        f"assert main(['train', '--out', {str(tmp_path / 'out')!r}, '--no-onnx', '--no-report'])"
        " == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'mlflow_skinny')))\n"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=environ)  # fmt: skip
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert training_parser().parse_args(["train"]).mlflow is None
