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
from function.errors import MethodNotAllowed, ModelrunError, NotFound, NotReady
from function.logs import request_fields, setup_logging
from function.predict import parse_instances, predict
from function.service import Service

log = logging.getLogger("modelrun.http")
OPENAPI = Path(__file__).with_name("openapi.json")
QUIET_ROUTES = {"health", "ready"}  # probes: logged at DEBUG, not once a second at INFO

Handler = Callable[[Service, Request], Any]


def _predict(service: Service, request: Request) -> Any:
    service.authorize(request.headers)
    model = service.require_model()
    body = read_json(request, service.config.max_request_bytes)
    instances = parse_instances(body, model.feature_names, service.config.max_instances_per_request)
    return predict(model, instances)


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


def _openapi(service: Service, request: Request) -> Any:
    return Response(OPENAPI.read_bytes(), mimetype="application/json")


ROUTES: dict[str, tuple[Handler, str, str]] = {
    "predict": (_predict, "/predict", "POST"),
    "model": (_model, "/model", "GET"),
    "health": (_health, "/health", "GET"),
    "ready": (_ready, "/ready", "GET"),
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
        endpoint = "unmatched"
        try:
            endpoint, _ = URL_MAP.bind_to_environ(request.environ).match()
            result = ROUTES[endpoint][0](service, request)
            response = result if isinstance(result, Response) else _json(result, 200)
        except ModelrunError as e:
            response = problem_response(e, request.path)
        except wz.NotFound:
            response = problem_response(NotFound(f"no route {request.path}"), request.path)
        except wz.MethodNotAllowed as e:
            allowed = ", ".join(e.valid_methods or [])
            error = MethodNotAllowed(
                f"{request.method} is not allowed on {request.path}; use {allowed}",
                headers={"Allow": allowed},
            )
            response = problem_response(error, request.path)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = problem_response(ModelrunError("an internal error occurred"), request.path)
        level = logging.DEBUG if endpoint in QUIET_ROUTES else logging.INFO
        fields = request_fields(request, response.status_code, time.perf_counter() - started)
        log.log(
            level,
            "%s %s %d",
            request.method,
            request.path,
            response.status_code,
            extra={"fields": fields},
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
