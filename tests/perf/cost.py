"""What a million predictions cost, from `make bench`'s measured figures and published prices.

    python -m tests.perf.cost                       # tests/perf/results/latest.json, list prices
    python -m tests.perf.cost --vcpu-second 0.0000168 --vertex-node-hour 0.0771   # your prices

Three ways to serve the same model: modelrun and MLServer each on Cloud Run (request-based
billing, the size infra/ deploys by default: 1 vCPU and 1 GiB per instance, of which the metrics
sidecar takes 250m and 256 MiB), and a Vertex AI endpoint with one always-on node. Three traffic
shapes: a steady 50 requests/s; office hours (50 requests/s from 09:00 to 18:00 on weekdays,
none otherwise: 45 of the week's 168 hours); one request a minute.

The model of the bill (each assumption is a line below):
- Cloud Run bills an instance's time while it has a request in flight, each such stretch rounded
  up to 100 ms, at the instance's whole size (1 vCPU, 1 GiB: the sidecar's share included), plus a
  fee per request. With requests arriving at random (Poisson) at r per second, each lasting d
  (the measured c=1 p50), billed as s = d rounded up to 100 ms, the billed share of an
  instance's time is 1 - exp(-r s): at one request a minute every request bills one 100 ms slot,
  whichever server answers in under 100 ms.
- Instances: enough that the app's measured CPU per request keeps each below 60 % of its
  0.75 vCPU (Cloud Run's autoscaler targets 60 % CPU), at least one; the measured memory (PSS)
  must fit the app's 768 MiB.
- Idle time is not billed (request-based billing, min instances 0). An instance idles up to 15
  minutes before Cloud Run stops it, so one request a minute never meets a cold start; office
  hours meet one a day per instance, billed for its measured cold start.
- Vertex AI bills each node for every hour it is deployed, requests or not; one node (2 vCPUs)
  serves all three shapes here (it would need more if MLServer's CPU per request at 60 % of 2
  vCPUs could not carry 50 requests/s: the table says so).
Free tiers are left out: these are the prices beyond them.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LATEST = Path(__file__).parent / "results" / "latest.json"


@dataclass(frozen=True)
class Prices:
    """USD. Cloud Run tier 1, request-based billing ("CPU only allocated during request
    processing"); Vertex AI online prediction, us-central1."""

    vcpu_second: float = 0.000024
    gib_second: float = 0.0000025
    per_million_requests: float = 0.40
    vertex_node_hour: float = 0.1095  # n1-standard-2: not in the page's stored copy (README)
    # Where they were read, and when (README, "What a million predictions cost").
    source: str = (
        "cloud.google.com/run/pricing (tier 1, CPU allocated during request processing) and "
        "cloud.google.com/vertex-ai/pricing (prediction, n1-standard-2, us-central1), "
        "as stored on 2026-12-08"
    )


@dataclass(frozen=True)
class Instance:
    """infra/'s default Cloud Run size, and the metrics sidecar's share of it."""

    vcpu: float = 1.0
    gib: float = 1.0
    app_vcpu: float = 0.75  # infra/metrics_sidecar.py: CPU_MILLIS = 250
    app_mib: float = 768.0  # MEMORY_MIB = 256
    target_utilisation: float = 0.6
    vertex_vcpu: float = 2.0


SHAPES = {  # name: (requests per second while on, hours on per week)
    "steady 50 req/s": (50.0, 168.0),
    "office hours (50 req/s, 09:00-18:00 Mon-Fri)": (50.0, 45.0),
    "one request a minute": (1 / 60, 168.0),
}
ROUNDING_SECONDS = 0.1


def cloud_run(figures: dict[str, float], rate: float, hours_on: float, prices: Prices,
              size: Instance) -> dict[str, Any]:  # fmt: skip
    """Dollars per million requests on Cloud Run for one server's measured figures."""
    cpu_seconds = figures["cpu_ms_per_request"] / 1000
    duration = figures["p50_ms"] / 1000
    instances = max(1, math.ceil(rate * cpu_seconds / (size.app_vcpu * size.target_utilisation)))
    per_instance = rate / instances
    billed_stretch = ROUNDING_SECONDS * max(1, math.ceil(duration / ROUNDING_SECONDS))
    billed_share = 1 - math.exp(-per_instance * billed_stretch)
    instance_second = size.vcpu * prices.vcpu_second + size.gib * prices.gib_second
    seconds_on = hours_on * 3600
    requests = rate * seconds_on
    compute = instances * billed_share * seconds_on * instance_second
    days_on = 5 if hours_on < 168 else 0  # office hours: one cold start per instance a day
    cold = days_on * instances * figures["cold_start_s"] * instance_second
    fees = requests * prices.per_million_requests / 1e6
    return {
        "usd_per_million": round((compute + cold + fees) / requests * 1e6, 3),
        "instances": instances,
        "fits_memory": figures["pss_mb"] <= size.app_mib,
    }


def vertex(figures: dict[str, float], rate: float, hours_on: float, prices: Prices,
           size: Instance) -> dict[str, Any]:  # fmt: skip
    """Dollars per million requests on always-on Vertex AI nodes (billed all week)."""
    cpu_seconds = figures["cpu_ms_per_request"] / 1000
    nodes = max(1, math.ceil(rate * cpu_seconds / (size.vertex_vcpu * size.target_utilisation)))
    requests = rate * hours_on * 3600
    return {
        "usd_per_million": round(nodes * 168 * prices.vertex_node_hour / requests * 1e6, 3),
        "nodes": nodes,
    }


def server_figures(result: dict[str, Any], side: str, model: str) -> dict[str, float]:
    """One server's figures for one model, from latest.json ("ours" or "peer")."""
    measured = result[side]
    return {
        "cpu_ms_per_request": measured[f"{model}_cpu_ms_per_request"],
        "p50_ms": measured[f"{model}_c1_p50_ms"],
        "cold_start_s": measured[f"{model}_cold_start_s"],
        "pss_mb": measured["pss_mb" if model == "lr" else f"{model}_pss_mb"],
    }


def table(
    result: dict[str, Any], prices: Prices = Prices(), size: Instance = Instance()
) -> dict[str, Any]:
    """Per model and traffic shape: modelrun and MLServer on Cloud Run, and Vertex AI (sized
    by MLServer's CPU per request, a peer server standing in for Vertex's container)."""
    rows = {}
    for model in ("lr", "mixed"):
        ours, peer = server_figures(result, "ours", model), server_figures(result, "peer", model)
        for shape, (rate, hours) in SHAPES.items():
            rows[f"{model}: {shape}"] = {
                "modelrun_cloud_run": cloud_run(ours, rate, hours, prices, size),
                "mlserver_cloud_run": cloud_run(peer, rate, hours, prices, size),
                "vertex_one_node": vertex(peer, rate, hours, prices, size),
            }
    return {"prices": asdict(prices), "instance": asdict(size), "rows": rows}


def show(costs: dict[str, Any]) -> str:
    lines = [
        "| model: traffic | modelrun on Cloud Run | MLServer on Cloud Run | Vertex AI, one node |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in costs["rows"].items():
        cells = []
        for key in ("modelrun_cloud_run", "mlserver_cloud_run", "vertex_one_node"):
            cell = row[key]
            text = f"${cell['usd_per_million']:,.2f}"
            count = cell.get("instances", cell.get("nodes", 1))
            if count > 1:
                text += f" ({count} {'instances' if 'instances' in cell else 'nodes'})"
            if cell.get("fits_memory") is False:
                text += " (does not fit 768 MiB)"
            cells.append(text)
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=LATEST, help="a `make bench` latest.json")
    defaults = Prices()
    names = ("vcpu_second", "gib_second", "per_million_requests", "vertex_node_hour")
    for name in names:
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=price, default=getattr(defaults, name)
        )
    args = parser.parse_args()
    try:
        results = json.loads(args.results.read_text())
    except (OSError, ValueError) as e:
        parser.error(f"cannot read {args.results} (run `make bench` first): {e}")
    given = "the command line (list prices where not given)"
    prices = Prices(*(getattr(args, name) for name in names), given)
    print(f"USD per million predictions, from the figures in {args.results}, at")
    print(", ".join(f"{name.replace('_', ' ')} ${getattr(prices, name):g}" for name in names))
    print(show(table(results, prices)))


def price(text: str) -> float:
    """A price on the command line: a finite number of dollars, not below zero."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"a price is a finite number of dollars, not {text}")
    return value


if __name__ == "__main__":
    main()
