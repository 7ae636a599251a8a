"""A webhook that receives Alertmanager's notifications and prints one JSON line per alert.

python -m local.alert_sink --port 5001
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class AlertSink:
    """Collect the alerts posted to /alerts; print each one as it arrives."""

    def __init__(self, host: str, port: int, echo: bool = True) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.received = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    payload = json.loads(self.rfile.read(min(length, 1_048_576)))
                    alerts = payload["alerts"]
                except (ValueError, KeyError, TypeError):
                    self.send_response(400)
                    self.end_headers()
                    return
                for alert in alerts:
                    sink.alerts.append(alert)
                    if echo:
                        print(
                            json.dumps(
                                {
                                    "alert": alert["labels"].get("alertname"),
                                    "status": alert["status"],
                                    "summary": alert.get("annotations", {}).get("summary"),
                                    "labels": alert["labels"],
                                }
                            ),
                            flush=True,
                        )
                sink.received.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]

    def start(self) -> AlertSink:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - inside its container
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()
    sink = AlertSink(args.host, args.port)
    print(f"alert sink listening on {args.host}:{sink.port}/alerts", file=sys.stderr, flush=True)
    sink.server.serve_forever()


if __name__ == "__main__":
    main()
