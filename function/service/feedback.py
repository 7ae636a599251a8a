"""POST /feedback: the true labels (or values) of earlier answers, found by request id and row.

    {"feedback": [{"request_id": "…", "row": 0, "label": "setosa"}, …]}   a classifier
    {"feedback": [{"request_id": "…", "row": 2, "value": 3.5}]}            a regressor

Each item is checked against the served model's label type (one of its classes, as /predict
answers them; a finite number) and becomes one FeedbackRecord. Labels may come days later: the
request id joins them to the answer's record wherever the records are kept (not here).
"""

from __future__ import annotations

import math
import time
from typing import Any

from function.core.errors import InvalidInput
from function.core.model import LoadedModel
from function.core.records import FeedbackRecord, json_text
from function.core.schema import kind
from function.service import request_ids
from function.service.payloads import timestamp

MAX_ITEMS = 1000  # items per request; more is a 422
ITEM_KEYS = {"request_id", "row"}


def parse(body: Any, model: LoadedModel, client: str, max_rows: int) -> list[FeedbackRecord]:
    """The records for a feedback body; 422 naming the exact place of the first fault."""
    if not isinstance(body, dict) or set(body) != {"feedback"}:
        shown = sorted(body) if isinstance(body, dict) else kind(body)
        raise InvalidInput(f'the body must be {{"feedback": [...]}}, got {shown}')
    items = body["feedback"]
    if not isinstance(items, list) or not items:
        raise InvalidInput("expected a non-empty list of items", field="feedback")
    if len(items) > MAX_ITEMS:
        raise InvalidInput(
            f"{len(items)} items exceed the limit of {MAX_ITEMS} per request", field="feedback"
        )
    classifier = model.metadata.task == "classification"
    answer = "label" if classifier else "value"
    classes = list(model.estimator.classes_.tolist()) if classifier else []
    now = timestamp(time.time())
    records = []
    for i, item in enumerate(items):
        where = f"feedback[{i}]"
        if not isinstance(item, dict):
            raise InvalidInput(f"expected an object, got {kind(item)}", field=where)
        expected = ITEM_KEYS | {answer}
        if set(item) != expected:
            missing, extra = sorted(expected - set(item)), sorted(set(item) - expected)
            said = ", ".join([*(f"missing {m}" for m in missing), *(f"unknown {e}" for e in extra)])
            raise InvalidInput(f"{said}: an item holds request_id, row and {answer}",
                               field=where)  # fmt: skip
        request_id = item["request_id"]
        if not isinstance(request_id, str) or not request_ids.valid(request_id):
            raise InvalidInput(
                "expected an earlier answer's X-Request-Id: 1 to 128 characters of an HTTP token, "
                f"got {json_text(request_id)[:40]}",
                field=f"{where}.request_id",
            )
        row = item["row"]
        if type(row) is not int or not 0 <= row < max_rows:
            raise InvalidInput(
                f"expected a row index from 0 to {max_rows - 1}, got {json_text(row)}",
                field=f"{where}.row",
            )
        truth = item[answer]
        if classifier:
            if not any(_same(truth, c) for c in classes):
                shown = ", ".join(json_text(c) for c in classes)
                raise InvalidInput(
                    f"{json_text(truth)} is not one of the model's classes: {shown}",
                    field=f"{where}.label",
                )
        elif (
            isinstance(truth, bool)
            or not isinstance(truth, int | float)
            or not math.isfinite(truth)
        ):
            raise InvalidInput(f"expected a finite number, got {kind(truth)}",
                               field=f"{where}.value")  # fmt: skip
        records.append(FeedbackRecord(request_id, row, now, model.name, json_text(truth), client))
    return records


def _same(given: Any, label: Any) -> bool:
    """A label as /predict answers it: the same value of the same JSON type (1 is not "1")."""
    return type(given) is type(label) and given == label
