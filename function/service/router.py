"""Which handler answers a request: the route table, and dispatch.

functions-framework sends every path to one function (main.handle), so the routing is here, once:
a werkzeug Map bound once per process. `dispatch` either returns the handler's Response or raises
a typed error (function/core/errors.py); responses.py writes the error in the route's protocol.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from flask import Request, Response
from werkzeug import exceptions as wz
from werkzeug.routing import Map, Rule

from function.core.config import Config
from function.core.errors import (
    Forbidden,
    MethodNotAllowed,
    ModelrunError,
    NotFound,
    PayloadTooLarge,
)
from function.core.model import LoadedModel
from function.core.predict import Prediction
from function.core.rollout import CLIENT_HEADER
from function.service import pages, request_ids
from function.service.handlers import json_response

CORS_HEADERS = f"Authorization, Content-Type, X-API-Key, {CLIENT_HEADER}, {request_ids.HEADER}"
NATIVE, V2 = "native", "v2"  # how errors are written: problem+json, or v2's {"error": ...}


@dataclass(frozen=True)
class Route:
    method: str
    paths: tuple[str, ...]
    protocol: str = NATIVE
    quiet: bool = False  # probes and scrapes: logged at DEBUG, not INFO
    # A prediction route's answers (refusals too) leave payload records naming this protocol
    # (native, vertex, v2: function/core/records.py); None: no record.
    records: str | None = None
    request_id: bool = False  # its answers carry X-Request-Id (every recorded route's do)

    @property
    def identified(self) -> bool:
        """Whether its answers carry X-Request-Id."""
        return self.request_id or self.records is not None


V2_MODEL = ("/v2/models/<name>", "/v2/models/<name>/versions/<version>")
ROUTES: dict[str, Route] = {
    "predict": Route("POST", ("/predict",), records="native"),
    # Labels for earlier answers: its answer carries an id, and it records feedback, not itself.
    "feedback": Route("POST", ("/feedback",), request_id=True),
    "explain": Route("POST", ("/explain",), records="native"),
    "model": Route("GET", ("/model",)),
    "model_file": Route("GET", ("/model/files/<name>",)),
    "health": Route("GET", ("/health",), quiet=True),
    "ready": Route("GET", ("/ready",), quiet=True),
    "metrics": Route("GET", ("/metrics",), quiet=True),
    "openapi": Route("GET", ("/openapi.json",)),
    "v2_live": Route("GET", ("/v2/health/live",), V2, quiet=True),
    "v2_ready": Route("GET", ("/v2/health/ready",), V2, quiet=True),
    "v2_server": Route("GET", ("/v2",), V2),
    "v2_model": Route("GET", V2_MODEL, V2),
    "v2_model_ready": Route("GET", tuple(f"{p}/ready" for p in V2_MODEL), V2),
    "v2_infer": Route("POST", tuple(f"{p}/infer" for p in V2_MODEL), V2, records="v2"),
}
# The pages (function/service/pages.py), unless UI=false.
PAGE_ROUTES: dict[str, Route] = {
    "page": Route("GET", tuple(pages.PAGES)),
    "asset": Route("GET", ("/ui/<name>",), quiet=True),
}


def routes(config: Config) -> dict[str, Route]:
    """Every route; Vertex AI's two come from AIP_HEALTH_ROUTE and AIP_PREDICT_ROUTE."""
    table = {**ROUTES, **(PAGE_ROUTES if config.ui else {})}
    vertex = {
        "vertex_health": (config.vertex_health_route, Route("GET", (), quiet=True)),
        "vertex_predict": (config.vertex_predict_route, Route("POST", (), records="vertex")),
    }
    for name, (path, route) in vertex.items():
        if path:
            # Vertex's route wins over a native route on the same path.
            for other, existing in list(table.items()):
                if path in existing.paths:
                    kept = tuple(p for p in existing.paths if p != path)
                    table[other] = dataclasses.replace(existing, paths=kept)
            table[name] = dataclasses.replace(route, paths=(path,))
    return table


def path_protocol(path: str) -> str:
    """The protocol a path belongs to before (or without) any route matching it."""
    return V2 if path.startswith("/v2") else NATIVE


class Match(NamedTuple):
    """Where a request was routed: the route's name, its pattern (/v2/models/<name>/infer, the
    metrics' route label) and the path's arguments."""

    name: str
    rule: str
    route: Route
    args: dict[str, str]


# A handler takes the request's exchange (its request, and its payload record's notes) and the
# path's arguments; it returns a body (JSON) or a Response, and raises a typed error for the rest.
Handler = Callable[["Exchange", dict[str, str]], Any]


class Router:
    """The route table and its handlers, matched by path and method."""

    def __init__(self, table: Mapping[str, Route], handlers: Mapping[str, Handler]) -> None:
        missing = sorted(set(table) - set(handlers))
        if missing:
            raise ValueError(f"no handler for the routes {', '.join(missing)}")
        self.table, self.handlers = dict(table), dict(handlers)
        # merge_slashes off: werkzeug would answer /v2//health/live with a redirect exception
        # (it was a 500); a path is routed as sent or not found. Bound once: no rule names a
        # host, and match() is given the path and method, so one adapter serves every request
        # (binding one per request cost more than the matching).
        rules = [
            Rule(path, endpoint=name, methods=[r.method])
            for name, r in self.table.items()
            for path in r.paths
        ]
        self.urls = Map(rules, merge_slashes=False).bind("modelrun")

    def match(self, request: Request) -> Match:
        """The route for the request's path and method; 404 or 405 (with Allow) if none."""
        try:
            rule, args = self.urls.match(request.path, request.method, return_rule=True)
        except wz.NotFound:
            raise NotFound(f"no route {request.path}") from None
        except wz.MethodNotAllowed as e:
            allowed = ", ".join(e.valid_methods or [])
            raise MethodNotAllowed(
                f"{request.method} is not allowed on {request.path}; use {allowed}",
                headers={"Allow": allowed},
            ) from None
        name = str(rule.endpoint)
        return Match(name, rule.rule, self.table[name], dict(args))

    def allowed_methods(self, path: str) -> list[str]:
        return list(self.urls.allowed_methods(path))


@dataclass
class Exchange:
    """One request on its way through: when it began, where it was routed, and what its payload
    record is made of, noted as it goes (handlers.py notes, responses.after_response records)."""

    request: Request
    started: float = field(default_factory=time.perf_counter)
    arrived: float = field(default_factory=time.time)  # the payload record's time
    match: Match | None = None  # once routed
    request_id: str | None = None  # X-Request-Id, on an identified route
    client: str = "unauthenticated"  # who asked, as a record shows it (payloads.client_of)
    model: LoadedModel | None = None  # the version that answers
    X: Any = None  # the parsed rows
    prediction: Prediction | None = None
    error: ModelrunError | None = None  # the typed error it was answered with

    @property
    def protocol(self) -> str:
        """How its errors are written: the matched route's protocol, else the path's family."""
        return self.match.route.protocol if self.match else path_protocol(self.request.path)


def dispatch(router: Router, exchange: Exchange, cors_origins: tuple[str, ...]) -> Response:
    """Route the request and run its handler; raise typed errors (ModelrunError) for the rest."""
    request = exchange.request
    if is_preflight(request):
        return preflight(request, router.allowed_methods(request.path), cors_origins)
    match = exchange.match = router.match(request)
    if match.route.identified:
        exchange.request_id = request_ids.generated()  # a refusal of the client's id carries one
        exchange.request_id = request_ids.from_headers(request.headers) or exchange.request_id
    if match.route.method != "POST" and has_body(request):
        raise PayloadTooLarge(  # refused unread (function/service/connections.py)
            f"{request.method} {request.path} takes no request body"
        )
    result = router.handlers[match.name](exchange, match.args)
    return result if isinstance(result, Response) else json_response(result, 200)


def has_body(request: Request) -> bool:
    """Whether the request carries a body (a length, or chunks), read or not."""
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return chunked or bool(request.content_length)


def is_preflight(request: Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def preflight(request: Request, methods: Iterable[str], origins: tuple[str, ...]) -> Response:
    """Answer a browser's CORS preflight for an allowed origin; refuse any other origin."""
    methods = list(methods)
    if not methods:
        raise NotFound(f"no route {request.path}")
    if not origin_allowed(origins, request.headers["Origin"]):
        raise Forbidden(f"origin {request.headers['Origin']} is not in CORS_ORIGINS")
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = ", ".join(sorted(methods))
    response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
    response.headers["Access-Control-Max-Age"] = "600"
    return response


def origin_allowed(origins: tuple[str, ...], origin: str) -> bool:
    return "*" in origins or origin.rstrip("/") in origins
