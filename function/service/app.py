"""Routing and request handling: thin handlers over the prediction core."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from flask import Request, Response
from werkzeug import exceptions as wz
from werkzeug.routing import Map, MapAdapter, Rule

from function.core import explain
from function.core.config import Config, load_config
from function.core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MethodNotAllowed,
    ModelrunError,
    NotFound,
    NotReady,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
)
from function.core.logs import request_fields, setup_logging
from function.core.model import LoadedModel
from function.core.predict import Instances, Prediction, answer, infer, parse_instances
from function.core.rollout import CLIENT_HEADER
from function.service import feedback, metrics_port, oip, pages, request_ids
from function.service.auth import presented_key
from function.service.body import read_bytes, read_json
from function.service.deadline import DeadlineExceeded
from function.service.openapi import document
from function.service.payloads import Answered, client_of
from function.service.service import Service
from function.service.shadow import Recorder, ShadowScorer

log = logging.getLogger("modelrun.http")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=31536000",  # served over HTTPS on Cloud Run
}
CORS_HEADERS = f"Authorization, Content-Type, X-API-Key, {CLIENT_HEADER}, {request_ids.HEADER}"
NOT_READY = "not ready to serve; a caller with an API key is told why"
VERSION_HEADER = "X-Model-Version"  # on every prediction: the version that answered
EXCHANGE = "modelrun.exchange"  # the request's Exchange, in its WSGI environ
# The routes whose answers carry X-Request-Id and yield payload records, by record protocol.
PREDICTION_ROUTES = {"predict": "native", "explain": "native", "vertex_predict": "vertex",
                     "v2_infer": "v2"}  # fmt: skip
ID_ROUTES = {*PREDICTION_ROUTES, "feedback"}  # feedback's answer carries one too

Handler = Callable[[Service, Request, dict[str, str]], Any]


def _predict(service: Service, request: Request, args: dict[str, str]) -> Any:
    model, shadow, instances = _instances(service, request)
    prediction = _score(service, request, model, shadow, instances)
    return _answered(answer(model, prediction), model)


def _feedback(service: Service, request: Request, args: dict[str, str]) -> Any:
    """Labels for earlier answers (function/service/feedback.py): each one recorded, whatever
    the sample rate, while records are on. Feedback is rare and each label is worth more than
    any one answer; sampling it again would lose labels whose answers were recorded."""
    _authorize(service, request)
    model = service.require_model()
    if not service.payloads.on:
        raise Conflict(
            "payload records are off (PAYLOAD_SAMPLE_RATE=0): feedback would not be kept"
        )
    body = read_json(request, service.config.max_request_bytes)
    limit = service.config.max_instances_per_request
    records = feedback.parse(body, model, _exchange(request).client, limit)
    for record in records:
        service.payloads.submit(record)
    return _json({"accepted": len(records)}, 202)


def _authorize(service: Service, request: Request, cost: int = 1) -> str:
    """service.authorize, noting who asked for the request's payload record."""
    identity = service.authorize(request.headers, request.remote_addr, cost=cost)
    _exchange(request).client = client_of(identity)
    return identity


def _exchange(request: Request) -> Exchange:
    exchange: Exchange = request.environ[EXCHANGE]
    return exchange


def _explain(service: Service, request: Request, args: dict[str, str]) -> Any:
    """Why this answer: the prediction split into a base value and one attribution per input
    feature (function/core/explain.py); counted as EXPLAIN_COST predictions against the rate
    limit."""
    identity = _authorize(service, request, cost=explain.EXPLAIN_COST)
    model, _ = service.serving(identity, request.headers)
    exchange = _exchange(request)
    exchange.model = model
    body, wanted = explain.parse_parameters(read_json(request, service.config.max_request_bytes))
    limit = service.config.max_instances_per_request
    with service.deadlines.interruptible():
        instances = parse_instances(body, model.pipeline_schema, limit)
    exchange.X = instances.X
    # Built outside the time limit's reach: an import stopped half-way would stay broken.
    explainer = service.explainers.get(model, service.loader.store, service.config.allow_pickle)
    with service.deadlines.interruptible():
        explanation = explainer.explain(instances, wanted)
    return _answered(explain.answer(model, explainer, explanation), model)


def _model(service: Service, request: Request, args: dict[str, str]) -> Any:
    service.authorize(request.headers, request.remote_addr)
    served = service.served()  # once: the model and the rollout shown are one instant's
    model = served.require_model()
    features = [f.describe() for f in model.schema.features]
    limits = {
        "max_instances_per_request": service.config.max_instances_per_request,
        "max_request_bytes": service.config.max_request_bytes,
    }
    shown = {
        "runtime": model.runtime,
        "promotion": model.promotion.to_json() if model.promotion else None,
        "rollout": served.rollout(),
        "limits": limits,
    }
    return {**model.metadata.to_json(), "features": features, **shown}


def _model_file(service: Service, request: Request, args: dict[str, str]) -> Any:
    service.authorize(request.headers, request.remote_addr)
    model = service.require_model()
    name = args["name"]
    data = service.report_file(model, name)
    kind = pages.TYPES.get(Path(name).suffix, "application/octet-stream")
    response = Response(data, content_type=kind)
    if name.endswith(".html"):  # saved, never rendered on this origin
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _page(service: Service, request: Request, args: dict[str, str]) -> Any:
    return pages.page(request)


def _asset(service: Service, request: Request, args: dict[str, str]) -> Any:
    return pages.asset(request, args["name"])


def _health(service: Service, request: Request, args: dict[str, str]) -> Any:
    return {"status": "ok"}


def _ready(service: Service, request: Request, args: dict[str, str]) -> Any:
    model = _readiness(service, request)
    named = {"model": {"name": model.name, "version": model.version}} if model else {}
    return {"status": "ready", **named}


def _metrics(service: Service, request: Request, args: dict[str, str]) -> Any:
    if not service.config.metrics_public:
        service.authorize(request.headers, request.remote_addr)
    return Response(service.metrics_page(), content_type=metrics_port.CONTENT_TYPE)


def _openapi(service: Service, request: Request, args: dict[str, str]) -> Any:
    model = service.model
    return document(model, service.config.max_instances_per_request)


# --- Open Inference Protocol v2 ----------------------------------------------------------


def _v2_live(service: Service, request: Request, args: dict[str, str]) -> Any:
    return {"live": True}


def _v2_ready(service: Service, request: Request, args: dict[str, str]) -> Any:
    _readiness(service, request)
    return {"ready": True}


def _v2_server(service: Service, request: Request, args: dict[str, str]) -> Any:
    service.authorize(request.headers, request.remote_addr)
    return oip.SERVER


def _v2_model(service: Service, request: Request, args: dict[str, str]) -> Any:
    service.authorize(request.headers, request.remote_addr)
    return oip.model_metadata(service.named(args["name"], args.get("version")))


def _v2_model_ready(service: Service, request: Request, args: dict[str, str]) -> Any:
    service.authorize(request.headers, request.remote_addr)  # it confirms names and versions
    _readiness(service, request)
    model = service.named(args["name"], args.get("version"))
    return {"name": model.name, "ready": True}


def _v2_infer(service: Service, request: Request, args: dict[str, str]) -> Any:
    identity = _authorize(service, request)
    served, shadow = service.serving(identity, request.headers, args.get("version"))
    model = oip.select(served, args["name"], args.get("version"))
    exchange = _exchange(request)
    exchange.model = model
    limit = service.config.max_instances_per_request
    header_length = request.headers.get(oip.BINARY_HEADER)
    if header_length is None:
        body = read_json(request, service.config.max_request_bytes, type_required=False)
    else:  # tensors as raw bytes after a JSON part (tritonclient's default)
        body = oip.binary_request(
            read_bytes(request, service.config.max_request_bytes), header_length, model.schema,
            limit,
        )  # fmt: skip
    with service.deadlines.interruptible():
        instances, outputs, request_id = oip.parse_request(body, model, limit)
    exchange.X = instances.X
    # v2's own id names the request when the client sent no X-Request-Id and it can be one;
    # the body echoes it as sent either way.
    own = isinstance(request_id, str) and request_ids.valid(request_id)
    if own and request_ids.HEADER not in request.headers:
        exchange.request_id = request_id
    prediction = _score(service, request, model, shadow, instances)
    return _answered(oip.response(model, prediction, outputs, request_id), model)


# --- Vertex AI custom-container contract -------------------------------------------------


def _vertex_health(service: Service, request: Request, args: dict[str, str]) -> Any:
    _readiness(service, request)  # Vertex sends traffic only once this answers 200
    return {"status": "ready"}


def _vertex_predict(service: Service, request: Request, args: dict[str, str]) -> Any:
    model, shadow, instances = _instances(service, request)
    prediction = _score(service, request, model, shadow, instances)
    return _answered({"predictions": prediction.labels}, model)


def _instances(
    service: Service, request: Request
) -> tuple[LoadedModel, ShadowScorer | None, Instances]:
    identity = _authorize(service, request)
    model, shadow = service.serving(identity, request.headers)
    exchange = _exchange(request)
    exchange.model = model
    body = read_json(request, service.config.max_request_bytes)
    limit = service.config.max_instances_per_request
    with service.deadlines.interruptible():
        instances = parse_instances(body, model.schema, limit)
    exchange.X = instances.X
    return model, shadow, instances


def _score(
    service: Service,
    request: Request,
    model: LoadedModel,
    shadow: ShadowScorer | None,
    instances: Instances,
) -> Prediction:
    """Run the answering model, timed and counted by version; hand the rows and the answer to a
    shadow candidate (it cannot change the answer), and count the drift bins and confidence."""
    started = time.perf_counter()
    try:
        prediction = infer(model, instances, service.run_model)
    except InvalidInput:  # a row this model refuses: the client's to fix, not the version's
        raise
    except BaseException:
        service.telemetry.scored(model.version, "answer", 0.0, ok=False)
        raise
    service.telemetry.scored(model.version, "answer", time.perf_counter() - started, ok=True)
    exchange = _exchange(request)
    exchange.prediction = prediction
    if prediction.probabilities is not None:
        service.telemetry.confident(model.version, "answer", prediction.probabilities)
    if shadow is not None:
        sampled = service.payloads.sampled(exchange.request_id)
        record = _shadow_record(service, exchange) if sampled else None
        shadow.submit(instances.X, prediction, record)
    _count(service, model, instances, prediction.labels)
    return prediction


def _shadow_record(service: Service, exchange: Exchange) -> Recorder:
    """The payload record of a shadow candidate's answer to this request (its own thread's)."""
    request_id, client, X = exchange.request_id or "", exchange.client, exchange.X
    path = exchange.request.path  # read now: the request is gone when the shadow answers
    protocol = PREDICTION_ROUTES.get(exchange.endpoint or "", "native")

    def record(candidate: LoadedModel, prediction: Prediction | None, seconds: float) -> None:
        service.payloads.submit(
            Answered(
                request_id=request_id,
                time=exchange.arrived,
                model=candidate,
                role="shadow",
                protocol=protocol,
                route=path,
                status=200 if prediction else 500,
                outcome="ok" if prediction else "model-error",
                latency_ms=seconds * 1000,
                client=client,
                X=X,
                prediction=prediction,
            )
        )

    return record


def _answered(body: Any, model: LoadedModel) -> Response:
    """A prediction's answer, saying which version gave it (a canary has two)."""
    response = _json(body, 200)
    response.headers[VERSION_HEADER] = model.version
    return response


def _readiness(service: Service, request: Request) -> LoadedModel | None:
    """Raise 503 unless the instance can serve. Only a caller with a valid key learns why not, or
    which model is served (returned; None to anyone else): probes send no key, and the reason
    names the store. A wrong key is refused as on any keyed route (and throttled)."""
    keyed = not service.config.auth_enabled or presented_key(request.headers) is not None
    if keyed:
        service.authorize(request.headers, request.remote_addr)
    reason = service.readiness()
    if reason:
        raise NotReady(reason if keyed else NOT_READY)
    model = service.require_model()
    return model if keyed else None


def _count(service: Service, model: LoadedModel, instances: Instances, labels: list[Any]) -> None:
    """Count the answered rows: predictions by class, and the drift bins of rows and answers."""
    service.telemetry.predicted(model.version, labels, model.metadata.classifier)
    try:
        service.drift.observe(model, instances.X, labels)
    except Exception:  # counting never costs the client its answer; the failure is counted
        log.exception("drift counting failed for version %s", model.version)
        service.telemetry.error("drift_count")


@dataclass(frozen=True)
class Route:
    handler: Handler
    method: str
    paths: tuple[str, ...]
    protocol: str = "modelrun"  # how errors are written: problem+json, or "v2": {"error"}


V2_MODEL = ("/v2/models/<name>", "/v2/models/<name>/versions/<version>")
ROUTES: dict[str, Route] = {
    "predict": Route(_predict, "POST", ("/predict",)),
    "feedback": Route(_feedback, "POST", ("/feedback",)),
    "explain": Route(_explain, "POST", ("/explain",)),
    "model": Route(_model, "GET", ("/model",)),
    "model_file": Route(_model_file, "GET", ("/model/files/<name>",)),
    "health": Route(_health, "GET", ("/health",)),
    "ready": Route(_ready, "GET", ("/ready",)),
    "metrics": Route(_metrics, "GET", ("/metrics",)),
    "openapi": Route(_openapi, "GET", ("/openapi.json",)),
    "v2_live": Route(_v2_live, "GET", ("/v2/health/live",), "v2"),
    "v2_ready": Route(_v2_ready, "GET", ("/v2/health/ready",), "v2"),
    "v2_server": Route(_v2_server, "GET", ("/v2",), "v2"),
    "v2_model": Route(_v2_model, "GET", V2_MODEL, "v2"),
    "v2_model_ready": Route(_v2_model_ready, "GET", tuple(f"{p}/ready" for p in V2_MODEL), "v2"),
    "v2_infer": Route(_v2_infer, "POST", tuple(f"{p}/infer" for p in V2_MODEL), "v2"),
}
# The pages (function/service/pages.py), unless UI=false.
PAGE_ROUTES: dict[str, Route] = {
    "page": Route(_page, "GET", tuple(pages.PAGES)),
    "asset": Route(_asset, "GET", ("/ui/<name>",)),
}
QUIET_ROUTES = {"health", "ready", "metrics", "v2_live", "v2_ready", "vertex_health", "asset"}


def routes(config: Config) -> dict[str, Route]:
    """Every route; Vertex AI's two come from AIP_HEALTH_ROUTE and AIP_PREDICT_ROUTE."""
    table = {**ROUTES, **(PAGE_ROUTES if config.ui else {})}
    vertex = {
        "vertex_health": (config.vertex_health_route, Route(_vertex_health, "GET", ())),
        "vertex_predict": (config.vertex_predict_route, Route(_vertex_predict, "POST", ())),
    }
    for name, (path, route) in vertex.items():
        if path:
            # Vertex's route wins over a native route on the same path.
            for other, existing in list(table.items()):
                if path in existing.paths:
                    kept = tuple(p for p in existing.paths if p != path)
                    table[other] = Route(existing.handler, existing.method, kept, existing.protocol)
            table[name] = Route(route.handler, route.method, (path,))
    return table


def url_map(table: dict[str, Route]) -> Map:
    # merge_slashes off: werkzeug would answer /v2//health/live with a redirect exception (it
    # was a 500); a path is routed as sent or not found.
    return Map(
        [
            Rule(path, endpoint=name, methods=[r.method])
            for name, r in table.items()
            for path in r.paths
        ],
        merge_slashes=False,
    )


@dataclass
class Exchange:
    """One request on its way through: where it was routed, and how errors are written."""

    request: Request
    started: float = field(default_factory=time.perf_counter)
    arrived: float = field(default_factory=time.time)  # the payload record's time
    endpoint: str | None = None  # the route's name, once matched
    rule: str | None = None  # its pattern (/v2/models/<name>/infer), the metrics' route label
    protocol: str = field(init=False)  # the matched route's; until then the path's family
    # What a prediction route's payload record is made of, noted as the request goes.
    request_id: str | None = None  # X-Request-Id, on ID_ROUTES
    client: str = "unauthenticated"
    model: LoadedModel | None = None
    X: Any = None  # the parsed rows
    prediction: Prediction | None = None
    error: ModelrunError | None = None

    def __post_init__(self) -> None:
        self.protocol = path_protocol(self.request.path)


def path_protocol(path: str) -> str:
    """The protocol a path belongs to before (or without) any route matching it."""
    return "v2" if path.startswith("/v2") else "modelrun"


def build(environ: Mapping[str, str]) -> Callable[[Request], Response]:
    """Read the configuration and return the process's request handler."""
    config = load_config(environ)
    setup_logging(config.log_level)
    service = Service(config)
    os.register_at_fork(after_in_child=service.start)  # gunicorn forks after importing us
    return handler(service)


def handler(service: Service) -> Callable[[Request], Response]:
    """Return the request handler of a service (tests/inprocess.py serves one in process)."""
    table = routes(service.config)
    # Bound once: no rule names a host, and match() is given the path and method, so one
    # adapter serves every request (binding one per request cost more than the matching).
    urls = url_map(table).bind("modelrun")

    def handle(request: Request) -> Response:
        service.start()
        exchange = Exchange(request)
        request.environ[EXCHANGE] = exchange
        try:
            with service.deadlines.guard():
                response = dispatch(service, table, urls, exchange)
        except Exception as e:  # every failure becomes its protocol's error body
            exchange.error = as_error(service, request, e)
            response = error_response(service, exchange, exchange.error)
        return after_response(service, exchange, response)

    return handle


def dispatch(
    service: Service, table: dict[str, Route], urls: MapAdapter, exchange: Exchange
) -> Response:
    """Route the request and run its handler; raise typed errors (ModelrunError) for the rest."""
    request = exchange.request
    if _is_preflight(request):
        return _preflight(service, request, urls.allowed_methods(request.path))
    try:
        rule, args = urls.match(request.path, request.method, return_rule=True)
    except wz.NotFound:
        raise NotFound(f"no route {request.path}") from None
    except wz.MethodNotAllowed as e:
        allowed = ", ".join(e.valid_methods or [])
        raise MethodNotAllowed(
            f"{request.method} is not allowed on {request.path}; use {allowed}",
            headers={"Allow": allowed},
        ) from None
    exchange.endpoint, exchange.rule = str(rule.endpoint), rule.rule
    route = table[exchange.endpoint]
    exchange.protocol = route.protocol
    if exchange.endpoint in ID_ROUTES:
        exchange.request_id = request_ids.generated()  # a refusal of the client's carries one
        exchange.request_id = request_ids.from_headers(request.headers) or exchange.request_id
    if route.method != "POST" and has_body(
        request
    ):  # refused unread (function/service/connections.py)
        raise PayloadTooLarge(f"{request.method} {request.path} takes no request body")
    result = route.handler(service, request, dict(args))
    return result if isinstance(result, Response) else _json(result, 200)


def has_body(request: Request) -> bool:
    """Whether the request carries a body (a length, or chunks), read or not."""
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return chunked or bool(request.content_length)


def as_error(service: Service, request: Request, error: Exception) -> ModelrunError:
    """The typed error for any failure: its own, the time limit's, or a 500 that is logged."""
    if isinstance(error, ModelrunError):
        return error
    if isinstance(error, DeadlineExceeded):
        limit = service.config.request_timeout_seconds
        return RequestTimeout(f"the request was stopped after the {limit:g}s time limit")
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=error)
    return ModelrunError("an internal error occurred")


def error_response(service: Service, exchange: Exchange, error: ModelrunError) -> Response:
    """Write an error as its protocol's body (one writer per protocol), and count it."""
    response = ERROR_WRITERS[exchange.protocol](error, exchange.request.path)
    service.telemetry.error(error.kind)
    if isinstance(error, Unauthorized):
        service.telemetry.auth_failed(error.reason)
    return response


def after_response(service: Service, exchange: Exchange, response: Response) -> Response:
    """What every answer gets: security headers, CORS, its metrics and its log line."""
    request = exchange.request
    secured(response)
    _cors(service.config.cors_origins, request, response)
    seconds = time.perf_counter() - exchange.started
    if exchange.request_id is not None:
        response.headers[request_ids.HEADER] = exchange.request_id
        if exchange.endpoint in PREDICTION_ROUTES and service.payloads.sampled(exchange.request_id):
            _record(service, exchange, response.status_code, seconds)
    service.telemetry.request(request.method, exchange.rule, response.status_code, seconds)
    level = logging.DEBUG if exchange.endpoint in QUIET_ROUTES else logging.INFO
    log.log(
        level,
        "%s %s %d",
        request.method,
        request.path,
        response.status_code,
        extra={"fields": request_fields(request, response.status_code, seconds)},
    )
    return response


def _record(service: Service, exchange: Exchange, status: int, seconds: float) -> None:
    """Queue the answer's payload record (function/service/payloads.py): never waits."""
    error = exchange.error
    service.payloads.submit(
        Answered(
            request_id=exchange.request_id or "",
            time=exchange.arrived,
            model=exchange.model,
            role="answer",
            protocol=PREDICTION_ROUTES[exchange.endpoint or ""],
            route=exchange.request.path,
            status=status,
            outcome="ok" if error is None else error.kind.replace("_", "-"),
            latency_ms=seconds * 1000,
            client=exchange.client,
            X=exchange.X,
            prediction=exchange.prediction,
        )
    )


def _json(body: Any, status: int) -> Response:
    # orjson: a 10,000-row answer encodes in about a tenth of json.dumps's time. Answers are
    # checked finite before they get here (orjson would write NaN as null).
    return Response(orjson.dumps(body), status, mimetype="application/json")


def _v2_error(error: ModelrunError, instance: str) -> Response:
    body, status = oip.error_body(error)
    response = _json(body, status)
    response.headers.update(error.headers)
    return response


def problem_response(error: ModelrunError, instance: str) -> Response:
    response = Response(
        json.dumps(error.problem(instance)), error.status, mimetype="application/problem+json"
    )
    response.headers.update(error.headers)
    return secured(response)


ERROR_WRITERS: dict[str, Callable[[ModelrunError, str], Response]] = {
    "modelrun": problem_response,  # RFC 9457 problem+json
    "v2": _v2_error,  # the Open Inference Protocol's {"error": "..."}
}


def secured(response: Response) -> Response:
    """Add the security headers every answer carries (those it does not carry already)."""
    present = {name.lower() for name, _ in response.headers}
    response.headers.extend(
        (name, value) for name, value in SECURITY_HEADERS.items() if name.lower() not in present
    )
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
        exposed = f"{VERSION_HEADER}, {request_ids.HEADER}"
        response.headers["Access-Control-Expose-Headers"] = exposed
        response.headers.add("Vary", "Origin")
