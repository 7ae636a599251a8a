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

import pytest
import requests

from local.alert_sink import AlertSink
from tests.conftest import ROOT, free_port, require_binary, wait_until


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
@pytest.mark.parametrize(("stop_with", "drift"), [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_monitor_links_working_pages_and_stops_every_child(
    tmp_path: Path, stop_with: signal.Signals, drift: bool
) -> None:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    ports = {
        name: free_port()
        for name in (
            "PORT",
            "METRICS_PORT",
            "GCS_PORT",
            "PROMETHEUS_PORT",
            "ALERTMANAGER_PORT",
            "ALERT_SINK_PORT",
        )
    }
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "TMPDIR": str(tmp_path),
        "WORKERS": "1",
    }
    log = tmp_path / "monitor.log"
    with open(log, "w") as out:
        monitor = subprocess.Popen(
            [sys.executable, "-m", "local.monitor", *(["--drift"] if drift else [])], cwd=ROOT,
            env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(
            lambda: "Stop with Ctrl-C" in log.read_text() or monitor.poll() is not None,
            120,
            "the monitor banner",
        )
        banner = log.read_text()
        assert monitor.poll() is None, banner
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
    finally:
        monitor.send_signal(stop_with)
        monitor.wait(30)

    wait_until(lambda: all(port_is_free(p) for p in ports.values()), 15, "every port freed")
    assert not workdir.exists()


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
