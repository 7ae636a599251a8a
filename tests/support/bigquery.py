"""The BigQuery stand-in: bqemulator (DuckDB-backed, with its own translation of BigQuery's SQL)
from its own venv (`make test` installs .venv-bigquery: local/bigquery/requirements.txt), and the
table the Log Router sink writes, in the sink's shape."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from function.core import records
from tests.conftest import ROOT, free_port, wait_until
from training.live_query import SINK_TABLE, sink_payload

VENV = ROOT / ".venv-bigquery"
PROJECT = "modelrun-test"
# The columns the sink makes from a record line: the entry's `timestamp`, the record's fields
# under `jsonPayload` (the ones the join reads; a real table has them all, and more).
PAYLOAD_FIELDS = [("kind", "STRING"), ("request_id", "STRING"), ("model", "STRING"),
                  ("version", "STRING"), ("role", "STRING"), ("outcome", "STRING"),
                  ("outputs", "STRING"), ("row", "INTEGER"), ("truth", "STRING")]  # fmt: skip


def emulator_binary() -> Path:
    """bqemulator's command; skip without it on a laptop, fail without it in CI."""
    binary = VENV / "bin" / "bqemulator"
    if not binary.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("bqemulator is required in CI (make test installs .venv-bigquery)")
        pytest.skip("bqemulator is not installed (make test installs .venv-bigquery)")
    return binary


@contextmanager
def emulator(home: Path) -> Iterator[str]:
    """Run bqemulator on loopback; yield its REST endpoint. It loads DuckDB's spatial extension
    at start, which it would download: the wheel's copy is put where DuckDB looks (under HOME)."""
    binary = emulator_binary()
    spatial = next((VENV / "lib").glob("python*/site-packages/duckdb_extension_spatial"))
    found = next(spatial.glob("extensions/v*/spatial.duckdb_extension"))
    target = home / ".duckdb" / "extensions" / found.parent.name / "linux_amd64"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(found, target)
    rest, grpc = free_port(), free_port()
    log = (home / "bqemulator.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "start", "--rest-port", str(rest), "--grpc-port", str(grpc),
         "--project", PROJECT, "--log-level", "warning"],
        env={**os.environ, "HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{rest}"
    try:
        wait_until(lambda: _answers(endpoint) or process.poll() is not None, 60, "bqemulator")
        assert process.poll() is None, (home / "bqemulator.log").read_text()[-2000:]
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(
            f"{endpoint}/bigquery/v2/projects/{PROJECT}/datasets", timeout=2
        ):
            return True
    except OSError:
        return False


def sink_table(endpoint: str, dataset: str, found: list[records.Record]) -> None:
    """Make the sink's table in `dataset` and stream the records in, as the sink writes them, over
    BigQuery's REST API (datasets.insert, tables.insert, tabledata.insertAll)."""
    datasets = f"{endpoint}/bigquery/v2/projects/{PROJECT}/datasets"
    _post(datasets, {"datasetReference": {"projectId": PROJECT, "datasetId": dataset}})
    fields = [{"name": n, "type": t} for n, t in PAYLOAD_FIELDS]
    schema = [{"name": "timestamp", "type": "TIMESTAMP"},
              {"name": "jsonPayload", "type": "RECORD", "fields": fields}]  # fmt: skip
    reference = {"projectId": PROJECT, "datasetId": dataset, "tableId": SINK_TABLE}
    _post(
        f"{datasets}/{dataset}/tables", {"tableReference": reference, "schema": {"fields": schema}}
    )
    rows = [
        {"json": {"timestamp": time, "jsonPayload": payload}}
        for time, payload in map(sink_payload, found)
    ]
    inserted = _post(f"{datasets}/{dataset}/tables/{SINK_TABLE}/insertAll", {"rows": rows})
    assert not inserted.get("insertErrors"), inserted


def _post(url: str, body: dict[str, Any]) -> Any:
    response = requests.post(url, json=body, timeout=30)
    assert response.ok, (url, response.status_code, response.text[:2000])
    return response.json()
