"""SIGTERM to the real server (the Dockerfile's CMD) writes every queued payload record."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from function.core.records import parse
from function.core.store import ModelStore
from function.service.payloads import files
from tests.conftest import KEY, run_service
from tests.support.shutdown import GRACE_SECONDS

pytestmark = pytest.mark.slow  # starts a server


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_writes_every_queued_record_within_the_grace(
    iris_artifact: Path, tmp_path: Path, workers: int
) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    folder = tmp_path / "payloads"
    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "PAYLOAD_SAMPLE_RATE": "1",
           "PAYLOAD_DIR": str(folder), "WORKERS": str(workers),
           "RATE_LIMIT_PER_SECOND": "0"}  # fmt: skip
    with run_service(env, tmp_path) as running:
        sent = [f"r{i}" for i in range(40)]
        for request_id in sent:
            answer = running.post(
                "/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]},
                headers={"X-API-Key": KEY, "X-Request-Id": request_id},
            )  # fmt: skip
            assert answer.status_code == 200
        # At once: the writer wakes every 0.2 s, so the last records are still queued.
        signalled = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        running.process.wait(timeout=GRACE_SECONDS + 5)
        exited_after = time.monotonic() - signalled
        output = running.output()

    found = [
        parse(line, str(path)).request_id
        for path in files(folder)
        for line in path.read_text().splitlines()
    ]
    assert sorted(found) == sorted(sent)
    assert exited_after < GRACE_SECONDS
    assert output.count('"modelrun_record":"payload"') == len(sent)  # stdout, for the sink
