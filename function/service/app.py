"""The request handler: the service's parts wired to the routes, and one request's walk.

    dispatch (router.py)  ->  error_response (responses.py, on a typed error)  ->  after_response

Each handler group (handlers.py) gets the parts it uses, not the whole Service.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from flask import Request, Response

from function.core.config import load_config
from function.core.logs import setup_logging
from function.service import handlers as h
from function.service import metrics_port
from function.service.responses import after_response, as_error, error_response
from function.service.router import Exchange, Handler, Router, dispatch, routes
from function.service.service import Service


def build(environ: Mapping[str, str]) -> Callable[[Request], Response]:
    """Read the configuration and return the process's request handler."""
    config = load_config(environ)
    setup_logging(config.log_level)
    service = Service(config)
    os.register_at_fork(after_in_child=service.start)  # gunicorn forks after importing us
    return handler(service)


def handlers(service: Service) -> dict[str, Handler]:
    """Every route's handler, each group built with the parts of the service it uses."""
    config = service.config
    limits = h.Limits(config.max_request_bytes, config.max_instances_per_request)
    authorize = service.authorize
    scorer = h.Scorer(service.run_model, service.telemetry, service.drift, service.payloads)
    predictions = h.Predictions(authorize, service.serving, scorer, service.deadlines, limits)
    explanations = h.Explanations(
        authorize, service.serving, service.deadlines, limits, service.explainers,
        service.loader.store, config.allow_pickle,
    )  # fmt: skip
    feedback = h.Feedback(authorize, service.require_model, service.payloads, limits)
    readiness = h.Readiness(
        config.auth_enabled, authorize, service.readiness, service.require_model
    )
    described = h.Descriptions(
        authorize, service.require_model, service.served, lambda: service.model, service.named,
        service.report_file, readiness, limits,
    )  # fmt: skip
    metrics = h.Metrics(
        config.metrics_public, authorize, service.metrics_page, metrics_port.CONTENT_TYPE
    )
    return {
        "predict": predictions.predict,
        "feedback": feedback.feedback,
        "explain": explanations.explain,
        "model": described.model,
        "model_file": described.model_file,
        "health": readiness.health,
        "ready": readiness.ready,
        "metrics": metrics.metrics,
        "openapi": described.openapi,
        "v2_live": readiness.v2_live,
        "v2_ready": readiness.v2_ready,
        "v2_server": described.v2_server,
        "v2_model": described.v2_model,
        "v2_model_ready": described.v2_model_ready,
        "v2_infer": predictions.v2_infer,
        "vertex_health": readiness.vertex_health,
        "vertex_predict": predictions.vertex_predict,
        "page": h.page,
        "asset": h.asset,
    }


def handler(service: Service) -> Callable[[Request], Response]:
    """Return the request handler of a service (tests/inprocess.py serves one in process)."""
    config, telemetry, deadlines = service.config, service.telemetry, service.deadlines
    payloads = service.payloads
    router = Router(routes(config), handlers(service))
    origins, timeout = config.cors_origins, config.request_timeout_seconds

    def handle(request: Request) -> Response:
        service.start()
        exchange = Exchange(request)
        try:
            with deadlines.guard():
                response = dispatch(router, exchange, origins)
        except Exception as e:  # every failure becomes its protocol's error body
            exchange.error = as_error(request, e, timeout)
            response = error_response(exchange, exchange.error, telemetry)
        return after_response(exchange, response, telemetry, payloads, origins)

    return handle
