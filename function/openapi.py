"""The OpenAPI document: function/openapi.json, made exact for the model being served."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

DOCUMENT = Path(__file__).with_name("openapi.json")


@cache
def _base() -> dict[str, Any]:
    return dict(json.loads(DOCUMENT.read_text()))


def document(feature_names: list[str] | None, max_instances: int) -> dict[str, Any]:
    """Return the document; with a model, rows are described by its features exactly."""
    doc = copy.deepcopy(_base())
    schemas = doc["components"]["schemas"]
    schemas["PredictRequest"]["oneOf"][0]["properties"]["instances"]["maxItems"] = max_instances
    shape = schemas["V2InputTensor"]["properties"]["shape"]
    rows = {"type": "integer", "minimum": 1, "maximum": max_instances}
    if not feature_names:
        shape["prefixItems"] = [rows, {"type": "integer", "minimum": 1}]
        return doc
    # [rows, features]: at most the rows a request may carry, exactly the model's features.
    shape["prefixItems"] = [rows, {"const": len(feature_names)}]
    number = {"$ref": "#/components/schemas/Number"}
    named = {
        "type": "object",
        "properties": {name: number for name in feature_names},
        "required": list(feature_names),
        "additionalProperties": False,
    }
    schemas["Row"]["oneOf"][0].update(minItems=len(feature_names), maxItems=len(feature_names))
    schemas["Row"]["oneOf"][1] = {**named, "description": "Values by feature name"}
    bare = schemas["PredictRequest"]["oneOf"][2]
    bare.update(named)
    bare.pop("minProperties", None)
    return doc
