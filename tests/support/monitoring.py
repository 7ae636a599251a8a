"""The function scraped by a real Prometheus with the project's configuration (local/mirror.py),
and PromQL queries against it: for the monitoring, drift and rollout tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from local.mirror import Mirror, process, wait_for
from tests.conftest import (
    KEY,
    Emulator,
    Running,
    free_port,
    publish_to_gcs,
    require_binary,
    run_service,
)


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = requests.get(f"http://{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", f"{expr}: {body}"
    return list(body["data"]["result"])


@contextlib.contextmanager
def monitored_service(
    gcs_emulator: Emulator,
    artifact: Path,
    tmp_path: Path,
    mirror_dir: Path,
    drift: tuple[str, str] | None = None,
    uri: str | None = None,
    **settings: str,
) -> Iterator[tuple[Running, Mirror]]:
    """The function (the artifact, or the model root `uri` in the emulator) and Prometheus with
    the project's config (the drift window and hold shortened when asked)."""
    require_binary("prometheus")
    uri = uri or publish_to_gcs(gcs_emulator, artifact, f"monitored-{time.monotonic_ns()}")
    metrics = free_port()
    env = {
        "MODEL_URI": uri,
        "STORAGE_EMULATOR_HOST": gcs_emulator.host,
        "API_KEYS": KEY,
        "METRICS_PORT": str(metrics),  # scraped there without a key, as the sidecar does
        **settings,
    }
    with run_service(env, tmp_path) as running:
        mirror = Mirror(mirror_dir, metrics=f"127.0.0.1:{metrics}", drift=drift)
        with process(mirror.prometheus_command(), mirror_dir / "prometheus.log"):
            wait_for(f"http://{mirror.prometheus}/-/ready")
            yield running, mirror
