"""Read a request body as JSON within limits, rejecting what is not JSON with a clear status."""

from __future__ import annotations

import json
from typing import Any

from flask import Request

from function.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

JSON_TYPES = ("application/json",)


def read_json(request: Request, max_bytes: int, type_required: bool = True) -> Any:
    """Return the parsed body; 415 if not JSON, 413 if too large, 400 if malformed.

    type_required=False also reads a body sent without a Content-Type (as inference clients do).
    """
    mimetype = request.mimetype
    untyped = not mimetype and not type_required
    if not untyped and mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        shown = mimetype or "none"
        raise UnsupportedMediaType(f"send Content-Type: application/json (got {shown})")
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(
            f"the body has {request.content_length} bytes; the limit is {max_bytes}"
        )
    data = request.stream.read(max_bytes + 1)  # also bounds chunked bodies with no length
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the body exceeds the limit of {max_bytes} bytes")
    if not data.strip():
        raise BadRequest("the body is empty; send a JSON object")
    return parse_json(data)


def parse_json(data: bytes) -> Any:
    """Parse strict JSON: duplicate keys are refused; NaN/Infinity reach validation as floats."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"the body is not UTF-8 (byte {e.start})") from e
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise BadRequest(f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except RecursionError as e:
        raise BadRequest("the JSON is nested too deeply") from e
    except ValueError as e:  # duplicate keys, or an integer literal too long to convert
        raise BadRequest(f"malformed JSON: {e}") from e


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {json.dumps(key)} appears twice in one object")
        result[key] = value
    return result
