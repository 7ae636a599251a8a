"""The OpenAPI document: function/service/openapi.json, made exact for the model being served."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from function.service.protocols.v2_tensors import column_datatypes

if TYPE_CHECKING:
    from function.core.model import LoadedModel

DOCUMENT = Path(__file__).with_name("openapi.json")


@cache
def _base() -> dict[str, Any]:
    return dict(json.loads(DOCUMENT.read_text()))


def document(model: LoadedModel | None, max_instances: int) -> dict[str, Any]:
    """Return the document; with a model, rows are described by its schema exactly, and the
    examples are its own example row."""
    doc = copy.deepcopy(_base())
    schemas = doc["components"]["schemas"]
    requests = [schemas["PredictRequest"], schemas["ExplainRequest"]]  # the same bodies
    for request in requests:
        request["oneOf"][0]["properties"]["instances"]["maxItems"] = max_instances
    shape = schemas["V2InputTensor"]["properties"]["shape"]
    rows = {"type": "integer", "minimum": 1, "maximum": max_instances}
    if model is None:
        shape["prefixItems"] = [rows, {"type": "integer", "minimum": 1}]
        return doc
    schema = model.schema
    names = schema.names
    values = {f.name: f.json_schema() for f in schema.features}
    required = [f.name for f in schema.features if not f.nullable]
    named = {
        "type": "object",
        "properties": values,
        "required": required,
        "additionalProperties": False,
    }
    schemas["Row"]["oneOf"][0] = {
        "type": "array",
        "prefixItems": [values[n] for n in names],
        "items": False,
        "minItems": len(names),
        "maxItems": len(names),
        "description": "Values in feature order (see GET /model features)",
    }
    schemas["Row"]["oneOf"][1] = {**named, "description": "Values by feature name"}
    for request in requests:
        bare = request["oneOf"][2]
        bare.update(named)
        bare.pop("minProperties", None)
    # One tensor per feature: its name, and the datatypes its values may come as.
    column = schemas["V2ColumnTensor"]["properties"]
    column["name"] = {"enum": names}
    column["shape"]["prefixItems"] = [rows, {"const": 1}]
    column["datatype"] = {"enum": sorted({d for f in schema.features for d in column_datatypes(f)})}
    inputs = schemas["V2InferRequest"]["properties"]["inputs"]
    inputs["maxItems"] = len(names)
    if schema.numeric:  # [rows, features]: at most the rows a request may carry
        shape["prefixItems"] = [rows, {"const": len(names)}]
    else:  # a matrix holds numbers only: this model takes its features one tensor each
        del schemas["V2InputTensor"]
        inputs["items"] = {"$ref": "#/components/schemas/V2ColumnTensor"}
        inputs["minItems"] = len(required) or 1
    classes = list(model.metadata.class_names)
    chosen = schemas["ExplainParameters"]["properties"]
    if classes:
        chosen["class"]["enum"] = list(classes)
    else:  # a regressor: nothing to choose
        del chosen["class"]
    _examples(doc, model)
    return doc


def _examples(doc: dict[str, Any], model: LoadedModel) -> None:
    """The served model's own example row in every request example."""
    recorded = model.metadata.input_example
    if recorded is None or set(recorded) != set(model.feature_names):
        return  # an older artifact without one: the generic examples stay
    example = dict(recorded)
    from function.service.protocols.v2_metadata import example_inputs

    row = [example[n] for n in model.feature_names]
    content = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    content["examples"] = {
        "instances": {"value": {"instances": [row, example]}},
        "features": {"value": {"features": row}},
        "named": {"value": example},
        "noProbabilities": {"value": {"instances": [row], "parameters": {"probabilities": False}}},
    }
    explain = doc["paths"]["/explain"]["post"]["requestBody"]["content"]["application/json"]
    explain["examples"] = {"instances": {"value": {"instances": [row]}}}
    classes = list(model.metadata.class_names)
    if classes:
        chosen = {"instances": [row], "parameters": {"class": classes[-1]}}
        explain["examples"]["class"] = {"value": chosen}
    for path in ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        body["example"] = {"id": "42", "inputs": example_inputs(model.schema, [row])}
