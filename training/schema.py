"""Infer a fitted pipeline's feature schema from its data, and probe what the pipeline accepts.

Types come from the data's columns: floats are numbers, whole-number columns integers, booleans
booleans, and text categories with the values seen. Whether a feature may be missing, and whether
a category accepts a value never seen, is not guessed from the pipeline's steps: each is tried on
the fitted pipeline with the example row, through the same checks the service applies.

A missing value is allowed when the pipeline takes it and either its preprocessing fills it in
(an imputer; an encoder for which missing is a category) — "imputed" — or it reaches an estimator
that handles missing values and the training data had gaps in that column — "native". An
estimator that merely tolerates a value it never saw in training (a forest sends it down the
larger branch) does not make a feature nullable.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from function.schema import Feature, Schema
from training.errors import TrainingError

UNSEEN = "\x00modelrun-probe-unseen"  # a category value no training data holds


def infer_schema(frame: Any, pipeline: Any) -> tuple[Schema, dict[str, Any]]:
    """The schema the service will enforce for this pipeline, and its example row."""
    frame_input = hasattr(pipeline, "feature_names_in_")
    features = tuple(_feature(frame[c], str(c)) for c in frame.columns)
    example = _example(frame, features)
    # Probe with a schema that lets everything through; keep what the pipeline accepts.
    permissive = Schema(
        tuple(replace(f, nullable=True, unknown="accept") for f in features), frame_input
    )
    row = [example[f.name] for f in features]
    probed = []
    for j, feature in enumerate(features):
        gap = _as_input(permissive, [*row[:j], None, *row[j + 1 :]])
        missing = ""
        if _accepts(pipeline, gap):
            if _filled_in(pipeline, gap):
                missing = "imputed"
            elif frame[feature.name].isna().any():
                missing = "native"
        unknown = feature.unknown
        if feature.type == "category":
            unseen = _as_input(permissive, [*row[:j], UNSEEN, *row[j + 1 :]])
            unknown = "accept" if _accepts(pipeline, unseen) else "refuse"
        probed.append(replace(feature, nullable=bool(missing), missing=missing, unknown=unknown))
    schema = Schema(tuple(probed), frame_input)
    if not _accepts(pipeline, _as_input(schema, row)):
        raise TrainingError("the model cannot predict its own example row (training medians)")
    return schema, example


def _feature(column: Any, name: str) -> Feature:
    import pandas as pd

    types = pd.api.types
    dtype = str(column.dtype)
    values = column.dropna()
    if types.is_bool_dtype(column) or (len(values) and values.map(type).eq(bool).all()):
        return Feature(name, "boolean", dtype=dtype)
    if types.is_integer_dtype(column):
        return Feature(name, "integer", dtype=dtype)
    if types.is_numeric_dtype(column):
        return Feature(name, "number", dtype=dtype)
    categories = sorted({str(v) for v in values})
    return Feature(name, "category", categories=tuple(categories), dtype=dtype)


def _example(frame: Any, features: tuple[Feature, ...]) -> dict[str, Any]:
    """A row any client can send (the deploy's smoke test does): each number's median, each
    category's most frequent value; aggregates rather than somebody's record."""
    example: dict[str, Any] = {}
    for feature in features:
        values = frame[feature.name].dropna()
        if feature.type in ("number", "integer"):
            median = float(np.median(values.to_numpy(dtype=np.float64)))
            example[feature.name] = round(median) if feature.type == "integer" else median
        elif feature.type == "boolean":
            example[feature.name] = bool(values.astype(bool).mean() >= 0.5)
        else:
            example[feature.name] = str(values.astype(str).mode().iloc[0])
    return example


def _as_input(schema: Schema, row: list[Any]) -> Any:
    """One row built as the service builds a request's rows for this schema."""
    from function.predict import rows_to_input

    return rows_to_input([row], "probe", schema)


def _filled_in(pipeline: Any, X: Any) -> bool:
    """Whether the pipeline's steps before its estimator leave no missing value in X."""
    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) < 2:
        return False
    try:
        transformed = pipeline[:-1].transform(X)
        dense = transformed.toarray() if hasattr(transformed, "toarray") else transformed
        return not np.isnan(np.asarray(dense, dtype=np.float64)).any()
    except (TypeError, ValueError):  # not numbers after its steps: not known to be filled
        return False


def _accepts(pipeline: Any, X: Any) -> bool:
    """Whether the fitted pipeline predicts X (a row built by _as_input)."""
    try:
        with np.errstate(all="ignore"):
            prediction = np.asarray(pipeline.predict(X))
    except Exception:  # any refusal means "not accepted"
        return False
    return prediction.dtype.kind != "f" or bool(np.isfinite(prediction).all())
