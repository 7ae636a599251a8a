"""Shared fixtures: artifacts, real storage emulators, a fake Secret Manager, the service."""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing.process
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from local import container
from local.mirror import fake_gcs_command, stop

if TYPE_CHECKING:
    from function.core.store import ModelStore

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"
# Most tests publish through ModelStore.publish, unsigned: the services and batch tasks they start
# accept unsigned versions, as a store from before signing is served. tests/test_signing.py
# checks the signatures (and that unsigned versions are refused without this setting).
UNSIGNED = {"ALLOW_UNSIGNED_MODELS": "true"}
os.environ.update(UNSIGNED)  # the batch processes tests start inherit the test's environment


# --- make test-fast: the tests that start no server and no process -----------------------

# A test that uses one of these fixtures (directly or through another) talks to a server: it is
# marked slow at collection. Any other test that starts a server or a process (run_service,
# run_training, subprocess, a socket that listens) carries @pytest.mark.slow, or its module
# `pytestmark = pytest.mark.slow`; under --fast, such a test without the mark fails and says so.
SERVER_FIXTURES = {"gcs_emulator", "fake_gcs", "secret_manager", "browser", "mlflow_server"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="only the tests marked neither slow nor image, each refused any server or process "
        "(make test-fast)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if config.getoption("fast"):
        slow = [i for i in items if i.get_closest_marker("slow") or i.get_closest_marker("image")]
        config.hook.pytest_deselected(items=slow)
        items[:] = [i for i in items if i not in slow]


@pytest.fixture(scope="session", autouse=True)
def _fast_tests_start_nothing(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under --fast, starting a process or listening on a socket fails the test, naming the mark
    it lacks: test-fast stays in process however tests are added. Session-wide, so that a
    module's server fixture is refused too (it is set up before any function-scoped fixture)."""
    if not request.config.getoption("fast"):
        yield
        return

    def refuse(*args: object, **kwargs: object) -> None:
        test = os.environ.get("PYTEST_CURRENT_TEST", "a test").rsplit(" ", 1)[0]
        raise AssertionError(
            f"{test} starts a process or a server: mark it @pytest.mark.slow (README, "
            "Testing), so that make test-fast leaves it to make test"
        )

    popen = subprocess.Popen.__init__

    def git_only(self: subprocess.Popen[Any], args: Any, *more: Any, **kwargs: Any) -> None:
        """Training records the commit it ran at (`git rev-parse`, milliseconds): allowed."""
        if isinstance(args, (list, tuple)) and args and Path(str(args[0])).name == "git":
            return popen(self, args, *more, **kwargs)
        refuse()

    import grpc  # its servers listen from C, past socket.listen: refused by their constructor

    # Matplotlib (the training report) builds its font cache on first use on a machine by running
    # fc-list: build it before the guard, so a fresh machine's first run is not refused for it.
    import matplotlib.font_manager  # noqa: F401

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grpc, "server", refuse)
        patch.setattr(subprocess.Popen, "__init__", git_only)
        patch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
        patch.setattr(os, "fork", refuse)
        patch.setattr(socket.socket, "listen", refuse)
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def descendants(pid: int) -> set[int]:
    """Every process started under `pid`, from /proc (children of children too)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in map(int, (task / "children").read_text().split()):
                found |= {child, *descendants(child)}
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for a module's page tests (tests/browser.py)."""
    from tests.browser import chrome

    driver = chrome()
    yield driver
    driver.quit()


def require_binary(name: str) -> str:
    """Return a binary's path; skip without it on a laptop, fail without it in CI."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required in CI (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
    return path


def run_training(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m training ARGS` as its own process, as a user runs it, with `env` over this
    environment, less any MLFLOW_* variable of the shell running the tests (tracking is asked
    for by the test, never inherited)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [PYTHON, "-m", "training", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**environ, **(env or {})},
    )


# --- artifacts ---------------------------------------------------------------------------


def train_artifact(out: Path, *extra: str) -> Path:
    """A trained artifact for serving tests (the report is tests/test_report.py's subject)."""
    from training.__main__ import main

    assert main(["train", "--out", str(out), "--no-report", *extra]) == 0
    return out


def trained_once(factory: pytest.TempPathFactory, name: str, *extra: str) -> Path:
    """train_artifact(extra), once per run of the suite however many xdist workers ask: the
    first trains it into the run's temporary folder (which every worker's sits in) under a lock,
    the others wait and read the same files. The artifact is only read: nothing may change it."""
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out = root / f"trained-{name}"
    with open(root / f"trained-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.exists():
            staged = root / f"trained-{name}.{os.getpid()}"
            train_artifact(staged, *extra)
            staged.rename(out)  # whole or not at all, if the training fails half-way
    return out


@pytest.fixture(scope="session")
def iris_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A logistic-regression Iris artifact, trained once per run."""
    return trained_once(tmp_path_factory, "iris-lr")


@pytest.fixture(scope="session")
def forest_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-forest Iris artifact, trained once per run."""
    return trained_once(
        tmp_path_factory, "iris-rf", "--estimator", "random_forest", "--param", "n_estimators=20"
    )


# --- the Pulumi program ------------------------------------------------------------------


@pytest.fixture(scope="session")
def stack() -> Any:
    """The example stack (Pulumi.yaml's defaults and Pulumi.dev.yaml) as the program declares it
    under Pulumi's mocks (tests/support/infra.py): run once per test process, read by the tests of
    infra/ that change no setting. A Stack is only read: nothing may change it."""
    from tests.support.infra import run_program, stack_config

    return run_program(stack_config())


# --- storage -----------------------------------------------------------------------------


@dataclass
class Emulator:
    """A GCS emulator on loopback; host is what STORAGE_EMULATOR_HOST must hold."""

    host: str
    bucket: str


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Emulator]:
    """gcp-storage-emulator in this process, with an empty bucket."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="models-test")
    server.start()
    try:
        yield Emulator(f"http://127.0.0.1:{port}", "models-test")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[Emulator]:
    """fake-gcs-server (the Go emulator, shipped in a wheel): it enforces generation
    preconditions, which gcp-storage-emulator ignores, so the promotion race is tested here."""
    port = free_port()
    data = Path(os.environ.get("TMPDIR", "/tmp")) / f"fake-gcs-{port}"
    process = subprocess.Popen(
        fake_gcs_command(port, data, "models-race"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{host}/storage/v1/b"), 10, "fake-gcs-server")
        yield Emulator(host, "models-race")
    finally:
        stop(process)
        shutil.rmtree(data, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=0.5).status_code < 500
    except requests.RequestException:
        return False


def publish_to_gcs(emulator: Emulator, artifact: Path, name: str, version: str = "v1") -> str:
    """Publish and promote an artifact in an emulator, under a fresh folder `name`; return the
    model URI (a root named as its model, which the store checks)."""
    from function.core.store import ModelStore

    model = json.loads((artifact / "metadata.json").read_text())["name"]
    uri = f"gs://{emulator.bucket}/{name}/{model}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", emulator.host)
        store = ModelStore(uri, timeout=5)
        store.promote(store.publish(artifact, version))
    return uri


@pytest.fixture
def gcs_uri(gcs_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh gs:// model root in the emulator, the client pointed at it."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.host)
    return f"gs://{gcs_emulator.bucket}/t{time.monotonic_ns()}/iris"  # a root named as its model


def service_env(store: ModelStore, emulator: Emulator, **extra: str) -> dict[str, str]:
    """A service of a model root in an emulator, with two keys and no rate limit."""
    return {
        "MODEL_URI": store.uri,
        "STORAGE_EMULATOR_HOST": emulator.host,
        "API_KEYS": f"{KEY},{OTHER_KEY}",
        "STORE_TIMEOUT_SECONDS": "2",
        "RATE_LIMIT_PER_SECOND": "0",
        **extra,
    }


# --- Secret Manager ----------------------------------------------------------------------


def grpc_stand_in(service: str, method: str, answer: Any, request: Any, response: Any) -> Any:
    """A gRPC server (not started, no port yet) answering one unary method of a Google API with
    `answer`, for the real client to reach over a real plain-gRPC channel."""
    import grpc

    handler = grpc.method_handlers_generic_handler(
        service,
        {
            method: grpc.unary_unary_rpc_method_handler(
                answer,
                request_deserializer=request.deserialize,
                response_serializer=response.serialize,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    return server


class FakeSecretManager:
    """A gRPC server speaking SecretManagerService.AccessSecretVersion from a dict.
    Secret Manager has no emulator; the real client talks to this over a real channel."""

    def __init__(self) -> None:
        from google.cloud import secretmanager

        self.secrets: dict[str, bytes] = {}
        self.calls = 0
        self.server = grpc_stand_in(
            "google.cloud.secretmanager.v1.SecretManagerService",
            "AccessSecretVersion",
            self._access,
            secretmanager.AccessSecretVersionRequest,
            secretmanager.AccessSecretVersionResponse,
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def _access(self, request, context):  # type: ignore[no-untyped-def]
        import grpc
        from google.cloud import secretmanager

        self.calls += 1
        if request.name not in self.secrets:
            context.abort(grpc.StatusCode.NOT_FOUND, f"{request.name} not found")
        return secretmanager.AccessSecretVersionResponse(
            name=request.name, payload=secretmanager.SecretPayload(data=self.secrets[request.name])
        )

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0)


SECRET_NAME = "projects/test/secrets/api-keys/versions/latest"


@pytest.fixture
def secret_manager() -> Iterator[FakeSecretManager]:
    server = FakeSecretManager()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- the service as its own process ------------------------------------------------------

# The Dockerfile's own CMD and ENV: a typo in the entrypoint fails these tests.
SERVE_COMMAND = container.command()


@dataclass
class Running:
    url: str
    process: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        """Kill the server and its worker at once, as an instance dies."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> requests.Response:
        return requests.post(self.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def run_service(
    env: dict[str, str],
    tmp_path: Path,
    command: list[str] | None = None,
    wait_ready: bool = True,
    port: int | None = None,
) -> Iterator[Running]:
    """Start the function as its own process, as the container does; stop it afterwards."""
    port = port or free_port()
    # The launchers' one precedence (local/container.py): the image's ENV, then this test
    # session's "user" settings (not the whole test environment), then the test's own.
    full_env = container.process_environment(
        env,
        user={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),  # gunicorn writes a control socket under $HOME
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "THREADS": "4",
            "WORKERS": "1",  # as on a 1-vCPU instance (infra's default); test_workers.py runs two
            **UNSIGNED,
        },
    )
    log_path = tmp_path / f"service-{port}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command or SERVE_COMMAND,
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: the worker goes with it
        )
    running = Running(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_until(
            lambda: process.poll() is not None or _answers(running.url + "/health"), 30, "/health"
        )
        if process.poll() is not None:
            raise AssertionError(f"the service exited:\n{running.output()}")
        if wait_ready:
            wait_until(lambda: running.get("/ready").status_code == 200, 30, "/ready")
        yield running
    finally:
        stop(process)
        # A master stopped by force (a worker still busy after stop()'s 10 s) leaves its workers
        # behind: end the whole group, which the worker processes share with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def schemathesis(
    url: str, max_examples: int, phases: str = "examples,coverage,fuzzing,stateful"
) -> subprocess.CompletedProcess[str]:
    """Run schemathesis (tests/schemathesis.toml: every check) against a live service's own
    /openapi.json, with a fixed seed."""
    return subprocess.run(
        [
            str(Path(PYTHON).parent / "schemathesis"),
            "--config-file", str(ROOT / "tests" / "schemathesis.toml"),
            "run", f"{url}/openapi.json",
            "-H", f"X-API-Key: {KEY}", "--max-examples", str(max_examples),
            "--phases", phases,
            "--seed", "20261122", "--request-timeout", "10", "--max-failures", "5",
        ],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
