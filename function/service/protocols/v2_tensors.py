"""The Open Inference Protocol v2's tensors: names, datatypes, and the checks every tensor gets,
whether its values came as JSON or as binary data."""

from __future__ import annotations

import math
from typing import Any

from function.core.artifact import LABEL_TYPES
from function.core.errors import InvalidInput
from function.core.model import LoadedModel
from function.core.predict import too_many_rows
from function.core.schema import Feature
from function.service.protocols.location import Location

INPUTS = Location.of("inputs")
INPUT = "input-0"  # the one [rows, features] tensor of an all-numeric model
LABELS, PROBABILITIES = "predict", "predict_proba"
DATATYPES = {"FP32", "FP64", "INT32", "INT64"}  # of the [rows, features] tensor
INTEGER_TYPES = {"INT32", "INT64"}
# The datatypes a feature's own tensor may have (MLServer's pandas codec: one tensor per column).
COLUMN_TYPES = {
    "number": ("FP64", "FP32", "INT64", "INT32"),
    "integer": ("INT64", "INT32", "FP64", "FP32"),
    "boolean": ("BOOL",),
    "category": ("BYTES",),
}


def column_datatypes(feature: Feature) -> tuple[str, ...]:
    """The datatypes a feature's own tensor may have, the preferred first."""
    return COLUMN_TYPES[feature.type]


def check_tensor(tensor: Any, where: Location) -> None:
    """An object with name, shape, datatype and data, and parameters if any."""
    if not isinstance(tensor, dict):
        raise InvalidInput(
            "expected an object with name, shape, datatype and data", field=str(where)
        )
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
    if missing:
        raise InvalidInput(f"missing {', '.join(missing)}", field=str(where))
    if not isinstance(tensor["name"], str):
        raise InvalidInput("name must be a string", field=str(where.key("name")))
    check_parameters(tensor, where)


def check_parameters(holder: dict[str, Any], where: Location | None) -> None:
    """Parameters are optional, and an object when present (their contents are not used);
    `where` is the holder's location (None: the body itself)."""
    if "parameters" in holder and not isinstance(holder["parameters"], dict):
        field = where.key("parameters") if where else Location.of("parameters")
        raise InvalidInput("parameters must be an object", field=str(field))


def check_row_count(rows: int, max_instances: int, where: Location) -> None:
    if rows < 1:
        raise InvalidInput("must hold at least one row", field=str(where))
    if rows > max_instances:
        raise InvalidInput(too_many_rows(rows, max_instances), field=str(where))


def require_ints(values: list[Any], datatype: str, where: Location, nullable: bool = False) -> None:
    allowed = (int, type(None)) if nullable else (int,)
    wrong = next((i for i, v in enumerate(values) if type(v) not in allowed), None)
    if wrong is not None:
        raise InvalidInput(
            f"datatype {datatype} needs integers, got {values[wrong]!r}",
            field=str(where.at(wrong)),
        )


def whole(value: Any) -> bool:
    """A non-negative integer, or a float with no fraction (JSON Schema's integers)."""
    return (
        type(value) in (int, float) and math.isfinite(value) and value >= 0 and value == int(value)
    )


def flatten(data: Any, where: Location) -> list[Any]:
    """Row-major values from flat or nested data."""
    if not isinstance(data, list):
        raise InvalidInput("data must be a list (flat or nested)", field=str(where))
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def label_datatype(model: LoadedModel) -> str:
    """The datatype of the labels' tensor: BYTES for a classifier's names, FP64 for a regressor."""
    if model.metadata.classifier:
        return LABEL_TYPES[model.label_type]
    return "FP64"
