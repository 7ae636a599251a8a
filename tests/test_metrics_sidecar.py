"""The Managed Service for Prometheus sidecar in the Pulumi program (under Pulumi's mocks, as
tests/support/infra.py runs it), and its RunMonitoring configuration checked against the rules the
sidecar itself applies, as its source states them (GoogleCloudPlatform/run-gmp-sidecar,
confgenerator/config.go: ReadConfigFromFile, Validate, endpointScrapeConfig; entrypoint.go). The
sidecar cannot run here: its real scrape is proven only in a project."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from local.mirror import PROMETHEUS_CONFIG
from tests.support.infra import (
    SERVICE,
    Stack,
    account_email,
    container,
    infra_module,
    run_program,
    stack_config,
)

# config.go: the fields RunMonitoring knows (yaml.Strict() refuses any other), the metadata
# labels it may add, and its kind and apiVersion.
SPEC_FIELDS = {"endpoints", "targetLabels", "limits"}
ENDPOINT_FIELDS = {
    "port", "scheme", "path", "params", "proxyUrl", "interval", "timeout", "metricRelabeling",
}  # fmt: skip
ALLOWED_METADATA = {"instance", "revision", "service", "configuration"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")  # Prometheus's model.ParseDuration


def check_run_monitoring(config: dict[str, Any]) -> None:
    """Raise ValueError where the sidecar would refuse the configuration."""
    if config.get("apiVersion") != "monitoring.googleapis.com/v1beta":
        raise ValueError("apiVersion must be monitoring.googleapis.com/v1beta")
    if config.get("kind") != "RunMonitoring":
        raise ValueError("kind must be RunMonitoring")
    if set(config) - {"apiVersion", "kind", "metadata", "spec"}:
        raise ValueError(
            f"unknown fields {set(config) - {'apiVersion', 'kind', 'metadata', 'spec'}}"
        )
    spec = config["spec"]
    if set(spec) - SPEC_FIELDS:
        raise ValueError(f"unknown spec fields {set(spec) - SPEC_FIELDS}")
    for endpoint in spec["endpoints"]:
        if set(endpoint) - ENDPOINT_FIELDS:
            raise ValueError(f"unknown endpoint fields {set(endpoint) - ENDPOINT_FIELDS}")
        if not isinstance(endpoint["port"], str):
            raise ValueError('port is a string (Port string `yaml:"port"`)')
        for key in ("interval", "timeout"):
            if key in endpoint and not DURATION.match(endpoint[key]):
                raise ValueError(f"invalid scrape {key} {endpoint[key]!r}")
    metadata = set(spec.get("targetLabels", {}).get("metadata", []))
    if metadata - ALLOWED_METADATA:
        raise ValueError(f"metadata label {sorted(metadata - ALLOWED_METADATA)} not allowed")


def containers(stack: Stack) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in stack.one(SERVICE).inputs["template"]["containers"]}


def test_the_collector_runs_beside_the_app_and_waits_for_it(stack: Stack) -> None:
    sidecar = infra_module("metrics_sidecar")
    app, collector = containers(stack)["app"], containers(stack)["collector"]

    assert collector["image"] == sidecar.IMAGE
    assert collector["dependsOns"] == ["app"]  # the app starts (and passes /ready) first
    # No probe of its own and no port: it never keeps an instance from becoming ready, and only
    # the app takes requests.
    assert "startupProbe" not in collector and "livenessProbe" not in collector
    assert "ports" not in collector
    assert collector["volumeMounts"] == [{"name": "metrics-config", "mountPath": "/etc/rungmp"}]
    env = {e["name"]: e.get("value") for e in app["envs"]}
    assert env["METRICS_PORT"] == "9464"
    assert "METRICS_HOST" not in env  # loopback: reached by the instance's containers only
    assert stack.one(SERVICE).inputs["template"]["containers"][0]["name"] == "app"  # the image path


def test_the_configuration_is_mounted_from_its_secret(stack: Stack) -> None:
    volume = stack.one(SERVICE).inputs["template"]["volumes"][0]
    secret = stack.one("gcp:secretmanager/secret:Secret", "modelrun-metrics-config").inputs
    data = stack.one("gcp:secretmanager/secretVersion:SecretVersion", "modelrun-metrics-config")

    assert volume == {
        "name": "metrics-config",
        "secret": {
            "secret": secret["secretId"],
            "items": [{"path": "config.yaml", "version": "latest"}],
        },
    }
    text = data.inputs["secretData"]
    text = text["value"] if isinstance(text, dict) else text  # the mocks keep it marked secret
    check_run_monitoring(yaml.safe_load(text))
    assert "key" not in text.lower()  # where to scrape, nothing secret


def test_the_sidecar_scrapes_what_the_local_mirror_scrapes(stack: Stack) -> None:
    """Same job name, port and path: the rules and dashboard select the same series in both."""
    config = infra_module("metrics_sidecar").run_monitoring()
    local = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    job = next(j for j in local["scrape_configs"] if j["job_name"] == "modelrun")

    assert config["metadata"]["name"] == job["job_name"]  # the sidecar's `job` label
    endpoint = config["spec"]["endpoints"][0]
    assert job["static_configs"][0]["targets"] == [f"function:{endpoint['port']}"]
    assert job["metrics_path"] == endpoint["path"]
    assert "authorization" not in job and "params" not in endpoint  # no key anywhere
    assert "revision" in config["spec"]["targetLabels"]["metadata"]  # revisions told apart


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "PodMonitoring"}, "kind must be RunMonitoring"),
        ({"apiVersion": "monitoring.googleapis.com/v1"}, "apiVersion must be"),
        ({"spec": {"endpoints": [{"port": 9464}]}}, "port is a string"),
        ({"spec": {"endpoints": [{"port": "9464", "interval": "30 s"}]}}, "invalid scrape"),
        ({"spec": {"endpoints": [{"port": "9464", "bearer": "x"}]}}, "unknown endpoint fields"),
        ({"spec": {"endpoints": [], "targetLabels": {"metadata": ["zone"]}}}, "not allowed"),
    ],
)
def test_the_check_refuses_what_the_sidecar_refuses(change: dict[str, Any], message: str) -> None:
    config = {**infra_module("metrics_sidecar").run_monitoring(), **change}

    with pytest.raises(ValueError, match=message):
        check_run_monitoring(config)


def test_the_runtime_account_writes_metrics_and_reads_the_configuration(stack: Stack) -> None:
    runtime = f"serviceAccount:{account_email(stack, 'runtime')}"
    writer = stack.one("gcp:projects/iAMMember:IAMMember", "modelrun-metrics-writes-metrics")
    reader = stack.one(
        "gcp:secretmanager/secretIamMember:SecretIamMember", "modelrun-metrics-reads-config"
    )
    service = stack.one(SERVICE)

    assert (writer.inputs["role"], writer.inputs["member"]) == (
        "roles/monitoring.metricWriter",
        runtime,
    )
    assert reader.inputs["member"] == runtime
    # A revision whose account cannot read its mounted secret fails to start: grants first.
    version = stack.one("gcp:secretmanager/secretVersion:SecretVersion", "modelrun-metrics-config")
    for needed in (writer, reader, version):
        assert needed.urn in service.dependencies
    assert "monitoring.googleapis.com" in {
        r.inputs["service"] for r in stack.of_type("gcp:projects/service:Service")
    }


def test_billing_is_per_request_unless_asked(stack: Stack) -> None:
    assert {c["resources"]["cpuIdle"] for c in containers(stack).values()} == {True}

    always = run_program(stack_config(**{"modelrun:instanceBasedBilling": "true"}))
    assert {c["resources"]["cpuIdle"] for c in containers(always).values()} == {False}
    assert container(always)["resources"]["limits"] == {"cpu": "750m", "memory": "768Mi"}
    assert containers(always)["collector"]["resources"]["limits"] == {
        "cpu": "250m",
        "memory": "256Mi",
    }


def test_instance_billing_below_one_vcpu_is_refused() -> None:
    changes = {
        "modelrun:instanceBasedBilling": "true",
        "modelrun:cpu": "0.5",
        "modelrun:memory": "512Mi",
        "modelrun:concurrency": "1",
    }
    with pytest.raises(Exception, match="modelrun:instanceBasedBilling needs modelrun:cpu of 1"):
        run_program(stack_config(**changes))


def test_the_sidecar_image_can_be_pinned_elsewhere() -> None:
    image = "europe-docker.pkg.dev/my-mirror/gmp/cloud-run-gmp-sidecar:1.7.0"
    stack = run_program(stack_config(**{"modelrun:metricsSidecarImage": image}))

    assert containers(stack)["collector"]["image"] == image
