"""`make serve`, the README's first command: trains, publishes, prints a key, serves."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from function.core.store import ModelStore, model_root
from local import container
from local.mirror import stop
from tests.conftest import ROOT, descendants, free_port, wait_until
from tests.support.diabetes import diabetes_csv
from tests.support.requirements import IMPORT_NAMES, requirement_names
from tests.support.shutdown import Load, deaths, exit_within_grace
from training.__main__ import main as training

pytestmark = pytest.mark.slow  # every test here starts a server or a process


@contextlib.contextmanager
def make_serve(
    tmp_path: Path, port: int, **settings: str
) -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """Run `python -m local.serve` as `make serve` does, in a session of its own as in a terminal;
    yield its URL, what it printed, and the process."""
    env = {
        **os.environ,
        "PORT": str(port),
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",  # as under make: the venv is not on PATH
        **settings,
    }
    for name in ("STORAGE_EMULATOR_HOST", "MODEL_URI"):
        env.pop(name, None)
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "local.serve"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    server: set[int] = set()
    try:
        wait_until(lambda: _ready(url) or process.poll() is not None, 90, "make serve")
        printed = log.read_text()
        assert process.poll() is None, printed
        server = descendants(process.pid)
        yield url, printed, process
    finally:
        with contextlib.suppress(ProcessLookupError):  # stopped by the test already
            os.killpg(process.pid, 15)
        stop(process)
        for pid in server:  # in a process group of its own: a server left behind goes too
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_make_serve_trains_publishes_and_serves(tmp_path: Path) -> None:
    port = free_port()
    with make_serve(tmp_path, port, STORE=(tmp_path / "store").as_uri()) as (url, printed, _):
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


def test_serving_and_training_need_none_of_the_development_packages(tmp_path: Path) -> None:
    """What `make serve` installs (training/requirements.txt) is enough to train, publish and
    load the default model: with every package only requirements.txt adds made unimportable."""
    serving = requirement_names(ROOT / "training" / "requirements.txt")
    development = requirement_names(ROOT / "requirements.txt") - serving
    modules = sorted({IMPORT_NAMES.get(n, n.replace("-", "_")) for n in development})
    script = (
        f"import sys; sys.modules.update(dict.fromkeys({modules!r}));"
        "from local.serve import ensure_model; from function.core.model import load_model;"
        "from function.core.store import ModelStore;"
        f"uri = ensure_model({(tmp_path / 'store').as_uri()!r});"
        "print(load_model(ModelStore(uri), 'current', None, True, 'auto').version)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )

    assert {"pulumi", "pulumi_gcp", "mypy", "pytest", "schemathesis"} <= set(modules)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()  # the version it loaded


def test_make_serve_serves_the_users_own_model_with_a_curl_line_that_works(
    tmp_path: Path,
) -> None:
    store = (tmp_path / "store").as_uri()
    data = diabetes_csv(tmp_path)
    assert training(["train", "--data", str(data), "--target", "target", "--estimator", "ridge",
                     "--no-report", "--name", "diabetes",
                     "--out", str(tmp_path / "art")]) == 0  # fmt: skip
    assert training(["publish", "--store", store, str(tmp_path / "art"), "--promote"]) == 0
    with make_serve(tmp_path, free_port(), STORE=store, MODEL="diabetes") as (_, printed, _):
        lines = printed.split("  curl -s -H")[1:]  # /ready's, then /predict's
        curl = next(c for c in lines if "/predict" in c).split("\n\n", 1)[0]
        answer = subprocess.run(
            ["bash", "-c", "curl -s -H" + curl.replace("\\\n", " ")],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip

    assert "with the model " + store + "/diabetes" in printed
    assert '"bmi"' in curl  # a row of this model's features, not Iris's
    assert len(json.loads(answer)["predictions"]) == 1


def test_make_serve_names_a_model_that_is_not_published(
    tmp_path: Path, iris_artifact: Path
) -> None:
    """MODEL=chrun (a typo): the line names the models the store holds."""
    store = (tmp_path / "store").as_uri()
    ModelStore(model_root(store, "churn")).publish(iris_artifact, "v1")
    env = {**os.environ, "STORE": store, "MODEL": "chrun", "HOME": str(tmp_path),
           "PORT": str(free_port())}  # fmt: skip
    env.pop("MODEL_URI", None)

    result = subprocess.run(
        [sys.executable, "-m", "local.serve"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode != 0
    assert "no version of 'chrun' is current in" in result.stderr
    assert "(models there: churn)" in result.stderr
    assert "--promote" in result.stderr


def test_help_prints_the_usage_and_does_nothing_else(tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = {**os.environ, "STORE": store.as_uri(), "PORT": str(free_port()), "HOME": str(tmp_path)}
    env.pop("MODEL_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", "local.serve", "--help"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m local.serve")
    assert "MODEL_URI" in done.stdout and done.stderr == ""
    assert not store.exists()  # nothing trained nor published


@pytest.mark.parametrize("held_on", ["127.0.0.1", "0.0.0.0"])  # another server on loopback, on all
def test_make_serve_refuses_a_busy_port_in_one_line_before_anything_else(
    tmp_path: Path, held_on: str
) -> None:
    env = {**os.environ, "STORE": (tmp_path / "store").as_uri(), "HOME": str(tmp_path)}
    env.pop("MODEL_URI", None)
    with socket.socket() as other:  # another server: listening, never answering
        other.bind((held_on, 0))
        other.listen()
        port = other.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "local.serve"], cwd=ROOT, env={**env, "PORT": str(port)},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    assert result.returncode != 0
    assert result.stdout == ""  # no banner, no curl line, nothing trained
    (line,) = result.stderr.splitlines()
    assert f"port {port} on 127.0.0.1 is already in use" in line
    assert "PORT=" in line  # how to choose another
    assert not (tmp_path / "store").exists()


def test_ctrl_c_stops_make_serve_under_load_as_cloud_run_would(
    iris_artifact: Path, tmp_path: Path
) -> None:
    """A terminal's Ctrl-C is SIGINT to its whole foreground group. It reached gunicorn's workers
    as well as its master, and gunicorn's SIGINT/SIGQUIT handler could deadlock a worker (see
    local.serve.run_server) until the master killed it 30 s later. make serve now stops the
    server with one SIGTERM to the master, as Cloud Run does."""
    store = (tmp_path / "store").as_uri()
    iris = ModelStore(model_root(store, "iris"))
    iris.promote(iris.publish(iris_artifact, "v1"))  # trained once for the session
    with make_serve(tmp_path, free_port(), STORE=store, WORKERS="2") as (url, printed, process):
        key = printed.split("development API key: ")[1].split()[0]
        signalled = [pid for pid in descendants(process.pid) if os.getpgid(pid) == process.pid]
        with Load(url, {"X-API-Key": key}) as load:
            signalled_at = time.monotonic()
            load.signalled.set()
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
        status = exit_within_grace(process, signalled_at)
        log = (tmp_path / "serve.log").read_text()

    assert signalled == []  # no part of the server is in the group a terminal signals
    assert status == 0, "still running 10s after Ctrl-C" if status is None else log[-3000:]
    assert deaths(log) == []
    sent_before = [outcome for before, outcome in load.outcomes if before]
    assert sent_before and set(sent_before) == {200}  # requests in flight were answered
