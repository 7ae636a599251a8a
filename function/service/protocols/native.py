"""modelrun's own protocol (and Vertex AI's, which shares its errors): answers are the core's
(predict.answer), errors are RFC 9457 problem+json naming the field at fault."""

from __future__ import annotations

import json

from flask import Response

from function.core.errors import ModelrunError
from function.core.predict import Prediction


def error_response(error: ModelrunError, instance: str) -> Response:
    """The error as application/problem+json, with its headers (Allow, Retry-After, …)."""
    response = Response(
        json.dumps(error.problem(instance)), error.status, mimetype="application/problem+json"
    )
    response.headers.update(error.headers)
    return response


def vertex_answer(prediction: Prediction) -> dict[str, list[object]]:
    """Vertex AI's custom-container answer: the labels, one per instance."""
    return {"predictions": prediction.labels}
