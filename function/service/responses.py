"""What every answer gets on its way out: errors written in their protocol's body, security
headers, CORS, X-Request-Id, its payload record (queued), its metrics and its log line."""

from __future__ import annotations

import logging
import time

from flask import Request, Response

from function.core.errors import ModelrunError, RequestTimeout, Unauthorized
from function.core.logs import request_fields
from function.service import request_ids
from function.service.deadline import DeadlineExceeded
from function.service.handlers import VERSION_HEADER
from function.service.payloads import Answered, Payloads
from function.service.protocols import native, v2_response
from function.service.router import V2, Exchange, origin_allowed
from function.service.telemetry import Telemetry

log = logging.getLogger("modelrun.http")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=31536000",  # served over HTTPS on Cloud Run
}


def as_error(request: Request, error: Exception, timeout_seconds: float) -> ModelrunError:
    """The typed error for any failure: its own, the time limit's, or a 500 that is logged."""
    if isinstance(error, ModelrunError):
        return error
    if isinstance(error, DeadlineExceeded):
        return RequestTimeout(f"the request was stopped after the {timeout_seconds:g}s time limit")
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=error)
    return ModelrunError("an internal error occurred")


def error_response(exchange: Exchange, error: ModelrunError, telemetry: Telemetry) -> Response:
    """Write an error as its protocol's body, and count it."""
    write = v2_response.error_response if exchange.protocol == V2 else native.error_response
    response = write(error, exchange.request.path)
    telemetry.error(error.kind)
    if isinstance(error, Unauthorized):
        telemetry.auth_failed(error.reason)
    return response


def after_response(
    exchange: Exchange,
    response: Response,
    telemetry: Telemetry,
    payloads: Payloads,
    cors_origins: tuple[str, ...],
) -> Response:
    """What every answer gets: security headers, CORS, X-Request-Id and the payload record on a
    prediction route, its metrics and its log line."""
    request, match = exchange.request, exchange.match
    secured(response)
    _cors(cors_origins, request, response)
    seconds = time.perf_counter() - exchange.started
    if exchange.request_id is not None:
        response.headers[request_ids.HEADER] = exchange.request_id
        records = match.route.records if match else None
        if records is not None and payloads.sampled(exchange.request_id):
            payloads.submit(_answered(exchange, records, response.status_code, seconds))
    rule = match.rule if match else None
    telemetry.request(request.method, rule, response.status_code, seconds)
    level = logging.DEBUG if match and match.route.quiet else logging.INFO
    log.log(
        level,
        "%s %s %d",
        request.method,
        request.path,
        response.status_code,
        extra={"fields": request_fields(request, response.status_code, seconds)},
    )
    return response


def _answered(exchange: Exchange, protocol: str, status: int, seconds: float) -> Answered:
    """What the request leaves for its payload record (function/service/payloads.py)."""
    error = exchange.error
    return Answered(
        request_id=exchange.request_id or "",
        time=exchange.arrived,
        model=exchange.model,
        role="answer",
        protocol=protocol,
        route=exchange.request.path,
        status=status,
        outcome="ok" if error is None else error.kind.replace("_", "-"),
        latency_ms=seconds * 1000,
        client=exchange.client,
        X=exchange.X,
        prediction=exchange.prediction,
    )


def secured(response: Response) -> Response:
    """Add the security headers every answer carries (those it does not carry already)."""
    present = {name.lower() for name, _ in response.headers}
    response.headers.extend(
        (name, value) for name, value in SECURITY_HEADERS.items() if name.lower() not in present
    )
    return response


def _cors(origins: tuple[str, ...], request: Request, response: Response) -> None:
    origin = request.headers.get("Origin")
    if origin and origin_allowed(origins, origin):
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
        exposed = f"{VERSION_HEADER}, {request_ids.HEADER}"
        response.headers["Access-Control-Expose-Headers"] = exposed
        response.headers.add("Vary", "Origin")
