"""The Pulumi program under Pulumi's mocks (tests/support/infra.py): the protected edge
(modelrun:domain): load balancer, Cloud Armor rules and their limits."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.infra import (
    EDGE_ADDRESS,
    SERVICE,
    Registered,
    Stack,
    run_program,
    stack_config,
)

DOMAIN = "api.example.com"
EDGE = {"modelrun:domain": DOMAIN}
# "Preconfigured WAF rules overview" (https://cloud.google.com/armor/docs/waf-rules), CRS 3.3:
# every rule name it lists. A rule the policy names must be one of them.
DOCUMENTED_WAF_RULES = {
    f"{rule}-v33-{track}"
    for rule in ("sqli", "xss", "lfi", "rfi", "rce", "methodenforcement", "scannerdetection",
                 "protocolattack", "php", "sessionfixation", "java", "nodejs")
    for track in ("stable", "canary")
}  # fmt: skip
# What a rule's match expression may be (Cloud Armor's rules language, "Custom rules language
# reference", https://cloud.google.com/armor/docs/rules-language-reference): these shapes only.
WAF_EXPRESSION = re.compile(
    r"^evaluatePreconfiguredWaf\('([a-z]+-v33-stable)', \{'sensitivity': [1-4]\}\)$"
)
IP_TEST = r"inIpRange\(origin\.ip, '[0-9a-fA-F.:/]+'\)"
REGION_TEST = r"origin\.region_code == '[A-Z]{2}'"


def one_of(test: str) -> re.Pattern[str]:
    return re.compile(rf"^!?\(?{test}( \|\| {test})*\)?$")


@pytest.fixture(scope="module")
def edge_stack() -> Stack:
    return run_program(stack_config(**EDGE))


def by_type(stack: Stack, short: str) -> list[Registered]:
    return [r for r in stack.resources if r.type.endswith(f":{short}")]


def run_app_is_closed(stack: Stack) -> bool:
    """Outside traffic cannot reach the run.app URL: only the load balancer can."""
    return bool(stack.one(SERVICE).inputs["ingress"] == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER")


def test_no_edge_unless_a_domain_is_set(stack: Stack) -> None:
    assert not [r for r in stack.resources if r.type.startswith("gcp:compute/")]
    assert not stack.of_type("modelrun:gcp:Edge")
    assert stack.one(SERVICE).inputs["ingress"] == "INGRESS_TRAFFIC_ALL"
    assert "edgeUrl" not in stack.outputs


def test_the_edge_wires_address_frontends_backend_armor_and_service(edge_stack: Stack) -> None:
    [neg] = by_type(edge_stack, "RegionNetworkEndpointGroup")
    [backend] = by_type(edge_stack, "BackendService")
    [policy] = by_type(edge_stack, "SecurityPolicy")
    [address] = by_type(edge_stack, "GlobalAddress")
    [certificate] = by_type(edge_stack, "ManagedSslCertificate")
    maps = {r.name: r.inputs for r in by_type(edge_stack, "URLMap")}
    https_proxy = by_type(edge_stack, "TargetHttpsProxy")[0].inputs
    http_proxy = by_type(edge_stack, "TargetHttpProxy")[0].inputs
    rules = {r.inputs["portRange"]: r.inputs for r in by_type(edge_stack, "GlobalForwardingRule")}

    assert neg.inputs["networkEndpointType"] == "SERVERLESS"
    assert neg.inputs["cloudRun"] == {"service": edge_stack.one(SERVICE).inputs["name"]}
    assert backend.inputs["backends"] == [{"group": f"{neg.name}-id"}]
    assert backend.inputs["loadBalancingScheme"] == "EXTERNAL_MANAGED"
    assert backend.inputs["securityPolicy"].endswith(policy.name)
    assert backend.inputs["logConfig"] == {"enable": True, "sampleRate": 1.0}
    assert certificate.inputs["managed"] == {"domains": [DOMAIN]}
    assert maps["edge-https"]["defaultService"] == f"{backend.name}-id"
    assert https_proxy["urlMap"] == "edge-https-id"
    assert https_proxy["sslCertificates"] == [f"{certificate.name}-id"]
    assert maps["edge-http"]["defaultUrlRedirect"]["httpsRedirect"] is True
    assert "defaultService" not in maps["edge-http"]  # HTTP never reaches the service
    assert http_proxy["urlMap"] == "edge-http-id"
    assert rules["443"]["target"] == "edge-https-id" and rules["80"]["target"] == "edge-http-id"
    assert rules["443"]["ipAddress"] == rules["80"]["ipAddress"] == f"{address.name}-id"
    assert edge_stack.outputs["edgeAddress"] == EDGE_ADDRESS
    assert (
        edge_stack.outputs["edgeUrl"] == edge_stack.outputs["candidateUrl"] == f"https://{DOMAIN}"
    )
    components = {r.type for r in edge_stack.resources if r.type.startswith("modelrun:gcp:")}
    assert {"modelrun:gcp:Edge", "modelrun:gcp:ServerlessBackend", "modelrun:gcp:EdgeAddress",
            "modelrun:gcp:HttpsFrontend", "modelrun:gcp:HttpRedirect"} <= components  # fmt: skip
    apis = {r.inputs["service"] for r in edge_stack.of_type("gcp:projects/service:Service")}
    assert {"compute.googleapis.com", "logging.googleapis.com"} <= apis


@pytest.mark.parametrize("access", ["public", "public-no-iam-check"])
def test_with_the_edge_the_run_app_url_refuses_outside_traffic(access: str) -> None:
    """A policy: whenever a domain is set, the service admits the load balancer only. The same
    check on the stack without the edge says open, so it can fail."""
    edged = run_program(stack_config(**EDGE, **{"modelrun:invokerAccess": access}))

    assert run_app_is_closed(edged)
    uptime = edged.one("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig").inputs
    assert uptime["monitoredResource"]["labels"]["host"] == DOMAIN  # checked through the edge
    assert not run_app_is_closed(run_program(stack_config(**{"modelrun:invokerAccess": access})))


def test_the_edge_refuses_iam_only_invokers() -> None:
    with pytest.raises(ValueError, match="without an identity token"):
        run_program(stack_config(**EDGE, **{"modelrun:invokerAccess": "iam"}))


def test_the_armor_policy_rules_and_their_order(edge_stack: Stack) -> None:
    [policy] = by_type(edge_stack, "SecurityPolicy")
    rules = policy.inputs["rules"]
    priorities = [r["priority"] for r in rules]

    assert policy.inputs["advancedOptionsConfig"] == {"jsonParsing": "STANDARD"}
    assert priorities == sorted(set(priorities))  # unique, in evaluation order
    ban = next(r for r in rules if r["action"] == "rate_based_ban")
    # A request under the ban's threshold is allowed there (its conform action): every deny rule,
    # the WAF's included, must come first, or it never sees such a request.
    assert ban["priority"] > max(r["priority"] for r in rules if r["action"] == "deny(403)")
    assert rules[-2] == ban
    assert ban["rateLimitOptions"] == {
        "conformAction": "allow", "exceedAction": "deny(429)", "enforceOnKey": "IP",
        "rateLimitThreshold": {"count": 600, "intervalSec": 60}, "banDurationSec": 600,
    }  # fmt: skip
    waf = [
        r["match"]["expr"]["expression"]
        for r in rules
        if 500 <= r["priority"] < 1000 and "expr" in r["match"]
    ]
    assert len(waf) == 4 and all(WAF_EXPRESSION.match(e) for e in waf)
    assert {WAF_EXPRESSION.match(e).group(1) for e in waf} <= DOCUMENTED_WAF_RULES  # type: ignore[union-attr]
    assert {e.split("'")[1].split("-")[0] for e in waf} == {"sqli", "xss", "lfi", "rce"}
    assert rules[-1] == {
        "priority": 2147483647, "action": "allow", "description": "default",
        "match": {"versionedExpr": "SRC_IPS_V1", "config": {"srcIpRanges": ["*"]}},
    }  # fmt: skip
    assert all(r["action"] in ("allow", "deny(403)", "rate_based_ban") for r in rules)


CODES = [a + b for a in "ABCDEFGHIJ" for b in "KLMNO"]  # 50 codes of ISO 3166-1's shape
SUBEXPRESSION = re.compile(r"\|\|")


@pytest.mark.parametrize("count", [1, 5, 6, 50])
def test_deny_lists_are_split_into_rules_within_cloud_armors_limits(count: int) -> None:
    # "up to five subexpressions" an expression (Cloud Armor's rules language reference); ten
    # ranges a SRC_IPS_V1 match.
    countries = CODES[:count]
    ranges = [f"198.51.{i // 250}.{i % 250}/32" for i in range(count)]
    stack = run_program(stack_config(**EDGE, **{
        "modelrun:edgeDenyCountries": ",".join(countries),
        "modelrun:edgeDenyIpRanges": ",".join(ranges),
    }))  # fmt: skip
    rules = by_type(stack, "SecurityPolicy")[0].inputs["rules"]
    country_rules = [r for r in rules if 300 <= r["priority"] < 400]
    ip_rules = [r for r in rules if 100 <= r["priority"] < 200]

    assert [r["priority"] for r in country_rules] == list(range(300, 300 + -(-count // 5)))
    assert [r["priority"] for r in ip_rules] == list(range(100, 100 + -(-count // 10)))
    expressions = [r["match"]["expr"]["expression"] for r in country_rules]
    assert all(len(SUBEXPRESSION.findall(e)) + 1 <= 5 for e in expressions)
    assert [c for e in expressions for c in re.findall(r"'([A-Z]{2})'", e)] == countries
    assert [i for r in ip_rules for i in r["match"]["config"]["srcIpRanges"]] == ranges
    assert all(r["action"] == "deny(403)" for r in country_rules + ip_rules)


@pytest.mark.parametrize("count, refused", [(1, False), (5, False), (6, True), (50, True)])
@pytest.mark.parametrize("key", ["edgeAllowCountries", "edgeAllowIpRanges"])
def test_an_allow_list_is_one_expression_of_at_most_five(
    key: str, count: int, refused: bool
) -> None:
    values = CODES[:count] if "Countries" in key else [f"203.0.113.{i}/32" for i in range(count)]
    config = stack_config(**EDGE, **{f"modelrun:{key}": ",".join(values)})

    if refused:
        with pytest.raises(Exception, match=f"modelrun:{key} may list at most 5 entries"):
            run_program(config)
        return
    rules = by_type(run_program(config), "SecurityPolicy")[0].inputs["rules"]
    [gate] = [r for r in rules if r["priority"] in (200, 400)]
    assert len(SUBEXPRESSION.findall(gate["match"]["expr"]["expression"])) + 1 == count


def test_allow_and_deny_lists_become_rules_before_the_rest() -> None:
    denied = [f"198.51.100.{i}/32" for i in range(12)]
    stack = run_program(stack_config(**EDGE, **{
        "modelrun:edgeDenyIpRanges": ",".join(denied),
        "modelrun:edgeAllowIpRanges": "203.0.113.0/24, 2001:db8::/32",
        "modelrun:edgeDenyCountries": "kp,ir", "modelrun:edgeAllowCountries": "FR,DE",
        "modelrun:edgeWafSensitivity": "0",
    }))  # fmt: skip
    rules = {r["priority"]: r for r in by_type(stack, "SecurityPolicy")[0].inputs["rules"]}

    assert rules[100]["match"]["config"]["srcIpRanges"] == denied[:10]  # ten a rule
    assert rules[101]["match"]["config"]["srcIpRanges"] == denied[10:]
    expressions = {p: rules[p]["match"]["expr"]["expression"] for p in (200, 300, 400)}
    assert (
        expressions[200]
        == "!(inIpRange(origin.ip, '203.0.113.0/24') || inIpRange(origin.ip, '2001:db8::/32'))"
    )
    assert expressions[300] == "origin.region_code == 'KP' || origin.region_code == 'IR'"
    assert expressions[400] == "!(origin.region_code == 'FR' || origin.region_code == 'DE')"
    assert one_of(IP_TEST).match(expressions[200]) and one_of(REGION_TEST).match(expressions[400])
    assert all(rules[p]["action"] == "deny(403)" for p in (100, 101, 200, 300, 400))
    assert not [p for p in rules if 500 <= p < 1000]  # sensitivity 0: no WAF rules


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"modelrun:domain": "not a domain"}, "modelrun:domain must be a DNS name"),
        ({"modelrun:edgeWafSensitivity": "5"}, "edgeWafSensitivity must be 0..4"),
        ({"modelrun:edgeRateLimitCount": "10001"}, "edgeRateLimitCount must be 1..10000"),
        ({"modelrun:edgeRateLimitIntervalSeconds": "45"}, "IntervalSeconds must be one of"),
        ({"modelrun:edgeBanSeconds": "0"}, "edgeBanSeconds must be at least 1"),
        ({"modelrun:edgeDenyCountries": "FRA"}, "ISO 3166-1 alpha-2"),
        ({"modelrun:edgeAllowIpRanges": "10.0.0.300/8"}, "is not an IP range"),
        ({"modelrun:edgeLogSampleRate": "2"}, "edgeLogSampleRate must be a number from 0 to 1"),
    ],
)  # fmt: skip
def test_edge_settings_google_cloud_would_refuse_are_refused(
    changes: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        run_program(stack_config(**{**EDGE, **changes}))

    assert refused.value.setting in changes  # the error names the setting to change


def test_the_dashboard_has_an_edge_row_of_blocked_requests_by_rule(edge_stack: Stack) -> None:
    [metric] = by_type(edge_stack, "Metric")
    tiles = json.loads(edge_stack.one("gcp:monitoring/dashboard:Dashboard").inputs["dashboardJson"])
    edge_tiles = [t for t in tiles["mosaicLayout"]["tiles"] if "edge" in t["widget"]["title"]]

    assert metric.inputs["filter"] == (
        'resource.type="http_load_balancer" AND jsonPayload.enforcedSecurityPolicy.outcome="DENY"'
    )
    assert metric.inputs["labelExtractors"] == {
        "rule": "EXTRACT(jsonPayload.enforcedSecurityPolicy.priority)"
    }
    [tile] = edge_tiles
    query = tile["widget"]["xyChart"]["dataSets"][0]["timeSeriesQuery"]["timeSeriesFilter"]
    assert query["filter"] == f'metric.type="logging.googleapis.com/user/{metric.inputs["name"]}"'
    assert query["aggregation"]["groupByFields"] == ["metric.label.rule"]


def test_every_edge_resource_belongs_to_an_edge_component(edge_stack: Stack) -> None:
    components = {r.urn for r in edge_stack.resources if r.type.startswith("modelrun:gcp:")}
    edge_parts = [r for r in edge_stack.resources
                  if r.type.startswith(("gcp:compute/", "gcp:logging/"))]  # fmt: skip

    assert len(edge_parts) == 12
    assert all(r.parent in components for r in edge_parts)
