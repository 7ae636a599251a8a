"""The monitoring configuration, checked by the real tools and run for real.

promtool, amtool, Prometheus, Alertmanager and docker-compose are Debian packages (.ci/run
installs them); without them these tests skip on a laptop, and fail in CI.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from function.core import rollout
from function.core.store import ModelStore
from local.alert_sink import AlertSink
from local.mirror import (
    ALERT_RULES,
    ALERTMANAGER_CONFIG,
    DASHBOARD,
    LOCAL,
    Mirror,
    process,
    wait_for,
)
from tests.conftest import (
    KEY,
    Emulator,
    Running,
    publish_to_gcs,
    require_binary,
    wait_until,
)
from tests.support.cloud_dashboard import cloud_dashboard, widget_queries
from tests.support.infra import infra_module
from tests.support.monitoring import monitored_service, query

ROW = [5.1, 3.5, 1.4, 0.2]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=LOCAL)


# --- the tools' own checks ---------------------------------------------------------------


@pytest.mark.slow
def test_promtool_checks_the_configuration(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    config = Mirror(tmp_path, metrics="127.0.0.1:9464").prometheus_files()

    result = run(promtool, "check", "config", str(config))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.slow
def test_promtool_checks_the_rules() -> None:
    result = run(require_binary("promtool"), "check", "rules", str(ALERT_RULES))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 27 rules found" in result.stdout


RULE_TESTS = (
    "prometheus/alerts.test.yml",
    "prometheus/slo.test.yml",
    "prometheus/slo-ticket.test.yml",
    "prometheus/drift.test.yml",
    "prometheus/quality.test.yml",
)


@pytest.mark.slow
@pytest.mark.parametrize("tests", RULE_TESTS)
def test_promtool_rule_unit_tests_pass(tests: str) -> None:
    result = run(require_binary("promtool"), "test", "rules", tests)

    assert result.returncode == 0, result.stdout + result.stderr


def rules(kind: str | None = None) -> list[dict[str, Any]]:
    """The rules file's alerting ("alert") or recording ("record") rules, or all of them."""
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if kind is None or kind in r]


def cloud_rules() -> list[Any]:
    """The alerting rules as the cloud's policies hold them (infra/alerts.py)."""
    return list(infra_module("alerts").read_rules())


def test_every_alert_has_a_firing_and_a_quiet_rule_test() -> None:
    alerts = {r["alert"] for r in rules("alert")}
    tests = [t for path in RULE_TESTS for t in yaml.safe_load((LOCAL / path).read_text())["tests"]]
    firing, quiet = set(), set()
    for test in tests:
        for case in test["alert_rule_test"]:
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])

    assert alerts == firing == quiet


@pytest.mark.slow
def test_amtool_checks_the_alertmanager_configuration() -> None:
    result = run(require_binary("amtool"), "check-config", str(ALERTMANAGER_CONFIG))

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_compose_file_is_valid_with_every_profile() -> None:
    compose = require_binary("docker-compose")
    base = [compose, "--env-file", ".env.example", "-f", "compose.yaml",
            "--profile", "monitoring", "--profile", "tracking"]  # fmt: skip

    checked = run(*base, "config", "-q")
    services = set(run(*base, "config", "--services").stdout.split())

    assert checked.returncode == 0, checked.stderr
    declared = yaml.safe_load((LOCAL / "compose.yaml").read_text())["services"]
    by_profile = {name: tuple(s.get("profiles", ())) for name, s in declared.items()}
    assert {n for n, p in by_profile.items() if not p} == {"gcs", "publish", "function"}
    assert {n for n, p in by_profile.items() if p == ("monitoring",)} == {
        "prometheus",
        "alertmanager",
        "alert-sink",
        "grafana",
    }
    assert {n for n, p in by_profile.items() if p == ("tracking",)} == {"mlflow"}
    assert services == set(declared)


@pytest.mark.slow
def test_compose_needs_the_api_key_from_make_local() -> None:
    compose = require_binary("docker-compose")
    env = LOCAL / "empty.env"
    env.write_text("")
    try:
        result = run(compose, "--env-file", env.name, "-f", "compose.yaml", "config", "-q")
    finally:
        env.unlink()

    assert result.returncode != 0
    assert "run make local" in result.stderr


def test_compose_images_are_pinned() -> None:
    services = yaml.safe_load((LOCAL / "compose.yaml").read_text())["services"]

    for name, service in services.items():
        if "image" in service and "build" not in service:
            assert re.search(r":v?\d+\.\d+\.\d+", service["image"]), name


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    datasource = yaml.safe_load(
        (LOCAL / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    dashboard = json.loads(DASHBOARD.read_text())

    assert datasource["uid"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]


# --- Prometheus against the running function ---------------------------------------------


def grafana_expr(expr: str) -> str:
    """Substitute the dashboard's template variables as Grafana would for 'All'."""
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def send_traffic(service: Running) -> None:
    auth = {"X-API-Key": KEY}
    for i in range(20):
        rows = [ROW, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]][: 1 + i % 3]
        assert service.post("/predict", json={"instances": rows}, headers=auth).status_code == 200
    service.post("/predict", json={"instances": [[1, 2]]}, headers=auth)  # 422
    service.post("/predict", json={"features": ROW}, headers={"X-API-Key": "wrong-1234567890123"})
    service.post("/predict", json={"features": ROW})  # 401 missing
    service.get("/nowhere")


def test_every_dashboard_query_has_data_after_real_traffic(
    gcs_emulator: Emulator,
    iris_artifact: Path,
    forest_artifact: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A shadow rollout runs, so that the rollout panels have their series too.
    uri = publish_to_gcs(gcs_emulator, iris_artifact, f"monitored-{time.monotonic_ns()}")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.host)
    store = ModelStore(uri, timeout=5)
    rollout.start(store, store.publish(forest_artifact, "candidate"), "shadow")
    with monitored_service(gcs_emulator, iris_artifact, tmp_path, tmp_path / "mirror", uri=uri) as (
        service,
        mirror,
    ):
        wait_until(
            lambda: bool(query(mirror.prometheus, 'up{job="modelrun"} == 1')), 60, "a first scrape"
        )
        send_traffic(service)
        time.sleep(6)  # one more scrape: rate() needs two samples after the traffic
        send_traffic(service)
        wait_until(
            lambda: bool(
                query(mirror.prometheus, "sum(rate(modelrun_auth_failures_total[1m])) > 0")
                and query(mirror.prometheus, "modelrun:drift_feature_psi")  # rules evaluated
                and query(mirror.prometheus, "modelrun:estimated_accuracy")  # each group's
            ),
            60,
            "rates over the traffic",
        )

        empty = [
            title
            for title, expr in dashboard_queries()
            if not query(mirror.prometheus, grafana_expr(expr))
        ]
        assert empty == []
        # The cloud dashboard's queries (infra/dashboard.py: Grafana's, translated) too.
        cloud = [
            (tile["widget"]["title"], data["prometheusQuery"])
            for tile in cloud_dashboard()["mosaicLayout"]["tiles"]
            for data in widget_queries(tile["widget"])
        ]
        assert len(cloud) > len(dashboard_queries())
        assert [title for title, expr in cloud if not query(mirror.prometheus, expr)] == []

        for rule in rules("alert"):  # each alert expression evaluates (quietly: all is well)
            assert query(mirror.prometheus, rule["expr"]) == [], rule["alert"]
        for rule in cloud_rules():  # and as the cloud runs it, recorded series put in place
            assert query(mirror.prometheus, rule.expr) == [], rule.name
        alerting = requests.get(f"http://{mirror.prometheus}/api/v1/rules", timeout=10).json()
        loaded = [r for g in alerting["data"]["groups"] for r in g["rules"]]
        assert {r["name"] for r in loaded} == {r.get("alert") or r["record"] for r in rules()}
        assert all(r["health"] == "ok" for r in loaded), loaded


def test_a_dead_function_fires_an_alert_that_reaches_the_webhook(
    gcs_emulator: Emulator, iris_artifact: Path, tmp_path: Path
) -> None:
    require_binary("prometheus-alertmanager")
    sink = AlertSink("127.0.0.1", 0, echo=False).start()
    try:
        with monitored_service(gcs_emulator, iris_artifact, tmp_path, tmp_path / "mirror") as (
            service,
            mirror,
        ):
            mirror.alert_sink = f"127.0.0.1:{sink.port}"
            with process(mirror.alertmanager_command(), tmp_path / "alertmanager.log"):
                wait_for(f"http://{mirror.alertmanager}/-/ready")
                wait_until(
                    lambda: bool(query(mirror.prometheus, 'up{job="modelrun"} == 1')),
                    60,
                    "a first scrape",
                )

                service.kill()  # the instance dies

                assert sink.received.wait(120), "no alert reached the webhook"
        alert = sink.alerts[0]
        assert alert["labels"]["alertname"] == "ModelrunDown"
        assert alert["status"] == "firing"
        assert alert["labels"]["severity"] == "critical"
    finally:
        sink.stop()


def test_the_compose_environment_derives_the_store_the_one_way() -> None:
    """MODEL_STORE and MODEL_URI in .env come from MODEL_BUCKET through function/core/store.py; the
    example file (what `make lint` validates Compose with) holds the same values."""
    from function.core.store import bucket_store, model_root
    from local.compose_env import environment, values

    example = (LOCAL / ".env.example").read_text()
    written = values(environment(example, "k" * 32))
    given = values(example)

    assert written["MODEL_STORE"] == bucket_store(given["MODEL_BUCKET"]) == given["MODEL_STORE"]
    assert written["MODEL_URI"] == model_root(written["MODEL_STORE"], "iris") == given["MODEL_URI"]
    assert written["MODELRUN_API_KEY"] == "k" * 32


def test_make_local_starts_tracking_and_prints_where_each_part_answers() -> None:
    """Every published port of the mirror is printed, from .env, as Compose publishes it."""
    from local.compose_env import addresses, values

    env = values((LOCAL / ".env.example").read_text())
    printed = addresses(env)
    services = yaml.safe_load((LOCAL / "compose.yaml").read_text())["services"]
    published = {
        name: re.fullmatch(r"127\.0\.0\.1:\$\{(\w+):-\d+\}:\d+", port)
        for name, service in services.items()
        for port in service.get("ports", [])
    }
    make_local = re.search(r"^local:.*\n(?:\t.*\n)+", (LOCAL.parent / "Makefile").read_text(), re.M)

    assert make_local is not None and "--profile tracking" in make_local[0]
    assert f"MLflow (tracking) http://127.0.0.1:{env['MLFLOW_PORT']}" in printed
    for name, port in published.items():
        assert port is not None, name
        if name != "gcs":  # the emulator: the mirror's plumbing, not a page to open
            assert f"http://127.0.0.1:{env[port[1]]}" in printed, name
