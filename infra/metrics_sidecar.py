"""Google Cloud Managed Service for Prometheus's sidecar for Cloud Run: its container and its
RunMonitoring configuration.

The sidecar scrapes the app's keyless metrics port (METRICS_PORT, function/service/metrics_port.py),
which only the instance's own containers reach: Cloud Run routes outside traffic to the ingress
container's port alone ("Container runtime contract"), so neither the metrics nor an API key are
exposed. The local mirror's Prometheus scrapes the same port and path.

The configuration follows the sidecar's own rules, read in its source (GoogleCloudPlatform/
run-gmp-sidecar, confgenerator/config.go): kind RunMonitoring, apiVersion
monitoring.googleapis.com/v1beta, parsed strictly (an unknown field fails), read from
/etc/rungmp/config.yaml (entrypoint.go), `job` set to metadata.name, and the target labels chosen
from instance, revision, service and configuration (each becomes `instanceId`, `revision_name`,
`service_name`, `configuration_name` on every series). Naming it `modelrun` gives the series the
job label the alert rules and dashboard select (local/prometheus/alerts.yml). It scrapes the
address "0.0.0.0:PORT", which Linux connects to the app's loopback listener (tested in
tests/test_metrics_port.py).
"""

from __future__ import annotations

from typing import Any

import yaml

IMAGE = (  # the newest release tag of run-gmp-sidecar; modelrun:metricsSidecarImage overrides it
    "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.7.0"
)
CONTAINER = "collector"
APP_CONTAINER = "app"  # the ingress container's name, which the collector waits for
METRICS_PORT = 9464  # the app's keyless metrics port (OpenTelemetry's Prometheus default)
CONFIG_DIR = "/etc/rungmp"  # where the sidecar reads config.yaml
CONFIG_FILE = "config.yaml"
SCRAPE_INTERVAL = "30s"
JOB = "modelrun"
# The collector's share of the instance, taken out of modelrun:cpu and modelrun:memory (see
# limits.container_shares): left unset, Cloud Run would give it its default container size (1 vCPU,
# 512 MiB), roughly doubling the billed vCPU at cpu=1 and making an instance total outside
# Cloud Run's size table.
CPU_MILLIS = 250
MEMORY_MIB = 256


def run_monitoring() -> dict[str, Any]:
    """The sidecar's configuration: scrape the app's metrics port, label by revision."""
    return {
        "apiVersion": "monitoring.googleapis.com/v1beta",
        "kind": "RunMonitoring",
        "metadata": {"name": JOB},
        "spec": {
            "endpoints": [
                {"port": str(METRICS_PORT), "path": "/metrics", "interval": SCRAPE_INTERVAL}
            ],
            # revision_name tells two revisions apart on one dashboard (rollouts).
            "targetLabels": {"metadata": ["instance", "revision", "service", "configuration"]},
        },
    }


def config_text() -> str:
    return yaml.safe_dump(run_monitoring(), sort_keys=False)
