"""The README's curl examples, run as a reader would paste them, against the real service."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from function.core.store import ModelStore
from tests.conftest import ROOT, run_service
from training.__main__ import main as training

pytestmark = pytest.mark.slow  # every test here starts a server or a process

KEY = "readme-example-key-0123456789"
SECTIONS = (
    "Call the API",
    "Why this answer: exact explanations",
    "Standard protocols: Open Inference Protocol v2 and Vertex AI",
)


def section(title: str) -> str:
    """The text of one of the README's ## sections."""
    readme = (ROOT / "README.md").read_text()
    return readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def curl_commands() -> list[str]:
    """Every curl command of the sections above, continuation lines joined, comments dropped."""
    commands = []
    for title in SECTIONS:
        for block in re.findall(r"```bash\n(.*?)```", section(title), re.S):
            pending = ""
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s{2,}#.*$", "", line)  # a trailing comment
                if line.lstrip().startswith("#"):
                    continue
                pending = f"{pending} {line}" if pending else line
                if pending.count("'") % 2:  # a quoted body goes on over the next line
                    continue
                if pending.startswith("curl "):
                    commands.append(pending)
                pending = ""
    return commands


def test_every_readme_curl_example_answers_200(tmp_path: Path) -> None:
    # Trained as `make serve` trains it: with its report, whose plots the README fetches.
    assert training(["train", "--out", str(tmp_path / "iris-art"), "--cv", "2"]) == 0
    store = ModelStore((tmp_path / "iris").as_uri())
    store.promote(store.publish(tmp_path / "iris-art", "v1"))
    commands = curl_commands()
    assert len(commands) >= 9
    assert any("/v2/models/iris/infer" in c for c in commands)

    with run_service({"MODEL_URI": store.uri, "API_KEYS": KEY}, tmp_path) as running:
        statuses = {
            command: subprocess.run(
                ["bash", "-c", f"{command} -o /dev/null -w '%{{http_code}}'"],
                env={"KEY": KEY, "URL": running.url, "PATH": "/usr/bin:/bin"},
                cwd=tmp_path,  # a file an example saves (-o cm.png) lands here, not in the repo
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            for command in commands
        }

    assert {c: s for c, s in statuses.items() if s != "200"} == {}


def test_the_bring_your_own_model_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """The README's worked example, pasted as a reader would: the table, the notebook code, the
    packaging (both ways), publish, then its curls against the model served."""
    import sys

    text = section("Bring your own model")
    bash = re.findall(r"```bash\n(.*?)```", text, re.S)
    (notebook,) = re.findall(r"```python\n(.*?)```", text, re.S)
    lines = [line for block in bash for line in block.replace("\\\n", " ").splitlines()]
    python = [line.replace(".venv/bin/python", sys.executable) for line in lines
              if line.startswith(".venv/bin/python")]  # fmt: skip
    curls, expected = [], []  # a curl, and the status its next comment line names (else 200)
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        if line.startswith("curl "):
            curls.append(line)
            status = re.match(r"# (\d{3}):", after)
            expected.append(status[1] if status else "200")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    for command in [python[0]]:  # the table
        assert run(command).returncode == 0, command
    result = subprocess.run([sys.executable, "-c", notebook], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    import joblib  # the file the CLI form packages, as the README says to write it

    joblib.dump(joblib.load(tmp_path / "artifacts/churn/model.joblib"), tmp_path / "churn.joblib")
    for command in python[1:]:  # package from the file, publish
        result = run(command)
        assert result.returncode == 0, (command, result.stderr)
    assert len(curls) == len(expected) >= 2

    store = (tmp_path / ".modelrun" / "store" / "churn").as_uri()
    with run_service({"MODEL_URI": store, "API_KEYS": KEY}, tmp_path) as running:
        curl_env = {"KEY": KEY, "URL": running.url, "PATH": "/usr/bin:/bin"}
        statuses = [
            subprocess.run(["bash", "-c", f"{c} -o /dev/null -w '%{{http_code}}'"],
                           env=curl_env, capture_output=True, text=True, timeout=30).stdout
            for c in curls
        ]  # fmt: skip
        first = subprocess.run(["bash", "-c", curls[0]], env=curl_env, capture_output=True,
                               text=True, timeout=30).stdout  # fmt: skip

    assert statuses == expected
    # The answer the README quotes is the one the reader gets (its probabilities to 2 places).
    quoted = re.search(r'"predictions": (\[.*?\]), "probabilities": (\[.*?\])', text)
    assert quoted, "the README quotes the first curl's answer"
    answer = json.loads(first)
    assert answer["predictions"] == json.loads(quoted[1])
    rounded = [{k: round(v, 2) for k, v in p.items()} for p in answer["probabilities"]]
    assert rounded == json.loads(quoted[2])
