"""The binary tensor data extension Triton and KServe speak (and tritonclient sends by default):
an `Inference-Header-Content-Length` header says how long the body's JSON part is, and each
binary input names its `binary_data_size` in the bytes after it. The values are put in each
tensor's `data`, and the body goes on to v2_request as if it had come as JSON."""

from __future__ import annotations

from typing import Any

import numpy as np

from function.core.errors import BadRequest, InvalidInput
from function.core.schema import Schema
from function.service.body import parse_json
from function.service.protocols.location import Location
from function.service.protocols.v2_tensors import (
    DATATYPES,
    INPUT,
    INPUTS,
    check_row_count,
    column_datatypes,
    whole,
)

BINARY_HEADER = "Inference-Header-Content-Length"
# little-endian; BYTES are each a 4-byte length, then the bytes
BINARY_TYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8", "BOOL": "?"}


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
    tensors = inputs if isinstance(inputs, list) else []  # else v2_request says what is wrong
    for i, tensor in enumerate(tensors):
        parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        where = INPUTS.at(i)
        datatype = tensor.get("datatype")
        _check_before_decoding(tensor, schema, max_instances, where)
        if datatype == "BYTES":
            tensor["data"] = _strings(data, offset, size, where)
            offset += size
            continue
        dtype = BINARY_TYPES.get(datatype) if isinstance(datatype, str) else None
        if dtype is None:
            raise InvalidInput(
                f"binary data is read for {', '.join(BINARY_TYPES)} and BYTES tensors only",
                field=str(where.key("datatype")),
            )
        itemsize = np.dtype(dtype).itemsize
        if type(size) is not int or size < 0 or size % itemsize or offset + size > len(data):
            raise InvalidInput(
                f"binary_data_size must be a whole number of {itemsize}-byte values within the "
                f"{len(data) - offset} bytes left in the body, got {size!r}",
                field=str(_size(where)),
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
            field=str(INPUTS),
        )
    return body


def _size(where: Location) -> Location:
    return where.key("parameters").key("binary_data_size")


def _check_before_decoding(
    tensor: dict[str, Any], schema: Schema, max_instances: int, where: Location
) -> None:
    """Refuse a binary tensor whose datatype the model's input cannot take, or whose first
    dimension holds more rows than a request may, before its bytes are read (v2_request
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
            field=str(where.key("datatype")),
        )
    if isinstance(shape, list) and shape and whole(shape[0]):
        check_row_count(int(shape[0]), max_instances, where.key("shape"))


def _strings(data: bytes, offset: int, size: Any, where: Location) -> list[str]:
    """A BYTES tensor's elements: each a 4-byte little-endian length, then UTF-8 text."""
    field = str(_size(where))
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
                f"element {len(strings)} is not UTF-8 text", field=str(where.key("data"))
            ) from e
        position += length
    return strings
