"""baseline.json, a version's drift baseline: its one type and its one parser.

    {"schema_version": 1, "bins", "rows", "prediction_rows",
     "features": [{"name", "kind": "number", "edges", "min", "max", "labels", "shares"}
                  | {"name", "kind": "category", "values", "labels", "shares"}, ...],
     "prediction": {the same, without "name"}}

Training builds it (function/core/drift.py `build_baseline`); the service reads it back, one of
the version's files, digest checked, then parsed here. A baseline from before schema_version has
the same layout: version 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from function.core.errors import IntegrityError

BASELINE_FILE = "baseline.json"
SCHEMA_VERSION = 1
KINDS = ("number", "category")


@dataclass(frozen=True)
class Bins:
    """One feature's bins (the predictions' when `name` is None) and its training shares."""

    name: str | None
    kind: str  # number: interior edges, min and max; category: its known values
    labels: tuple[str, ...]
    shares: tuple[float, ...]  # () while the baseline is being built
    edges: tuple[float, ...] = ()
    min: float = 0.0
    max: float = 0.0
    values: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        named = {} if self.name is None else {"name": self.name}
        if self.kind == "number":
            shape: dict[str, Any] = {"edges": list(self.edges), "min": self.min, "max": self.max}
        else:
            shape = {"values": list(self.values)}
        return {
            **named,
            "kind": self.kind,
            **shape,
            "labels": list(self.labels),
            "shares": list(self.shares),
        }


@dataclass(frozen=True)
class Baseline:
    """The training rows' bins for every feature, and the predictions' on the hold-out rows."""

    bins: int
    rows: int
    prediction_rows: int
    features: tuple[Bins, ...]
    prediction: Bins
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "bins": self.bins,
            "rows": self.rows,
            "prediction_rows": self.prediction_rows,
            "features": [f.to_json() for f in self.features],
            "prediction": self.prediction.to_json(),
        }


def parse_baseline(data: bytes, where: str) -> Baseline:
    """A baseline file read back and checked; IntegrityError naming what is wrong with it."""
    try:
        document = json.loads(data)
        if not isinstance(document, dict):
            raise TypeError("not an object")
        schema = document.get("schema_version", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            raise ValueError(f"schema_version {schema!r:.20} is not {SCHEMA_VERSION}")
        if not isinstance(document["features"], list):
            raise TypeError("features must be a list")
        features = tuple(
            _bins(record, f"features[{i}]", feature=True)
            for i, record in enumerate(document["features"])
        )
        prediction = _bins(document["prediction"], "prediction", feature=False)
        counts = {name: document.get(name, 0) for name in ("bins", "rows", "prediction_rows")}
        for name, count in counts.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise TypeError(f"{name} must be a count, got {count!r:.40}")
    except (ValueError, KeyError, TypeError) as e:
        raise IntegrityError(f"{where} {BASELINE_FILE} is not a drift baseline: {e}") from e
    return Baseline(
        counts["bins"], counts["rows"], counts["prediction_rows"], features, prediction, schema
    )


def _bins(record: Any, at: str, feature: bool) -> Bins:
    """A feature's (with its "(missing)" bin) or the predictions' bins and their shares."""
    if not isinstance(record, dict):
        raise TypeError(f"{at} must be an object")
    name = record.get("name", "prediction")
    if feature and not isinstance(name, str):
        raise TypeError(f"{at}.name must be a string")
    extra = 1 if feature else 0
    if record["kind"] == "number":
        edges = record["edges"]
        if not isinstance(edges, list) or not all(_number(e) for e in edges):
            raise ValueError(f"{name}: edges must be numbers")
        if not all(_number(record[end]) for end in ("min", "max")):
            raise ValueError(f"{name}: min and max must be numbers")
        bins = len(edges) + 1
    elif record["kind"] == "category":
        values = record["values"]
        if not isinstance(values, list):
            raise ValueError(f"{name}: values must be a list")
        bins = len(values) + (2 if feature else 0)  # (other), (unknown)
    else:
        raise ValueError(f"kind {record['kind']!r:.40} is neither number nor category")
    shares, labels = record["shares"], record["labels"]
    if not isinstance(shares, list) or len(shares) != bins + extra or not all(map(_number, shares)):
        raise ValueError(f"{name}: expected {bins + extra} shares")
    if not isinstance(labels, list) or len(labels) != len(shares):
        raise ValueError(f"{name}: expected a label for each share")
    if not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{name}: expected a label for each share")
    number = record["kind"] == "number"
    return Bins(
        name=name if feature else None,
        kind=record["kind"],
        labels=tuple(labels),
        shares=tuple(float(x) for x in shares),
        edges=tuple(float(e) for e in record["edges"]) if number else (),
        min=float(record["min"]) if number else 0.0,
        max=float(record["max"]) if number else 0.0,
        values=() if number else tuple(map(str, record["values"])),
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
