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
    params["data"]["rows"] = 1500
    params["train"]["cv"] = 3
    params["train"]["params"]["max_iter"] = 40
    params["train"]["gate"] = "accuracy>=0.6"  # 1,500 rows and 20 iterations score about 0.7
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    run(repo, "git", "init", "-q")
    run(repo, "git", "add", ".")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline")
    return repo


def test_repro_trains_then_does_nothing_and_retrains_to_the_same_digest(repo: Path) -> None:
    first = run(repo, str(DVC), "repro")
    digest = model(repo)["sha256"]
    written = (repo / "artifacts" / "churn" / "metadata.json").stat().st_mtime_ns

    again = run(repo, str(DVC), "repro")

    assert "Running stage 'data'" in first and "Running stage 'train'" in first
    assert "Stage 'train' didn't change, skipping" in again
    assert "Running stage" not in again
    assert (repo / "artifacts" / "churn" / "metadata.json").stat().st_mtime_ns == written
    # Both stages run again from nothing (--force: not even DVC's run cache), on the same
    # parameters: the same table and the same model, byte for byte.
    shutil.rmtree(repo / "artifacts")
    retrained = run(repo, str(DVC), "repro", "--force")
    assert "Running stage 'data'" in retrained and "Running stage 'train'" in retrained
    assert model(repo)["sha256"] == digest
    assert "Data and pipelines are up to date." in run(repo, str(DVC), "status")


def test_metrics_params_and_a_changed_parameter(repo: Path) -> None:
    run(repo, str(DVC), "repro")
    metadata = model(repo)
    shown = json.loads(run(repo, str(DVC), "metrics", "show", "--json"))
    metrics = shown[""]["data"]["artifacts/churn-metrics.json"]["data"]  # "": the workspace
    params = yaml.safe_load((repo / "params.yaml").read_text())

    assert metrics["accuracy"] == metadata["metrics"]["holdout"]["accuracy"]
    assert metrics["cv_accuracy"] == metadata["metrics"]["cv"]["accuracy"]["mean"]
    assert metadata["params"]["max_iter"] == params["train"]["params"]["max_iter"]
    assert metadata["training"] == {"seed": 42, "test_size": 0.2, "cv": 3}
    assert metadata["gates"] == [params["train"]["gate"]]

    params["train"]["params"]["max_iter"] = 20
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    status = run(repo, str(DVC), "status")
    changed = run(repo, str(DVC), "repro")

    assert "train.params.max_iter" in status or "train" in status
    assert "Stage 'data' didn't change, skipping" in changed and "Running stage 'train'" in changed
    assert model(repo)["params"]["max_iter"] == 20


def test_push_and_pull_restore_the_model_from_the_remote(repo: Path, tmp_path: Path) -> None:
    run(repo, str(DVC), "repro")
    digest = model(repo)["sha256"]
    run(repo, str(DVC), "remote", "add", "-d", "store", str(tmp_path / "remote"))
    run(repo, str(DVC), "push")
    shutil.rmtree(repo / "artifacts" / "churn")
    shutil.rmtree(repo / ".dvc" / "cache")

    run(repo, str(DVC), "pull")

    assert model(repo)["sha256"] == digest
    assert "Data and pipelines are up to date." in run(repo, str(DVC), "status")
