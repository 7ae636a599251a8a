"""`make serve`, the README's first command: trains, publishes, prints a key, serves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from local import container
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
        listening = listening_addresses(port)
        with requests.Session() as session:  # a user's own quick load test: over the burst
            statuses = {
                session.get(f"{url}/model", headers={"X-API-Key": key}, timeout=10).status_code
                for _ in range(300)
            }
    finally:
        os.killpg(process.pid, 15)
        stop(process)

    assert "curl -s" in printed
    assert listening == {"127.0.0.1"}  # this machine only, unless HOST says otherwise
    assert "rate limit: off in development" in printed
    assert statuses == {200}
    assert answer["predictions"] == ["setosa", "virginica"]
    assert (tmp_path / "store" / "iris" / "current.json").exists()


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses a TCP socket listens on at this port (from /proc/net/tcp)."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            addresses.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return addresses


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_every_launcher_merges_the_environment_one_way() -> None:
    image = container.environment()
    assert image["THREADS"] == "40"

    env = container.process_environment(
        {"PORT": "9000", "LOG_LEVEL": "DEBUG"},
        user={"THREADS": "8", "PORT": "1234", "PATH": "/usr/bin"},
    )

    assert env["THREADS"] == "8"  # the user's wins over the image's
    assert env["PORT"] == "9000"  # the launcher's wins over the user's
    assert env["MALLOC_ARENA_MAX"] == image["MALLOC_ARENA_MAX"]  # the image's fills the rest
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/usr/bin"]
