"""Explanations' cost: `POST /explain` for one row against shap's own time for the same row.

    make bench-explain            # 300 requests per model
    make bench-explain QUICK=1    # 100 requests per model (about a minute)

Two models: a 100-tree random forest on Iris (`train --estimator random_forest`) and the
mixed-type one-hot + HistGradientBoosting churn pipeline (tests/perf/bench.py's, packaged as a
user would). Each is served by the container's own command (one worker, rate limits off) from a
folder store; one client sends the same row one request at a time (p50, p95), after a first
explanation, timed on its own (it imports shap and builds the explainer). shap's own time is the
same row in this process: the pipeline's preprocessing, then `TreeExplainer.shap_values`
(path-dependent, as the service runs it), p50 over as many calls; modelrun's own is the same row
through the service's code in this process (the row parsed from JSON, Explainer.explain). The
service's share is modelrun p50 / shap p50 - 1 (goal: at most 50 %); HTTP is the same as
/predict's, whose p50 on the same row is beside it. Also: the cold start to /ready of this tree
and of --compare-root (the tree before explanations), alternated: the lazy import keeps it
unchanged.
Writes tests/perf/results/explain.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import requests

from function.core.store import ModelStore
from local import container
from local.mirror import ROOT, free_port
from tests.perf.bench import package_mixed
from training.__main__ import main as training

KEY = "bench-key-0123456789abcdef"
ROWS = {
    "rf": [5.9, 3.0, 5.1, 1.8],
    "mixed": {"country": "ES", "plan": "pro", "seats": 2, "monthly_spend": 47.66,
              "tenure_months": 9, "has_discount": False},
}  # fmt: skip


def serve(root: Path, model_uri: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    """The container's command from `root`'s tree; (process, url, seconds to /ready)."""
    port = free_port()
    env = {
        **os.environ,
        **container.environment(),
        "MODEL_URI": model_uri,
        "API_KEYS": KEY,
        "ALLOW_UNSIGNED_MODELS": "true",  # the versions here are published unsigned
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "HOME": str(tmp),
        "WORKERS": "1",
        "RATE_LIMIT_PER_SECOND": "0",  # a policy, not a capacity: off while measuring
        "PYTHONPATH": str(root),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    started = time.perf_counter()
    log = open(tmp / f"service-{port}.log", "wb")  # noqa: SIM115 (kept open while it runs)
    process = subprocess.Popen(container.command(), cwd=root, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if requests.get(url + "/ready", timeout=1).status_code == 200:
                return process, url, time.perf_counter() - started
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.perf_counter() - started > 60:
            stop(process)
            raise SystemExit(f"the service did not start: {Path(log.name).read_text()[-2000:]}")
        time.sleep(0.01)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (its workers too), SIGKILL after 15 s."""
    os.killpg(process.pid, 15)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()


def timed_requests(url: str, path: str, row: Any, count: int) -> list[float]:
    session = requests.Session()
    body = json.dumps({"instances": [row]})
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = session.post(url + path, data=body, headers=headers, timeout=30)
        times.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise SystemExit(f"{path}: {response.status_code} {response.text}")
    return times


def shap_in_process(artifact: Path, row: Any, count: int) -> list[float]:
    """The library's own time for the row: preprocessing, then TreeExplainer.shap_values."""
    import pandas as pd
    import shap

    pipeline = joblib.load(artifact / "model.joblib")
    X = pd.DataFrame([row]) if isinstance(row, dict) else np.array([row])
    steps = getattr(pipeline, "steps", None)
    preprocess = pipeline[:-1] if steps and len(steps) > 1 else None
    final = pipeline[-1] if steps else pipeline
    explainer = shap.TreeExplainer(final, feature_perturbation="tree_path_dependent")
    times = []
    for _ in range(count + 5):
        started = time.perf_counter()
        Z = X if preprocess is None else preprocess.transform(X)
        explainer.shap_values(np.asarray(Z, dtype=np.float64), check_additivity=False)
        times.append(time.perf_counter() - started)
    return times[5:]


def modelrun_in_process(artifact: Path, row: Any, count: int) -> list[float]:
    """The service's explanation of the row without HTTP: its rows built from the JSON as a
    request's are (predict.parse_instances), then Explainer.explain."""
    from function.core.explain import build
    from function.core.model import warm_up_row
    from function.core.predict import parse_instances
    from function.core.schema import from_metadata

    pipeline = joblib.load(artifact / "model.joblib")
    metadata = json.loads((artifact / "metadata.json").read_text())
    schema = from_metadata(metadata, "bench")
    explainer = build(pipeline, len(schema.names), lambda: warm_up_row(metadata, schema))
    body = json.loads(json.dumps({"instances": [row]}))
    times = []
    for _ in range(count + 5):
        started = time.perf_counter()
        explainer.explain(parse_instances(body, schema, 1), None)
        times.append(time.perf_counter() - started)
    return times[5:]


def full_request_ratio(artifact: Path, name: str) -> dict[str, float]:
    """A full request (1,000 rows) explained against the same rows predicted, in process: what
    an explanation costs next to a prediction (EXPLAIN_COST)."""
    from function.core.explain import build
    from function.core.model import warm_up_row
    from function.core.predict import Instances, run_model
    from function.core.schema import from_metadata
    from training.churn import churn

    pipeline = joblib.load(artifact / "model.joblib")
    metadata = json.loads((artifact / "metadata.json").read_text())
    schema = from_metadata(metadata, "bench")
    explainer = build(pipeline, len(schema.names), lambda: warm_up_row(metadata, schema))
    if name == "rf":
        from sklearn.datasets import load_iris

        X: Any = np.tile(load_iris().data, (7, 1))[:1000]
    else:
        X = churn(1000, seed=1).drop(columns="churned")
    explained = statistics.median(
        _seconds(lambda: explainer.explain(Instances(X), None)) for _ in range(3)
    )
    predicted = statistics.median(_seconds(lambda: run_model(pipeline, X, True)) for _ in range(3))
    return {
        "explain_1000_rows_ms": round(1000 * explained, 1),
        "predict_1000_rows_ms": round(1000 * predicted, 1),
        "ratio": round(explained / predicted, 1),
    }


def _seconds(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def ms(values: list[float], q: float) -> float:
    return round(1000 * float(np.quantile(values, q)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", default=os.environ.get("QUICK") == "1")
    parser.add_argument(
        "--compare-root",
        type=Path,
        help="another tree to compare cold starts with (git worktree add DIR BASE)",
    )
    args = parser.parse_args()
    count = 100 if args.quick else 300
    tmp = Path(tempfile.mkdtemp(prefix="explain-bench-"))
    artifacts = {"rf": tmp / "rf", "mixed": tmp / "mixed"}
    assert training(["train", "--out", str(artifacts["rf"]), "--no-report", "--no-onnx",
                     "--estimator", "random_forest"]) == 0  # fmt: skip
    package_mixed(artifacts["mixed"])
    uris = {}
    for name, artifact in artifacts.items():
        store = ModelStore((tmp / "store" / name).as_uri())
        store.publish(artifact, "v1")
        store.promote("v1")
        uris[name] = store.uri
    results: dict[str, Any] = {"requests": count}
    for name, artifact in artifacts.items():
        process, url, _ = serve(ROOT, uris[name], tmp)
        try:
            first = timed_requests(url, "/explain", ROWS[name], 1)[0]
            explain = timed_requests(url, "/explain", ROWS[name], count)
            predict = timed_requests(url, "/predict", ROWS[name], count)
        finally:
            stop(process)
        library = shap_in_process(artifact, ROWS[name], count)
        ours = modelrun_in_process(artifact, ROWS[name], count)
        median = statistics.median
        results[name] = {
            "first_explanation_ms": round(1000 * first, 1),
            "explain_p50_ms": ms(explain, 0.5),
            "explain_p95_ms": ms(explain, 0.95),
            "predict_p50_ms": ms(predict, 0.5),
            "predict_p95_ms": ms(predict, 0.95),
            "shap_in_process_p50_ms": ms(library, 0.5),
            "modelrun_in_process_p50_ms": ms(ours, 0.5),
            # What the service's explanation adds to shap's own work, HTTP aside (the same for
            # /predict): parsing the row, summing columns, the additivity check.
            "service_adds": round(median(ours) / median(library) - 1, 3),
            "explain_over_predict": round(median(explain) / median(predict), 2),
            "full_request": full_request_ratio(artifact, name),
        }
        print(name, results[name], flush=True)
    if args.compare_root:
        starts: dict[str, list[float]] = {"this": [], "compare": []}
        for _ in range(3 if args.quick else 5):
            for label, root in (("this", ROOT), ("compare", args.compare_root)):
                process, _, seconds = serve(root, uris["rf"], tmp)
                stop(process)
                starts[label].append(seconds)
        results["cold_start_to_ready_s"] = {
            label: round(statistics.median(values), 3) for label, values in starts.items()
        }
        results["cold_start_to_ready_s"]["compare_root"] = str(args.compare_root)
        print("cold start", results["cold_start_to_ready_s"], flush=True)
    out = ROOT / "tests" / "perf" / "results" / "explain.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
