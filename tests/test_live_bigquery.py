"""The live-quality SQL on a BigQuery stand-in, through `evaluate --bigquery`'s own REST calls.

BigQuery's API cannot be reached from here. bqemulator stands in for it: the same SQL text, sent
by the same code as `evaluate --bigquery` (training/bigquery.py), over a table of the sink's shape.
It runs that SQL on DuckDB with a translation of its own, so agreement with the offline path is
evidence, not proof: what is not proven (the sink's real column types, BigQuery's own JSON
functions) is listed in docs/PAYLOADS.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from function.core import records
from tests.support.bigquery import PROJECT, emulator, sink_table
from tests.support.records import SINCE, answer, label
from training import bigquery
from training.__main__ import main
from training.errors import TrainingError
from training.live_query import Joined, query_bigquery, query_local

pytestmark = pytest.mark.slow  # a server of its own

RECORDS: list[records.Record] = [
    answer("a", ["setosa", "virginica"]),
    answer("b", ["setosa"]),
    answer("a", ["virginica", "virginica"], version="v2", role="shadow"),
    answer("c", [], outcome="invalid-input"),
    answer("old", ["setosa"], time="2026-11-01T00:00:00Z"),
    label("a", 1, "setosa", time="2026-12-08T02:00:00Z"),
    label("a", 1, "virginica", time="2026-12-08T03:00:00Z"),
    label("b", 0, "versicolor"),
    label("old", 0, "setosa"),
]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with emulator(tmp_path_factory.mktemp("bigquery")) as endpoint:
        sink_table(endpoint, "payloads", RECORDS)
        yield endpoint


@pytest.fixture
def endpoint(running: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The stand-in's endpoint, in BIGQUERY_EMULATOR_HOST (as google-cloud-bigquery names it)."""
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", running)
    return running


def rows(joined: list[Joined]) -> list[tuple[str, str, str, str, int]]:
    """The join's rows in one order (no label: "")."""
    return sorted((j.version, j.role, j.predicted or "", j.truth or "", j.answered) for j in joined)


def test_bigquery_and_the_offline_engine_join_alike(endpoint: str) -> None:
    found = query_bigquery(f"{PROJECT}.payloads", "iris", SINCE)
    assert rows(found) == rows(query_local(RECORDS, "iris", SINCE))
    assert [r[:4] for r in rows(found) if r[3]] == [
        ("v1", "answer", "setosa", "versicolor"),
        ("v1", "answer", "virginica", "virginica"),  # the last label of a's row 1
        ("v2", "shadow", "virginica", "virginica"),
    ]


def test_every_page_of_the_results_is_read(endpoint: str) -> None:
    whole = query_bigquery(f"{PROJECT}.payloads", "iris", SINCE)
    assert len(whole) > 2  # so that two rows a page is more than one page
    assert rows(query_bigquery(f"{PROJECT}.payloads", "iris", SINCE, page_rows=2)) == rows(whole)


def test_a_failed_query_names_the_dataset_and_bigquerys_reason(endpoint: str) -> None:
    with pytest.raises(TrainingError, match=rf"^BigQuery {PROJECT}\.nothing: Not found: .*nothing"):
        query_bigquery(f"{PROJECT}.nothing", "iris", SINCE)


def test_an_http_error_carries_bigquerys_message_and_status(endpoint: str) -> None:
    job = f"{endpoint}/bigquery/v2/projects/{PROJECT}/queries/no-such-job"
    with pytest.raises(
        TrainingError, match=r"^BigQuery the job: Not found: .*no-such-job \(HTTP 404\)"
    ):
        bigquery._call(requests.Session(), "GET", job, "the job")


def test_evaluate_reads_bigquery_as_it_reads_a_folder(
    endpoint: str,
    tmp_path: Path,
    iris_artifact: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from function.core.store import ModelStore

    store = (tmp_path / "store").as_uri()
    ModelStore(f"{store}/iris").publish(iris_artifact, "v1")
    args = ["evaluate", "--store", store, "--name", "iris", "--since", "2026-12-01",
            "--min-labels", "1", "--version", "v1", "--json"]  # fmt: skip
    assert main([*args, "--bigquery", f"{PROJECT}.payloads"]) == 0
    cloud = json.loads(capsys.readouterr().out)
    folder = tmp_path / "payloads"
    folder.mkdir()
    (folder / "r.jsonl").write_text("".join(records.encode(r) + "\n" for r in RECORDS))
    assert main([*args, "--records", folder.as_uri()]) == 0
    offline = json.loads(capsys.readouterr().out)
    assert cloud["versions"] == offline["versions"]
    assert [
        (q["answered"], q["labelled"], q["metrics"]["accuracy"]) for q in cloud["versions"]
    ] == [(3, 2, 0.5)]
