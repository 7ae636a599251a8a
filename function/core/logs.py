"""Logs as one JSON object per line, in the shape Cloud Logging reads from stdout."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from typing import Any

import orjson
from flask import Request

SEVERITY = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR"}
TRACE_KEY = "logging.googleapis.com/trace"


class JsonFormatter(logging.Formatter):
    """Format a record as Cloud Logging's structured JSON, its time in UTC."""

    converter = time.gmtime  # type: ignore[assignment]  # this formatter only, not all of logging

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": SEVERITY.get(record.levelname, "CRITICAL"),
            "message": record.getMessage(),
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "logger": record.name,
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["stack_trace"] = "".join(traceback.format_exception(*record.exc_info))
        try:
            return orjson.dumps(entry, default=str).decode()
        except TypeError:  # what orjson will not write (an integer beyond 64 bits): the slow way
            return json.dumps(entry, default=str)


class StdoutHandler(logging.StreamHandler):
    """Writes each line to sys.stdout as it is then: a process that set up logging once and
    replaced sys.stdout since (a test's capture, closed after it) still logs, to the new one."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout  # under the handler's lock, as the write is
        super().emit(record)


def setup_logging(level: str) -> None:
    """Send every modelrun log line to stdout as JSON."""
    handler = StdoutHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("modelrun")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def trace_fields(request: Request) -> dict[str, str]:
    """Return Cloud Logging's trace fields from X-Cloud-Trace-Context or traceparent."""
    trace = span = None
    cloud = request.headers.get("X-Cloud-Trace-Context", "")
    if cloud:
        trace, _, rest = cloud.partition("/")
        span = rest.split(";")[0] or None
    else:
        parts = request.headers.get("traceparent", "").split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            trace, span = parts[1], parts[2]
    if not trace or not all(c in "0123456789abcdefABCDEF" for c in trace):
        return {}
    project = os.environ.get("GOOGLE_CLOUD_PROJECT")
    fields = {TRACE_KEY: f"projects/{project}/traces/{trace}" if project else trace}
    if span:
        fields["logging.googleapis.com/spanId"] = span
    return fields


def request_fields(request: Request, status: int, seconds: float) -> dict[str, Any]:
    """Return the httpRequest block for one answered request (never its headers or body)."""
    return {
        "httpRequest": {
            "requestMethod": request.method,
            "requestUrl": request.path,
            "status": status,
            "latency": f"{seconds:.6f}s",
            "userAgent": request.headers.get("User-Agent", "")[:200],
            "remoteIp": request.remote_addr,
            "requestSize": str(request.content_length or 0),
            "protocol": request.environ.get("SERVER_PROTOCOL"),
        },
        **trace_fields(request),
    }
