"""The prediction core: turn a request body into a checked matrix, and a matrix into answers."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from function.artifact import ARGMAX_CLASSIFIERS
from function.batching import Run
from function.errors import InvalidInput, PayloadTooLarge
from function.model import LoadedModel

PARAMETERS = {"probabilities": bool}
TYPE_WORDS = {bool: "true or false"}
# Larger magnitudes overflow float64 arithmetic inside ordinary models (scaling, dot products).
MAX_ABS_VALUE = 1e300


@dataclass(frozen=True)
class Instances:
    """Rows in feature order, where each came from in the request, and what was asked for."""

    X: np.ndarray
    probabilities: bool = True
    where: str = "instances[{}]"  # a row's place in the request, from its index

    def field(self, i: int) -> str | None:
        """Where row i came from in the request (None for a bare object of features)."""
        return self.where.format(i) or None


def parse_instances(body: Any, feature_names: list[str], max_instances: int) -> Instances:
    """Accept {"instances": [...]}, {"features": [...]} or one object of named features."""
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object, got {_kind(body)}")
    if "instances" in body:
        rows, prefix = body["instances"], "instances"
        _no_extra_keys(body, {"instances", "parameters"})
        if not isinstance(rows, list):
            raise InvalidInput(f"expected a list of rows, got {_kind(rows)}", field=prefix)
        if not rows:
            raise InvalidInput("must hold at least one row", field=prefix)
        if len(rows) > max_instances:
            raise PayloadTooLarge(
                f"{len(rows)} rows exceed the limit of {max_instances} per request",
                field=prefix,
            )
        where = "instances[{}]"
    elif "features" in body:
        rows, where = [body["features"]], "features"
        _no_extra_keys(body, {"features", "parameters"})
    else:
        rows, where = [body], ""
    parameters = body.get("parameters", {}) if rows[0] is not body else {}
    X = rows_to_matrix(rows, where, feature_names)
    return Instances(X, where=where, **_chosen_parameters(parameters))


def rows_to_matrix(
    rows: list[Any], where: str, feature_names: list[str], shaped: bool = False
) -> np.ndarray:
    """Check rows (lists in feature order, or objects by name) and return them as a matrix;
    where.format(i) names row i in errors. shaped: are_rows() is known to hold already.

    The common case — lists of plain numbers within range — is checked in bulk; anything else
    goes through the value-by-value checks that name the exact field at fault.
    """
    width = len(feature_names)
    values = itertools.chain.from_iterable
    if (shaped or are_rows(rows, width)) and set(map(type, values(rows))) <= {float, int}:
        try:
            with np.errstate(all="ignore"):
                X = np.fromiter(values(rows), np.float64, len(rows) * width)
        except OverflowError:  # an integer beyond float64: the slow path names it
            pass
        else:
            if np.isfinite(X).all() and np.abs(X).max(initial=0) <= MAX_ABS_VALUE:
                return X.reshape(len(rows), width)
    X = np.empty((len(rows), width), dtype=np.float64)
    for i, row in enumerate(rows):
        X[i] = _row(row, where.format(i), feature_names)
    return X


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
    classes = [str(c) for c in estimator.classes_] if model.has_probabilities else []
    return Prediction(predictions.tolist(), probabilities, classes)


def predict(model: LoadedModel, instances: Instances, run: Run | None = None) -> dict[str, Any]:
    """Return predictions (class names or numbers), probabilities when asked, and the model."""
    result = infer(model, instances, run)
    answer: dict[str, Any] = {"predictions": result.labels}
    if result.probabilities is not None:
        answer["probabilities"] = [
            dict(zip(result.classes, row, strict=True)) for row in result.probabilities.tolist()
        ]
    answer["model"] = {"name": model.name, "version": model.version}
    return answer


def run_model(estimator: Any, X: np.ndarray, probabilities: bool) -> tuple[Any, Any]:
    """One direct model call: (predictions, probabilities or None)."""
    with np.errstate(all="ignore"):  # overflow shows up as non-finite output, refused later
        if probabilities and hasattr(estimator, "predict_both"):
            return estimator.predict_both(X)
        if probabilities and type(_final_step(estimator)).__name__ in ARGMAX_CLASSIFIERS:
            proba = estimator.predict_proba(X)
            return estimator.classes_.take(np.argmax(proba, axis=1)), proba
        return estimator.predict(X), estimator.predict_proba(X) if probabilities else None


def _final_step(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


def _first_refused_row(estimator: Any, instances: Instances, probabilities: bool) -> str | None:
    """Find which row the model refuses (only on the error path: one call per row)."""
    for i in range(len(instances.X)):
        try:
            run_model(estimator, instances.X[i : i + 1], probabilities)
        except ValueError:
            return instances.field(i)
    return None


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


def _row(row: Any, field: str, names: list[str]) -> list[float]:
    if isinstance(row, list):
        if len(row) != len(names):
            raise InvalidInput(
                f"expected {len(names)} values ({', '.join(names)}), got {len(row)}",
                field=field or None,
            )
        return [_number(v, f"{field}[{j}]", names[j]) for j, v in enumerate(row)]
    if isinstance(row, dict):
        unknown = [k for k in row if k not in names]
        if unknown:
            raise InvalidInput(
                f"unknown feature; expected {', '.join(names)}"
                + ("" if field else " (or a body with instances or features)"),
                field=_join(field, unknown[0]),
            )
        missing = [n for n in names if n not in row]
        if missing:
            raise InvalidInput("missing feature", field=_join(field, missing[0]))
        return [_number(row[n], _join(field, n)) for n in names]
    raise InvalidInput(
        f"a row must be a list in feature order or an object by feature name, got {_kind(row)}",
        field=field or None,
    )


def _number(value: Any, field: str, feature: str | None = None) -> float:
    """Return value as a float; positional fields also name their feature in the message."""
    named = f" for {feature}" if feature else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"expected a finite number{named}, got {_show(value)}", field=field)
    try:
        number = float(value)
    except OverflowError as e:
        raise InvalidInput(f"the number{named} is too large", field=field) from e
    if not math.isfinite(number):
        raise InvalidInput(f"expected a finite number{named}, got {_show(value)}", field=field)
    if abs(number) > MAX_ABS_VALUE:
        raise InvalidInput(
            f"the number{named} is out of range (at most {MAX_ABS_VALUE:g} in magnitude)",
            field=field,
        )
    return number


def _chosen_parameters(parameters: Any) -> dict[str, Any]:
    """The native request's `parameters`: only known keys, each of its type."""
    if not isinstance(parameters, dict):
        raise InvalidInput(f"expected an object, got {_kind(parameters)}", field="parameters")
    chosen = {}
    for key, value in parameters.items():
        expected = PARAMETERS.get(key)
        if expected is None:
            raise InvalidInput(
                f"unknown parameter; expected {', '.join(PARAMETERS)}", field=f"parameters.{key}"
            )
        if not isinstance(value, expected):
            raise InvalidInput(
                f"expected {TYPE_WORDS[expected]}, got {_show(value)}", field=f"parameters.{key}"
            )
        chosen[key] = value
    return chosen


def _no_extra_keys(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise InvalidInput(f"unexpected key; allowed: {', '.join(sorted(allowed))}", field=extra[0])


def _join(field: str, name: str) -> str:
    return f"{field}.{name}" if field else name


def _kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number")


def _show(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (dict, list)) or value is None or isinstance(value, bool):
        return _kind(value)
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."
