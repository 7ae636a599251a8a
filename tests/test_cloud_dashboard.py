"""The Cloud Monitoring dashboard comes from local/grafana/dashboards/modelrun.json
(infra/dashboard.py): a widget per panel with the same title, queries and unit, placed alike.
tests/test_monitoring.py runs every Grafana query and every cloud widget query against a real
Prometheus after real traffic, so both dashboards are proven by the same queries; here the
correspondence and the program (under Pulumi's mocks) are checked. Cloud Monitoring's rendering
cannot run here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from local.mirror import DASHBOARD
from tests.support.cloud_dashboard import cloud_dashboard, widget_queries
from tests.support.infra import infra_module, run_program, stack_config


def widgets(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["widget"]["title"]: t for t in dashboard["mosaicLayout"]["tiles"]}


def test_every_grafana_panel_has_its_cloud_widget() -> None:
    grafana = json.loads(DASHBOARD.read_text())
    cloud = widgets(cloud_dashboard())
    module = infra_module("dashboard")
    kinds = {"timeseries": "xyChart", "table": "timeSeriesTable", "stat": "scorecard"}

    for panel in grafana["panels"]:
        tile = cloud[panel["title"]]
        assert kinds[panel["type"]] in tile["widget"]
        queries = widget_queries(tile["widget"])
        assert [q["prometheusQuery"] for q in queries] == [
            module.cloud_query(t["expr"], panel["title"]) for t in panel["targets"]
        ]
        unit = module.UNITS[panel["fieldConfig"]["defaults"]["unit"]]
        assert {q["unitOverride"] for q in queries} == {unit}
        grid = panel["gridPos"]
        assert (tile.get("xPos", 0), tile.get("yPos", 0), tile["width"], tile["height"]) == (
            2 * grid["x"], 2 * grid["y"], 2 * grid["w"], 2 * grid["h"],
        )  # fmt: skip
    cloud_only = {w["title"] for w in module.CLOUD_ONLY}
    assert set(cloud) == {p["title"] for p in grafana["panels"]} | cloud_only
    assert cloud_dashboard()["displayName"] == grafana["title"]


def test_queries_keep_their_meaning() -> None:
    module = infra_module("dashboard")
    grafana = (
        'sum by (kind) (rate(modelrun_errors_total{job="modelrun", instance=~"$instance"}'
        "[$__rate_interval]))"
    )

    assert module.cloud_query(grafana, "p") == (
        'sum by (kind) (rate(modelrun_errors_total{job="modelrun"}[5m]))'
    )
    assert module.cloud_query('up{instance=~"$instance", job="modelrun"}', "p") == (
        'up{job="modelrun"}'
    )


def test_revisions_and_model_versions_can_be_compared() -> None:
    queries = [
        q["prometheusQuery"]
        for tile in cloud_dashboard()["mosaicLayout"]["tiles"]
        for q in widget_queries(tile["widget"])
    ]

    assert sum("by (revision_name" in q for q in queries) >= 2
    assert any("sum by (model_version) (rate(modelrun_predictions_total" in q for q in queries)


def with_panel(tmp_path: Path, change: dict[str, Any] | None, drop: str | None = None) -> Path:
    grafana = json.loads(DASHBOARD.read_text())
    grafana["panels"] = [p for p in grafana["panels"] if p["title"] != drop]
    if change is not None:
        grafana["panels"].append(
            {
                "type": "timeseries",
                "title": "New panel",
                "gridPos": {"h": 8, "w": 12, "x": 0, "y": 99},
                "fieldConfig": {"defaults": {"unit": "short"}},
                "targets": [{"refId": "A", "expr": 'sum(modelrun_model_ready{job="modelrun"})'}],
                **change,
            }
        )
    path = tmp_path / "modelrun.json"
    path.write_text(json.dumps(grafana))
    return path


def test_a_panel_added_or_removed_in_grafana_is_added_or_removed_in_the_cloud(
    tmp_path: Path,
) -> None:
    added = widgets(cloud_dashboard(with_panel(tmp_path, {})))
    removed = widgets(cloud_dashboard(with_panel(tmp_path, None, drop="Errors by kind")))

    assert "New panel" in added
    assert "Errors by kind" in widgets(cloud_dashboard()) and "Errors by kind" not in removed


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"targets": [{"expr": 'sort_by_label(up, "job")'}]}, "calls sort_by_label()"),
        ({"targets": [{"expr": 'up{job="$job"}'}]}, "uses a Grafana variable"),
        ({"type": "heatmap"}, "panel type 'heatmap' has no Cloud Monitoring widget"),
        ({"fieldConfig": {"defaults": {"unit": "decgbytes"}}}, "no Cloud Monitoring unit"),
    ],
)
def test_a_panel_the_cloud_cannot_show_is_refused_with_the_reason(
    tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)) as refused:
        cloud_dashboard(with_panel(tmp_path, change))
    assert "'New panel'" in str(refused.value)


SELECTOR = re.compile(r"\{[^}]*\}")


def stack_queries(stack: Any) -> list[str]:
    """Every PromQL query a stack's dashboard and alert policies run."""
    document = json.loads(stack.one("gcp:monitoring/dashboard:Dashboard").inputs["dashboardJson"])
    queries = [
        q["prometheusQuery"]
        for tile in document["mosaicLayout"]["tiles"]
        for q in widget_queries(tile["widget"])
        if "prometheusQuery" in q
    ]
    for policy in stack.of_type("gcp:monitoring/alertPolicy:AlertPolicy"):
        for condition in policy.inputs["conditions"]:
            if "conditionPrometheusQueryLanguage" in condition:
                queries.append(condition["conditionPrometheusQueryLanguage"]["query"])
    return queries


def test_two_stacks_in_one_project_watch_their_own_service_only() -> None:
    # Both stacks' sidecars name their job `modelrun`; the sidecar labels each series with its
    # Cloud Run service (service_name), the one thing that tells them apart.
    dev = run_program(stack_config("dev"), stack="dev")
    prod = run_program(stack_config("prod"), stack="prod")

    for stack, own, other in ((dev, "modelrun-dev", "modelrun-prod"),
                              (prod, "modelrun-prod", "modelrun-dev")):  # fmt: skip
        queries = stack_queries(stack)
        assert len(queries) > 40
        for query in queries:
            selectors = SELECTOR.findall(query)
            assert selectors, query
            assert all(f'service_name="{own}"' in s for s in selectors), query
            assert other not in query
        title = json.loads(stack.one("gcp:monitoring/dashboard:Dashboard").inputs["dashboardJson"])
        assert title["displayName"].endswith(f"({own})")


def test_the_stack_creates_the_dashboard_and_outputs_its_url() -> None:
    stack = run_program(stack_config())
    made = stack.one("gcp:monitoring/dashboard:Dashboard").inputs

    assert json.loads(made["dashboardJson"]) == infra_module("dashboard").dashboard(
        service="modelrun-dev"
    )
    assert stack.outputs["dashboardUrl"].startswith(
        "https://console.cloud.google.com/monitoring/dashboards/custom/"
    )
    assert stack.outputs["dashboardUrl"].endswith("?project=my-modelrun-dev")
