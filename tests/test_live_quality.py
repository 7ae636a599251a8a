"""Live quality: calibration at training, the join of answers and labels offline, `evaluate`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from function.core import records
from function.core.store import ModelStore
from tests.support.records import SINCE, answer, label
from training.__main__ import main
from training.calibration import expected_calibration_error
from training.live_query import duckdb_sql, query_local, read_folder


def write(folder: Path, *found: records.Record, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"records-{len(list(folder.iterdir()))}.jsonl"
    path.write_text("".join(records.encode(r) + "\n" for r in found) + extra)
    return folder


# --- calibration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("confidence", "correct", "ece"),
    [
        # Two bins, each half a point off: (0.9333, 1] holds 0.95 twice at 50 % accuracy,
        # (0.5333, 0.6] holds 0.55 twice at 100 %.
        ([0.95, 0.95, 0.55, 0.55], [1, 0, 1, 1], 0.45),
        ([0.8] * 5, [1, 1, 1, 1, 0], 0.0),  # confidence 0.8, accuracy 0.8
        ([1.0, 1.0], [1, 1], 0.0),  # 1.0 falls in the last bin
        ([0.0, 1.0], [1, 1], 0.5),  # 0 falls in the first
    ],
)
def test_the_calibration_error_is_the_rows_weighted_gap_per_bin(
    confidence: list[float], correct: list[int], ece: float
) -> None:
    assert expected_calibration_error(confidence, correct) == pytest.approx(ece)


def test_a_trained_classifier_records_its_calibration_on_the_holdout(iris_artifact: Path) -> None:
    metadata = json.loads((iris_artifact / "metadata.json").read_text())
    calibration = metadata["calibration"]
    assert calibration["bins"] == 15 and 0 <= calibration["ece"] <= 1
    assert calibration["trusted"] == (calibration["ece"] <= 0.05)


# --- the join, offline ---------------------------------------------------------------------


def test_each_answered_row_meets_its_last_label(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "payloads",
        answer("a", ["setosa", "virginica"]),
        answer("b", ["setosa"]),
        answer("a", ["virginica", "virginica"], version="v2", role="shadow"),
        answer("c", [], outcome="invalid-input"),  # a refusal answers no row
        label("a", 1, "setosa", time="2026-12-08T02:00:00Z"),
        label("a", 1, "virginica", time="2026-12-08T03:00:00Z"),  # the last one wins
        label("b", 0, "versicolor"),
        extra='{"not": "a record"}\nnot json\n',
    )
    local = read_folder(folder.as_uri())
    assert (len(local.records), local.bad_lines, local.files) == (7, 2, 1)
    joined = query_local(local.records, "iris", SINCE)
    labelled = sorted((j.version, j.role, j.predicted, j.truth) for j in joined if j.truth)
    assert labelled == [
        ("v1", "answer", "setosa", "versicolor"),
        ("v1", "answer", "virginica", "virginica"),
        ("v2", "shadow", "virginica", "virginica"),
    ]
    assert {(j.version, j.role, j.answered) for j in joined} == {("v1", "answer", 3),
                                                                 ("v2", "shadow", 2)}  # fmt: skip


def test_the_window_and_the_model_bound_the_join(tmp_path: Path) -> None:
    old = answer("old", ["setosa"], time="2026-11-01T00:00:00Z")
    other = records.PredictionRecord(**{**answer("x", ["setosa"]).__dict__, "model": "wine"})
    joined = query_local([old, other, label("old", 0, "setosa")], "iris", SINCE)
    assert joined == []


def test_duckdb_counts_offsets_from_zero_as_bigquery_does() -> None:
    """sqlglot writes BigQuery's WITH OFFSET as DuckDB's WITH ORDINALITY, from 1: without the
    correction the first row of every answer would be row 1."""
    import duckdb
    import sqlglot

    bigquery = "SELECT pos FROM UNNEST(['a', 'b']) AS x WITH OFFSET AS pos ORDER BY pos"
    plain = sqlglot.transpile(bigquery, read="bigquery", write="duckdb")[0]
    assert duckdb.sql(plain).fetchall() == [(1,), (2,)]  # the translation's own fault, measured
    assert "(pos - 1) AS row_index" in duckdb_sql()


# --- evaluate ------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path, iris_artifact: Path) -> str:
    """A store with the Iris model as v1 (trained with the gate accuracy>=0.9)."""
    artifact = tmp_path / "artifact"
    shutil.copytree(iris_artifact, artifact)
    metadata = json.loads((artifact / "metadata.json").read_text())
    (artifact / "metadata.json").write_text(json.dumps({**metadata, "gates": ["accuracy>=0.9"]}))
    uri = (tmp_path / "store").as_uri()
    ModelStore(f"{uri}/iris").publish(artifact, "v1")
    return uri


def labelled_answers(folder: Path, right: int, wrong: int) -> Path:
    found: list[records.Record] = []
    for i in range(right + wrong):
        found += [
            answer(f"r{i}", ["setosa"]),
            label(f"r{i}", 0, "setosa" if i < right else "virginica"),
        ]
    return write(folder, *found)


def evaluate(store: str, folder: Path, *extra: str) -> list[str]:
    return ["evaluate", "--store", store, "--name", "iris", "--records", folder.as_uri(),
            "--since", "2026-12-01", *extra]  # fmt: skip


def test_evaluate_reports_live_beside_holdout_and_passes_the_gates(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = labelled_answers(tmp_path / "payloads", right=19, wrong=1)
    assert main(evaluate(store, folder, "--min-labels", "20")) == 0
    out = capsys.readouterr().out
    assert (
        "v1 (answer): 20 rows answered, 20 labelled (100.0%): meets its gates (accuracy>=0.9)"
        in out
    )
    metadata = Path(store.removeprefix("file://"), "iris/versions/v1/metadata.json")
    holdout = json.loads(metadata.read_text())["metrics"]["holdout"]["accuracy"]
    assert f"accuracy               0.9500 {holdout:>10.4f}" in out


def test_evaluate_exits_3_below_the_gates(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = labelled_answers(tmp_path / "payloads", right=17, wrong=3)
    assert main(evaluate(store, folder, "--min-labels", "20", "--json")) == 3
    found = json.loads(capsys.readouterr().out)["versions"]
    assert [
        (q["version"], q["labelled"], q["metrics"]["accuracy"], q["failed"]) for q in found
    ] == [("v1", 20, pytest.approx(0.85), ["accuracy>=0.9"])]


def test_evaluate_does_not_judge_too_few_labels(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = labelled_answers(tmp_path / "payloads", right=0, wrong=5)
    assert main(evaluate(store, folder)) == 0  # 5 labels, fewer than the default 30
    assert "too few labels to judge (fewer than 30)" in capsys.readouterr().out


# --- rollout promote --auto --require-live-quality ----------------------------------------


def live_check(store: str, folder: Path, version: str = "v1", *extra: str) -> Any:
    """The criterion promote --auto adds, judged as the command judges it."""
    from training.__main__ import _parser, _with_live_quality
    from training.verdict import Check, Verdict

    args = _parser().parse_args(["rollout", "promote", "--store", store, "--name", "iris",
                                 "--auto", "--require-live-quality", "--records",
                                 folder.as_uri(), "--since", "2026-12-01", *extra])  # fmt: skip
    passed = Verdict([Check("traffic", "pass", "enough")])
    return _with_live_quality(args, ModelStore(f"{store}/iris"), version, passed)


@pytest.mark.parametrize(
    ("right", "wrong", "decision", "detail"),
    [
        (30, 0, "promote", "answer 30 labels, accuracy=1.0000"),
        (20, 10, "abort", "v1's labelled answers: answer below accuracy>=0.9"),
        (3, 0, "wait", "3 labelled rows of v1, fewer than 30"),
    ],
)
def test_promotion_requires_the_candidates_live_quality(
    store: str, tmp_path: Path, right: int, wrong: int, decision: str, detail: str
) -> None:
    verdict = live_check(store, labelled_answers(tmp_path / "payloads", right, wrong))
    assert verdict.decision == decision
    assert detail in verdict.checks[-1].detail


def test_require_live_quality_names_what_it_reads(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["rollout", "promote", "--store", store, "--name", "iris", "--auto",
            "--prometheus", "http://127.0.0.1:9", "--require-live-quality"]  # fmt: skip
    assert main(args) == 1
    assert "give --records file:///DIR or --bigquery PROJECT.DATASET" in capsys.readouterr().err
