"""An Open Inference Protocol v2 inference request, checked and turned into the core's rows.

Inputs come as one [rows, features] tensor (all-numeric models) or one tensor per feature, named
after it, as MLServer's pandas codec sends them: BYTES for a category, BOOL for a boolean,
numbers otherwise. Validation of the values is the core's (predict.rows_to_input,
schema.Schema.check_columns).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from function.core.errors import BadRequest, InvalidInput
from function.core.model import LoadedModel
from function.core.predict import Instances, are_rows, rows_to_input
from function.core.schema import Schema
from function.service.protocols.location import Label, Location
from function.service.protocols.v2_tensors import (
    DATATYPES,
    INPUTS,
    INTEGER_TYPES,
    LABELS,
    PROBABILITIES,
    check_parameters,
    check_row_count,
    check_tensor,
    column_datatypes,
    flatten,
    require_ints,
    whole,
)

OUTPUTS = Location.of("outputs")
# Where row i came from, as the core's row checks take it (a template with the row left open):
# of the one [rows, features] tensor, and of every feature's own tensor.
ROW = str(INPUTS.at(0).key("data").at(Label("row {}")))
COLUMN_ROW = str(INPUTS.at(Label("*")).key("data").at(Label("{}")))


def parse_request(
    body: Any, model: LoadedModel, max_instances: int
) -> tuple[Instances, list[str], Any]:
    """Return the rows, the outputs asked for, and the request id to echo."""
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object with inputs")
    check_parameters(body, None)
    if "id" in body and not isinstance(body["id"], str):
        raise InvalidInput("id must be a string", field="id")
    inputs = body.get("inputs")
    schema = model.schema
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput(
            f"expected one input tensor of shape [-1, {len(schema.features)}] or one tensor per "
            f"feature ({', '.join(schema.names)})",
            field=str(INPUTS),
        )
    first = inputs[0]
    if len(inputs) == 1 and not (isinstance(first, dict) and first.get("name") in schema.names):
        if not schema.numeric:
            raise InvalidInput(
                "this model's features are not all numbers: send one tensor per feature, named "
                f"after it ({', '.join(schema.names)})",
                field=str(INPUTS.at(0).key("name")),
            )
        rows = _rows(first, len(schema.features), max_instances)
        X, where = rows_to_input(rows, ROW, schema, shaped=True), ROW
    else:
        columns, field = _columns(inputs, schema, max_instances)
        X, where = schema.check_columns(columns, field), COLUMN_ROW
    outputs = _outputs(body.get("outputs"), model, "outputs" in body)
    instances = Instances(X, probabilities=PROBABILITIES in outputs, where=where)
    return instances, outputs, body.get("id")


def _columns(
    inputs: list[Any], schema: Schema, max_instances: int
) -> tuple[list[list[Any]], Callable[[int, int], str]]:
    """One tensor per feature: the values by feature in the schema's order, and where value i
    of feature j came from."""
    names = schema.names
    found: dict[str, tuple[Location, list[Any]]] = {}
    rows = None
    for k, tensor in enumerate(inputs):
        where = INPUTS.at(k)
        check_tensor(tensor, where)
        name, datatype, shape = tensor["name"], tensor["datatype"], tensor["shape"]
        feature = schema.feature(name)
        if feature is None:
            raise InvalidInput(
                f"no feature named {name!r}; expected one tensor per feature: {', '.join(names)}",
                field=str(where.key("name")),
            )
        if name in found:
            raise InvalidInput(f"a second tensor for {name}", field=str(where.key("name")))
        allowed = column_datatypes(feature)
        if datatype not in allowed:
            raise InvalidInput(
                f"{name} is a {feature.type}: its datatype must be {' or '.join(allowed)}, "
                f"got {datatype!r}",
                field=str(where.key("datatype")),
            )
        if not (
            isinstance(shape, list) and 1 <= len(shape) <= 2 and all(whole(d) for d in shape)
            and shape[1:] in ([], [1])
        ):  # fmt: skip
            raise InvalidInput(f"shape must be [rows] or [rows, 1], got {shape!r}",
                               field=str(where.key("shape")))  # fmt: skip
        count = int(shape[0])
        check_row_count(count, max_instances, where.key("shape"))
        if rows is not None and count != rows:
            raise InvalidInput(
                f"{name} has {count} rows, {next(iter(found))} has {rows}",
                field=str(where.key("shape")),
            )
        rows = count
        values = flatten(tensor["data"], where.key("data"))
        if len(values) != count:
            raise InvalidInput(
                f"shape {shape} needs {count} values, data holds {len(values)}",
                field=str(where.key("shape")),
            )
        if datatype in INTEGER_TYPES:
            require_ints(values, datatype, where.key("data"), nullable=feature.nullable)
        found[name] = (where.key("data"), values)
    absent = [f for f in schema.features if f.name not in found]
    required = [f.name for f in absent if not f.nullable]
    if required:
        raise InvalidInput(
            f"missing a tensor for {', '.join(required)} (one tensor per feature)",
            field=str(INPUTS),
        )
    assert rows is not None
    for feature in absent:  # features that may be missing: all missing (never refused)
        found[feature.name] = (INPUTS.at(-1).key("data"), [None] * rows)
    columns = [found[n][1] for n in names]
    places = [found[n][0] for n in names]

    def field(i: int, j: int) -> str:
        return str(places[j].at(i))

    return columns, field


def _rows(tensor: Any, width: int, max_instances: int) -> list[list[Any]]:
    """The tensor's rows: lists of `width` values each."""
    where = INPUTS.at(0)
    check_tensor(tensor, where)
    shape, datatype = tensor["shape"], tensor["datatype"]
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(
            f"datatype {datatype!r} is not supported; use {', '.join(sorted(DATATYPES))}",
            field=str(where.key("datatype")),
        )
    if not (isinstance(shape, list) and len(shape) == 2 and all(whole(d) for d in shape)):
        raise InvalidInput(
            f"shape must be [rows, {width}], got {shape!r}", field=str(where.key("shape"))
        )
    shape = [int(d) for d in shape]
    if shape[1] != width:
        raise InvalidInput(
            f"shape {shape} has {shape[1]} columns; the model takes {width} features",
            field=str(where.key("shape")),
        )
    check_row_count(shape[0], max_instances, where.key("shape"))
    data = tensor["data"]
    rows_given = are_rows(data, width) and len(data) == shape[0]
    if rows_given and datatype not in INTEGER_TYPES:  # nested [rows][features]: rows already
        return data
    flat = flatten(data, where.key("data"))
    if len(flat) != math.prod(shape):
        raise InvalidInput(
            f"shape {shape} needs {math.prod(shape)} values, data holds {len(flat)}",
            field=str(where.key("shape")),
        )
    if datatype in INTEGER_TYPES:
        require_ints(flat, datatype, where.key("data"))
    return [flat[i * width : (i + 1) * width] for i in range(shape[0])]


def _outputs(requested: Any, model: LoadedModel, given: bool) -> list[str]:
    """The outputs asked for; by default the labels alone, as other v2 servers answer."""
    available = [LABELS, PROBABILITIES] if model.has_probabilities else [LABELS]
    if not given:
        return [LABELS]
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise InvalidInput('outputs must be a list of {"name": ...}', field=str(OUTPUTS))
    for i, output in enumerate(requested):
        check_parameters(output, OUTPUTS.at(i))
    names = [o["name"] for o in requested]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise InvalidInput(
            f"unknown output {unknown[0]!r}; available: {', '.join(available)}",
            field=str(OUTPUTS),
        )
    if not names:
        raise BadRequest("outputs is empty: ask for at least one")
    return names
