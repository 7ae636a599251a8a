"""`make monitor` as a user runs it: every page its banner links answers, alerts print with their
summary, and a SIGTERM or Ctrl-C stops every child, frees every port and removes its folder."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import requests

from function.core import rollout
from function.core.store import ModelStore, model_root
from local.alert_sink import AlertSink
from tests.artifacts import renamed
from tests.conftest import (
    ROOT,
    descendants,
    free_port,
    require_binary,
    run_training,
    wait_until,
)

MONITOR_PORTS = (
    "PORT",
    "METRICS_PORT",
    "GCS_PORT",
    "PROMETHEUS_PORT",
    "ALERTMANAGER_PORT",
    "ALERT_SINK_PORT",
)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def start_monitor(
    env: dict[str, str], log: Path, flags: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m local.monitor` logging to `log`, once it printed its banner: (process, banner)."""
    with open(log, "w") as out:
        command = [sys.executable, "-m", "local.monitor", *(flags or [])]
        monitor = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, process_group=0)  # fmt: skip
    try:
        wait_until(
            lambda: "Stop with Ctrl-C" in log.read_text() or monitor.poll() is not None,
            120,
            "the monitor banner",
        )
    except AssertionError:
        monitor.kill()
        raise
    banner = log.read_text()
    if monitor.poll() is not None:
        raise AssertionError(banner)
    return monitor, banner


@pytest.mark.slow
@pytest.mark.parametrize(("stop_with", "drift"), [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_monitor_links_working_pages_and_stops_every_child(
    tmp_path: Path, stop_with: signal.Signals, drift: bool
) -> None:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    ports = {name: free_port() for name in MONITOR_PORTS}
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "TMPDIR": str(tmp_path),
        "WORKERS": "1",
    }
    log = tmp_path / "monitor.log"
    monitor, banner = start_monitor(env, log, ["--drift"] if drift else [])
    try:
        links = re.findall(r"(http://127\.0\.0\.1:\d+/classic/[^\s)]+)", banner)
        assert len(links) == (3 if drift else 2), banner
        for link in links:
            assert requests.get(link, timeout=10).status_code == 200, link
        assert f"127.0.0.1:{ports['GCS_PORT']}" in banner
        workdir = Path(re.search(r"logs (\S+)/function\.log", banner)[1])  # type: ignore[index]
        assert workdir.is_dir()
        if drift:  # the demo's traffic reaches Prometheus, counted into the drift bins
            prometheus = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}/api/v1/query"
            counted = {"query": "sum(modelrun_drift_rows_total) > 0"}
            wait_until(
                lambda: bool(
                    requests.get(prometheus, params=counted, timeout=5).json()["data"]["result"]
                ),
                60,
                "drift rows counted",
            )
            assert "drift traffic: rows drawn from the training data" in log.read_text()
        # A terminal's Ctrl-C goes to its whole foreground group: only the monitor is in it.
        in_its_group = [p for p in descendants(monitor.pid) if os.getpgid(p) == monitor.pid]
        assert in_its_group == []
    finally:
        if stop_with == signal.SIGINT:
            os.killpg(monitor.pid, signal.SIGINT)  # Ctrl-C, as a terminal sends it
        else:
            monitor.send_signal(stop_with)
        monitor.wait(30)

    wait_until(lambda: all(port_is_free(p) for p in ports.values()), 15, "every port freed")
    assert not workdir.exists()


@pytest.mark.slow
def test_monitor_serves_your_model_and_rollout_status_reads_its_prometheus(
    tmp_path: Path, iris_artifact: Path, forest_artifact: Path
) -> None:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    store = (tmp_path / "store").as_uri()
    mine = ModelStore(model_root(store, "flowers"))  # a model of your own, as `make serve` takes
    mine.promote(mine.publish(renamed(iris_artifact, "flowers", tmp_path / "a1"), "v1"))
    mine.publish(renamed(forest_artifact, "flowers", tmp_path / "a2"), "v2")
    ports = {name: free_port() for name in MONITOR_PORTS}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "TMPDIR": str(tmp_path),
           "WORKERS": "1", "MODEL": "flowers", "STORE": store}  # fmt: skip
    env.pop("MODEL_URI", None)
    monitor, banner = start_monitor(env, tmp_path / "monitor.log")
    try:
        assert f"model         {mine.uri}" in banner and "GCS emulator" not in banner
        key = re.search(r"\(key: (\S+);", banner)[1]  # type: ignore[index]
        url = f"http://127.0.0.1:{ports['PORT']}"

        def answered_by() -> str:
            row = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
            response = requests.post(
                f"{url}/predict", json=row, headers={"X-API-Key": key}, timeout=10
            )
            assert response.status_code == 200
            return str(response.headers["X-Model-Version"])

        assert answered_by() == "v1"
        # The README's walkthrough on it: a canary in your store, judged from this Prometheus.
        rollout.start(mine, "v2", "canary", 100)
        wait_until(lambda: answered_by() == "v2", 30, "the function to follow the rollout")
        answers = [answered_by() for _ in range(20)]
        assert set(answers) == {"v2"}
        prometheus = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"

        def status() -> dict[str, Any]:
            said = run_training("rollout", "status", "--store", store, "--name", "flowers",
                                "--prometheus", prometheus, "--json")  # fmt: skip
            assert said.returncode == 0, said.stderr
            return dict(json.loads(said.stdout))

        wait_until(lambda: status()["versions"][1]["requests"] >= 21, 60, "v2's requests scraped")
        assert status()["versions"][1]["version"] == "v2"
    finally:
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(30)
    wait_until(lambda: all(port_is_free(p) for p in ports.values()), 15, "every port freed")


@pytest.mark.slow
def test_alerts_print_with_their_summary(capsys: pytest.CaptureFixture[str]) -> None:
    sink = AlertSink("127.0.0.1", 0).start()
    alert = {
        "status": "firing",
        "labels": {"alertname": "ModelrunDown", "severity": "page"},
        "annotations": {"summary": "the function is not answering scrapes"},
    }
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{sink.port}/alerts",
            data=json.dumps({"alerts": [alert]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=5).close()
        sink.received.wait(5)
    finally:
        sink.stop()
    time.sleep(0.1)

    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["summary"] == "the function is not answering scrapes"
    assert line["alert"] == "ModelrunDown"


def test_the_default_model_is_trained_again_when_its_baseline_cannot_be_read(
    iris_artifact: Path, tmp_path: Path
) -> None:
    from local.monitor import needs_training

    copy = tmp_path / "iris"
    copy.mkdir()
    for file in iris_artifact.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    assert not needs_training(copy)

    baseline = json.loads((copy / "baseline.json").read_text())
    for record in baseline["features"]:
        del record["labels"]  # as a baseline written before bins carried their labels
    (copy / "baseline.json").write_text(json.dumps(baseline))
    assert needs_training(copy)
    (copy / "baseline.json").unlink()
    assert needs_training(copy)
