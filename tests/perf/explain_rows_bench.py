"""What a whole request explained costs beside predicting its rows, in process, by forest depth:
a 100-tree Iris forest (150 rows) and a 50-tree, depth-20 forest regressor on the 442 diabetes
rows, one thread (OMP_NUM_THREADS=1, n_jobs=1), best of 5.

    OMP_NUM_THREADS=1 .venv/bin/python -m tests.perf.explain_rows_bench

Prints per model: scikit-learn's predict of all the rows, shap's own TreeExplainer.shap_values
(path-dependent, as the service runs it) and Explainer.explain whole, and their ratios to predict.
Path-dependent TreeSHAP costs about leaves times depth squared a tree, so deep forests cost the most
(README, "Why this answer", Cost).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from function.core.explain import build
from function.core.predict import Instances


def best(run: Callable[[], Any], times: int = 5) -> float:
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        run()
        spent.append(time.perf_counter() - start)
    return min(spent)


def main() -> None:
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    models = [
        ("iris, 100 trees", load_iris(return_X_y=True),
         RandomForestClassifier(100, random_state=0, n_jobs=1)),
        ("diabetes, 50 trees of depth 20", load_diabetes(return_X_y=True),
         RandomForestRegressor(50, max_depth=20, random_state=0, n_jobs=1)),
    ]  # fmt: skip
    for name, (X, y), model in models:
        model.fit(X, y)
        explainer = build(model, X.shape[1], lambda X=X: X[:100])
        explainer.explain(Instances(X), None)  # shap imported, compiled
        predict = best(lambda m=model, X=X: m.predict(X))
        shap = best(lambda e=explainer, X=X: e.engine.shap_values(X, check_additivity=False))
        whole = best(lambda e=explainer, X=X: e.explain(Instances(X), None))
        print(
            f"{name}: {len(X)} rows; predict {predict * 1e3:.1f} ms; shap {shap * 1e3:.1f} ms "
            f"({shap / predict:.0f}x); Explainer.explain {whole * 1e3:.1f} ms "
            f"({whole / predict:.0f}x)"
        )


if __name__ == "__main__":
    main()
