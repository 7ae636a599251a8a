"""Which handler answers a request: the route table, and dispatch.

functions-framework sends every path to one function (main.handle), so the routing is here, once:
a werkzeug Map bound once per process. `dispatch` either returns the handler's Response or raises
a typed error (function/core/errors.py); responses.py writes the error in the route's protocol.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from flask import Request, Response
from werkzeug import exceptions as wz
from werkzeug.routing import Map, Rule

from function.core.config import Config
from function.core.errors import Forbidden, MethodNotAllowed, NotFound, PayloadTooLarge
from function.core.rollout import CLIENT_HEADER
from function.service import pages
from function.service.handlers import Handler, json_response

CORS_HEADERS = f"Authorization, Content-Type, X-API-Key, {CLIENT_HEADER}"
NATIVE, V2 = "native", "v2"  # how errors are written: problem+json, or v2's {"error": ...}


@dataclass(frozen=True)
class Route:
    method: str
    paths: tuple[str, ...]
    protocol: str = NATIVE
    quiet: bool = False  # probes and scrapes: logged at DEBUG, not INFO


V2_MODEL = ("/v2/models/<name>", "/v2/models/<name>/versions/<version>")
ROUTES: dict[str, Route] = {
    "predict": Route("POST", ("/predict",)),
    "explain": Route("POST", ("/explain",)),
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
    "v2_infer": Route("POST", tuple(f"{p}/infer" for p in V2_MODEL), V2),
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
        "vertex_predict": (config.vertex_predict_route, Route("POST", ())),
    }
    for name, (path, route) in vertex.items():
        if path:
            # Vertex's route wins over a native route on the same path.
            for other, existing in list(table.items()):
                if path in existing.paths:
                    kept = tuple(p for p in existing.paths if p != path)
                    table[other] = Route(existing.method, kept, existing.protocol, existing.quiet)
            table[name] = Route(route.method, (path,), quiet=route.quiet)
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
    """One request on its way through: when it began, and where it was routed."""

    request: Request
    started: float = field(default_factory=time.perf_counter)
    match: Match | None = None  # once routed

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
    if match.route.method != "POST" and has_body(request):
        raise PayloadTooLarge(  # refused unread (function/service/connections.py)
            f"{request.method} {request.path} takes no request body"
        )
    result = router.handlers[match.name](request, match.args)
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
