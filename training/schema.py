"""Infer a fitted pipeline's feature schema from its data, and probe what the pipeline accepts.

Types come from the data's columns: floats are numbers, whole-number columns integers, booleans
booleans, and text categories. A category's values come from the fitted model itself: each
encoder's `categories_` (OneHotEncoder, OrdinalEncoder, TargetEncoder, and the encoder
HistGradientBoosting builds for native categories), found through nested Pipelines and
ColumnTransformers. The rows given are for evaluation and never narrow nor widen what the model
accepts; only where no encoder can be traced to the column (a custom transformer) are the values
seen in the data used, and the feature says so (`categories_from`).

Whether a feature may be missing, and whether a category accepts a value never seen, is not
guessed from the pipeline's steps: each is tried on the fitted pipeline with the example row,
through the same checks the service applies.

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

from function.core.schema import Feature, Schema
from training.errors import TrainingError

UNSEEN = "\x00modelrun-probe-unseen"  # a category value no training data holds
UNTRACED = "\x00modelrun-untraced-"  # the name of a column that no longer holds input values


def infer_schema(frame: Any, pipeline: Any) -> tuple[Schema, dict[str, Any]]:
    """The schema the service will enforce for this pipeline, and its example row."""
    frame_input = hasattr(pipeline, "feature_names_in_")
    known = fitted_categories(pipeline, [str(c) for c in frame.columns])
    features = tuple(_feature(frame[c], str(c), known.get(str(c))) for c in frame.columns)
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


def fitted_categories(estimator: Any, names: list[str] | None) -> dict[str, tuple[str, ...]]:
    """Each input column's categories as the fitted encoders know them, by column name: `names`
    are the columns `estimator` receives (None: not traceable to input columns). A column that
    several encoders see side by side keeps the values all of them know; one whose encoder knows
    values other than text (or only a gap) is left out, so its type and values come from the
    data."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    traced: list[str | None] | None = None if names is None else list(names)
    for column, values in _encoded_columns(estimator, traced):
        found.setdefault(column, []).append(values)
    known = {}
    for column, lists in found.items():
        present = [[v for v in values if not _is_gap(v)] for values in lists]
        if all(p and all(isinstance(v, str) for v in p) for p in present):
            others = [set(p) for p in present[1:]]
            known[column] = tuple(v for v in present[0] if all(v in o for o in others))
    return known


def _encoded_columns(
    estimator: Any, names: list[str | None] | None
) -> list[tuple[str, tuple[Any, ...]]]:
    """(input column, the categories an encoder fitted for it) for every encoder reachable from
    the estimator's input with the column's values intact. A name None is a column that is no
    longer an input's values (an encoder's codes, handed on under the input's name)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if names is None:
        return []
    if isinstance(estimator, Pipeline):
        found = []
        for _, step in estimator.steps:
            if step is None or step == "passthrough":
                continue
            encoded = _encoded_columns(step, names)
            found += encoded
            # After an encoder, its columns hold codes (a ColumnTransformer of an OrdinalEncoder
            # keeps their names, and HistGradientBoosting then encodes the codes again).
            coded = {column for column, _ in encoded}
            kept = _same_columns_out(step, names)
            if kept is None:
                break
            names = [None if n in coded else n for n in kept]
        return found
    if isinstance(estimator, ColumnTransformer):
        indices = getattr(estimator, "_transformer_to_input_indices", {})
        found = []
        for part, transformer, _ in estimator.transformers_:
            if part in indices and not isinstance(transformer, str):
                found += _encoded_columns(transformer, [names[i] for i in indices[part]])
        return found
    preprocessor = getattr(estimator, "_preprocessor", None)  # HistGradientBoosting's own encoder
    if isinstance(preprocessor, ColumnTransformer):
        return _encoded_columns(preprocessor, names)
    categories = getattr(estimator, "categories_", None)
    if isinstance(categories, list) and len(categories) == len(names):
        return [
            (n, tuple(c.tolist())) for n, c in zip(names, categories, strict=True) if n is not None
        ]
    return []


def _same_columns_out(step: Any, names: list[str | None]) -> list[str | None] | None:
    """The columns a pipeline step hands on, when each is an input column unchanged in identity
    (an imputer, a scaler); None when the step makes new columns (an encoder) or cannot say."""
    stand_ins = [n if n is not None else f"{UNTRACED}{j}" for j, n in enumerate(names)]
    try:
        out = [str(n) for n in step.get_feature_names_out(stand_ins)]
    except Exception:  # a step that cannot name its output: the trail ends
        return None
    if not set(out) <= set(stand_ins):
        return None
    return [None if n.startswith(UNTRACED) else n for n in out]


def _is_gap(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _feature(column: Any, name: str, known: tuple[str, ...] | None) -> Feature:
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
    if known is not None:
        return Feature(name, "category", categories=known, dtype=dtype, categories_from="model")
    categories = sorted({str(v) for v in values})
    return Feature(name, "category", categories=tuple(categories), dtype=dtype,
                   categories_from="data")  # fmt: skip


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
    from function.core.predict import rows_to_input

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
