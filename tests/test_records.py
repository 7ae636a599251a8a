"""Payload records: the one shape the service writes and evaluation reads."""

from __future__ import annotations

import json

import pytest

from function.core.errors import IntegrityError
from function.core.records import (
    MAX_RECORD_BYTES,
    FeedbackRecord,
    PredictionRecord,
    encode,
    json_text,
    parse,
)


def prediction(inputs: object) -> PredictionRecord:
    return PredictionRecord(
        request_id="r1", time="2026-12-08T00:00:00.000Z", model="iris", version="v1",
        role="answer", protocol="native", route="/predict", status=200, outcome="ok",
        latency_ms=1.5, client="key:0", inputs=json_text(inputs),
        outputs=json_text([{"label": "setosa"}]),
    )  # fmt: skip


def test_a_record_survives_its_line() -> None:
    record = prediction([{"a": 1.5, "b": float("nan"), "c": "x"}])
    line = encode(record)
    assert "\n" not in line
    assert parse(line, "line 1") == record
    assert json.loads(record.inputs or "") == [{"a": 1.5, "b": None, "c": "x"}]
    feedback = FeedbackRecord("r1", 0, "2026-12-08T00:00:00Z", "iris", json_text("setosa"), "k")
    assert parse(encode(feedback), "line 2") == feedback


def test_a_record_over_the_cap_keeps_who_and_what_happened_but_not_the_rows() -> None:
    record = prediction([{"a": "x" * 1000} for _ in range(MAX_RECORD_BYTES // 1000)])
    line = encode(record)
    assert len(line.encode()) < MAX_RECORD_BYTES
    kept = parse(line, "line 1")
    assert isinstance(kept, PredictionRecord)
    assert (kept.inputs, kept.outputs, kept.truncated) == (None, None, True)
    assert (kept.request_id, kept.status, kept.latency_ms) == ("r1", 200, 1.5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": 2}, "schema_version 2 is not 1"),
        ({"kind": "other"}, "kind 'other'"),
        ({"extra": 1}, "unknown ['extra']"),
        ({"request_id": ""}, "request_id must be a non-empty string"),
    ],
)
def test_a_line_of_another_shape_is_refused_naming_why(change: dict, message: str) -> None:
    fields = json.loads(encode(prediction([]))) | change
    with pytest.raises(IntegrityError, match=message.replace("[", r"\[")):
        parse(json.dumps(fields), "line 7")
    with pytest.raises(IntegrityError, match="line 7: not JSON"):
        parse("{", "line 7")
