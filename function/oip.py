"""Open Inference Protocol v2 over REST (KServe/Triton "v2"): an adapter over the prediction core.

Tensors in, tensors out; validation and prediction are the core's (predict.rows_to_matrix and
predict.infer). Errors are {"error": "..."}, with 400 where the core says 422.

Input tensors may also come as raw bytes, the binary tensor data extension Triton and KServe
speak (and tritonclient sends by default): an `Inference-Header-Content-Length` header says how
long the JSON part is, and each binary input names its `binary_data_size` in the bytes after it.
Answers stay JSON, which every client reads, whatever output form it asked for.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from function.body import parse_json
from function.errors import BadRequest, InvalidInput, ModelrunError, NotFound, PayloadTooLarge
from function.model import LoadedModel
from function.predict import Instances, Prediction, are_rows, rows_to_matrix

SERVER = {"name": "modelrun", "version": "1.0.0", "extensions": ["binary_tensor_data"]}
BINARY_HEADER = "Inference-Header-Content-Length"
BINARY_TYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}  # little-endian
INPUT = "input-0"
LABELS, PROBABILITIES = "predict", "predict_proba"
DATATYPES = {"FP32", "FP64", "INT32", "INT64"}
INTEGER_TYPES = {"INT32", "INT64"}
ROW = "inputs[0].data[row {}]"  # where a row came from, for errors


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


def model_metadata(model: LoadedModel) -> dict[str, Any]:
    """Inputs and outputs, with -1 for the batch dimension."""
    label_type = "BYTES" if model.metadata["task"] == "classification" else "FP64"
    outputs = [{"name": LABELS, "datatype": label_type, "shape": [-1]}]
    if model.has_probabilities:
        classes = len(model.metadata["class_names"])
        outputs.append({"name": PROBABILITIES, "datatype": "FP64", "shape": [-1, classes]})
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "sklearn",
        "inputs": [{"name": INPUT, "datatype": "FP64", "shape": [-1, len(model.feature_names)]}],
        "outputs": outputs,
        "parameters": {"feature_names": model.feature_names},
    }


def binary_request(data: bytes, header_length: str) -> Any:
    """The JSON part of a binary-extension body, each binary input's values put in its `data`."""
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
        dtype = BINARY_TYPES.get(datatype) if isinstance(datatype, str) else None
        if dtype is None:
            raise InvalidInput(
                f"binary data is read for {', '.join(BINARY_TYPES)} tensors only",
                field=f"{where}.datatype",
            )
        itemsize = np.dtype(dtype).itemsize
        if type(size) is not int or size < 0 or size % itemsize or offset + size > len(data):
            raise InvalidInput(
                f"binary_data_size must be a whole number of {itemsize}-byte values within the "
                f"{len(data) - offset} bytes left in the body, got {size!r}",
                field=f"{where}.parameters.binary_data_size",
            )
        tensor["data"] = np.frombuffer(data, dtype, size // itemsize, offset).tolist()
        offset += size
    if offset != len(data):
        raise InvalidInput(
            f"the body holds {len(data) - offset} bytes that no input's binary_data_size covers",
            field="inputs",
        )
    return body


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
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise InvalidInput(
            f"expected exactly one input tensor of shape [-1, {len(model.feature_names)}]",
            field="inputs",
        )
    rows = _rows(inputs[0], len(model.feature_names), max_instances)
    X = rows_to_matrix(rows, ROW, model.feature_names, shaped=True)
    outputs = _outputs(body.get("outputs"), model, "outputs" in body)
    instances = Instances(X, probabilities=PROBABILITIES in outputs, where=ROW)
    return instances, outputs, body.get("id")


def response(
    model: LoadedModel, prediction: Prediction, outputs: list[str], request_id: Any
) -> dict[str, Any]:
    """Shape the core's answer as output tensors (labels as BYTES for a classifier)."""
    n = len(prediction.labels)
    tensors = []
    if LABELS in outputs:
        classifier = model.metadata["task"] == "classification"
        tensors.append(
            {
                "name": LABELS,
                "shape": [n],
                "datatype": "BYTES" if classifier else "FP64",
                "data": list(map(str, prediction.labels)) if classifier else prediction.labels,
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


def _rows(tensor: Any, width: int, max_instances: int) -> list[list[Any]]:
    """The tensor's rows: lists of `width` values each."""
    where = "inputs[0]"
    if not isinstance(tensor, dict):
        raise InvalidInput("expected an object with name, shape, datatype and data", field=where)
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
    if missing:
        raise InvalidInput(f"missing {', '.join(missing)}", field=where)
    if not isinstance(tensor["name"], str):
        raise InvalidInput("name must be a string", field=f"{where}.name")
    _check_parameters_object(tensor, f"{where}.parameters")
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
    if shape[0] < 1:
        raise InvalidInput("must hold at least one row", field=f"{where}.shape")
    if shape[0] > max_instances:
        raise PayloadTooLarge(
            f"{shape[0]} rows exceed the limit of {max_instances} per request",
            field=f"{where}.shape",
        )
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
        wrong = next((i for i, v in enumerate(flat) if type(v) is not int), None)
        if wrong is not None:
            raise InvalidInput(
                f"datatype {datatype} needs integers, got {flat[wrong]!r}",
                field=f"{where}.data[{wrong}]",
            )
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
