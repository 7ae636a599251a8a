"""Compile a fitted pipeline for the numpy runtime (function/core/numpy_model.py) and verify it
before it may be served.

A pipeline compiles when its steps are column steps this module knows (a ColumnTransformer of
one-hot and ordinal encoders, imputers, scalers and passthrough columns, or such steps in a row)
and its estimator is a HistGradientBoosting model without native categorical splits. The file
holds their fitted values (categories_, statistics_, mean_/scale_, the trees' nodes), no code.

It is written only if the compiled model's answers are *identical* to the pipeline's (labels
equal, probabilities and predictions equal to the last bit: tolerance 0) on the hold-out rows and
on generated rows: every known category, an unknown one where the schema accepts it, a gap in
each column that may be missing, each split threshold and its neighbouring floats, zero,
±1e300 and the data's edges; all at once, and in parts of CHUNK rows (the service's calls are of
any size). Otherwise scikit-learn serves, and the record says why.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from function.core.numpy_model import FORMAT, numpy_model
from function.core.schema import MAX_ABS_VALUE, from_metadata

GENERATED_ROWS = 3000
CHUNK = 97
LINK_NAMES = {"IdentityLink": "identity", "LogLink": "log", "LogitLink": "logit",
              "MultinomialLogit": "multinomial_logit"}  # fmt: skip


class Unsupported(Exception):
    """A part of the pipeline this compiler does not reproduce (the message says which)."""


def export(
    pipeline: Any, X_fit: Any, X_eval: Any, metadata: dict[str, Any], seed: int
) -> tuple[bytes | None, dict[str, Any]]:
    """Return (model.numpy.json bytes or None, the record that goes into metadata.json)."""
    import sklearn

    try:
        spec = compile_pipeline(pipeline, metadata)
    except Unsupported as e:
        reason = f"not compiled: {e}; scikit-learn serves it"
        return None, {"exported": False, "verified": False, "reason": reason}
    except Exception as e:  # it reads fitted internals (_predictors): another version may differ
        reason = f"not compiled because {type(e).__name__}: {e}; scikit-learn serves it"[:300]
        return None, {"exported": False, "verified": False, "reason": reason}
    data = json.dumps(spec, separators=(",", ":")).encode()
    record: dict[str, Any] = {"exported": True, "sklearn": sklearn.__version__}
    try:
        record.update(verify(data, pipeline, X_fit, X_eval, metadata, seed))
    except Exception as e:  # a row it or scikit-learn cannot take: not verified, say why
        reason = f"not verified because {type(e).__name__}: {e}; scikit-learn serves it"[:300]
        record.update(verified=False, reason=reason)
    return (data if record["verified"] else None), record


# --- compiling ----------------------------------------------------------------------------


def compile_pipeline(pipeline: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's steps and trees as the numpy runtime reads them; Unsupported otherwise."""
    import sklearn

    steps = [s for _, s in pipeline.steps] if hasattr(pipeline, "steps") else [pipeline]
    names = list(metadata["feature_names"])
    compiled: list[dict[str, Any]] = []
    width = len(names)
    for step in steps[:-1]:
        spec, width = _transformer(step, names if not compiled else None, width)
        compiled.append(spec)
    final = steps[-1]
    trees, link = _trees(final, width)
    spec = {"format": FORMAT, "sklearn": sklearn.__version__, "steps": compiled,
            "trees": trees, "link": link}  # fmt: skip
    if metadata["task"] == "classification":
        spec["classes"] = final.classes_.tolist()
    return spec


def _transformer(step: Any, names: list[str] | None, width: int) -> tuple[dict[str, Any], int]:
    """One fitted step as a spec, and how many columns it outputs."""
    kind = type(step).__name__
    if kind == "ColumnTransformer":
        return _column_transformer(step, names, width)
    if kind == "Pipeline":
        raise Unsupported("a Pipeline nested as a step outside a ColumnTransformer is not compiled")
    return _one_step(step, width)


def _column_transformer(
    step: Any, names: list[str] | None, width: int
) -> tuple[dict[str, Any], int]:
    if getattr(step, "sparse_output_", False):
        raise Unsupported("the ColumnTransformer outputs a sparse matrix")
    parts, total = [], 0
    for name, transformer, columns in step.transformers_:
        indices = _indices(columns, names, width)
        if transformer == "drop" or not indices:
            continue
        inner = (
            [s for _, s in transformer.steps]
            if type(transformer).__name__ == "Pipeline"
            else [transformer]
        )
        specs, out = [], len(indices)
        for part in inner:
            if part == "passthrough" or _identity(part):
                continue
            spec, out = _one_step(part, out)
            specs.append(spec)
        expected = step.output_indices_[name]
        if out != expected.stop - expected.start:
            raise Unsupported(f"the ColumnTransformer's part {name!r} outputs another width")
        parts.append({"columns": indices, "steps": specs})
        total += out
    return {"kind": "columns", "parts": parts}, total


def _identity(step: Any) -> bool:
    return type(step).__name__ == "FunctionTransformer" and step.func is None


def _indices(columns: Any, names: list[str] | None, width: int) -> list[int]:
    """A ColumnTransformer's column selection as input positions."""
    selected = [columns] if isinstance(columns, (str, int, np.integer)) else columns
    if isinstance(selected, slice) or callable(selected):
        raise Unsupported("a ColumnTransformer selecting columns by a slice or a callable")
    selected = list(np.asarray(selected).tolist())
    if selected and all(isinstance(c, bool) for c in selected):
        return [j for j, keep in enumerate(selected) if keep]
    if all(isinstance(c, int) for c in selected):
        return [int(c) for c in selected]
    if names is None or not all(isinstance(c, str) and c in names for c in selected):
        raise Unsupported("a ColumnTransformer selecting columns the input does not name")
    return [names.index(str(c)) for c in selected]


def _one_step(step: Any, width: int) -> tuple[dict[str, Any], int]:
    """One fitted column step (of `width` columns) as a spec, and how many columns it outputs."""
    spec: dict[str, Any]
    kind = type(step).__name__
    if getattr(step, "n_features_in_", width) != width:
        raise Unsupported(f"a {kind} fitted on {step.n_features_in_} columns is given {width}")
    if kind == "OneHotEncoder":
        if step.drop_idx_ is not None or getattr(step, "_infrequent_enabled", False):
            raise Unsupported("a OneHotEncoder that drops or groups categories")
        categories = _categories(step)
        ignore = "error" if step.handle_unknown == "error" else "ignore"
        spec = {"kind": "one_hot", "categories": categories, "unknown": ignore}
        return spec, sum(len(c) for c in categories)
    if kind == "OrdinalEncoder":
        if getattr(step, "_infrequent_enabled", False) or np.dtype(step.dtype) != np.float64:
            raise Unsupported(
                "an OrdinalEncoder that groups categories or outputs other than float64"
            )
        unknown = step.unknown_value if step.handle_unknown == "use_encoded_value" else None
        spec = {"kind": "ordinal", "categories": _categories(step),
                "unknown_value": unknown, "missing_value": step.encoded_missing_value}  # fmt: skip
        return spec, len(spec["categories"])
    if kind == "SimpleImputer":
        statistics = list(step.statistics_.tolist())
        if step.add_indicator or not _is_nan(step.missing_values):
            raise Unsupported(
                "a SimpleImputer with indicator columns or other missing values than NaN"
            )
        if any(_is_nan(s) for s in statistics):
            raise Unsupported("a SimpleImputer with a column that was empty when fitted")
        return {"kind": "impute", "statistics": statistics}, len(statistics)
    if kind == "StandardScaler":
        mean = None if step.mean_ is None or not step.with_mean else step.mean_.tolist()
        scale = None if step.scale_ is None or not step.with_std else step.scale_.tolist()
        return {"kind": "scale", "mean": mean, "scale": scale}, int(step.n_features_in_)
    if kind == "MinMaxScaler" and not step.clip:
        return {"kind": "min_max", "scale": step.scale_.tolist(), "min": step.min_.tolist()}, int(
            step.n_features_in_
        )
    raise Unsupported(f"the numpy runtime does not compile a {kind} step")


def _categories(encoder: Any) -> list[list[Any]]:
    """An encoder's categories: strings (a NaN last) or numbers, nothing else."""
    out = []
    for categories in encoder.categories_:
        values = categories.tolist()
        texts = categories.dtype == object and all(isinstance(v, str) or _is_nan(v) for v in values)
        if not (texts or categories.dtype.kind in "iuf"):
            raise Unsupported(f"an encoder's categories of type {categories.dtype}")
        out.append(values)
    return out


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


def _trees(estimator: Any, width: int) -> tuple[dict[str, Any], str]:
    kind = type(estimator).__name__
    if kind not in ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor"):
        raise Unsupported(f"the numpy runtime compiles HistGradientBoosting models, not {kind}")
    if (
        getattr(estimator, "_preprocessor", None) is not None
        or estimator.is_categorical_ is not None
    ):
        raise Unsupported("HistGradientBoosting splits on categories natively (bitsets)")
    if estimator.n_features_in_ != width:
        raise Unsupported(
            f"the estimator takes {estimator.n_features_in_} columns, the steps give {width}"
        )
    link = LINK_NAMES.get(type(estimator._loss.link).__name__)
    if link is None:
        raise Unsupported(f"its loss's link {type(estimator._loss.link).__name__}")
    nodes = []
    for iteration in estimator._predictors:
        for predictor in iteration:
            n = predictor.nodes
            if n["is_categorical"].any():
                raise Unsupported("HistGradientBoosting splits on categories natively (bitsets)")
            nodes.append([n[field].tolist() for field in
                          ("feature_idx", "num_threshold", "missing_go_to_left", "left", "right",
                           "is_leaf", "value")])  # fmt: skip
    baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).ravel().tolist()
    return {"baseline": baseline, "nodes": nodes}, link


# --- verifying ----------------------------------------------------------------------------


def verify(
    data: bytes, pipeline: Any, X_fit: Any, X_eval: Any, metadata: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Compare the compiled model with the pipeline, both fed as the service feeds them."""
    import dataclasses

    model = numpy_model(data, metadata)
    schema = from_metadata(metadata, "the compiled model")
    plain = dataclasses.replace(schema, frame=False)
    columns = _rows(X_fit, X_eval, schema, model, seed)
    n = len(columns[0])

    def field(i: int, j: int) -> str:
        return f"row {i} {schema.names[j]}"

    classifier = metadata["task"] == "classification"
    with np.errstate(all="ignore"):  # 1e300 in a whole-number column overflows its int64 cast
        theirs_input = schema.check_columns(columns, field)
        ours_input = plain.check_columns(columns, field)
        expected = [pipeline.predict(theirs_input)]
        if classifier and hasattr(pipeline, "predict_proba"):
            expected.append(pipeline.predict_proba(theirs_input))
        whole = _answers(model, ours_input, classifier)
        parts = [_answers(model, ours_input[i : i + CHUNK], classifier) for i in range(0, n, CHUNK)]
    in_parts = [np.concatenate([p[k] for p in parts]) for k in range(len(whole))]
    record: dict[str, Any] = {"rows_checked": n, "tolerance": 0.0}
    mismatched = 0
    for ours in (whole, in_parts):
        mismatched = max(mismatched, int(np.sum(ours[0].astype(str) != expected[0].astype(str))))
        if not classifier:
            mismatched = max(mismatched, int(np.sum(~_same(ours[0], expected[0]))))
        if len(expected) > 1:
            mismatched = max(mismatched, int(np.sum(~_same(ours[1], expected[1]).all(axis=1))))
    record["rows_mismatched"] = mismatched
    record["verified"] = mismatched == 0
    if mismatched:
        record["reason"] = (
            f"not served: the compiled model differs from scikit-learn on {mismatched} of {n} "
            "checked rows; scikit-learn serves it"
        )
    return record


def _answers(model: Any, X: np.ndarray, classifier: bool) -> list[np.ndarray]:
    if classifier:
        return list(model.predict_both(X))
    return [model.predict(X)]


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The same float64 bits (so -0.0 is not 0.0: JSON tells them apart), or both NaN."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a.view(np.int64) == b.view(np.int64)) | (np.isnan(a) & np.isnan(b))


def _rows(X_fit: Any, X_eval: Any, schema: Any, model: Any, seed: int) -> list[list[Any]]:
    """The rows to check, as JSON values by column (None: missing): the hold-out rows, then
    generated ones."""
    rng = np.random.default_rng(seed)
    held = _as_columns(X_eval, schema)
    fitted = _as_columns(X_fit, schema)
    thresholds = _thresholds_by_input(model, schema)
    generated = []
    for j, feature in enumerate(schema.features):
        values = [v for v in fitted[j] if v is not None]
        generated.append(_values(feature, values, thresholds.get(j, []), rng))
    return [held[j] + generated[j] for j in range(len(schema.features))]


def _as_columns(X: Any, schema: Any) -> list[list[Any]]:
    """A frame's or matrix's columns as JSON-like values (None where missing)."""
    out = []
    for j, feature in enumerate(schema.features):
        column = X[feature.name] if hasattr(X, "columns") else np.asarray(X)[:, j]
        values: list[Any] = []
        for v in np.asarray(column, dtype=object).tolist():
            if v is None or _is_nan(v):
                values.append(None)
            elif feature.type == "boolean":
                values.append(bool(v))
            elif feature.type in ("number", "integer"):
                values.append(int(v) if feature.type == "integer" else float(v))
            else:
                values.append(str(v))
        out.append(values)
    return out


def _thresholds_by_input(model: Any, schema: Any) -> dict[int, list[float]]:
    """Split thresholds on columns that pass straight from an input to the trees (numbers
    checked at and beside each threshold)."""
    found: dict[int, list[float]] = {}
    width = len(schema.features)
    probe = np.zeros((1, width), dtype=object)
    for j, feature in enumerate(schema.features):
        probe[0, j] = feature.categories[0] if feature.type == "category" else 0.0
    try:
        base = model.transform(probe)
    except ValueError:
        return found
    thresholds = model.trees.thresholds
    for j, feature in enumerate(schema.features):
        if feature.type not in ("number", "integer"):
            continue
        moved = probe.copy()
        moved[0, j] = 1.0
        after = model.transform(moved)[0]
        changed = np.flatnonzero(after != base[0])
        if len(changed) == 1 and (base[0, changed[0]], after[changed[0]]) == (0.0, 1.0):
            found[j] = thresholds.get(int(changed[0]), [])
    return found


def _values(feature: Any, seen: list[Any], thresholds: list[float], rng: Any) -> list[Any]:
    """GENERATED_ROWS values of one feature, shuffled: its edges, thresholds and categories
    first, then draws from what was seen."""
    special: list[Any] = []
    if feature.type in ("number", "integer"):
        low, high = (min(seen), max(seen)) if seen else (0.0, 1.0)
        near = [
            t for x in thresholds for t in (x, np.nextafter(x, -np.inf), np.nextafter(x, np.inf))
        ]
        special = [0.0, -0.0, low, high, low - 1, high + 1, MAX_ABS_VALUE, -MAX_ABS_VALUE, *near]
        special = [v for v in special if abs(v) <= MAX_ABS_VALUE]
        if feature.type == "integer":
            special = sorted(
                {float(np.floor(v)) for v in special} | {float(np.ceil(v)) for v in special}
            )
            draws = rng.integers(int(low) - 2, int(high) + 3, GENERATED_ROWS).astype(float).tolist()
        else:
            draws = rng.uniform(
                low - (high - low) * 0.1, high + (high - low) * 0.1, GENERATED_ROWS
            ).tolist()
    elif feature.type == "boolean":
        special, draws = [False, True], rng.integers(0, 2, GENERATED_ROWS).astype(bool).tolist()
    else:
        special = list(feature.categories)
        if feature.unknown == "accept":
            special.append("a value never seen")
        draws = [special[i] for i in rng.integers(0, len(special), GENERATED_ROWS)]
    if feature.nullable:
        special.append(None)
        draws = [
            None if r < 0.1 else v for v, r in zip(draws, rng.random(GENERATED_ROWS), strict=True)
        ]
    values = special + draws[: GENERATED_ROWS - len(special)]
    return [values[i] for i in rng.permutation(len(values))]
