"""`make serve`, the README's first command: trains, publishes, prints a key, serves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from local.mirror import stop
from tests.conftest import ROOT, free_port, wait_until


def test_make_serve_trains_publishes_and_serves(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "STORE": (tmp_path / "store").as_uri(),
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",  # as under make: the venv is not on PATH
    }
    env.pop("STORAGE_EMULATOR_HOST", None)
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "local.serve"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url) or process.poll() is not None, 90, "make serve")
        assert process.poll() is None, log.read_text()
        printed = log.read_text()
        key = printed.split("development API key: ")[1].split()[0]
        answer = requests.post(
            f"{url}/predict",
            json={"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
            headers={"X-API-Key": key},
            timeout=10,
        ).json()
    finally:
        os.killpg(process.pid, 15)
        stop(process)

    assert "curl -s" in printed
    assert answer["predictions"] == ["setosa", "virginica"]
    assert (tmp_path / "store" / "iris" / "current.json").exists()


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False
