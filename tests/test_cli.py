"""The `modelrun` command: the project installed into its venv (`pip install -e .`, which the
Makefile runs), every verb reached from any folder, as MLflow, DVC and BentoML users expect."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, train_artifact

pytestmark = pytest.mark.slow  # every test here starts a server or a process

MODELRUN = Path(sys.executable).parent / "modelrun"


def modelrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console command, run from a folder outside the repository, as a user would."""
    if not MODELRUN.exists():
        pytest.fail(
            f"{MODELRUN} is missing: `make install` installs the project (pip install -e .)"
        )
    return subprocess.run(
        [str(MODELRUN), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_every_verb_is_a_modelrun_command(tmp_path: Path) -> None:
    said = modelrun("--help", cwd=tmp_path)

    assert said.returncode == 0, said.stderr
    assert said.stdout.startswith("usage: modelrun ")
    for verb in ("train", "package", "publish", "promote", "rollback", "list", "rollout",
                 "evaluate", "serve", "batch"):  # fmt: skip
        assert f"    {verb} " in said.stdout, verb


@pytest.mark.parametrize("verb, usage", [("serve", "modelrun serve"),
                                         ("batch", "modelrun batch")])  # fmt: skip
def test_serve_and_batch_pass_their_flags_on(verb: str, usage: str, tmp_path: Path) -> None:
    said = modelrun(verb, "--help", cwd=tmp_path)

    assert said.returncode == 0, said.stderr
    assert said.stdout.startswith(f"usage: {usage}")
    assert not (tmp_path / ".modelrun").exists()  # --help serves, trains and writes nothing


def test_import_training_and_list_the_store_from_any_folder(
    tmp_path: Path, iris_artifact: Path
) -> None:
    store = (tmp_path / "store").as_uri()
    code = subprocess.run(
        [sys.executable, "-m", "training", "publish", "--store", store, str(iris_artifact),
         "--version", "v1", "--promote"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert code.returncode == 0, code.stderr
    train_artifact(tmp_path / "other", "--name", "other", "--no-onnx")
    assert modelrun("publish", "--store", store, str(tmp_path / "other"),
                    cwd=tmp_path).returncode == 0  # fmt: skip

    listed = modelrun("list", "--store", store, "--json", cwd=tmp_path)

    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [
        {"name": "iris", "current": "v1", "versions": 1},
        {"name": "other", "current": None, "versions": 1},
    ]
    text = modelrun("list", "--store", store, cwd=tmp_path).stdout
    assert text.splitlines()[0].split()[:2] == ["iris", "v1"]
    imported = subprocess.run(
        [sys.executable, "-c", "import training, function; print(training.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert imported.stdout.strip() == str(ROOT / "training" / "__init__.py")


def test_training_shows_each_step_on_a_terminal_and_nothing_in_a_pipe(tmp_path: Path) -> None:
    """Progress goes to stderr when it is a terminal (a real pseudo-terminal here)."""
    import os
    import pty

    args = [sys.executable, "-m", "training", "train", "--cv", "2", "--out"]
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([*args, str(tmp_path / "a")], cwd=ROOT, stderr=follower,
                              stdout=subprocess.PIPE, timeout=300)  # fmt: skip
        os.close(follower)
        said = b""
        with contextlib.suppress(OSError):  # EIO once everything written was read
            while chunk := os.read(leader, 65536):
                said += chunk
    finally:
        os.close(leader)
    piped = subprocess.run([*args, str(tmp_path / "b")], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)  # fmt: skip

    assert done.returncode == 0
    lines = said.decode().splitlines()
    steps = [
        "cross-validation: 2 folds", "fitting logistic_regression", "schema:", "drift baseline",
        "report: plots", "report: permutation importance", "ONNX:",
    ]  # fmt: skip
    for expected in steps:
        assert any(line.strip().startswith(expected) and " done in " in line for line in lines), (
            expected,
            lines,
        )
    assert piped.returncode == 0 and piped.stderr == ""


def test_list_says_what_is_not_there(tmp_path: Path, iris_artifact: Path) -> None:
    store = (tmp_path / "store").as_uri()
    nowhere = modelrun("list", "--store", (tmp_path / "stor").as_uri(), cwd=tmp_path)
    assert nowhere.returncode == 1
    assert nowhere.stderr.startswith("error: no store at ")
    assert modelrun("publish", "--store", store, str(iris_artifact), cwd=tmp_path).returncode == 0

    typo = modelrun("list", "--store", store, "--name", "irs", cwd=tmp_path)

    assert typo.returncode == 1
    assert typo.stderr.strip() == f"error: no versions of 'irs' in {store} (models there: iris)"
