"""The Cloud Monitoring dashboard, made from the local mirror's Grafana dashboard.

local/grafana/dashboards/modelrun.json is the one source: each of its panels becomes a widget with
the same title, the same PromQL queries and the same unit, at the same place on the grid, so that
the local tests (tests/test_monitoring.py runs every panel's query against a real Prometheus
after real traffic) prove both. Only what Grafana alone understands is translated:

- `$__rate_interval` becomes a fixed 5m window;
- a recording rule's series (the drift panels') becomes the rule's expression: the cloud runs no
  recording rule;
- the `instance` variable's filter is dropped: on Cloud Run instances come and go, and the
  sidecar labels every series with its revision instead (the cloud-only widgets below use it).

Every query is checked against what Cloud Monitoring's PromQL evaluates (infra/promql.py).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_gcp as gcp

from alerts import recorded_expressions
from gcp_limits import check_mosaic
from promql import Unsupported, check_expression, inline_recorded, scoped

ROOT = Path(__file__).resolve().parent.parent
GRAFANA_DASHBOARD = ROOT / "local" / "grafana" / "dashboards" / "modelrun.json"
RATE_WINDOW = "5m"
# Grafana's unit ids -> the UCUM units Cloud Monitoring charts take (10^2.% shows a 0-1 ratio
# as a percentage, as Compute Engine's CPU utilisation does).
UNITS = {"reqps": "1/s", "percentunit": "10^2.%", "s": "s", "bytes": "By", "short": "1"}
GRID_SCALE = 2  # Grafana's grid is 24 columns wide, a mosaic layout 48
INSTANCE_FILTERS = (
    re.compile(r',\s*instance=~"\$instance"'),
    re.compile(r'instance=~"\$instance",\s*'),
)
# Widgets only the cloud has: its series carry the revision (the sidecar's revision_name).
CLOUD_ONLY = [
    {
        "title": "Request rate by revision",
        "unit": "reqps",
        "exprs": [
            "sum by (revision_name) (rate("
            'http_server_request_duration_seconds_count{job="modelrun"}[5m]))'
        ],
    },
    {
        "title": "/predict p95 latency by revision",
        "unit": "s",
        "exprs": [
            "histogram_quantile(0.95, sum by (revision_name, le) (rate(http_server_request_"
            'duration_seconds_bucket{job="modelrun", http_route="/predict"}[5m])))'
        ],
    },
]


_recorded = functools.cache(recorded_expressions)  # the rules file, read once


def cloud_query(expr: str, where: str, service: str | None = None) -> str:
    """A Grafana panel's query as the cloud runs it, narrowed to one service's series when named
    (the local mirror's have no service); ValueError naming the panel if it cannot be."""
    query = expr.replace("$__rate_interval", RATE_WINDOW)
    for instance_filter in INSTANCE_FILTERS:
        query = instance_filter.sub("", query)
    try:
        query = inline_recorded(query, _recorded())
        if "$" in query:
            raise Unsupported(f"uses a Grafana variable the cloud has not: {query}")
        check_expression(query)
        if service:
            query = scoped(query, service)
    except Unsupported as e:
        raise ValueError(f"{where} cannot become a Cloud Monitoring widget: {e}") from e
    return query


def widget(panel: dict[str, Any], where: str, service: str | None = None) -> dict[str, Any]:
    """One Grafana panel as a Cloud Monitoring widget of the same kind."""
    grafana_unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    if grafana_unit not in UNITS:
        raise ValueError(f"{where}: no Cloud Monitoring unit for Grafana's {grafana_unit!r}")
    queries = [
        {
            "prometheusQuery": cloud_query(t["expr"], where, service),
            "unitOverride": UNITS[grafana_unit],
        }
        for t in panel["targets"]
    ]
    kind = panel.get("type", "timeseries")
    if kind == "stat":
        if len(queries) != 1:
            raise ValueError(f"{where}: a scorecard shows one query, the panel has {len(queries)}")
        body: dict[str, Any] = {"scorecard": {"timeSeriesQuery": queries[0]}}
    elif kind == "table":
        body = {"timeSeriesTable": {"dataSets": [{"timeSeriesQuery": q} for q in queries]}}
    elif kind == "timeseries":
        body = {
            "xyChart": {
                "dataSets": [{"timeSeriesQuery": q, "plotType": "LINE"} for q in queries],
                "yAxis": {"scale": "LINEAR"},
            }
        }
    else:
        raise ValueError(f"{where}: Grafana panel type {kind!r} has no Cloud Monitoring widget")
    return {"title": panel["title"], **body}


def edge_widget(metric: str) -> dict[str, Any]:
    """Requests Cloud Armor denied, by rule priority (infra/edge.py's log-based metric)."""
    return {
        "title": "Requests blocked at the edge, by Cloud Armor rule priority",
        "xyChart": {
            "dataSets": [
                {
                    "timeSeriesQuery": {
                        "timeSeriesFilter": {
                            "filter": f'metric.type="logging.googleapis.com/user/{metric}"',
                            "aggregation": {
                                "alignmentPeriod": "60s",
                                "perSeriesAligner": "ALIGN_RATE",
                                "crossSeriesReducer": "REDUCE_SUM",
                                "groupByFields": ["metric.label.rule"],
                            },
                        },
                        "unitOverride": "1/s",
                    },
                    "plotType": "STACKED_BAR",
                }
            ],
            "yAxis": {"scale": "LINEAR"},
        },
    }


def dashboard(
    source: Path | None = None, edge_metric: str | None = None, service: str | None = None
) -> dict[str, Any]:
    """The Cloud Monitoring dashboard (its JSON form) for the Grafana dashboard; with the edge,
    a row of its own; with a service, its queries and title narrowed to that service."""
    grafana = json.loads((source or GRAFANA_DASHBOARD).read_text())
    tiles = []
    for panel in grafana["panels"]:
        grid = panel["gridPos"]
        tiles.append(
            {
                "xPos": grid["x"] * GRID_SCALE,
                "yPos": grid["y"] * GRID_SCALE,
                "width": grid["w"] * GRID_SCALE,
                "height": grid["h"] * GRID_SCALE,
                "widget": widget(panel, f"panel {panel['title']!r}", service),
            }
        )
    bottom = max((t["yPos"] + t["height"] for t in tiles), default=0)
    for i, extra in enumerate(CLOUD_ONLY):
        panel = {
            "type": "timeseries",
            "title": extra["title"],
            "fieldConfig": {"defaults": {"unit": extra["unit"]}},
            "targets": [{"expr": e} for e in extra["exprs"]],
        }
        tiles.append(
            {
                "xPos": (i % 2) * 24,
                "yPos": bottom + (i // 2) * 16,
                "width": 24,
                "height": 16,
                "widget": widget(panel, f"cloud widget {extra['title']!r}", service),
            }
        )
    if edge_metric:
        bottom = max(t["yPos"] + t["height"] for t in tiles)
        tiles.append({"xPos": 0, "yPos": bottom, "width": 48, "height": 16,
                      "widget": edge_widget(edge_metric)})  # fmt: skip
    document = api_form(
        {
            "displayName": f"{grafana['title']} ({service})" if service else grafana["title"],
            "mosaicLayout": {"columns": 24 * GRID_SCALE, "tiles": tiles},
            "labels": {"modelrun": ""},
        }
    )
    check_mosaic(document)
    return dict(document)


# Map-typed fields, whose entries the API keeps whatever their value (a label without a value).
MAP_FIELDS = frozenset({"labels"})


def api_form(document: Any) -> Any:
    """The document as the Monitoring API returns it: without zero-valued fields.

    The API serialises the Dashboard proto in proto3's JSON form, which omits a field holding its
    default (0, "", false, an empty list), so a tile at `"xPos": 0` comes back without `xPos`.
    The provider keeps what the API returns, and its diff suppression only forgives keys the
    configuration lacks (terraform-provider-google, google/services/monitoring/
    resource_monitoring_dashboard.go, `removeComputedKeys`), not keys the state lacks: a zero in
    the configuration is a change on every `up` (terraform-provider-google#16173, open;
    magic-modules#18515, closed unmerged). Sent in this form, the configuration is a fixed point.
    """
    if isinstance(document, dict):
        return {
            key: value if key in MAP_FIELDS else api_form(value)
            for key, value in document.items()
            if key in MAP_FIELDS or value not in (0, "", False, [], {})
        }
    if isinstance(document, list):
        return [api_form(item) for item in document]
    return document


@dataclass
class DashboardArgs:
    project: str
    edge_metric: pulumi.Output[str] | None = None  # the edge's blocked-requests metric
    service: str | None = None  # the queries read this service's series alone


class Dashboard(pulumi.ComponentResource):
    """The dashboard, and its address in the console."""

    def __init__(self, name: str, args: DashboardArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("modelrun:gcp:Dashboard", name, None, opts)
        project = args.project
        self.dashboard = gcp.monitoring.Dashboard(
            name,
            project=project,
            dashboard_json=pulumi.Output.from_input(args.edge_metric).apply(
                lambda metric: json.dumps(dashboard(edge_metric=metric, service=args.service))
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Its id is projects/NUMBER/dashboards/ID; the console opens it by ID.
        self.url = self.dashboard.id.apply(
            lambda id_: (
                "https://console.cloud.google.com/monitoring/dashboards/custom/"
                f"{id_.rsplit('/', 1)[-1]}?project={project}"
            )
        )
        self.register_outputs({"url": self.url})
