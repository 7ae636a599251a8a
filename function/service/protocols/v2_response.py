"""An Open Inference Protocol v2 answer: output tensors, or the protocol's error body.

Answers stay JSON, which every client reads, whatever output form it asked for (binary too)."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response

from function.core.errors import ModelrunError
from function.core.model import LoadedModel
from function.core.predict import Prediction
from function.service.protocols.v2_tensors import LABELS, PROBABILITIES, label_datatype


def response(
    model: LoadedModel, prediction: Prediction, outputs: list[str], request_id: Any
) -> dict[str, Any]:
    """Shape the core's answer as output tensors (labels as BYTES for a classifier)."""
    n = len(prediction.labels)
    tensors = []
    if LABELS in outputs:
        datatype = label_datatype(model)
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


def error_body(error: ModelrunError) -> tuple[dict[str, str], int]:
    """The protocol's error form: {"error": message}; invalid input is a 400."""
    return {"error": str(error)}, 400 if error.status == 422 else error.status


def error_response(error: ModelrunError, instance: str) -> Response:
    """The error as the protocol's body, with its headers (Allow, Retry-After, …)."""
    body, status = error_body(error)
    response = Response(orjson.dumps(body), status, mimetype="application/json")
    response.headers.update(error.headers)
    return response
