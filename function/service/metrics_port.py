"""The metrics page on a second port, for a scraper inside the instance.

On Cloud Run the Managed Service for Prometheus sidecar scrapes it (infra/cloud_run.py); locally
the mirror's Prometheus does (local/prometheus/prometheus.yml). Cloud Run routes outside traffic
to the ingress port only (8080), so this port is reached by the instance's own containers and
nothing else; it listens on METRICS_HOST (loopback unless told otherwise, as Compose does for its
Prometheus container). No key is asked for, and none is in the scraper's configuration. The
public port keeps its keyed /metrics.

Each worker process binds the same port (SO_REUSEPORT) and answers with the whole instance's page
(function/service/workers.py merges them), so any worker may take a scrape and no worker is special.
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Callable

log = logging.getLogger("modelrun.metrics")

PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the Prometheus text format


class _Server(http.server.ThreadingHTTPServer):
    allow_reuse_port = True  # every worker of the instance listens on the one port
    daemon_threads = True


def serve_metrics(host: str, port: int, page: Callable[[], bytes]) -> _Server | None:
    """Serve `page` at http://host:port/metrics on a thread of its own; None if the port is
    taken by something else (logged: serving predictions goes on without it)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != PATH:
                self.send_error(404, f"only {PATH} is served here")
                return
            body = page()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a scrape every few seconds is not worth a log line

    try:
        server = _Server((host, port), Handler)
    except OSError as e:
        log.error("cannot serve metrics on %s:%d: %s", host, port, e)
        return None
    threading.Thread(target=server.serve_forever, name="metrics-port", daemon=True).start()
    return server
