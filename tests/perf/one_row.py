"""Where one mixed-type row's time goes, in process: scikit-learn against the numpy runtime.

    .venv/bin/python -m tests.perf.one_row

The bench's churn pipeline (one-hot + HistGradientBoosting, tests/perf/bench.py), packaged; one
row as the service builds it for each runtime (a DataFrame for scikit-learn, the checked columns
as a matrix for numpy), each step timed alone: the best of 5 rounds of 200 calls, in
microseconds (the best round is the one other work on the machine disturbed least).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from function.core.model import load_model
from function.core.predict import parse_instances, run_model
from function.core.store import ModelStore
from function.core.threads import limit_native_threads
from tests.perf.bench import CHURN_ROW, package_mixed


def best_us(call: Callable[[], Any], rounds: int = 5, calls: int = 200) -> float:
    call()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - started) / calls)
    return round(min(times) * 1e6, 1)


def main() -> None:
    limit_native_threads()  # as the image: one OpenMP thread
    with tempfile.TemporaryDirectory() as folder:
        artifact = Path(folder) / "mixed"
        package_mixed(artifact)
        store = ModelStore(str(Path(folder) / "store" / "churn"))
        store.promote(store.publish(artifact, "v1"))
        fast = load_model(store, "current", None)
        slow = load_model(store, "current", None, runtime="sklearn")
    body = {"instances": [{name: value for name, (_, value) in CHURN_ROW.items()}]}
    X_slow = parse_instances(body, slow.schema, 1).X
    X_fast = parse_instances(body, fast.schema, 1).X
    pipeline, model = slow.estimator, fast.estimator
    Z_slow, Z_fast = pipeline[:-1].transform(X_slow), model.transform(X_fast)
    figures = {
        "sklearn: request body to DataFrame (schema checks)": best_us(
            lambda: parse_instances(body, slow.schema, 1)
        ),
        "sklearn: ColumnTransformer on the DataFrame": best_us(
            lambda: pipeline[:-1].transform(X_slow)
        ),
        "sklearn: HistGradientBoosting predict + predict_proba": best_us(
            lambda: (pipeline[-1].predict(Z_slow), pipeline[-1].predict_proba(Z_slow))
        ),
        "sklearn: the service's model call (run_model)": best_us(
            lambda: run_model(pipeline, X_slow, True)
        ),
        "numpy: request body to matrix (schema checks)": best_us(
            lambda: parse_instances(body, fast.schema, 1)
        ),
        "numpy: the compiled column steps": best_us(lambda: model.transform(X_fast)),
        "numpy: the trees' leaves (bit vectors)": best_us(
            lambda: model.trees.bits.leaf_values(Z_fast)
        ),
        "numpy: the trees' raw scores (leaves summed in order)": best_us(
            lambda: model.trees.raw(Z_fast)
        ),
        "numpy: the service's model call (run_model)": best_us(
            lambda: run_model(model, X_fast, True)
        ),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
