"""Cloud Monitoring alert policies from the local mirror's rules file, and an uptime check.

local/prometheus/alerts.yml is the one source: each rule becomes one alert policy with a PromQL
condition on the same expression, the same `for`, its labels, its severity, and its summary,
description and `action` annotation (the README's "what to do") as documentation; the fields
map as Google's own migration maps them ("Migrate alerting rules and receivers from
Prometheus"). A rule the cloud cannot evaluate (infra/promql.py) stops the program with the
reason. A rule annotated `cloud: uptime` stands for something PromQL cannot see on Cloud Run (an
instance that is gone leaves no series behind): its policy watches the uptime check of /health
instead. Notifications go to the stack's `modelrun:alertEmails`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_gcp as gcp
import yaml

from config_error import ConfigError
from gcp_limits import check_uptime
from promql import Unsupported, check_alert, documentation_text, inline_recorded, scoped, seconds

ROOT = Path(__file__).resolve().parent.parent
RULES_FILE = ROOT / "local" / "prometheus" / "alerts.yml"
SEVERITIES = {"critical": "CRITICAL", "error": "ERROR", "warning": "WARNING"}
EVALUATION_INTERVAL = "30s"  # "a positive multiple of 30 seconds" (the API's rule)
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # alert_rule must be a valid label name
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
UPTIME_PERIOD = "60s"
UPTIME_TIMEOUT = "10s"
MONITORING_AGENT_DOMAIN = "gcp-sa-monitoring-notification.iam.gserviceaccount.com"


@dataclass(frozen=True)
class Rule:
    """One alerting rule of the rules file, as the cloud takes it."""

    group: str
    name: str
    expr: str
    duration: str
    severity: str
    labels: dict[str, str]
    subject: str
    content: str
    uptime: bool  # watched by the uptime check, not by PromQL


def read_rules(path: Path | None = None) -> list[Rule]:
    """Every alerting rule of a Prometheus rules file (RULES_FILE unless told), recording rules
    put in place; raise ValueError naming the rule and the reason when the cloud cannot take
    it."""
    path = path or RULES_FILE
    groups = yaml.safe_load(path.read_text())["groups"]
    recorded = _recorded(groups)
    return [
        _rule(group["name"], raw, path, recorded)
        for group in groups
        for raw in group["rules"]
        if "alert" in raw
    ]


def recorded_expressions(path: Path | None = None) -> dict[str, str]:
    """Each recording rule's series name and expression (the cloud runs none: the alerts and the
    dashboard's queries take the expressions in their place)."""
    return _recorded(yaml.safe_load((path or RULES_FILE).read_text())["groups"])


def _recorded(groups: list[dict[str, Any]]) -> dict[str, str]:
    return {raw["record"]: raw["expr"] for g in groups for raw in g["rules"] if "record" in raw}


def _rule(group: str, raw: dict[str, Any], path: Path, recorded: dict[str, str]) -> Rule:
    name = raw["alert"]
    where = f"{path.name}: alert {name}"
    annotations = raw.get("annotations", {})
    labels = {k: str(v) for k, v in raw.get("labels", {}).items()}
    duration = str(raw.get("for", "0s"))
    try:
        if not LABEL_NAME.match(name):
            raise Unsupported("its name is not a valid Prometheus label name")
        if labels.get("severity") not in SEVERITIES:
            raise Unsupported(f"severity must be one of {', '.join(SEVERITIES)}")
        if "action" not in annotations:
            raise Unsupported("it has no `action` annotation (the README's what to do)")
        uptime = annotations.get("cloud") == "uptime"
        expr = inline_recorded(raw["expr"], recorded)
        if not uptime:
            check_alert(expr, duration)
        subject = documentation_text(annotations.get("summary", name))
        content = "\n\n".join(
            [
                documentation_text(annotations.get("description", "")),
                f"**What to do:** {annotations['action']}",
                f"Source: `local/prometheus/{path.name}`, group `{group}`, alert `{name}`.",
            ]
        )
    except Unsupported as e:
        raise ValueError(f"{where} cannot become a Cloud Monitoring policy: {e}") from e
    return Rule(
        group, name, expr.strip(), duration, labels["severity"], labels, subject, content,
        uptime,
    )  # fmt: skip


@dataclass
class AlertsArgs:
    project: str
    service_url: pulumi.Output[str]
    invoker_access: str
    emails: list[str]
    labels: dict[str, str]
    service: gcp.cloudrunv2.Service | None = None  # invoked by the uptime check in "iam" mode
    service_name: str | None = None  # the policies read this service's series alone
    # The project's number, for the Monitoring service agent's address. Taken from a resource's
    # name rather than read with a data source: CI's `up` reads every data source again, and the
    # deployer has no project-wide role (docs/ARCHITECTURE.md, "What a later `up` changes").
    project_number: pulumi.Output[str] | None = None


def monitoring_agent(project_number: str) -> str:
    """The Monitoring service agent, whose identity token an authenticated uptime check presents
    ("The token will be generated for the Monitoring service agent service account":
    UptimeCheckConfig.HttpCheck.ServiceAgentAuthentication, Cloud Monitoring API v3)."""
    return f"serviceAccount:service-{project_number}@{MONITORING_AGENT_DOMAIN}"


class Alerts(pulumi.ComponentResource):
    """One policy per rule, email channels, and the uptime check of /health."""

    def __init__(self, name: str, args: AlertsArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("modelrun:gcp:Alerts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        rules = read_rules()
        check_uptime(UPTIME_PERIOD, UPTIME_TIMEOUT)
        for email in args.emails:
            if not EMAIL.match(email):
                raise ConfigError(
                    "modelrun:alertEmails",
                    f"modelrun:alertEmails: {email!r} is not an email address",
                )
        self.channels = [
            gcp.monitoring.NotificationChannel(
                f"{name}-email-{i}",
                project=args.project,
                type="email",
                display_name=f"modelrun alerts to {email}",
                labels={"email_address": email},
                user_labels=args.labels,
                opts=child,
            )
            for i, email in enumerate(args.emails)
        ]
        channels = [c.id for c in self.channels]
        host = args.service_url.apply(lambda url: url.removeprefix("https://").rstrip("/"))
        self.uptime = gcp.monitoring.UptimeCheckConfig(
            f"{name}-health",
            project=args.project,
            display_name="modelrun /health",
            timeout=UPTIME_TIMEOUT,
            period=UPTIME_PERIOD,
            http_check=gcp.monitoring.UptimeCheckConfigHttpCheckArgs(
                path="/health",
                port=443,
                use_ssl=True,
                validate_ssl=True,
                # With invoker access "iam" the check presents a Google-signed identity token.
                service_agent_authentication=(
                    gcp.monitoring.UptimeCheckConfigHttpCheckServiceAgentAuthenticationArgs(
                        type="OIDC_TOKEN"
                    )
                    if args.invoker_access == "iam"
                    else None
                ),
            ),
            monitored_resource=gcp.monitoring.UptimeCheckConfigMonitoredResourceArgs(
                type="uptime_url", labels={"project_id": args.project, "host": host}
            ),
            user_labels=args.labels,
            opts=child,
        )
        if args.invoker_access == "iam":
            if args.service is None:
                raise ValueError("an uptime check of an IAM-only service needs the service")
            # Cloud Run admits a caller with run.invoker on the service ("Authentication
            # overview", https://cloud.google.com/run/docs/authenticating/overview); the check's
            # token is the agent's, so the agent gets the role on this service alone.
            if args.project_number is None:
                raise ValueError("an uptime check of an IAM-only service needs the project number")
            gcp.cloudrunv2.ServiceIamMember(
                f"{name}-uptime-invokes",
                project=args.project,
                location=args.service.location,
                name=args.service.name,
                role="roles/run.invoker",
                member=args.project_number.apply(monitoring_agent),
                opts=child,
            )
        self.policies = {
            rule.name: gcp.monitoring.AlertPolicy(
                f"{name}-{rule.name}",
                project=args.project,
                display_name=rule.name,
                combiner="OR",
                severity=SEVERITIES[rule.severity],
                conditions=[
                    self._uptime_condition(rule)
                    if rule.uptime
                    else _promql_condition(rule, args.service_name)
                ],
                documentation=gcp.monitoring.AlertPolicyDocumentationArgs(
                    subject=rule.subject, content=rule.content, mime_type="text/markdown"
                ),
                notification_channels=channels,
                user_labels=args.labels,
                opts=child,
            )
            for rule in rules
        }
        self.register_outputs({})

    def _uptime_condition(self, rule: Rule) -> gcp.monitoring.AlertPolicyConditionArgs:
        """The uptime check failing from more than one region for the rule's `for` (at least a
        minute): Cloud Monitoring's documented uptime alert."""
        check_filter = self.uptime.uptime_check_id.apply(
            lambda check_id: (
                'metric.type="monitoring.googleapis.com/uptime_check/check_passed" '
                f'AND metric.label.check_id="{check_id}" AND resource.type="uptime_url"'
            )
        )
        return gcp.monitoring.AlertPolicyConditionArgs(
            display_name=f"{rule.name}: /health fails its uptime check",
            condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                filter=check_filter,
                comparison="COMPARISON_GT",
                threshold_value=1,
                duration=f"{max(60, int(seconds(rule.duration)))}s",
                aggregations=[
                    gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                        alignment_period="60s",
                        per_series_aligner="ALIGN_NEXT_OLDER",
                        cross_series_reducer="REDUCE_COUNT_FALSE",
                        group_by_fields=["resource.label.*"],
                    )
                ],
            ),
        )


def _promql_condition(rule: Rule, service: str | None) -> gcp.monitoring.AlertPolicyConditionArgs:
    """The rule's PromQL condition, on this stack's service's series alone when named."""
    try:
        query = scoped(rule.expr, service) if service else rule.expr
    except Unsupported as e:
        raise ValueError(f"alert {rule.name} cannot be narrowed to {service}: {e}") from e
    return gcp.monitoring.AlertPolicyConditionArgs(
        display_name=rule.name,
        condition_prometheus_query_language=(
            gcp.monitoring.AlertPolicyConditionConditionPrometheusQueryLanguageArgs(
                query=query,
                duration=f"{int(seconds(rule.duration))}s",
                evaluation_interval=EVALUATION_INTERVAL,
                alert_rule=rule.name,
                rule_group=rule.group,
                labels=rule.labels,
                # The series exist only once the sidecar has written them: the first `pulumi
                # up` comes before that, and would otherwise be refused.
                disable_metric_validation=True,
            )
        ),
    )
