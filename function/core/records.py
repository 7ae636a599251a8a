"""Payload records: what the service answered (and failed to), and the truth that came later.

One record is one JSON object, written as one line: a structured log line in the cloud (which a
Log Router sink routes into BigQuery), a line of a local file offline. The two kinds share a table:

    {"schema_version": 1, "kind": "prediction", "request_id": "…", "time": "2026-12-08T02:05:00Z",
     "model": "iris", "version": "v3", "role": "answer", "protocol": "native", "route": "/predict",
     "status": 200, "outcome": "ok", "latency_ms": 3.2, "client": "key:a1b2c3d4",
     "inputs": "[{\"sepal_length\": 5.1, …}]", "outputs": "[{\"label\": \"setosa\", …}]",
     "truncated": false}
    {"schema_version": 1, "kind": "feedback", "request_id": "…", "row": 0, "time": "…",
     "model": "iris", "truth": "\"setosa\"", "client": "key:a1b2c3d4"}

`inputs`, `outputs` and `truth` are JSON text, not nested objects: feature names differ between
models and a value's type between rows (1 and 1.5), and a BigQuery table written by a sink keeps the
column types of the first entries it saw, so nested values would make later entries unwritable.
Queries read them with JSON functions (`JSON_QUERY_ARRAY(outputs)` in BigQuery).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, Literal

import orjson

from function.core.errors import IntegrityError

SCHEMA_VERSION = 1
# A record's JSON text stays under this; above it the inputs and outputs are left out (and
# `truncated` is true), so the line still says who asked, what happened and how long it took.
# Cloud Logging refuses entries over 256 KB; this leaves room for the entry's own fields.
MAX_RECORD_BYTES = 200_000
REQUEST_ID_MAX = 128

Role = Literal["answer", "shadow"]


@dataclass(frozen=True)
class PredictionRecord:
    """One answer (or refusal) the service gave, for one model version and role."""

    request_id: str
    time: str
    model: str
    version: str | None  # None when no model was reached (a refusal before loading)
    role: Role
    protocol: str  # "native", "vertex" or "v2"
    route: str
    status: int
    outcome: str  # "ok", or the problem type's last path segment ("invalid-input")
    latency_ms: float
    client: str  # who asked, never the key itself
    inputs: str | None  # JSON text: a list of {feature: value} rows, redacted
    outputs: str | None  # JSON text: a list of {"label", "probabilities"} or {"value"} rows
    truncated: bool = False
    schema_version: int = SCHEMA_VERSION
    kind: Literal["prediction"] = "prediction"


@dataclass(frozen=True)
class FeedbackRecord:
    """The true label (or value) of one row of an earlier answer."""

    request_id: str
    row: int
    time: str
    model: str
    truth: str  # JSON text: the label or value
    client: str
    schema_version: int = SCHEMA_VERSION
    kind: Literal["feedback"] = "feedback"


Record = PredictionRecord | FeedbackRecord


def encode(record: Record) -> str:
    """Return the record as one line of JSON, left without inputs and outputs above the cap."""
    values = {name: getattr(record, name) for name in _NAMES[record.kind]}  # asdict: 4x slower
    line = _dumps(values)
    if len(line.encode()) <= MAX_RECORD_BYTES or not isinstance(record, PredictionRecord):
        return line
    return _dumps(values | {"inputs": None, "outputs": None, "truncated": True})


# orjson writes NaN and ±inf as null itself, and numpy values as numbers: a payload record is
# written for every sampled request, and this costs a fifth of the standard library's walk.
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def json_text(value: Any) -> str:
    """Encode a value for an `inputs`, `outputs` or `truth` field (NaN and ±inf as null)."""
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except TypeError:  # what orjson will not write (an integer beyond 64 bits): the slow way
        return json.dumps(_finite(value), separators=(",", ":"), ensure_ascii=False)


_NAMES = {
    "prediction": tuple(f.name for f in dataclass_fields(PredictionRecord)),
    "feedback": tuple(f.name for f in dataclass_fields(FeedbackRecord)),
}
_FIELDS = {kind: set(names) for kind, names in _NAMES.items()}


def parse(line: str, where: str) -> Record:
    """Parse one record line, refusing any other version or shape (`where` names the line)."""
    try:
        fields = json.loads(line)
    except ValueError as e:
        raise IntegrityError(f"{where}: not JSON ({e})") from None
    if not isinstance(fields, Mapping):
        raise IntegrityError(f"{where}: a record is a JSON object")
    if fields.get("schema_version") != SCHEMA_VERSION:
        raise IntegrityError(
            f"{where}: schema_version {fields.get('schema_version')!r} is not {SCHEMA_VERSION}"
        )
    kind = fields.get("kind")
    if kind not in _FIELDS:
        raise IntegrityError(f"{where}: kind {kind!r} is neither 'prediction' nor 'feedback'")
    if set(fields) != _FIELDS[kind]:
        missing, extra = _FIELDS[kind] - set(fields), set(fields) - _FIELDS[kind]
        raise IntegrityError(f"{where}: missing {sorted(missing)}, unknown {sorted(extra)}")
    if not isinstance(fields["request_id"], str) or not fields["request_id"]:
        raise IntegrityError(f"{where}: request_id must be a non-empty string")
    cls = PredictionRecord if kind == "prediction" else FeedbackRecord
    return cls(**fields)


def _dumps(values: dict[str, Any]) -> str:
    return orjson.dumps(values).decode()  # the fields are text and finite numbers


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
