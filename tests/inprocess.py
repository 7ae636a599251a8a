"""The service in this process: the real handler (function.service.app.handler) behind a Flask app
and
Flask's test client, for behaviour the process itself plays no part in (routing, headers, CORS,
rate limits, errors). Process-level behaviour (the container's CMD, signals, workers, the time
limit, functions-framework's own paths) stays with tests/conftest.py's run_service."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import flask
from flask.testing import FlaskClient

from function.core.config import load_config
from function.service.app import handler
from function.service.service import Service
from tests.conftest import UNSIGNED

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


@dataclass
class InProcess:
    client: FlaskClient
    service: Service


@contextlib.contextmanager
def in_process(env: dict[str, str], wait_ready: bool = True) -> Iterator[InProcess]:
    """Serve a configuration in process; wait until it is ready; stop its threads after."""
    service = Service(load_config({**UNSIGNED, **env}))
    handle = handler(service)
    app = flask.Flask("modelrun-in-process")

    def view(path: str = "") -> flask.Response:
        return handle(flask.request)

    app.add_url_rule("/", "root", view, methods=METHODS)
    app.add_url_rule("/<path:path>", "any", view, methods=METHODS)
    client = app.test_client()
    try:
        if wait_ready:
            deadline = time.monotonic() + 30
            while client.get("/ready").status_code != 200:
                if time.monotonic() > deadline:
                    raise AssertionError(f"not ready: {service.readiness()}")
                time.sleep(0.02)
        yield InProcess(client, service)
    finally:
        service.stop()
