"""The container's command: functions-framework's app under gunicorn, with the limits its own
launcher leaves off.

    python -m function.service.server --port 8080

`functions-framework --target handle` would build the same Flask app and run the same gunicorn
(`GunicornApplication`: WORKERS, THREADS, CLOUD_RUN_TIMEOUT_SECONDS, GUNICORN_LOG_LEVEL), but it
sets no request-line limit (a 20 MiB path took 100 s to parse) and reads every request's body
whole after the answer (its `read_request` hook). Here the app is the framework's, less that
hook, and gunicorn runs with the limits below and `function.service.connections.Worker`, which
gives a
connection a thread only once its request head has arrived whole.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from flask import Flask

MAIN = Path(__file__).resolve().parent / "main.py"
# Over these gunicorn answers 414 (the request line) or 431 (one header, or too many); the
# worker answers 431 for a head over connections.HEAD_BYTES in all. 8190 is gunicorn's ceiling.
LIMITS = {
    "limit_request_line": 8190,
    "limit_request_field_size": 8190,
    "limit_request_fields": 100,
    "worker_class": "function.service.connections.Worker",
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m function.service.server", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))  # noqa: S104
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    args = parser.parse_args(argv)
    app = create_app()
    from functions_framework._http.gunicorn import GunicornApplication

    GunicornApplication(app, args.host, args.port, False, **LIMITS).run()


def create_app() -> Flask:
    """functions-framework's Flask app for main.handle, without its whole-body read."""
    import functions_framework

    app = functions_framework.create_app(target="handle", source=str(MAIN), signature_type="http")
    # The framework reads every body after the answer, "to avoid connection errors when
    # returning prematurely": a 401 to a 200 MB body held the 200 MB. The worker closes the
    # connection instead whenever a body was not read to its end (connections.Request).
    app.after_request_funcs[None].remove(functions_framework.read_request)  # fails if renamed
    return app


if __name__ == "__main__":
    main()
