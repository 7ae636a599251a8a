"""What Cloud Monitoring's PromQL can evaluate, checked before a rule or a panel goes to the cloud.

Cloud Monitoring evaluates PromQL partly in its own backend, and documents where it departs from
Prometheus ("PromQL differences", cloud.google.com/stackdriver/docs/managed-prometheus/
promql-differences; "PromQL alerting overview", cloud.google.com/monitoring/promql/
promql-in-alerting). What can be checked in the text of an expression is refused here, with the
reason:

- functions newer than Prometheus 2.44 may not exist there: only 2.44's functions are allowed;
- only exact matching on metric names: every selector names its metric, `__name__` is not matched;
- a PromQL alerting condition's retest window (the rule's `for`) and alignment period (taken here
  as its longest range) are each at most 24 hours, together at most 25.

Recording rules do not exist there: `inline_recorded` puts each recorded expression in its place.

What cannot be seen in the text (staleness is not supported; rate extrapolation and an empty
histogram_quantile differ slightly) is listed in the README; the local rule tests use the
Prometheus arithmetic.

Alert annotations are Prometheus templates; the cloud's documentation takes Cloud Monitoring
variables. `documentation_text` translates the two templates the rules use, as Google's own
migration maps them ("Migrate alerting rules and receivers from Prometheus"): `{{ $labels.K }}`
to `${metric_or_resource.label.K}` and `{{ $value }}` (with any formatting) to `${metric.value}`.
"""

from __future__ import annotations

import re

# Word lists read better as text than as one quoted name a line.
FUNCTIONS_2_44 = frozenset(  # Prometheus v2.44.0, promql/functions.go FunctionCalls
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes
    clamp clamp_max clamp_min cos cosh count_over_time days_in_month day_of_month day_of_week
    day_of_year deg delta deriv exp floor histogram_count histogram_fraction histogram_quantile
    histogram_sum holt_winters hour idelta increase irate label_replace label_join
    last_over_time ln log10 log2 max_over_time min_over_time minute month pi predict_linear
    present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort
    sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp
    vector year
    """.split()
)
AGGREGATIONS = frozenset(
    "sum avg min max count group stddev stdvar topk bottomk quantile count_values".split()
)
KEYWORDS = frozenset(
    "by without on ignoring group_left group_right bool offset and or unless".split()
)
MAX_WINDOW_SECONDS = 24 * 3600
MAX_TOTAL_SECONDS = 25 * 3600
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")
RANGE = re.compile(r"\[\s*([0-9a-z]+)\s*(?::\s*([0-9a-z]*)\s*)?\]")
BARE_SELECTOR = re.compile(r"(?:^|[^A-Za-z0-9_:\s])\s*\{")
LABEL_TEMPLATE = re.compile(r"\{\{\s*\$labels\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
VALUE_TEMPLATE = re.compile(r"\{\{\s*\$value\b[^}]*\}\}")


# A recording rule's name holds a colon (Prometheus's naming convention); a duration such as a
# subquery's [1h:5m] does not start a name.
RECORDED = re.compile(r"(?<![A-Za-z0-9_:])[A-Za-z_][A-Za-z0-9_]*:[A-Za-z0-9_:]*")
MAX_NESTING = 8


class Unsupported(ValueError):
    """An expression, duration or template the cloud cannot take, and why."""


def seconds(duration: str) -> float:
    """A Prometheus duration (1h30m, 5m, 30s) in seconds."""
    parts = DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise Unsupported(f"{duration!r} is not a Prometheus duration")
    return sum(int(n) * UNITS[u] for n, u in parts)


def check_expression(expr: str) -> None:
    """Raise Unsupported when Cloud Monitoring's PromQL cannot evaluate the expression."""
    code = STRING.sub('""', expr)  # label values may hold anything
    if "__name__" in code:
        raise Unsupported("matches __name__: Cloud Monitoring matches metric names exactly only")
    if BARE_SELECTOR.search(code):
        raise Unsupported("has a selector without a metric name: Cloud Monitoring needs one")
    for name in CALL.findall(code):
        if name in AGGREGATIONS or name in KEYWORDS:
            continue
        if name not in FUNCTIONS_2_44:
            raise Unsupported(
                f"calls {name}(), which Prometheus 2.44 does not have: Cloud Monitoring's PromQL "
                "is at parity with 2.44 only"
            )


def inline_recorded(expr: str, recorded: dict[str, str]) -> str:
    """The expression with each recording rule's series replaced by the rule's expression, in
    parentheses: Cloud Monitoring runs no recording rule. Selecting on a recorded series (a
    matcher or a range) is refused: the substitution would change its meaning."""
    for _ in range(MAX_NESTING):
        code = STRING.sub(lambda m: "_" * len(m.group()), expr)  # offsets kept, values hidden
        found = list(RECORDED.finditer(code))
        if not found:
            return expr
        for match in reversed(found):
            name = match.group()
            if name not in recorded:
                raise Unsupported(f"uses {name}, which no recording rule of the file records")
            following = code[match.end() :].lstrip()[:1]
            if following in ("{", "["):
                raise Unsupported(
                    f"selects on the recorded series {name} (a matcher or a range): the cloud "
                    "runs no recording rule, and its expression cannot take one in its place"
                )
            expr = f"{expr[: match.start()]}({recorded[name].strip()}){expr[match.end() :]}"
    raise Unsupported(f"recording rules nest deeper than {MAX_NESTING}")


# The sidecar labels every series with its Cloud Run service (metrics_sidecar: targetLabels
# `service` becomes `service_name`), and every stack's sidecar names its job `modelrun`: a query
# that selects on the job alone sees every stack of the project.
JOB_MATCHER = 'job="modelrun"'
SERVICE_LABEL = "service_name"
SELECTOR = re.compile(r"\{[^}]*\}")


def scoped(expr: str, service: str) -> str:
    """The expression with every selector narrowed to one Cloud Run service's series, so that two
    stacks in one project never read each other's; a selector without the job's matcher is
    refused (it could not be told apart)."""
    masked = STRING.sub(lambda m: "_" * len(m.group()), expr)  # offsets kept, values hidden
    parts, last = [], 0
    for match in SELECTOR.finditer(masked):
        selector = expr[match.start() : match.end()]
        if JOB_MATCHER not in selector:
            raise Unsupported(f"the selector {selector} has no {JOB_MATCHER}")
        parts.append(expr[last : match.end() - 1] + f', {SERVICE_LABEL}="{service}"')
        last = match.end() - 1
    if not parts:
        raise Unsupported(f"selects no series by {JOB_MATCHER}")
    return "".join(parts) + expr[last:]


def longest_window(expr: str) -> float:
    """The longest range ([5m], or a subquery's [1h:5m]) in the expression, in seconds."""
    code = STRING.sub('""', expr)
    return max((seconds(m.group(1)) for m in RANGE.finditer(code)), default=0.0)


def check_alert(expr: str, duration: str) -> None:
    """Raise Unsupported when a rule cannot be a PromQL alerting condition."""
    check_expression(expr)
    retest, window = seconds(duration), longest_window(expr)
    if retest > MAX_WINDOW_SECONDS:
        raise Unsupported(f"for: {duration} is longer than the 24 hours a condition may wait")
    if window > MAX_WINDOW_SECONDS:
        raise Unsupported(
            f"a {window / 3600:g}h range is longer than the 24 hours a condition may look back"
        )
    if retest + window > MAX_TOTAL_SECONDS:
        raise Unsupported("for: plus the longest range exceeds the 25 hours a condition may span")


def documentation_text(template: str) -> str:
    """An annotation's template in Cloud Monitoring's documentation variables."""
    text = LABEL_TEMPLATE.sub(r"${metric_or_resource.label.\1}", template)
    text = VALUE_TEMPLATE.sub("${metric.value}", text)
    if "{{" in text:
        raise Unsupported(f"cannot translate the template in {template!r}")
    return text
