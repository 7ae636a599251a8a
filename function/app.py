"""Routing and request handling: thin handlers over the prediction core."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Request, Response
from werkzeug import exceptions as wz
from werkzeug.routing import Map, Rule

from function.body import read_json
from function.config import load_config
from function.errors import MethodNotAllowed, ModelrunError, NotFound, NotReady, Unauthorized
from function.logs import request_fields, setup_logging
from function.predict import parse_instances, predict
from function.service import Service

log = logging.getLogger("modelrun.http")
OPENAPI = Path(__file__).with_name("openapi.json")
QUIET_ROUTES = {"health", "ready", "metrics"}  # probes and scrapes: DEBUG, not INFO
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
    return Response(OPENAPI.read_bytes(), mimetype="application/json")


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
            rule, _ = URL_MAP.bind_to_environ(request.environ).match(return_rule=True)
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
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            error = ModelrunError("an internal error occurred")
        if error is not None:
            response = problem_response(error, request.path)
            service.telemetry.error(error.kind)
            if isinstance(error, Unauthorized):
                service.telemetry.auth_failed(error.reason)
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
    return response
