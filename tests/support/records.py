"""Payload and feedback records as the service writes them, for the live-quality tests."""

from __future__ import annotations

from datetime import UTC, datetime

from function.core import records

SINCE = datetime(2026, 12, 1, tzinfo=UTC)  # the window's start; the records below fall after it


def answer(
    request_id: str,
    labels: list[object],
    version: str = "v1",
    role: str = "answer",
    time: str = "2026-12-08T01:00:00Z",
    outcome: str = "ok",
) -> records.PredictionRecord:
    """A prediction record as the service writes one: one output per row."""
    outputs = records.json_text([{"label": label, "probabilities": {}} for label in labels])
    return records.PredictionRecord(
        request_id, time, "iris", version, role, "native", "/predict", 200, outcome, 1.5,
        "key:0a1b2c3d", records.json_text([{"x": 1}] * len(labels)), outputs,
    )  # fmt: skip


def label(
    request_id: str, row: int, truth: object, time: str = "2026-12-08T02:00:00Z"
) -> records.FeedbackRecord:
    """A feedback record: the truth for one row of an answered request."""
    return records.FeedbackRecord(request_id, row, time, "iris", records.json_text(truth), "key:1")
