"""The router (function/service/router.py): every route has its handler, and dispatch answers
what it cannot route with a typed error, before any handler runs."""

from __future__ import annotations

import flask
import pytest

from function.core.config import load_config
from function.core.errors import (
    BadRequest,
    MethodNotAllowed,
    ModelrunError,
    NotFound,
    PayloadTooLarge,
)
from function.service.app import handlers
from function.service.router import ROUTES, V2, Exchange, Router, dispatch, routes
from function.service.service import Service
from tests.conftest import UNSIGNED

APP = flask.Flask("test-router")
CONFIG = {**UNSIGNED, "MODEL_URI": "file:///nowhere/iris", "API_KEYS": "k" * 32,
          "AIP_PREDICT_ROUTE": "/predict", "AIP_HEALTH_ROUTE": "/vertex/health"}  # fmt: skip


def refused(router: Router, path: str, method: str, **kwargs: object) -> ModelrunError:
    calls: list[str] = []
    served = Router(router.table, {name: lambda r, a, n=name: calls.append(n) for name in
                                   router.table})  # fmt: skip
    with APP.test_request_context(path, method=method, **kwargs):  # type: ignore[arg-type]
        exchange = Exchange(flask.request)
        with pytest.raises(ModelrunError) as caught:
            dispatch(served, exchange, ())
    assert calls == []  # refused before any handler ran
    return caught.value


def test_every_route_of_every_configuration_has_its_handler() -> None:
    config = load_config(CONFIG)
    service = Service(config)  # nothing starts at construction

    router = Router(routes(config), handlers(service))

    assert {"vertex_predict", "vertex_health", "page"} <= set(router.table)
    assert router.table["vertex_predict"].paths == ("/predict",)  # Vertex's route wins
    assert router.table["predict"].paths == ()


def test_a_route_without_a_handler_stops_the_start() -> None:
    with pytest.raises(ValueError, match="no handler for the routes .*predict"):
        Router(ROUTES, {})


@pytest.mark.parametrize(
    ("path", "method", "kwargs", "error", "protocol"),
    [
        ("/nowhere", "GET", {}, NotFound, "native"),
        ("/v2/nowhere", "GET", {}, NotFound, V2),
        ("/health", "POST", {}, MethodNotAllowed, "native"),
        ("/v2//health/live", "GET", {}, NotFound, V2),  # routed as sent, never redirected
        ("/health", "GET", {"data": b"x"}, PayloadTooLarge, "native"),
        ("/feedback", "POST", {"headers": {"X-Request-Id": "has space"}}, BadRequest, "native"),
    ],
)  # fmt: skip
def test_dispatch_refuses_what_it_cannot_route(
    path: str, method: str, kwargs: dict[str, object], error: type, protocol: str
) -> None:
    router = Router(ROUTES, {name: lambda r, a: None for name in ROUTES})

    refusal = refused(router, path, method, **kwargs)

    assert type(refusal) is error
    with APP.test_request_context(path, method=method):
        assert Exchange(flask.request).protocol == protocol


def test_a_method_not_allowed_names_the_allowed_ones() -> None:
    router = Router(ROUTES, {name: lambda r, a: None for name in ROUTES})

    refusal = refused(router, "/predict", "GET")

    assert refusal.headers == {"Allow": "POST"}
    assert "GET is not allowed on /predict; use POST" in str(refusal)


def test_the_table_says_which_answers_carry_a_request_id_and_leave_a_record() -> None:
    table = routes(load_config(CONFIG))  # Vertex's predict route takes /predict over

    recorded = {name: route.records for name, route in table.items() if route.records}
    identified = {name for name, route in table.items() if route.identified}

    assert recorded == {"explain": "native", "predict": "native", "v2_infer": "v2",
                        "vertex_predict": "vertex"}  # fmt: skip
    assert identified == {*recorded, "feedback"}


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/feedback", {"X-Request-Id": "order-42.a"}, "order-42.a"),  # the client's, kept
        ("/feedback", {}, None),  # a new one
        ("/health", {"X-Request-Id": "order-42.a"}, ""),  # not an identified route: none
    ],
)  # fmt: skip
def test_dispatch_names_the_request_of_an_identified_route(
    path: str, headers: dict[str, str], expected: str | None
) -> None:
    method = ROUTES["feedback"].method if path == "/feedback" else "GET"
    seen: list[str | None] = []
    router = Router(ROUTES, {name: lambda e, a: seen.append(e.request_id) for name in ROUTES})

    with APP.test_request_context(path, method=method, headers=headers):
        dispatch(router, Exchange(flask.request), ())

    (request_id,) = seen
    if expected is None:
        assert request_id is not None and len(request_id) == 32  # a uuid4's hex digits
    else:
        assert request_id == (expected or None)
