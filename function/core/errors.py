"""Errors that carry their HTTP status, and their RFC 9457 problem form."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class ModelrunError(Exception):
    """Base error: a message for people, a status for HTTP."""

    status = 500
    title = "Internal Server Error"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{field}: {detail}" if field else detail)
        self.detail = detail
        self.field = field
        self.headers = dict(headers or {})

    @property
    def kind(self) -> str:
        """The error's name in snake case, for metrics: InvalidInput -> invalid_input."""
        if type(self) is ModelrunError:
            return "internal"
        name = type(self).__name__
        return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """Return the application/problem+json body for this error."""
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": str(self),
        }
        if self.field:
            body["field"] = self.field
        if instance:
            body["instance"] = instance
        return body


class BadRequest(ModelrunError):
    status, title = 400, "Bad Request"


class Unauthorized(ModelrunError):
    status, title = 401, "Unauthorized"

    def __init__(self, detail: str, reason: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="modelrun"'})
        self.reason = reason  # "missing" or "invalid": a metric label, never the key


class NotFound(ModelrunError):
    status, title = 404, "Not Found"


class MethodNotAllowed(ModelrunError):
    status, title = 405, "Method Not Allowed"


class Conflict(ModelrunError):
    status, title = 409, "Conflict"


class PayloadTooLarge(ModelrunError):
    status, title = 413, "Content Too Large"


class BodyTimeout(ModelrunError):
    """The client stopped sending its body (function/service/connections.py: READ_SECONDS)."""

    status, title = 408, "Request Timeout"


class UnsupportedMediaType(ModelrunError):
    status, title = 415, "Unsupported Media Type"


class InvalidInput(ModelrunError):
    status, title = 422, "Unprocessable Content"


class TooManyRequests(ModelrunError):
    status, title = 429, "Too Many Requests"

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


class Forbidden(ModelrunError):
    status, title = 403, "Forbidden"


class RequestTimeout(ModelrunError):
    """The request ran past the time limit and was stopped."""

    status, title = 503, "Request Timed Out"


class NotReady(ModelrunError):
    status, title = 503, "Service Unavailable"


class StoreUnavailable(ModelrunError):
    """The model store could not be reached or refused access."""

    status, title = 503, "Model Store Unavailable"


class IntegrityError(ModelrunError):
    """An artifact does not match its recorded or pinned digest, or is not a model."""

    status, title = 503, "Model Integrity Check Failed"


class ConfigError(ModelrunError):
    """A setting is missing or has a bad value; raised before anything starts. `setting` names
    the variable at fault when one is (infra/stack_config.py maps it to its stack key)."""

    title = "Configuration Error"

    def __init__(self, detail: str, *, setting: str | None = None) -> None:
        super().__init__(detail)
        self.setting = setting
