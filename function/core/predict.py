"""The prediction core: turn a request body into a checked matrix, and a matrix into answers."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from function.core.artifact import ARGMAX_CLASSIFIERS
from function.core.errors import InvalidInput
from function.core.model import LoadedModel
from function.core.schema import MAX_ABS_VALUE, Schema, kind, number_or_missing, show

PARAMETERS = {"probabilities": bool}
TYPE_WORDS = {bool: "true or false"}

# How a prediction runs the model: directly, or through the service's micro-batcher.
Run = Callable[[Any, Any, bool], tuple[Any, Any]]


@dataclass(frozen=True)
class Instances:
    """Rows as the pipeline takes them (a matrix or a DataFrame), where each came from in the
    request, and what was asked for."""

    X: Any
    probabilities: bool = True
    where: str = "instances[{}]"  # a row's place in the request, from its index

    def field(self, i: int) -> str | None:
        """Where row i came from in the request (None for a bare object of features)."""
        return self.where.format(i) or None


def too_many_rows(rows: int, max_instances: int) -> str:
    """More rows than a request may carry: like any value outside the published schema (its
    maxItems), a 422 (400 in the Open Inference Protocol). 413 is for bodies over the byte limit,
    refused before they are read."""
    return f"{rows} rows exceed the limit of {max_instances} per request"


def parse_instances(body: Any, schema: Schema, max_instances: int) -> Instances:
    """Accept {"instances": [...]}, {"features": [...]} or one object of named features."""
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object, got {kind(body)}")
    if "instances" in body:
        rows, prefix = body["instances"], "instances"
        _no_extra_keys(body, {"instances", "parameters"})
        if not isinstance(rows, list):
            raise InvalidInput(f"expected a list of rows, got {kind(rows)}", field=prefix)
        if not rows:
            raise InvalidInput("must hold at least one row", field=prefix)
        if len(rows) > max_instances:
            raise InvalidInput(too_many_rows(len(rows), max_instances), field=prefix)
        where = "instances[{}]"
    elif "features" in body:
        rows, where = [body["features"]], "features"
        _no_extra_keys(body, {"features", "parameters"})
    else:
        rows, where = [body], ""
    parameters = body.get("parameters", {}) if rows[0] is not body else {}
    X = rows_to_input(rows, where, schema)
    return Instances(X, where=where, **_chosen_parameters(parameters))


def rows_to_input(rows: list[Any], where: str, schema: Schema, shaped: bool = False) -> Any:
    """Check rows (lists in feature order, or objects by name) against the schema and return
    them as the pipeline takes them; where.format(i) names row i in errors. shaped: are_rows()
    is known to hold already."""
    if schema.numeric:
        return schema.from_matrix(rows_to_matrix(rows, where, schema, shaped))
    columns, positional = _columns(rows, where, schema)

    def field(i: int, j: int) -> str | None:
        return _place(where, i, j, schema.names[j], positional[i])

    return schema.check_columns(columns, field)


def rows_to_matrix(rows: list[Any], where: str, schema: Schema, shaped: bool = False) -> np.ndarray:
    """The rows of an all-numeric schema as a float64 matrix.

    The common case — lists of plain numbers within range — is checked in bulk; anything else
    goes through the value-by-value checks that name the exact field at fault.
    """
    feature_names = schema.names
    width = len(feature_names)
    values = itertools.chain.from_iterable
    X = None
    if (shaped or are_rows(rows, width)) and set(map(type, values(rows))) <= {float, int}:
        try:
            with np.errstate(all="ignore"):
                X = np.fromiter(values(rows), np.float64, len(rows) * width)
        except OverflowError:  # an integer beyond float64: the slow path names it
            pass
        else:
            if np.isfinite(X).all() and np.abs(X).max(initial=0) < MAX_ABS_VALUE:
                X = X.reshape(len(rows), width)
            else:
                X = None
    if X is None:
        X = np.empty((len(rows), width), dtype=np.float64)
        for i, row in enumerate(rows):
            X[i] = _row(row, where.format(i), schema)
    integers = schema.integer_columns
    if integers:
        _require_integers(X, integers, rows, where, schema)
    return X


def _require_integers(
    X: np.ndarray, columns: list[int], rows: list[Any], where: str, schema: Schema
) -> None:
    part = X[:, columns]
    fraction = (part != np.floor(part)) & ~np.isnan(part)  # NaN: a missing value, allowed
    if not fraction.any():
        return
    i, k = map(int, np.argwhere(fraction)[0])
    j = columns[k]
    name = schema.names[j]
    raise InvalidInput(
        f"expected an integer for {name}, got {float(X[i, j])!r}",
        field=_place(where, i, j, name, isinstance(rows[i], list)),
    )


def _columns(rows: list[Any], where: str, schema: Schema) -> tuple[list[list[Any]], list[bool]]:
    """The rows' values by feature, and which rows were lists (for naming fields)."""
    names = schema.names
    columns: list[list[Any]] = [[] for _ in names]
    positional = []
    for i, row in enumerate(rows):
        field = where.format(i)
        if isinstance(row, dict):
            _check_keys(row, field, names, schema.may_be_missing)
            for column, name in zip(columns, names, strict=True):
                column.append(row.get(name))
        elif isinstance(row, list):
            check_length(row, field, names)
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        else:
            not_a_row(row, field)
        positional.append(isinstance(row, list))
    return columns, positional


def are_rows(data: Any, width: int) -> bool:
    """Whether data is a list of lists of `width` values each (checked at C speed)."""
    return (
        isinstance(data, list) and set(map(type, data)) <= {list} and set(map(len, data)) <= {width}
    )


@dataclass(frozen=True)
class Prediction:
    """What the model answered: labels (or numbers), and probabilities by class if asked."""

    labels: list[Any]
    probabilities: np.ndarray | None
    classes: list[str]


def infer(model: LoadedModel, instances: Instances, run: Run | None = None) -> Prediction:
    """Run the model (directly, or through a micro-batcher's `run`); refuse rows it cannot
    answer finitely (422 naming the row)."""
    estimator = model.estimator
    want_probabilities = instances.probabilities and model.has_probabilities
    try:
        predictions, probabilities = (run or run_model)(estimator, instances.X, want_probabilities)
    except ValueError as e:  # valid input the model still refuses (e.g. overflow inside it)
        field = _first_refused_row(estimator, instances, want_probabilities)
        raise InvalidInput(f"the model cannot predict for this row: {e}", field=field) from e
    _require_finite(predictions, instances)
    if probabilities is not None:
        _require_finite(probabilities, instances)
        # Row-major for every writer (orjson, v2's raw bytes): some estimators answer
        # column-major (multiclass HistGradientBoosting's predict_proba is a transpose).
        probabilities = np.ascontiguousarray(probabilities)
    classes = [str(c) for c in estimator.classes_] if model.has_probabilities else []
    return Prediction(predictions.tolist(), probabilities, classes)


def answer(model: LoadedModel, result: Prediction) -> dict[str, Any]:
    """The native answer: predictions, probabilities by class when computed, and the model."""
    body: dict[str, Any] = {"predictions": result.labels}
    if result.probabilities is not None:
        body["probabilities"] = [
            dict(zip(result.classes, row, strict=True)) for row in result.probabilities.tolist()
        ]
    body["model"] = {"name": model.name, "version": model.version}
    return body


def run_model(estimator: Any, X: Any, probabilities: bool) -> tuple[Any, Any]:
    """One direct model call: (predictions, probabilities or None)."""
    with np.errstate(all="ignore"):  # overflow shows up as non-finite output, refused later
        if probabilities and hasattr(estimator, "predict_both"):
            return estimator.predict_both(X)
        final = _final_step(estimator)
        if probabilities and final is not estimator:
            # Both answers from one pass of the pipeline's steps, as Pipeline.predict and
            # Pipeline.predict_proba each compute it (a ColumnTransformer costs milliseconds).
            X = estimator[:-1].transform(X) if len(estimator.steps) > 1 else X
            estimator = final
        if probabilities and type(final).__name__ in ARGMAX_CLASSIFIERS:
            proba = estimator.predict_proba(X)
            return estimator.classes_.take(np.argmax(proba, axis=1)), proba
        return estimator.predict(X), estimator.predict_proba(X) if probabilities else None


def _final_step(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


def _first_refused_row(estimator: Any, instances: Instances, probabilities: bool) -> str | None:
    """Find the first row the model refuses (only on the error path), by halving: a part of the
    rows is refused when it holds a row the model refuses, so about log2(n) calls on ever smaller
    parts, not one call per row (1,000 rows refused on the last took 3.9 s row by row)."""
    X = instances.X

    def refused(start: int, stop: int) -> bool:
        try:
            run_model(estimator, X[start:stop], probabilities)
        except ValueError:
            return True
        return False

    low, high = 0, len(X)  # the first refused row, if one is refused alone, is in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        if refused(low, middle):
            high = middle
        else:
            low = middle
    return instances.field(low) if high - low == 1 and refused(low, high) else None


def _require_finite(output: np.ndarray, instances: Instances) -> None:
    """Refuse rows the model turns into NaN or infinity (inputs far outside its training range)."""
    if output.dtype.kind != "f":
        return
    bad = ~np.isfinite(output.reshape(len(output), -1)).all(axis=1)
    if bad.any():
        raise InvalidInput(
            "the model gives no finite answer for this row: its values are too far outside "
            "the range it was trained on",
            field=instances.field(int(np.argmax(bad))),
        )


def _row(row: Any, field: str, schema: Schema) -> list[float]:
    names, features = schema.names, schema.features
    if isinstance(row, list):
        check_length(row, field, names)
        return [
            number_or_missing(f, v, f"{field}[{j}]", name_it=True)
            for j, (f, v) in enumerate(zip(features, row, strict=True))
        ]
    if isinstance(row, dict):
        _check_keys(row, field, names, schema.may_be_missing)
        return [
            number_or_missing(f, row.get(f.name), _join(field, f.name), False) for f in features
        ]
    not_a_row(row, field)


def check_length(row: list[Any], field: str, names: list[str]) -> None:
    if len(row) != len(names):
        raise InvalidInput(
            f"expected {len(names)} values ({', '.join(names)}), got {len(row)}",
            field=field or None,
        )


def _check_keys(row: dict[str, Any], field: str, names: list[str], may_be_absent: set[str]) -> None:
    """Every key a feature, and every feature present unless it may be missing."""
    unknown = [k for k in row if k not in names]
    if unknown:
        raise InvalidInput(
            f"unknown feature; expected {', '.join(names)}"
            + ("" if field else " (or a body with instances or features)"),
            field=_join(field, unknown[0]),
        )
    missing = [n for n in names if n not in row and n not in may_be_absent]
    if missing:
        raise InvalidInput("missing feature", field=_join(field, missing[0]))


def not_a_row(row: Any, field: str) -> NoReturn:
    raise InvalidInput(
        f"a row must be a list in feature order or an object by feature name, got {kind(row)}",
        field=field or None,
    )


def _chosen_parameters(parameters: Any) -> dict[str, Any]:
    """The native request's `parameters`: only known keys, each of its type."""
    if not isinstance(parameters, dict):
        raise InvalidInput(f"expected an object, got {kind(parameters)}", field="parameters")
    chosen = {}
    for key, value in parameters.items():
        expected = PARAMETERS.get(key)
        if expected is None:
            raise InvalidInput(
                f"unknown parameter; expected {', '.join(PARAMETERS)}", field=f"parameters.{key}"
            )
        if not isinstance(value, expected):
            raise InvalidInput(
                f"expected {TYPE_WORDS[expected]}, got {show(value)}", field=f"parameters.{key}"
            )
        chosen[key] = value
    return chosen


def _no_extra_keys(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise InvalidInput(f"unexpected key; allowed: {', '.join(sorted(allowed))}", field=extra[0])


def _place(where: str, i: int, j: int, name: str, positional: bool) -> str | None:
    """Where value j of row i came from: an index in a list row, a name in an object row."""
    row = where.format(i)
    return f"{row}[{j}]" if positional else _join(row, name) or None


def _join(field: str, name: str) -> str:
    return f"{field}.{name}" if field else name
