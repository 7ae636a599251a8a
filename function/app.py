"""Routing and request handling: thin handlers over the prediction core."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Request, Response
from functions_framework.exceptions import RequestTimeoutException
from werkzeug import exceptions as wz
from werkzeug.routing import Map, Rule

from function.body import read_json
from function.config import load_config
from function.errors import (
    Forbidden,
    MethodNotAllowed,
    ModelrunError,
    NotFound,
    NotReady,
    RequestTimeout,
    Unauthorized,
)
from function.logs import request_fields, setup_logging
from function.openapi import document
from function.predict import parse_instances, predict
from function.service import Service

log = logging.getLogger("modelrun.http")
QUIET_ROUTES = {"health", "ready", "metrics"}  # probes and scrapes: DEBUG, not INFO
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=31536000",  # served over HTTPS on Cloud Run
}
CORS_HEADERS = "Authorization, Content-Type, X-API-Key"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the Prometheus text format

Handler = Callable[[Service, Request], Any]


def _predict(service: Service, request: Request) -> Any:
    service.authorize(request.headers)
    model = service.require_model()
    body = read_json(request, service.config.max_request_bytes)
    instances = parse_instances(body, model.feature_names, service.config.max_instances_per_request)
    answer = predict(model, instances)
    service.telemetry.predicted(
        model.version, answer["predictions"], model.metadata["task"] == "classification"
    )
    return answer


def _model(service: Service, request: Request) -> Any:
    service.authorize(request.headers)
    return service.require_model().metadata


def _health(service: Service, request: Request) -> Any:
    return {"status": "ok"}


def _ready(service: Service, request: Request) -> Any:
    reason = service.readiness()
    if reason:
        raise NotReady(reason)
    model = service.require_model()
    return {"status": "ready", "model": {"name": model.name, "version": model.version}}


def _metrics(service: Service, request: Request) -> Any:
    if not service.config.metrics_public:
        service.authorize(request.headers)
    return Response(service.metrics_page(), mimetype=METRICS_TYPE)


def _openapi(service: Service, request: Request) -> Any:
    model = service.model
    return document(
        model.feature_names if model else None, service.config.max_instances_per_request
    )


ROUTES: dict[str, tuple[Handler, str, str]] = {
    "predict": (_predict, "/predict", "POST"),
    "model": (_model, "/model", "GET"),
    "health": (_health, "/health", "GET"),
    "ready": (_ready, "/ready", "GET"),
    "metrics": (_metrics, "/metrics", "GET"),
    "openapi": (_openapi, "/openapi.json", "GET"),
}
URL_MAP = Map([Rule(path, endpoint=name, methods=[m]) for name, (_, path, m) in ROUTES.items()])


def build(environ: Mapping[str, str]) -> Callable[[Request], Response]:
    """Return the request handler for a configuration (tests build their own)."""
    config = load_config(environ)
    setup_logging(config.log_level)
    service = Service(config)
    os.register_at_fork(after_in_child=service.start)  # gunicorn forks after importing us

    def handle(request: Request) -> Response:
        service.start()
        started = time.perf_counter()
        endpoint = route = None
        error: ModelrunError | None = None
        try:
            adapter = URL_MAP.bind_to_environ(request.environ)
            if _is_preflight(request):
                response = _preflight(service, request, adapter.allowed_methods())
            else:
                rule, _ = adapter.match(return_rule=True)
                endpoint, route = rule.endpoint, rule.rule
                result = ROUTES[str(endpoint)][0](service, request)
                response = result if isinstance(result, Response) else _json(result, 200)
        except ModelrunError as e:
            error = e
        except wz.NotFound:
            error = NotFound(f"no route {request.path}")
        except wz.MethodNotAllowed as e:
            allowed = ", ".join(e.valid_methods or [])
            error = MethodNotAllowed(
                f"{request.method} is not allowed on {request.path}; use {allowed}",
                headers={"Allow": allowed},
            )
        except RequestTimeoutException:
            limit = service.config.request_timeout_seconds
            error = RequestTimeout(f"the request was stopped after the {limit:g}s time limit")
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            error = ModelrunError("an internal error occurred")
        if error is not None:
            response = problem_response(error, request.path)
            service.telemetry.error(error.kind)
            if isinstance(error, Unauthorized):
                service.telemetry.auth_failed(error.reason)
        secured(response)
        _cors(service.config.cors_origins, request, response)
        seconds = time.perf_counter() - started
        service.telemetry.request(request.method, route, response.status_code, seconds)
        level = logging.DEBUG if endpoint in QUIET_ROUTES else logging.INFO
        log.log(
            level,
            "%s %s %d",
            request.method,
            request.path,
            response.status_code,
            extra={"fields": request_fields(request, response.status_code, seconds)},
        )
        return response

    handle.service = service  # type: ignore[attr-defined]
    return handle


def _json(body: Any, status: int) -> Response:
    return Response(json.dumps(body, allow_nan=False), status, mimetype="application/json")


def problem_response(error: ModelrunError, instance: str) -> Response:
    response = Response(
        json.dumps(error.problem(instance)), error.status, mimetype="application/problem+json"
    )
    response.headers.update(error.headers)
    return secured(response)


def secured(response: Response) -> Response:
    """Add the security headers every answer carries."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _is_preflight(request: Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def _preflight(service: Service, request: Request, methods: Iterable[str]) -> Response:
    """Answer a browser's CORS preflight for an allowed origin; refuse any other origin."""
    methods = list(methods)
    if not methods:
        raise NotFound(f"no route {request.path}")
    if not _origin_allowed(service.config.cors_origins, request.headers["Origin"]):
        raise Forbidden(f"origin {request.headers['Origin']} is not in CORS_ORIGINS")
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = ", ".join(sorted(methods))
    response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
    response.headers["Access-Control-Max-Age"] = "600"
    return response


def _origin_allowed(origins: tuple[str, ...], origin: str) -> bool:
    return "*" in origins or origin.rstrip("/") in origins


def _cors(origins: tuple[str, ...], request: Request, response: Response) -> None:
    origin = request.headers.get("Origin")
    if origin and _origin_allowed(origins, origin):
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
        response.headers.add("Vary", "Origin")
