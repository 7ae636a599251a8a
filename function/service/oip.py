"""Open Inference Protocol v2 over REST (KServe/Triton "v2"): an adapter over the prediction core.

Tensors in, tensors out; validation and prediction are the core's (predict.rows_to_input,
schema.Schema.check_columns and predict.infer). Inputs come as one [rows, features] tensor
(all-numeric models) or one tensor per feature, named after it, as MLServer's pandas codec sends
them: BYTES for a category, BOOL for a boolean, numbers otherwise. Errors are {"error": "..."},
with 400 where the core says 422.

Input tensors may also come as raw bytes, the binary tensor data extension Triton and KServe
speak (and tritonclient sends by default): an `Inference-Header-Content-Length` header says how
long the JSON part is, and each binary input names its `binary_data_size` in the bytes after it.
Answers stay JSON, which every client reads, whatever output form it asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from function.core.artifact import LABEL_TYPES
from function.core.errors import BadRequest, InvalidInput, ModelrunError, NotFound
from function.core.model import LoadedModel
from function.core.predict import Instances, Prediction, are_rows, rows_to_input, too_many_rows
from function.core.schema import Feature, Schema
from function.service.body import parse_json

SERVER = {"name": "modelrun", "version": "1.0.0", "extensions": ["binary_tensor_data"]}
BINARY_HEADER = "Inference-Header-Content-Length"
# little-endian; BYTES are each a 4-byte length, then the bytes
BINARY_TYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8", "BOOL": "?"}
INPUT = "input-0"
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
ROW = "inputs[0].data[row {}]"  # where a row came from, for errors
COLUMN_ROW = "inputs[*].data[{}]"  # row i of every feature's tensor


def error_body(error: ModelrunError) -> tuple[dict[str, str], int]:
    """The protocol's error form: {"error": message}; invalid input is a 400."""
    return {"error": str(error)}, 400 if error.status == 422 else error.status


def select(model: LoadedModel, name: str, version: str | None) -> LoadedModel:
    """Return the served model if the path names it; 404 for any other name or version."""
    if name != model.name:
        raise NotFound(f"no model named {name!r}; this server serves {model.name!r}")
    if version is not None and version != model.version:
        raise NotFound(f"model {name!r} has no version {version!r}; it serves {model.version!r}")
    return model


def column_datatypes(feature: Feature) -> tuple[str, ...]:
    """The datatypes a feature's own tensor may have, the preferred first."""
    return COLUMN_TYPES[feature.type]


def model_metadata(model: LoadedModel) -> dict[str, Any]:
    """Inputs and outputs, with -1 for the batch dimension. An all-numeric model lists its
    [rows, features] tensor; any other, one tensor per feature with its type and categories."""
    outputs: list[dict[str, Any]] = [
        {"name": LABELS, "datatype": _label_datatype(model), "shape": [-1]}
    ]
    if model.has_probabilities:
        classes = model.metadata.class_names
        outputs.append(
            {
                "name": PROBABILITIES,
                "datatype": "FP64",
                "shape": [-1, len(classes)],
                # Column k is the probability of classes[k] (the model's classes_ order).
                "parameters": {"classes": classes},
            }
        )
    schema = model.schema
    inputs: list[dict[str, Any]]
    if schema.numeric:
        inputs = [{"name": INPUT, "datatype": "FP64", "shape": [-1, len(schema.features)]}]
    else:
        inputs = [
            {
                "name": f.name,
                "datatype": column_datatypes(f)[0],
                "shape": [-1],
                "parameters": {
                    k: v for k, v in f.describe().items() if k not in ("name", "type", "dtype")
                },
            }
            for f in schema.features
        ]
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "sklearn",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {"feature_names": model.feature_names},
    }


def example_inputs(schema: Schema, rows: list[list[Any]]) -> list[dict[str, Any]]:
    """Rows as a request's inputs: one [rows, features] tensor for an all-numeric model, else
    one tensor per feature."""
    if schema.numeric:
        flat = [v for row in rows for v in row]
        return [{"name": INPUT, "shape": [len(rows), len(schema.features)], "datatype": "FP64",
                 "data": flat}]  # fmt: skip
    return [
        {
            "name": f.name,
            "shape": [len(rows)],
            "datatype": column_datatypes(f)[0],
            "data": [row[j] for row in rows],
        }
        for j, f in enumerate(schema.features)
    ]


def _label_datatype(model: LoadedModel) -> str:
    if model.metadata.classifier:
        return LABEL_TYPES[model.label_type]
    return "FP64"


def binary_request(data: bytes, header_length: str, schema: Schema, max_instances: int) -> Any:
    """The JSON part of a binary-extension body, each binary input's values put in its `data`.
    A tensor's datatype and row count are checked against the model before its bytes are
    decoded: a megabyte of empty BYTES elements for a number is refused at once, not after
    decoding a quarter of a million strings."""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 < length <= len(data):
        raise BadRequest(
            f"{BINARY_HEADER} must be the length of the body's JSON part, 1 to {len(data)} "
            f"bytes, got {header_length!r}"
        )
    body = parse_json(data[:length])
    offset = length
    inputs = body.get("inputs") if isinstance(body, dict) else None
    tensors = inputs if isinstance(inputs, list) else []  # else parse_request says what is wrong
    for i, tensor in enumerate(tensors):
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        where = f"inputs[{i}]"
        datatype = tensor.get("datatype")
        _check_before_decoding(tensor, schema, max_instances, where)
        if datatype == "BYTES":
            tensor["data"] = _binary_strings(data, offset, size, where)
            offset += size
            continue
        dtype = BINARY_TYPES.get(datatype) if isinstance(datatype, str) else None
        if dtype is None:
            raise InvalidInput(
                f"binary data is read for {', '.join(BINARY_TYPES)} and BYTES tensors only",
                field=f"{where}.datatype",
            )
        itemsize = np.dtype(dtype).itemsize
        if type(size) is not int or size < 0 or size % itemsize or offset + size > len(data):
            raise InvalidInput(
                f"binary_data_size must be a whole number of {itemsize}-byte values within the "
                f"{len(data) - offset} bytes left in the body, got {size!r}",
                field=f"{where}.parameters.binary_data_size",
            )
        values = np.frombuffer(data, dtype, size // itemsize, offset)
        # Binary numbers have no null: NaN is how a client marks a missing value (as a file's
        # empty cell is), allowed where the feature may be missing and refused where not.
        tensor["data"] = (
            [None if v != v else v for v in values.tolist()]
            if values.dtype.kind == "f" and np.isnan(values).any()
            else values.tolist()
        )
        offset += size
    if offset != len(data):
        raise InvalidInput(
            f"the body holds {len(data) - offset} bytes that no input's binary_data_size covers",
            field="inputs",
        )
    return body


def _check_before_decoding(
    tensor: dict[str, Any], schema: Schema, max_instances: int, where: str
) -> None:
    """Refuse a binary tensor whose datatype the model's input cannot take, or whose first
    dimension holds more rows than a request may, before its bytes are read (parse_request
    checks everything again, and everything else, once the values are decoded)."""
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    feature = schema.feature(name) if isinstance(name, str) else None
    allowed = (
        column_datatypes(feature) if feature is not None
        else tuple(DATATYPES) if name == INPUT and schema.numeric
        else None
    )  # fmt: skip
    if allowed is not None and datatype not in allowed:
        raise InvalidInput(
            f"{name} takes {' or '.join(sorted(allowed))}, got {datatype!r}",
            field=f"{where}.datatype",
        )
    if isinstance(shape, list) and shape and _whole(shape[0]):
        _check_row_count(int(shape[0]), max_instances, f"{where}.shape")


def _binary_strings(data: bytes, offset: int, size: Any, where: str) -> list[str]:
    """A BYTES tensor's elements: each a 4-byte little-endian length, then UTF-8 text."""
    field = f"{where}.parameters.binary_data_size"
    if type(size) is not int or size < 0 or offset + size > len(data):
        raise InvalidInput(
            f"binary_data_size must be within the {len(data) - offset} bytes left in the body, "
            f"got {size!r}",
            field=field,
        )
    strings, position, end = [], offset, offset + size
    while position < end:
        if position + 4 > end:
            raise InvalidInput("a BYTES element's 4-byte length is cut short", field=field)
        length = int.from_bytes(data[position : position + 4], "little")
        position += 4
        if position + length > end:
            raise InvalidInput("a BYTES element runs past binary_data_size", field=field)
        try:
            strings.append(data[position : position + length].decode())
        except UnicodeDecodeError as e:
            raise InvalidInput(
                f"element {len(strings)} is not UTF-8 text", field=f"{where}.data"
            ) from e
        position += length
    return strings


def parse_request(
    body: Any, model: LoadedModel, max_instances: int
) -> tuple[Instances, list[str], Any]:
    """Return the rows, the outputs asked for, and the request id to echo."""
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object with inputs")
    _check_parameters_object(body, "parameters")
    if "id" in body and not isinstance(body["id"], str):
        raise InvalidInput("id must be a string", field="id")
    inputs = body.get("inputs")
    schema = model.schema
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput(
            f"expected one input tensor of shape [-1, {len(schema.features)}] or one tensor per "
            f"feature ({', '.join(schema.names)})",
            field="inputs",
        )
    first = inputs[0]
    if len(inputs) == 1 and not (isinstance(first, dict) and first.get("name") in schema.names):
        if not schema.numeric:
            raise InvalidInput(
                "this model's features are not all numbers: send one tensor per feature, named "
                f"after it ({', '.join(schema.names)})",
                field="inputs[0].name",
            )
        rows = _rows(first, len(schema.features), max_instances)
        X, where = rows_to_input(rows, ROW, schema, shaped=True), ROW
    else:
        columns, field = _columns(inputs, schema, max_instances)
        X, where = schema.check_columns(columns, field), COLUMN_ROW
    outputs = _outputs(body.get("outputs"), model, "outputs" in body)
    instances = Instances(X, probabilities=PROBABILITIES in outputs, where=where)
    return instances, outputs, body.get("id")


def response(
    model: LoadedModel, prediction: Prediction, outputs: list[str], request_id: Any
) -> dict[str, Any]:
    """Shape the core's answer as output tensors (labels as BYTES for a classifier)."""
    n = len(prediction.labels)
    tensors = []
    if LABELS in outputs:
        datatype = _label_datatype(model)
        labels = prediction.labels
        tensors.append(
            {
                "name": LABELS,
                "shape": [n],
                "datatype": datatype,
                "data": list(map(str, labels)) if datatype == "BYTES" else labels,
            }
        )
    if PROBABILITIES in outputs and prediction.probabilities is not None:
        tensors.append(
            {
                "name": PROBABILITIES,
                "shape": list(prediction.probabilities.shape),
                "datatype": "FP64",
                "data": prediction.probabilities.ravel().tolist(),
            }
        )
    answer: dict[str, Any] = {
        "model_name": model.name,
        "model_version": model.version,
        "outputs": tensors,
    }
    if request_id is not None:
        answer["id"] = request_id
    return answer


def _columns(
    inputs: list[Any], schema: Schema, max_instances: int
) -> tuple[list[list[Any]], Callable[[int, int], str]]:
    """One tensor per feature: the values by feature in the schema's order, and where value i
    of feature j came from."""
    names = schema.names
    found: dict[str, tuple[int, list[Any]]] = {}
    rows = None
    for k, tensor in enumerate(inputs):
        where = f"inputs[{k}]"
        _check_tensor(tensor, where)
        name, datatype, shape = tensor["name"], tensor["datatype"], tensor["shape"]
        feature = schema.feature(name)
        if feature is None:
            raise InvalidInput(
                f"no feature named {name!r}; expected one tensor per feature: {', '.join(names)}",
                field=f"{where}.name",
            )
        if name in found:
            raise InvalidInput(f"a second tensor for {name}", field=f"{where}.name")
        allowed = column_datatypes(feature)
        if datatype not in allowed:
            raise InvalidInput(
                f"{name} is a {feature.type}: its datatype must be {' or '.join(allowed)}, "
                f"got {datatype!r}",
                field=f"{where}.datatype",
            )
        if not (
            isinstance(shape, list) and 1 <= len(shape) <= 2 and all(_whole(d) for d in shape)
            and shape[1:] in ([], [1])
        ):  # fmt: skip
            raise InvalidInput(f"shape must be [rows] or [rows, 1], got {shape!r}",
                               field=f"{where}.shape")  # fmt: skip
        count = int(shape[0])
        _check_row_count(count, max_instances, f"{where}.shape")
        if rows is not None and count != rows:
            raise InvalidInput(
                f"{name} has {count} rows, {next(iter(found))} has {rows}", field=f"{where}.shape"
            )
        rows = count
        values = _flatten(tensor["data"], f"{where}.data")
        if len(values) != count:
            raise InvalidInput(
                f"shape {shape} needs {count} values, data holds {len(values)}",
                field=f"{where}.shape",
            )
        if datatype in INTEGER_TYPES:
            _require_ints(values, datatype, f"{where}.data", nullable=feature.nullable)
        found[name] = (k, values)
    absent = [f for f in schema.features if f.name not in found]
    required = [f.name for f in absent if not f.nullable]
    if required:
        raise InvalidInput(
            f"missing a tensor for {', '.join(required)} (one tensor per feature)", field="inputs"
        )
    assert rows is not None
    for feature in absent:  # features that may be missing: all missing
        found[feature.name] = (-1, [None] * rows)
    columns = [found[n][1] for n in names]
    places = [found[n][0] for n in names]

    def field(i: int, j: int) -> str:
        return f"inputs[{places[j]}].data[{i}]"

    return columns, field


def _check_tensor(tensor: Any, where: str) -> None:
    """An object with name, shape, datatype and data, and parameters if any."""
    if not isinstance(tensor, dict):
        raise InvalidInput("expected an object with name, shape, datatype and data", field=where)
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
    if missing:
        raise InvalidInput(f"missing {', '.join(missing)}", field=where)
    if not isinstance(tensor["name"], str):
        raise InvalidInput("name must be a string", field=f"{where}.name")
    _check_parameters_object(tensor, f"{where}.parameters")


def _check_row_count(rows: int, max_instances: int, field: str) -> None:
    if rows < 1:
        raise InvalidInput("must hold at least one row", field=field)
    if rows > max_instances:
        raise InvalidInput(too_many_rows(rows, max_instances), field=field)


def _require_ints(values: list[Any], datatype: str, field: str, nullable: bool = False) -> None:
    allowed = (int, type(None)) if nullable else (int,)
    wrong = next((i for i, v in enumerate(values) if type(v) not in allowed), None)
    if wrong is not None:
        raise InvalidInput(
            f"datatype {datatype} needs integers, got {values[wrong]!r}", field=f"{field}[{wrong}]"
        )


def _rows(tensor: Any, width: int, max_instances: int) -> list[list[Any]]:
    """The tensor's rows: lists of `width` values each."""
    where = "inputs[0]"
    _check_tensor(tensor, where)
    shape, datatype = tensor["shape"], tensor["datatype"]
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(
            f"datatype {datatype!r} is not supported; use {', '.join(sorted(DATATYPES))}",
            field=f"{where}.datatype",
        )
    if not (isinstance(shape, list) and len(shape) == 2 and all(_whole(d) for d in shape)):
        raise InvalidInput(f"shape must be [rows, {width}], got {shape!r}", field=f"{where}.shape")
    shape = [int(d) for d in shape]
    if shape[1] != width:
        raise InvalidInput(
            f"shape {shape} has {shape[1]} columns; the model takes {width} features",
            field=f"{where}.shape",
        )
    _check_row_count(shape[0], max_instances, f"{where}.shape")
    data = tensor["data"]
    rows_given = are_rows(data, width) and len(data) == shape[0]
    if rows_given and datatype not in INTEGER_TYPES:  # nested [rows][features]: rows already
        return data
    flat = _flatten(data, f"{where}.data")
    if len(flat) != math.prod(shape):
        raise InvalidInput(
            f"shape {shape} needs {math.prod(shape)} values, data holds {len(flat)}",
            field=f"{where}.shape",
        )
    if datatype in INTEGER_TYPES:
        _require_ints(flat, datatype, f"{where}.data")
    return [flat[i * width : (i + 1) * width] for i in range(shape[0])]


def _whole(value: Any) -> bool:
    """A non-negative integer, or a float with no fraction (JSON Schema's integers)."""
    return (
        type(value) in (int, float) and math.isfinite(value) and value >= 0 and value == int(value)
    )


def _flatten(data: Any, field: str) -> list[Any]:
    """Row-major values from flat or nested data."""
    if not isinstance(data, list):
        raise InvalidInput("data must be a list (flat or nested)", field=field)
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


def _check_parameters_object(holder: dict[str, Any], field: str) -> None:
    """Parameters are optional, and an object when present (their contents are not used)."""
    key = field.rsplit(".", 1)[-1]
    if key in holder and not isinstance(holder[key], dict):
        raise InvalidInput("parameters must be an object", field=field)


def _outputs(requested: Any, model: LoadedModel, given: bool) -> list[str]:
    """The outputs asked for; by default the labels alone, as other v2 servers answer."""
    available = [LABELS, PROBABILITIES] if model.has_probabilities else [LABELS]
    if not given:
        return [LABELS]
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise InvalidInput('outputs must be a list of {"name": ...}', field="outputs")
    for i, output in enumerate(requested):
        _check_parameters_object(output, f"outputs[{i}].parameters")
    names = [o["name"] for o in requested]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise InvalidInput(
            f"unknown output {unknown[0]!r}; available: {', '.join(available)}", field="outputs"
        )
    if not names:
        raise BadRequest("outputs is empty: ask for at least one")
    return names
