"""DVC (dvc.yaml, params.yaml): the real `dvc` CLI runs the pipeline in a temporary git repository
holding a copy of the project's pipeline files and code. Nothing is mocked; a local folder stands
in for the bucket as the DVC remote (the README's gs:// remote needs dvc-gs and a project).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PYTHON, ROOT

pytestmark = pytest.mark.slow  # every test here starts a server or a process

DVC = Path(PYTHON).with_name("dvc")
COPIED = ["dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore"]


def run(repo: Path, *command: str) -> str:
    # Python writes bytecode beside the sources here, as on a laptop (.dvcignore: not a source).
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MLFLOW_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    done = subprocess.run(
        list(command),
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        # `python` in a stage's command is this venv's, as after `source .venv/bin/activate`.
        env={**environ, "PATH": f"{DVC.parent}:{environ['PATH']}", "DVC_NO_ANALYTICS": "1"},
    )
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def model(repo: Path) -> dict[str, Any]:
    return dict(json.loads((repo / "artifacts" / "churn" / "metadata.json").read_text()))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with the project's pipeline and code, the example table made smaller."""
    if not DVC.exists():
        pytest.fail(f"{DVC} is missing: requirements.txt installs dvc")
    repo = tmp_path / "repo"
    for name in COPIED:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, repo / name)
    for folder in ("training", "function"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["rows"] = 800
    params["train"]["cv"] = 2
    params["train"]["params"]["max_iter"] = 20
    params["train"]["gate"] = "accuracy>=0.55"  # 800 rows and 10 iterations score about 0.7
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    run(repo, "git", "init", "-q")
    run(repo, "git", "add", ".")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline")
    return repo


def set_max_iter(repo: Path, value: int) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["params"]["max_iter"] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


def test_the_pipeline_reproduces_the_same_model_and_only_what_changed(
    repo: Path, tmp_path: Path
) -> None:
    """One pipeline's life, three trainings in all: train; nothing to do; metrics; push, lose
    everything, pull; a changed parameter retrains alone, its revert comes from DVC's cache; and
    from nothing, forced, the same model byte for byte."""
    dvc = str(DVC)
    metadata = repo / "artifacts" / "churn" / "metadata.json"

    first = run(repo, dvc, "repro")
    digest = model(repo)["sha256"]
    written = metadata.stat().st_mtime_ns
    again = run(repo, dvc, "repro")

    assert "Running stage 'data'" in first and "Running stage 'train'" in first
    assert "Stage 'train' didn't change, skipping" in again and "Running stage" not in again
    assert metadata.stat().st_mtime_ns == written  # untouched

    # dvc metrics reads the file train --metrics-file writes; the parameters reached training.
    shown = json.loads(run(repo, dvc, "metrics", "show", "--json"))
    metrics = shown[""]["data"]["artifacts/churn-metrics.json"]["data"]  # "": the workspace
    params = yaml.safe_load((repo / "params.yaml").read_text())
    trained = model(repo)
    assert metrics["accuracy"] == trained["metrics"]["holdout"]["accuracy"]
    assert metrics["cv_accuracy"] == trained["metrics"]["cv"]["accuracy"]["mean"]
    assert trained["params"]["max_iter"] == params["train"]["params"]["max_iter"]
    assert trained["training"] == {"seed": 42, "test_size": 0.2, "cv": 2}
    assert trained["gates"] == [params["train"]["gate"]]

    # A remote (a folder here; the README's is gs://): push, lose the outputs and the cache, pull.
    run(repo, dvc, "remote", "add", "-d", "store", str(tmp_path / "remote"))
    run(repo, dvc, "push", "--run-cache")  # and which parameters gave which outputs
    shutil.rmtree(repo / "artifacts")
    shutil.rmtree(repo / ".dvc" / "cache")
    run(repo, dvc, "pull", "--run-cache")
    assert model(repo)["sha256"] == digest
    assert "Data and pipelines are up to date." in run(repo, dvc, "status")

    # One parameter changed: train alone runs again; changed back, DVC's run cache restores it.
    set_max_iter(repo, 10)
    changed = run(repo, dvc, "repro")
    assert "Stage 'data' didn't change, skipping" in changed and "Running stage 'train'" in changed
    assert model(repo)["params"]["max_iter"] == 10 and model(repo)["sha256"] != digest
    set_max_iter(repo, 20)
    assert "Running stage" not in run(repo, dvc, "repro")
    assert model(repo)["sha256"] == digest

    # From nothing, forced past every cache: both stages run, and the model is the same.
    shutil.rmtree(repo / "artifacts")
    forced = run(repo, dvc, "repro", "--force")
    assert "Running stage 'data'" in forced and "Running stage 'train'" in forced
    assert model(repo)["sha256"] == digest
    assert "Data and pipelines are up to date." in run(repo, dvc, "status")
