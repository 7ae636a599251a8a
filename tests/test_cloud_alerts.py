"""Alert policies in the cloud come from local/prometheus/alerts.yml (infra/alerts.py), under
Pulumi's mocks as tests/support/infra.py runs the program: one policy per rule with the same
expression, `for`, labels and severity, the README's what-to-do as documentation; a rule the
cloud's PromQL cannot evaluate is refused with the reason (infra/promql.py, from Google's
documented differences). Cloud Monitoring itself cannot run here: how it evaluates a condition
is proven only in a project."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.infra import ROOT, Stack, infra_module, run_program, stack_config

POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
RULES = ROOT / "local" / "prometheus" / "alerts.yml"


@pytest.fixture(scope="module")
def stack() -> Stack:
    return run_program(stack_config(**{"modelrun:alertEmails": ["oncall@example.com"]}))


def rules_file() -> list[dict[str, Any]]:
    """Every alerting rule, with the name of its group as `group`."""
    return [
        {**r, "group": g["name"]}
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    ]


def policies(stack: Stack) -> dict[str, dict[str, Any]]:
    return {r.inputs["displayName"]: r.inputs for r in stack.of_type(POLICY)}


def test_every_rule_is_one_policy_on_the_same_expression(stack: Stack) -> None:
    rules = {r["alert"]: r for r in rules_file()}
    made = policies(stack)

    assert set(made) == set(rules)
    for name, rule in rules.items():
        policy = made[name]
        assert policy["severity"] == rule["labels"]["severity"].upper()
        assert policy["documentation"]["mimeType"] == "text/markdown"
        assert rule["annotations"]["action"] in policy["documentation"]["content"]
        (condition,) = policy["conditions"]
        if rule["annotations"].get("cloud") == "uptime":
            assert "uptime_check/check_passed" in condition["conditionThreshold"]["filter"]
            continue
        promql = condition["conditionPrometheusQueryLanguage"]
        recorded = infra_module("alerts").recorded_expressions()
        promql_module = infra_module("promql")
        expected = promql_module.inline_recorded(rule["expr"], recorded).strip()
        assert promql["query"] == promql_module.scoped(expected, "modelrun-dev")
        assert promql["duration"] == f"{int(infra_module('promql').seconds(rule['for']))}s"
        assert promql["alertRule"] == name and promql["ruleGroup"] == rule["group"]
        assert promql["labels"] == rule["labels"]
        assert promql["evaluationInterval"] == "30s"
        assert promql["disableMetricValidation"] is True


def test_drift_policies_hold_the_recorded_expressions_in_place(stack: Stack) -> None:
    """The cloud runs no recording rule: a drift alert's query computes the PSI itself."""
    made = policies(stack)

    for name in ("ModelrunFeatureDrift", "ModelrunPredictionDrift", "ModelrunOutOfRangeInputs"):
        query = made[name]["conditions"][0]["conditionPrometheusQueryLanguage"]["query"]
        assert "modelrun:" not in query, name
        assert "modelrun_drift_" in query and "[1h]" in query, name
    feature = made["ModelrunFeatureDrift"]["conditions"][0]["conditionPrometheusQueryLanguage"]
    assert "ln(clamp_min(" in feature["query"] and feature["duration"] == "1800s"


def test_templates_become_cloud_monitoring_variables(stack: Stack) -> None:
    made = policies(stack)

    assert made["ModelrunDown"]["documentation"]["subject"] == (
        "modelrun instance ${metric_or_resource.label.instance} is down"
    )
    assert (
        "${metric.value} of requests answered 5xx"
        in (made["ModelrunHighErrorRatio"]["documentation"]["content"])
    )
    assert not any("{{" in p["documentation"]["content"] for p in made.values())


def test_policies_notify_the_stacks_emails_and_nobody_else(stack: Stack) -> None:
    (channel,) = stack.of_type("gcp:monitoring/notificationChannel:NotificationChannel")

    assert channel.inputs["type"] == "email"
    assert channel.inputs["labels"] == {"email_address": "oncall@example.com"}
    for policy in policies(stack).values():
        assert len(policy["notificationChannels"]) == 1


def test_the_uptime_check_watches_health_over_https(stack: Stack) -> None:
    check = stack.one("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig").inputs

    assert check["httpCheck"]["path"] == "/health"
    assert check["httpCheck"]["useSsl"] is True and check["httpCheck"]["port"] == 443
    assert check["monitoredResource"]["type"] == "uptime_url"
    assert check["monitoredResource"]["labels"]["host"] == "modelrun-dev-abc-ew.a.run.app"
    assert "serviceAgentAuthentication" not in check["httpCheck"]  # public: no token needed

    private = run_program(stack_config(**{"modelrun:invokerAccess": "iam"}))
    check = private.one("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig").inputs
    assert check["httpCheck"]["serviceAgentAuthentication"] == {"type": "OIDC_TOKEN"}


@pytest.mark.parametrize("access", ["public", "public-no-iam-check", "iam"])
def test_the_uptime_checks_token_may_invoke_an_iam_only_service(access: str) -> None:
    # The check presents the Monitoring service agent's token (the API's ServiceAgentAuthentication
    # reference); Cloud Run admits it only with run.invoker on the service.
    stack = run_program(stack_config(**{"modelrun:invokerAccess": access}))
    agent = "serviceAccount:service-123@gcp-sa-monitoring-notification.iam.gserviceaccount.com"

    grants = [
        r.inputs
        for r in stack.of_type("gcp:cloudrunv2/serviceIamMember:ServiceIamMember")
        if r.inputs["member"] == agent
    ]

    if access != "iam":
        assert grants == []
        return
    service = stack.one("gcp:cloudrunv2/service:Service").inputs
    assert [(g["role"], g["name"], g["location"]) for g in grants] == [
        ("roles/run.invoker", service["name"], service["location"])
    ]


def test_a_bad_email_is_refused() -> None:
    with pytest.raises(Exception, match="'oncall' is not an email address"):
        run_program(stack_config(**{"modelrun:alertEmails": ["oncall"]}))


def with_rule(tmp_path: Path, rule: dict[str, Any]) -> Path:
    """A copy of the rules file with one more rule."""
    document = yaml.safe_load(RULES.read_text())
    document["groups"][0]["rules"].append(rule)
    path = tmp_path / "alerts.yml"
    path.write_text(yaml.safe_dump(document))
    return path


NEW_RULE = {
    "alert": "ModelrunSlowLoads",
    "expr": 'max(modelrun_model_load_duration_seconds_sum{job="modelrun"}) > 30',
    "for": "15m",
    "labels": {"severity": "warning"},
    "annotations": {"summary": "slow", "description": "slow loads", "action": "look"},
}


def test_a_rule_added_to_the_file_appears_as_a_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts = infra_module("alerts")
    monkeypatch.setattr(alerts, "RULES_FILE", with_rule(tmp_path, NEW_RULE))

    made = policies(run_program(stack_config()))

    assert set(made) == {r["alert"] for r in rules_file()} | {"ModelrunSlowLoads"}
    condition = made["ModelrunSlowLoads"]["conditions"][0]["conditionPrometheusQueryLanguage"]
    assert (condition["query"], condition["duration"]) == (
        'max(modelrun_model_load_duration_seconds_sum{job="modelrun", '
        'service_name="modelrun-dev"}) > 30',
        "900s",
    )


def test_a_rule_that_cannot_be_told_apart_by_service_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts = infra_module("alerts")
    rule = {**NEW_RULE, "expr": "max(modelrun_model_load_duration_seconds_sum) > 30"}
    monkeypatch.setattr(alerts, "RULES_FILE", with_rule(tmp_path, rule))

    with pytest.raises(ValueError, match='ModelrunSlowLoads cannot be narrowed .*job="modelrun"'):
        run_program(stack_config())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"expr": 'sum(rate({__name__=~"http_.*"}[5m]))'}, "matches __name__"),
        ({"expr": 'sum(rate({job="modelrun"}[5m]))'}, "selector without a metric name"),
        ({"expr": 'sort_by_label(up, "instance")'}, "calls sort_by_label()"),
        ({"expr": "mad_over_time(up[5m]) > 1"}, "calls mad_over_time()"),
        ({"expr": "sum(rate(modelrun_errors_total[3d])) > 0"}, "a 72h range is longer"),
        ({"for": "2d"}, "for: 2d is longer than the 24 hours"),
        ({"expr": "sum(rate(modelrun_errors_total[20h])) > 0", "for": "6h"}, "25 hours"),
        ({"labels": {"severity": "page"}}, "severity must be one of"),
        ({"annotations": {"summary": "x", "description": "x"}}, "no `action` annotation"),
        ({"alert": "Modelrun-Slow"}, "not a valid Prometheus label name"),
        ({"annotations": {"summary": "{{ humanize 3 }}", "action": "x"}}, "cannot translate"),
        ({"expr": 'modelrun:drift_feature_psi{feature="a"} > 1'}, "selects on the recorded series"),
        ({"expr": "max_over_time(modelrun:drift_feature_psi[1h]) > 1"}, "(a matcher or a range)"),
        ({"expr": "modelrun:nothing_recorded > 1"}, "which no recording rule of the file records"),
    ],
)
def test_what_the_cloud_cannot_evaluate_is_refused_with_the_reason(
    tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    alerts = infra_module("alerts")
    rule = {**NEW_RULE, **change}

    with pytest.raises(ValueError, match=re.escape(reason)) as refused:
        alerts.read_rules(with_rule(tmp_path, rule))
    assert f"alert {rule['alert']} cannot become a Cloud Monitoring policy" in str(refused.value)


def test_expressions_the_cloud_evaluates_pass_the_check() -> None:
    promql = infra_module("promql")
    for expr in (
        'histogram_quantile(0.95, sum by (le) (rate(x_bucket{job="a", route=~"/p.*"}[5m]))) > 1',
        'sum(rate(a{code=~"5.."}[1h])) / sum(rate(a[1h])) > (14.4 * 0.001)',
        'max_over_time(up{job="modelrun"}[10m:1m]) == 0 and on (job) vector(1)',
        'label_replace(up, "x", "$1", "instance", "(.*):.*") unless absent(up)',
    ):
        promql.check_alert(expr, "5m")


def test_recorded_series_are_replaced_by_their_expressions_nested_and_nothing_else() -> None:
    promql = infra_module("promql")
    recorded = {"a:b": "sum(x)", "a:c": "a:b / 2"}

    assert promql.inline_recorded("a:c > 1", recorded) == "((sum(x)) / 2) > 1"
    unchanged = 'max_over_time(up{i="a:b"}[10m:1m]) > 0'  # a label value, a subquery
    assert promql.inline_recorded(unchanged, recorded) == unchanged


def test_the_readme_lists_every_alert_with_its_action() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(Modelrun\w+)` \| [^|]+ \| (.+) \|$", readme, re.M))

    assert rows == {r["alert"]: r["annotations"]["action"] for r in rules_file()}


def test_the_rules_file_is_the_one_the_local_mirror_runs() -> None:
    from local.mirror import ALERT_RULES

    assert infra_module("alerts").RULES_FILE == ALERT_RULES == RULES
