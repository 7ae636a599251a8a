"""modelrun's own TreeSHAP (function/core/treeshap.py) on the model `train` makes from text
columns:
a native categorical HistGradientBoosting (100 trees of at most 31 leaves) on 5,000 churn rows.

    .venv/bin/python -m tests.perf.treeshap_bench

Prints: the explainer's build (numba's import and compile, the check on 100 rows), then per row
(p50 / p95 over 200 rows, one at a time): the numba walk alone, the walk with the estimator's own
encoder (Trees.shap_values), and Explainer.explain whole (the pipeline, the sums, the checks).
"""

from __future__ import annotations

import time

import numpy as np

from function.core.explain import build
from function.core.predict import Instances
from function.core.treeshap import _kernels
from training.churn import churn
from training.estimators import build_pipeline

ROWS = 200


def timed(call: object) -> str:
    times = []
    for i in range(ROWS):
        started = time.perf_counter()
        call(i)  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return f"p50 {np.median(times) * 1e3:.3f} ms, p95 {np.percentile(times, 95) * 1e3:.3f} ms"


def main() -> None:
    frame = churn(5000, seed=7)
    X, y = frame.drop(columns="churned"), frame["churned"]
    numbers = ["seats", "monthly_spend", "tenure_months", "has_discount"]
    pipeline, _ = build_pipeline(
        "hist_gradient_boosting", {}, 42, None, ["country", "plan"], numbers
    )
    pipeline.fit(X, y)
    started = time.perf_counter()
    explainer = build(pipeline, X.shape[1], lambda: X.iloc[:100])
    print(f"build (numba imported and compiled, checked on 100 rows): "
          f"{time.perf_counter() - started:.2f} s")  # fmt: skip
    trees = explainer.engine
    Z = explainer._columns(X.iloc[:ROWS])
    encoded = trees._encoded(Z)
    nodes, categories = trees._arrays()

    def walk(i: int) -> None:
        phi = np.zeros((1, encoded.shape[1], 1))
        _kernels().shap_values(encoded[i : i + 1], nodes, categories, trees.roots, trees.outputs,
                               trees.depth, phi)  # fmt: skip

    print(f"{len(trees.roots)} trees; one row, the walk: {timed(walk)}")
    print(f"one row, with the encoder: {timed(lambda i: trees.shap_values(Z[i : i + 1]))}")
    whole = timed(lambda i: explainer.explain(Instances(X.iloc[i : i + 1]), None))
    print(f"one row, Explainer.explain: {whole}")


if __name__ == "__main__":
    main()
