"""Side-by-side benchmark: modelrun against Seldon MLServer 1.7.1 on the same models and load.

    make bench            # 3 alternating rounds
    make bench QUICK=1    # 1 round, shorter runs (about 4 minutes)

modelrun starts as its container starts (the Dockerfile's CMD and ENV), its model fetched from a
GCS emulator. MLServer + mlserver-sklearn run from a virtualenv this script creates on first use
(tests/perf/.mlserver-venv, outside the project's requirements), on loopback ports, with default
settings, serving the same joblib files: Iris logistic regression, a 100-tree forest, and a
mixed-type one-hot + HistGradientBoosting pipeline packaged as a user would. Both get identical
Open Inference Protocol v2 requests from wrk (one tensor per column for the mixed model, with
MLServer's pandas-codec parameters). Servers alternate (A B A B) and medians are reported, as
ratios (modelrun / MLServer): the load generator shares this machine's cores, so absolute
figures mean little.

It also measures what drift counting costs (function/core/drift.py): modelrun on the Iris model with
its baseline against the same model without one, alternated, CPU per one-row request and
requests/s at c=32 (goals: at most 5 % more CPU, c=32 within 5 %).
Writes tests/perf/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from function.core import rollout
from function.core.store import ModelStore
from local import container
from local.mirror import ROOT, fake_gcs_command, free_port, process, stop, wait_for
from tests.artifacts import without_baseline
from tests.perf import cost
from training.__main__ import main as training

PERF = ROOT / "tests" / "perf"
MLSERVER_VENV = PERF / ".mlserver-venv"
MLSERVER_PACKAGES = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"]
KEY = "bench-key-0123456789abcdef"
ROW = [5.1, 3.5, 1.4, 0.2]
# The mixed-type figure: one churn row (training/churn.py) as one tensor per column, as MLServer's
# pandas codec takes it ("content_type": "pd"; "str" decodes a BYTES tensor to text).
CHURN_ROW = {"country": ("BYTES", "ES"), "plan": ("BYTES", "pro"), "seats": ("INT64", 2),
             "monthly_spend": ("FP64", 47.66), "tenure_months": ("INT64", 9),
             "has_discount": ("BOOL", False)}  # fmt: skip
MODEL_NAMES = {"lr": "iris", "rf": "iris", "mixed": "churn"}


# --- the servers -------------------------------------------------------------------------


def mlserver_python() -> Path:
    """MLServer's own virtualenv, created on first use with the project's scikit-learn."""
    python = MLSERVER_VENV / "bin" / "python"
    if not (MLSERVER_VENV / "bin" / "mlserver").exists():
        import sklearn

        print("creating tests/perf/.mlserver-venv (first use only)…", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *MLSERVER_PACKAGES,
             f"scikit-learn=={sklearn.__version__}"],
            check=True,
        )  # fmt: skip
    return python


class Server:
    """One server process serving one model; knows its infer URL and its process tree."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path,
                 url: str, log: Path) -> None:  # fmt: skip
        self.name, self.url = name, url
        self.started = time.perf_counter()
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def wait_first_prediction(
        self, headers: dict[str, str], body: bytes, timeout: float = 120
    ) -> float:
        """Seconds from exec to the first successful prediction once the server says it is
        ready (OIP's /v2/health/ready, as a startup probe would wait: with several worker
        processes, a prediction could otherwise meet one still loading)."""
        ready = self.url.split("/v2/")[0] + "/v2/health/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if get(ready) == 200 and post(self.url, body, headers)[0] == 200:
                    return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(0.01)
        raise TimeoutError(f"{self.name} gave no prediction in {timeout}s")

    def pids(self) -> list[int]:
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
        return found

    def cpu_seconds(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def pss_mb(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024

    def stop(self) -> None:
        stop(self.process)


def start_modelrun(
    model_uri: str, name: str, gcs: str, tmp: Path, runtime: str = "auto",
    extra: dict[str, str] | None = None,
) -> Server:  # fmt: skip
    port = free_port()
    env = {
        **os.environ,
        **container.environment(),
        "MODEL_URI": model_uri,
        "STORAGE_EMULATOR_HOST": gcs,
        "API_KEYS": KEY,
        "ALLOW_UNSIGNED_MODELS": "true",  # the versions here are published unsigned
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "HOME": str(tmp),
        "RATE_LIMIT_PER_SECOND": "0",  # a policy, not a capacity: off while measuring capacity
        "CLOUD_RUN_TIMEOUT_SECONDS": "30",  # the request time limit, on as infra deploys it
        "MAX_INSTANCES_PER_REQUEST": "10000",  # the 10k-row batch (MLServer has no limit)
        "MAX_REQUEST_BYTES": "4194304",
        "MODEL_RUNTIME": runtime,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **(extra or {}),
    }
    url = f"http://127.0.0.1:{port}/v2/models/{name}/infer"
    return Server("modelrun", container.command(), env, ROOT, url, tmp / f"modelrun-{port}.log")


def start_mlserver(joblib_file: Path, name: str, tmp: Path) -> Server:
    folder = Path(tempfile.mkdtemp(dir=tmp, prefix="mlserver-"))
    http, grpc, metrics = free_port(), free_port(), free_port()
    (folder / "settings.json").write_text(json.dumps(
        {"host": "127.0.0.1", "http_port": http, "grpc_port": grpc, "metrics_port": metrics}
    ))  # fmt: skip
    (folder / name).mkdir()
    shutil.copy(joblib_file, folder / name / "model.joblib")
    (folder / name / "model-settings.json").write_text(json.dumps({
        "name": name, "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }))  # fmt: skip
    python = mlserver_python()
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(python.parent / "mlserver"), "start", str(folder)]
    url = f"http://127.0.0.1:{http}/v2/models/{name}/infer"
    return Server("mlserver", command, env, folder, url, folder / "log")


# --- the load ----------------------------------------------------------------------------


def infer_body(rows: list[list[float]]) -> bytes:
    return json.dumps({"inputs": [{"name": "input-0", "shape": [len(rows), 4],
                                   "datatype": "FP64", "data": rows}]}).encode()  # fmt: skip


def churn_body() -> bytes:
    """One churn row, one tensor per column; the parameters are MLServer's, modelrun ignores
    them."""
    inputs = [
        {"name": name, "shape": [1], "datatype": datatype, "data": [value]}
        | ({"parameters": {"content_type": "str"}} if datatype == "BYTES" else {})
        for name, (datatype, value) in CHURN_ROW.items()
    ]
    return json.dumps({"parameters": {"content_type": "pd"}, "inputs": inputs}).encode()


BODIES = {"lr": infer_body([ROW]), "rf": infer_body([ROW]), "mixed": churn_body()}


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **headers}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, response.read()


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.status)


def wrk(
    url: str, headers: dict[str, str], connections: int, seconds: float, tmp: Path,
    body: bytes = BODIES["lr"],
) -> dict[str, float]:  # fmt: skip
    """Run wrk against url with one-row requests; return p50/p99 (ms), requests/s, requests."""
    script = tmp / "post.lua"
    header_lines = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        + header_lines
        + f"wrk.body = [==[{body.decode()}]==]\n"
    )
    threads = min(2, connections)
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s",
         str(script), url], capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = result.stdout
    if "Non-2xx" in out or "Latency Distribution" not in out:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    return {
        "p50_ms": _ms(_found(r"^\s+50%\s+(\S+)\s*$", out)),
        "p99_ms": _ms(_found(r"^\s+99%\s+(\S+)\s*$", out)),
        "rps": float(_found(r"Requests/sec:\s+(\S+)", out)),
        "requests": float(_found(r"(\d+) requests in", out)),
    }


def _found(pattern: str, out: str) -> str:
    """The first group of pattern in wrk's output; an error showing the output if absent."""
    match = re.search(pattern, out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk's output lacks {pattern!r}:\n{out}")
    return match[1]


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if match is None:
        raise ValueError(f"cannot read wrk's latency {text!r}")
    return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[match[2]]


def batch_ms(server: Server, headers: dict[str, str], rows: int, repeats: int) -> float:
    """Median wall time of one request carrying `rows` rows (body encoded beforehand)."""
    body = infer_body([ROW] * rows)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        status, _ = post(server.url, body, headers)
        times.append((time.perf_counter() - started) * 1000)
        assert status == 200
    return statistics.median(times)


# --- the rounds --------------------------------------------------------------------------


def warmed_up(server: Server, headers: dict[str, str], body: bytes) -> float:
    """Wait for the server's first prediction, then warm it up; return its cold start."""
    cold_start = server.wait_first_prediction(headers, body)
    for _ in range(200):
        post(server.url, body, headers)
    return cold_start


def one_client(
    server: Server, headers: dict[str, str], seconds: float, tmp: Path, body: bytes = BODIES["lr"]
) -> tuple[dict[str, float], float]:
    """wrk at c=1 with one-row requests (LR's unless told), and the server's CPU milliseconds
    per request."""
    cpu_before = server.cpu_seconds()
    c1 = wrk(server.url, headers, 1, seconds, tmp, body)
    return c1, (server.cpu_seconds() - cpu_before) * 1000 / c1["requests"]


def measure(server: Server, headers: dict[str, str], model: str, seconds: float,
            tmp: Path) -> dict[str, float]:  # fmt: skip
    body = BODIES[model]
    figures = {"cold_start_s": warmed_up(server, headers, body)}
    if model == "lr":
        c1, cpu = one_client(server, headers, seconds, tmp)
        figures.update(
            lr_c1_p50_ms=c1["p50_ms"], lr_c1_p99_ms=c1["p99_ms"], lr_c1_rps=c1["rps"],
            lr_cpu_ms_per_request=cpu,
        )  # fmt: skip
        figures["lr_c16_rps"] = wrk(server.url, headers, 16, seconds, tmp)["rps"]
        figures["lr_c32_rps"] = wrk(server.url, headers, 32, seconds, tmp)["rps"]
        figures["lr_batch1k_ms"] = batch_ms(server, headers, 1000, 7)
        figures["lr_batch10k_ms"] = batch_ms(server, headers, 10000, 5)
        figures["pss_mb"] = server.pss_mb()
    else:  # rf, mixed
        c1, cpu = one_client(server, headers, seconds, tmp, body)
        figures.update({f"{model}_c1_p50_ms": c1["p50_ms"], f"{model}_c1_p99_ms": c1["p99_ms"],
                        f"{model}_cpu_ms_per_request": cpu})  # fmt: skip
        figures[f"{model}_c32_rps"] = wrk(server.url, headers, 32, seconds, tmp, body)["rps"]
        figures[f"{model}_pss_mb"] = server.pss_mb()
    return figures


RATIOS = {  # key in latest.json: (figure, lower is better)
    "lr_c1_p50": ("lr_c1_p50_ms", True),
    "lr_cpu_per_request": ("lr_cpu_ms_per_request", True),
    "rf_c32_rps": ("rf_c32_rps", False),
    "cold_start": ("lr_cold_start_s", True),
    "lr_batch10k": ("lr_batch10k_ms", True),
    "pss": ("pss_mb", True),
    "mixed_c1_p50": ("mixed_c1_p50_ms", True),
    "mixed_c32_rps": ("mixed_c32_rps", False),
    "mixed_cold_start": ("mixed_cold_start_s", True),
}
GOALS = {"lr_c1_p50": 0.5, "lr_cpu_per_request": 0.4, "rf_c32_rps": 8.0, "cold_start": 0.25,
         "lr_batch10k": 0.6, "pss": 0.4, "mixed_c1_p50": 0.6, "mixed_c32_rps": 2.0,
         "mixed_cold_start": 0.4}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", default=os.environ.get("QUICK") == "1")
    parser.add_argument(
        "--mixed-runtime", default="auto", choices=("auto", "numpy", "sklearn"),
        help="modelrun's MODEL_RUNTIME for the mixed-type pipeline (sklearn: as before the numpy "
        "runtime)",
    )  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    rounds, seconds = (1, 3.0) if args.quick else (3, 6.0)
    mlserver_python()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        artifacts = {"lr": tmp / "lr", "rf": tmp / "rf", "mixed": tmp / "mixed"}
        assert training(["train", "--out", str(artifacts["lr"])]) == 0
        assert training(["train", "--estimator", "random_forest", "--param", "n_estimators=100",
                         "--out", str(artifacts["rf"])]) == 0  # fmt: skip
        package_mixed(artifacts["mixed"])
        gcs_port = free_port()
        gcs = f"http://127.0.0.1:{gcs_port}"
        with process(fake_gcs_command(gcs_port, tmp / "gcs", "bench"), tmp / "gcs.log"):
            wait_for(f"{gcs}/storage/v1/b")
            os.environ["STORAGE_EMULATOR_HOST"] = gcs
            uris = {}
            for model, artifact in artifacts.items():
                store = ModelStore(f"gs://bench/{model}/{MODEL_NAMES[model]}")
                store.promote(store.publish(artifact, "v1"))
                uris[model] = store.uri
            off = ModelStore("gs://bench/lr-unwatched/iris")
            off.promote(off.publish(without_baseline(artifacts["lr"], tmp / "lr-unwatched"), "v1"))
            pairs = 4 if args.quick else 6
            watching = drift_overhead(uris["lr"], off.uri, gcs, tmp, seconds, pairs)
            watching.update(counting_cost(artifacts["lr"]))
            shadowed = ModelStore("gs://bench/lr-shadowed/iris")
            shadowed.promote(shadowed.publish(artifacts["lr"], "v1"))
            rollout.start(shadowed, shadowed.publish(artifacts["rf"], "rf"), "shadow")
            shadow = shadow_overhead(uris["lr"], shadowed.uri, gcs, tmp, seconds, pairs)
            samples: dict[str, dict[str, list[float]]] = {"modelrun": {}, "mlserver": {}}
            for round_ in range(rounds):
                for name in ("modelrun", "mlserver"):  # A B A B
                    for model in artifacts:
                        print(f"round {round_ + 1}/{rounds}: {name} {model}", flush=True)
                        server, headers = _start(
                            name, model, uris, artifacts, gcs, tmp, args.mixed_runtime
                        )
                        try:
                            figures = measure(server, headers, model, seconds, tmp)
                        finally:
                            server.stop()
                        figures[f"{model}_cold_start_s"] = figures.pop("cold_start_s")
                        for key, value in figures.items():
                            samples[name].setdefault(key, []).append(value)
    report(samples, rounds, seconds, watching, shadow, args.mixed_runtime)


def paired(
    label: str,
    variants: tuple[tuple[str, str], tuple[str, str]],
    measure: Callable[[Server, str], dict[str, float]],
    gcs: str,
    tmp: Path,
    pairs: int,
) -> dict[str, float]:
    """Serve the Iris model of each of two variants (name, model root), once per pair and in
    alternating order, and `measure(server, name)` it warmed up. Return, per figure, the medians
    of each variant's values and of the pairs' ratios (first / second); a figure only the first
    variant has, its median."""
    raw: dict[str, dict[str, list[float]]] = {name: {} for name, _ in variants}
    for pair in range(pairs):
        for name, uri in variants if pair % 2 == 0 else variants[::-1]:
            print(f"{label} {pair + 1}/{pairs}: {name}", flush=True)
            server = start_modelrun(uri, "iris", gcs, tmp)
            try:
                warmed_up(server, {"X-API-Key": KEY}, BODIES["lr"])
                figures = measure(server, name)
            finally:
                server.stop()
            for key, value in figures.items():
                raw[name].setdefault(key, []).append(value)
    median = statistics.median
    (first, _), (second, _) = variants
    out = {}
    for key, ours in raw[first].items():
        if key not in raw[second]:
            out[key] = round(median(ours), 4)
            continue
        theirs = raw[second][key]
        out[f"{key}_{first}"] = round(median(ours), 4)
        out[f"{key}_{second}"] = round(median(theirs), 4)
        out[f"{key}_ratio"] = round(median(a / b for a, b in zip(ours, theirs, strict=True)), 3)
    return out


def drift_overhead(
    watched: str, unwatched: str, gcs: str, tmp: Path, seconds: float, pairs: int
) -> dict[str, float]:
    """What counting rows for drift costs: the Iris model with its baseline (every feature
    watched) against the same model without one, paired: the CPU per one-row request at c=1
    and requests/s at c=32 (watched / unwatched)."""
    headers = {"X-API-Key": KEY}

    def measure(server: Server, variant: str) -> dict[str, float]:
        _, cpu = one_client(server, headers, seconds, tmp)
        return {
            "cpu_ms_per_request": cpu,
            "c32_rps": wrk(server.url, headers, 32, seconds, tmp)["rps"],
        }

    variants = (("on", watched), ("off", unwatched))
    return paired("drift overhead", variants, measure, gcs, tmp, pairs)


def shadow_overhead(
    plain: str, shadowed: str, gcs: str, tmp: Path, seconds: float, pairs: int
) -> dict[str, float]:
    """What a shadow rollout costs the clients: the Iris model alone, against the same model with
    a 100-tree forest scoring every request in shadow, paired: p50 at c=1 and c=8 and
    requests/s at c=8 (shadow / alone), and the share of requests the candidate scored."""
    headers = {"X-API-Key": KEY}

    def measure(server: Server, variant: str) -> dict[str, float]:
        c1 = wrk(server.url, headers, 1, seconds, tmp)
        c8 = wrk(server.url, headers, 8, seconds, tmp)
        figures = {"c1_p50_ms": c1["p50_ms"], "c8_p50_ms": c8["p50_ms"], "c8_rps": c8["rps"]}
        if variant == "shadow":
            page = metrics_page(server, headers)
            if "modelrun_shadow_rows_total" not in page:
                raise RuntimeError("the shadow candidate scored nothing: is the rollout loaded?")
            scored = sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
                         if line.startswith("modelrun_shadow_rows_total{"))  # fmt: skip
            dropped = sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
                          if line.startswith("modelrun_shadow_dropped_total{"))  # fmt: skip
            figures["scored_share"] = scored / (scored + dropped) if scored + dropped else 0.0
        return figures

    variants = (("shadow", shadowed), ("alone", plain))
    return paired("shadow overhead", variants, measure, gcs, tmp, pairs)


def metrics_page(server: Server, headers: dict[str, str]) -> str:
    request = urllib.request.Request(server.url.split("/v2/")[0] + "/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def counting_cost(artifact: Path) -> dict[str, float]:
    """The drift counting itself, timed in this process on the Iris model's baseline: CPU per
    one-row request (kept, then counted 256 requests at a time as the service does) and per
    10,000-row request. Steadier than the servers' paired figures, whose noise is larger."""
    from function.core.drift import BASELINE_FILE, Watch, parse_baseline
    from function.core.schema import from_metadata

    metadata = json.loads((artifact / "metadata.json").read_text())
    baseline = parse_baseline((artifact / BASELINE_FILE).read_bytes(), str(artifact))
    watch = Watch("bench", baseline, from_metadata(metadata, str(artifact)))
    row, label = np.array([ROW]), ["setosa"]
    started = time.process_time()
    for _ in range(50_000):
        watch.observe(row, label)
    watch.flush()
    one = (time.process_time() - started) / 50_000
    rows = np.random.default_rng(0).uniform(0, 8, (10_000, 4))
    labels = ["setosa", "virginica"] * 5_000
    started = time.process_time()
    for _ in range(20):
        watch.count(rows, labels)
    return {
        "count_us_per_one_row_request": round(one * 1e6, 2),
        "count_ms_per_10k_row_request": round((time.process_time() - started) / 20 * 1000, 3),
    }


def _start(name: str, model: str, uris: dict[str, str], artifacts: dict[str, Path], gcs: str,
           tmp: Path, mixed_runtime: str) -> tuple[Server, dict[str, str]]:  # fmt: skip
    if name == "modelrun":
        runtime = mixed_runtime if model == "mixed" else "auto"
        server = start_modelrun(uris[model], MODEL_NAMES[model], gcs, tmp, runtime)
        return server, {"X-API-Key": KEY}
    return start_mlserver(artifacts[model] / "model.joblib", MODEL_NAMES[model], tmp), {}


def package_mixed(out: Path) -> None:
    """A one-hot + HistGradientBoosting pipeline fitted on the churn table as in a notebook,
    packaged as a user would."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    import training
    from training.churn import churn

    frame = churn(5000, seed=7)
    X, y = frame.drop(columns="churned"), frame["churned"]
    encode = ColumnTransformer(
        [("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
          ["country", "plan"])],
        remainder="passthrough",
    )  # fmt: skip
    model = HistGradientBoostingClassifier(random_state=0)
    pipeline = Pipeline([("columns", encode), ("model", model)]).fit(X, y)
    training.package(pipeline, X, y, out=out, name="churn")


def report(
    samples: dict[str, dict[str, list[float]]],
    rounds: int,
    seconds: float,
    drift: dict[str, float],
    shadow: dict[str, float],
    mixed_runtime: str,
) -> None:
    median: Callable[[list[float]], float] = statistics.median
    ours = {k: round(median(v), 4) for k, v in samples["modelrun"].items()}
    peer = {k: round(median(v), 4) for k, v in samples["mlserver"].items()}
    ratios = {key: round(ours[figure] / peer[figure], 3) for key, (figure, _) in RATIOS.items()}
    print(f"\n{'figure':<26}{'modelrun':>12}{'MLServer':>12}{'ratio':>9}  goal")
    for key in sorted(ours):
        ratio = ours[key] / peer[key] if peer.get(key) else float("nan")
        goal = next((f"{'<=' if low else '>='} {GOALS[r]}" for r, (f, low) in RATIOS.items()
                     if f == key), "")  # fmt: skip
        print(
            f"{key:<26}{ours[key]:>12.3f}{peer.get(key, float('nan')):>12.3f}{ratio:>9.3f}  {goal}"
        )
    met = {k: (ratios[k] <= GOALS[k]) if low else (ratios[k] >= GOALS[k])
           for k, (_, low) in RATIOS.items()}  # fmt: skip
    share = drift["count_us_per_one_row_request"] / 1000 / ours["lr_cpu_ms_per_request"]
    drift["count_share_of_one_row_request_cpu"] = round(share, 4)
    result = {
        "ours": ours,
        "peer": peer,
        "ratios": ratios,
        "goals": GOALS,
        "met": met,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "rounds": rounds,
            "seconds_per_wrk_run": seconds,
            "load_average": os.getloadavg(),  # other work on the machine, at the end
            "mixed_runtime": mixed_runtime,
        },
        "peer_name": "MLServer 1.7.1 + mlserver-sklearn 1.7.1 (default settings)",
        # Drift counting on (every Iris feature watched) against off: CPU <= 1.05, c32 >= 0.95.
        "drift_overhead": drift,
        # A 100-tree forest in shadow beside the Iris model, against the model alone: p50 <= 1.1.
        "shadow_overhead": shadow,
    }
    result["cost"] = cost.table(result)
    out = PERF / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nratios (modelrun / MLServer): {json.dumps(ratios)}")
    print(
        f"drift counting itself: {drift['count_us_per_one_row_request']} us per one-row request "
        f"({share:.2%} of its CPU), {drift['count_ms_per_10k_row_request']} ms per 10k-row one"
    )
    print(
        "drift counting (watched / unwatched, median of paired ratios): CPU per request "
        f"{drift['cpu_ms_per_request_ratio']} ({drift['cpu_ms_per_request_on']} / "
        f"{drift['cpu_ms_per_request_off']} ms; goal <= 1.05), c=32 requests/s "
        f"{drift['c32_rps_ratio']} ({drift['c32_rps_on']} / {drift['c32_rps_off']}; goal >= 0.95)"
    )
    print(
        "shadow rollout (a 100-tree forest scoring every request beside the Iris model; shadow / "
        f"alone, median of paired ratios): p50 at c=1 {shadow['c1_p50_ms_ratio']} "
        f"({shadow['c1_p50_ms_shadow']} / {shadow['c1_p50_ms_alone']} ms), p50 at c=8 "
        f"{shadow['c8_p50_ms_ratio']} ({shadow['c8_p50_ms_shadow']} / "
        f"{shadow['c8_p50_ms_alone']} ms; goal <= 1.1), requests/s at c=8 "
        f"{shadow['c8_rps_ratio']}; requests the candidate scored (not dropped): "
        f"{shadow['scored_share']:.1%}"
    )
    print("\ndollars per million predictions (tests/perf/cost.py):\n" + cost.show(result["cost"]))
    print(f"goals met: {json.dumps(met)}\nwrote tests/perf/results/latest.json")


if __name__ == "__main__":
    main()
