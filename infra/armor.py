"""The Cloud Armor policy of the edge: its rules, in the order Cloud Armor evaluates them.

Lower priority numbers are evaluated first, and the first rule that matches decides
("Security policy overview", https://cloud.google.com/armor/docs/security-policy-overview):

    100+   deny the listed IP ranges (ten ranges a rule: SRC_IPS_V1's limit)
    200    deny what is outside the allowed IP ranges, when some are listed
    300+   deny the listed countries (origin.region_code), five a rule
    400    deny what is outside the allowed countries, when some are listed
    500+   the preconfigured OWASP rules (SQLi, XSS, LFI, RCE) at the configured sensitivity
    1000   a rate-based ban per client IP: over COUNT requests in the window, 429 for BAN seconds
    2147483647  allow (the default rule every policy has)

The rate-based ban comes after every deny rule: it matches every address, and a request under
its threshold takes its conform action, `allow` (the only one the API takes), which decides like
any other matching rule; a WAF rule below it would never see such a request ("a rate limit placed
above your WAF rules can potentially let attacks through": Google Cloud's "Structuring a Google
Cloud Armor Policy: A Rule-Ordering Playbook").

JSON parsing is on: Cloud Armor inspects a JSON body's values rather than its text, which its
documentation recommends for REST APIs, "to avoid noise and reduce the risk of false positives"
from the body's structure ("Request body content parsing",
https://cloud.google.com/armor/docs/content-parsing). A prediction body is then numbers and the
model's own category names, which no SQLi, XSS, LFI or RCE signature of sensitivity 1 describes;
no exclusion is needed, and none exists for a body (exclusions name headers, cookies, query
parameters and the URI: "Tune preconfigured WAF rules").
"""

from __future__ import annotations

from typing import Any

from pulumi_gcp.compute import (
    SecurityPolicyRuleArgs,
    SecurityPolicyRuleMatchArgs,
    SecurityPolicyRuleMatchConfigArgs,
    SecurityPolicyRuleMatchExprArgs,
    SecurityPolicyRuleRateLimitOptionsArgs,
    SecurityPolicyRuleRateLimitOptionsRateLimitThresholdArgs,
)

from stack_config import EdgeSettings

# The CRS 3.3 rules, as "Preconfigured WAF rules overview" lists them
# (https://cloud.google.com/armor/docs/waf-rules); tests/test_infra_edge.py holds that list.
WAF_RULES = ("sqli-v33-stable", "xss-v33-stable", "lfi-v33-stable", "rce-v33-stable")
DEFAULT_PRIORITY = 2147483647
IPS_PER_RULE = 10
# "An advanced match condition contains an expression with up to five subexpressions" ("Configure
# custom rules language attributes", https://cloud.google.com/armor/docs/rules-language-reference):
# each `||` term is one. A deny list splits into several rules, one per five; an allow list cannot
# (what is outside it is outside every part at once, and the first rule that matches decides), so
# stack_config.py refuses more than five (infra/gcp_limits.py).
SUBEXPRESSIONS_PER_RULE = 5
DENY_IPS, ALLOW_IPS, DENY_COUNTRIES, ALLOW_COUNTRIES = 100, 200, 300, 400
WAF_PRIORITY = 500  # before the rate-based ban (1000), whose conform action allows


def chunks(values: tuple[str, ...], size: int) -> list[list[str]]:
    """The values, `size` a rule."""
    return [list(values[k : k + size]) for k in range(0, len(values), size)]


def rules(edge: EdgeSettings) -> list[SecurityPolicyRuleArgs]:
    """Every rule of the policy, from the settings."""
    found = []
    for k, chunk in enumerate(chunks(edge.deny_ip_ranges, IPS_PER_RULE)):
        found.append(_ips(DENY_IPS + k, chunk, "deny(403)", "listed IP ranges"))
    if edge.allow_ip_ranges:
        inside = " || ".join(f"inIpRange(origin.ip, '{r}')" for r in edge.allow_ip_ranges)
        found.append(_expr(ALLOW_IPS, f"!({inside})", "deny(403)", "outside the allowed IP ranges"))
    for k, chunk in enumerate(chunks(edge.deny_countries, SUBEXPRESSIONS_PER_RULE)):
        listed = " || ".join(f"origin.region_code == '{c}'" for c in chunk)
        found.append(_expr(DENY_COUNTRIES + k, listed, "deny(403)", "listed countries"))
    if edge.allow_countries:
        listed = " || ".join(f"origin.region_code == '{c}'" for c in edge.allow_countries)
        found.append(
            _expr(ALLOW_COUNTRIES, f"!({listed})", "deny(403)", "outside the allowed countries")
        )
    if edge.waf_sensitivity:
        for k, name in enumerate(WAF_RULES):
            expression = (
                f"evaluatePreconfiguredWaf('{name}', {{'sensitivity': {edge.waf_sensitivity}}})"
            )
            found.append(_expr(WAF_PRIORITY + k, expression, "deny(403)", f"OWASP {name}"))
    found.append(
        SecurityPolicyRuleArgs(
            priority=1000,
            action="rate_based_ban",
            description="per-IP rate-based ban",
            match=_all_ips(),
            rate_limit_options=SecurityPolicyRuleRateLimitOptionsArgs(
                conform_action="allow",
                exceed_action="deny(429)",
                enforce_on_key="IP",
                rate_limit_threshold=SecurityPolicyRuleRateLimitOptionsRateLimitThresholdArgs(
                    count=edge.rate_limit_count, interval_sec=edge.rate_limit_interval_seconds
                ),
                ban_duration_sec=edge.ban_seconds,
            ),
        )
    )
    found.append(
        SecurityPolicyRuleArgs(
            priority=DEFAULT_PRIORITY, action="allow", description="default", match=_all_ips()
        )
    )
    return found


def _expr(priority: int, expression: str, action: str, description: str) -> SecurityPolicyRuleArgs:
    return SecurityPolicyRuleArgs(
        priority=priority,
        action=action,
        description=description,
        match=SecurityPolicyRuleMatchArgs(
            expr=SecurityPolicyRuleMatchExprArgs(expression=expression)
        ),
    )


def _ips(priority: int, ranges: list[str], action: str, description: str) -> SecurityPolicyRuleArgs:
    return SecurityPolicyRuleArgs(
        priority=priority,
        action=action,
        description=description,
        match=SecurityPolicyRuleMatchArgs(
            versioned_expr="SRC_IPS_V1",
            config=SecurityPolicyRuleMatchConfigArgs(src_ip_ranges=ranges),
        ),
    )


def _all_ips() -> Any:
    return SecurityPolicyRuleMatchArgs(
        versioned_expr="SRC_IPS_V1", config=SecurityPolicyRuleMatchConfigArgs(src_ip_ranges=["*"])
    )
