"""The functions-framework entry point, which the image's command loads:

    python -m function.service.server   # functions-framework's app for `handle`, under gunicorn

Configuration is read once, here, at start; a bad value stops the process with a message naming it.
The model and keys load in a background thread of the serving process (see Service.start).
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

# functions-framework loads this file by path: make its package importable however it was launched.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import functions_framework
from flask import Response, request

from function.core.config import usable_cpus
from function.core.errors import ConfigError
from function.core.threads import limit_native_threads
from function.service.app import build

# A worker per usable CPU unless told otherwise: functions-framework reads WORKERS after
# importing this file, and so does the service's configuration, just below. In each, one native
# thread per pool (the image's OMP_NUM_THREADS, applied the way training applies it).
if not os.environ.get("WORKERS", "").strip():
    os.environ["WORKERS"] = str(usable_cpus())
limit_native_threads(os.environ)
try:
    handle = build(os.environ)
except ConfigError as e:
    print(f"modelrun: configuration error: {e}", file=sys.stderr)
    raise SystemExit(2) from None
# gunicorn forks its workers after this: frozen objects are never touched by the collector, so
# their pages stay shared with the workers (and a full collection skips them; see Service).
gc.freeze()


@functions_framework.errorhandler(404)
def _framework_not_found(error: Exception) -> Response:
    """Answer the paths functions-framework keeps for itself (/robots.txt), or that Flask refuses
    before our handler sees them (a newline in the path), through our handler: the same 404 in
    their protocol's body, and, like every answer, a log line and a metric (a probe with a
    newline in its path is seen)."""
    return handle(request)
