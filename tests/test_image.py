"""The image as `make image` built it, run under buildah (tests/image.py): what Cloud Run runs.

The rest of the suite runs function/Dockerfile's CMD and ENV from the venv; only this proves that
the image holds what serving needs (every module, every package, the pages' assets) and that its
user can serve from a read-only store; and that the MLflow server's image starts. Marked
`image`: `make test-image` runs it after `make image IMAGE_ENGINE=buildah` (CI: .ci/run, after
`make test`); `make test` leaves it out.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from function.core.store import ModelStore
from tests.conftest import KEY, ROOT, free_port, wait_until
from tests.image import MLFLOW_IMAGE, Image, end, open_image, server_pid
from tests.inprocess import in_process
from tests.support.churn import TARGET, notebook_pipeline, rows_of
from training.__main__ import main as training
from training.churn import churn
from training.signers import LocalSigner

pytestmark = pytest.mark.image

AUTH = {"X-API-Key": KEY}
STORE = "/models"  # where the store is mounted in the container, read-only
START_SECONDS = 120  # a few seconds here; vfs and a busy machine can take longer
STOP_SECONDS = 10  # Cloud Run's grace period between SIGTERM and SIGKILL
# The store is published signed, as `publish` does, and the image verifies it as in the cloud.
SIGNER = LocalSigner(ec.generate_private_key(ec.SECP256R1()))
TRUSTED = {"MODEL_PUBLIC_KEY": SIGNER.public_pem(), "ALLOW_UNSIGNED_MODELS": "false"}


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    with open_image() as opened:
        yield opened


@pytest.fixture(scope="module")
def churn_frame() -> Any:
    return churn(600, seed=7)


@pytest.fixture(scope="module")
def store(iris_artifact: Path, churn_frame: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder store with two promoted models: Iris (logistic regression, served through its
    verified model.onnx) and a mixed-type pipeline packaged as a user packages one, published as
    a user publishes: the image's user, who does not own it, reads it as `publish` left it."""
    tmp = tmp_path_factory.mktemp("image-store")
    csv = tmp / "churn.csv"
    churn_frame.to_csv(csv, index=False)
    joblib.dump(notebook_pipeline(churn_frame), tmp / "churn.joblib")
    assert training(["package", str(tmp / "churn.joblib"), "--data", str(csv),
                     "--target", TARGET, "--out", str(tmp / "churn")]) == 0  # fmt: skip
    root = tmp / "store"
    for name, artifact in (("iris", iris_artifact), ("churn", tmp / "churn")):
        models = ModelStore((root / name).as_uri())
        models.promote(models.publish(artifact, "v1", SIGNER))
    assert all(path.stat().st_mode & 0o004 for path in root.rglob("*"))  # with umask 022
    return root


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def post(self, path: str, body: object) -> requests.Response:
        return requests.post(self.url + path, json=body, headers=AUTH, timeout=30)


def ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@contextlib.contextmanager
def serve(image: Image, store: Path, name: str, tmp: Path) -> Iterator[Served]:
    """The image's CMD as its user, serving STORE/name from the store mounted read-only."""
    port = free_port()
    env = {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "MODEL_URI": f"file://{STORE}/{name}",
        "API_KEYS": KEY,
        "RATE_LIMIT_PER_SECOND": "0",
        **TRUSTED,
    }
    log = tmp / f"image-{name}-{port}.log"
    process = image.run(image.command, env, [f"{store}:{STORE}:ro"], log)
    served = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until(lambda: process.poll() is not None or ready(served.url), START_SECONDS, "/ready")
        assert process.poll() is None, f"the image's server exited:\n{log.read_text()}"
        yield served
    finally:
        end(process)


def venv_answer(store: Path, name: str, body: object) -> Any:
    """The same request answered by this venv's service, on the same store."""
    with in_process({"MODEL_URI": (store / name).as_uri(), "API_KEYS": KEY, **TRUSTED}) as running:
        return running.client.post("/predict", json=body, headers=AUTH).get_json()


def iris_rows() -> list[list[float]]:
    from sklearn.datasets import load_iris

    return [[float(v) for v in row] for row in load_iris().data[::5]]  # 30 rows, every class


def test_the_image_runs_as_its_own_user_not_root(image: Image) -> None:
    assert image.user not in ("", "0", "root")


@pytest.mark.parametrize("name, runtime", [("iris", "onnx"), ("churn", "numpy")])
def test_answers_equal_the_venvs_on_the_same_rows(
    image: Image, store: Path, churn_frame: Any, tmp_path: Path, name: str, runtime: str
) -> None:
    rows = iris_rows() if name == "iris" else rows_of(churn_frame.drop(columns=TARGET)[:200])
    body = {"instances": rows}
    expected = venv_answer(store, name, body)

    with serve(image, store, name, tmp_path) as served:
        state = requests.get(f"{served.url}/ready", headers=AUTH, timeout=10).json()
        model = requests.get(f"{served.url}/model", headers=AUTH, timeout=10).json()
        answer = served.post("/predict", body)

    assert state == {"status": "ready", "model": {"name": name, "version": "v1"}}
    assert model["runtime"] == runtime
    assert answer.status_code == 200, answer.text
    assert answer.json() == expected
    if name == "churn":  # the rows have gaps: some are missing a value
        assert any(value is None for row in rows for value in row.values())


def test_the_batch_command_scores_a_file_as_the_venv_does(
    image: Image, store: Path, churn_frame: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    lines = churn_frame.drop(columns=TARGET)[:300].to_csv(index=False).splitlines()
    cells = lines[5].split(",")
    lines[5] = ",".join([cells[0], "platinum", *cells[2:]])  # refused: an unknown plan
    (data / "in.csv").write_text("\n".join(lines) + "\n")
    (data / "in.csv").chmod(0o644)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the image's user writes there
    args = ["-m", "function.batch", "--max-error-share", "0.5"]

    process = image.run(["python", *args, "--input", "file:///data/in.csv", "--output",
                         "file:///out/image", "--model", f"file://{STORE}/churn"],
                        env=TRUSTED,
                        volumes=[f"{store}:{STORE}:ro", f"{data}:/data:ro", f"{out}:/out"],
                        log=tmp_path / "batch.log")  # fmt: skip
    try:
        code = process.wait(300)
    finally:
        end(process)
    venv = subprocess.run([sys.executable, *args, "--input", (data / "in.csv").as_uri(),
                           "--output", (out / "venv").as_uri(), "--model",
                           (store / "churn").as_uri()],
                          cwd=ROOT, env={**os.environ, **TRUSTED}, capture_output=True, text=True,
                          timeout=300)  # fmt: skip

    assert code == 0, (tmp_path / "batch.log").read_text()
    assert venv.returncode == 0, venv.stderr
    part = "part-00000-of-00001.csv"
    assert (out / "image" / part).read_bytes() == (out / "venv" / part).read_bytes()
    assert len((out / "image" / part).read_text().splitlines()) == 1 + 299  # a header
    refused = {side: refusals(out / side) for side in ("image", "venv")}
    assert refused["image"] == refused["venv"]
    assert [(r["field"], r["offset"]) for r in refused["image"]] == [
        ("plan", sum(len(line) + 1 for line in lines[:5]))
    ]
    manifest = json.loads((out / "image" / "_manifest.json").read_text())
    assert (manifest["rows"], manifest["errors"]) == (300, 1)


def refusals(output: Path) -> list[dict[str, Any]]:
    """The refused rows' records, less the input's name (each side names its own path)."""
    lines = (output / "errors-00000-of-00001.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "file"} for line in lines]


def test_sigterm_lets_requests_in_flight_finish_and_exits_cleanly(
    image: Image, store: Path, tmp_path: Path
) -> None:
    body = json.dumps({"instances": iris_rows()[:3]}).encode()
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"X-API-Key: {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    with serve(image, store, "iris", tmp_path) as served:
        expected = served.post("/predict", json.loads(body)).json()
        host, port = served.url.removeprefix("http://").split(":")
        with contextlib.ExitStack() as stack:
            # Three requests in flight: each sent but for the end of its body.
            conns = [stack.enter_context(socket.create_connection((host, int(port)), 10))
                     for _ in range(3)]  # fmt: skip
            for conn in conns:
                conn.sendall(head + body[:10])
            time.sleep(0.5)  # the workers have read the heads
            os.kill(server_pid(served.process), signal.SIGTERM)  # Cloud Run stops the instance
            signalled = time.monotonic()
            time.sleep(0.5)
            for conn in conns:
                conn.sendall(body[10:])
            answers = [receive(conn) for conn in conns]
        try:
            code = served.process.wait(max(0.0, signalled + STOP_SECONDS - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server still ran {STOP_SECONDS} s after SIGTERM (Cloud Run kills it)")
        log = served.log.read_text()

    for answer in answers:
        status, _, payload = answer.partition("\r\n\r\n")
        assert status.startswith("HTTP/1.1 200"), answer[:300]
        assert json.loads(payload) == expected
    assert code == 0, log
    assert "terminate called" not in log, log
    assert "Traceback" not in log, log


def receive(conn: socket.socket) -> str:
    """A whole HTTP/1.1 answer with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
        data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))  # fmt: skip
    while len(payload) < length and (chunk := conn.recv(65536)):
        payload += chunk
    return (head + b"\r\n\r\n" + payload).decode()


def test_the_mlflow_server_image_answers_health(tmp_path: Path) -> None:
    """The tracking server's image (local/mlflow/Dockerfile) runs its own CMD; only the address
    changes: loopback and a free port, as local/tracking.py runs it without the image."""
    port = free_port()
    with open_image(MLFLOW_IMAGE) as mlflow:
        here = {"--host": "127.0.0.1", "--port": str(port)}
        argv = [here.get(flag, arg) for flag, arg in itertools.pairwise(["", *mlflow.command])]
        assert argv[:2] == ["mlflow", "server"] and all(f in mlflow.command for f in here)
        process = mlflow.run(argv, log=tmp_path / "mlflow.log")
        try:
            wait_until(
                lambda: process.poll() is not None or answers(f"http://127.0.0.1:{port}/health"),
                START_SECONDS,
                "the MLflow server's /health",
            )
            assert process.poll() is None, (tmp_path / "mlflow.log").read_text()
        finally:
            end(process)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
