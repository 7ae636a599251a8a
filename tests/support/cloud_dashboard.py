"""The Cloud Monitoring dashboard infra/dashboard.py makes from the Grafana one, and the queries
of its widgets: for tests/test_cloud_dashboard.py and tests/test_monitoring.py, which runs every
widget's query against a real Prometheus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.infra import infra_module


def cloud_dashboard(source: Path | None = None) -> dict[str, Any]:
    return dict(infra_module("dashboard").dashboard(source))


def widget_queries(widget: dict[str, Any]) -> list[dict[str, Any]]:
    """The time series queries of a widget, whatever its kind."""
    if "scorecard" in widget:
        return [widget["scorecard"]["timeSeriesQuery"]]
    kind = "xyChart" if "xyChart" in widget else "timeSeriesTable"
    return [d["timeSeriesQuery"] for d in widget[kind]["dataSets"]]
