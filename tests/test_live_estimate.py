"""The live accuracy estimate (function/service/confidence.py), from a real served model's series.

A synthetic problem whose truth is known: labels drawn from a multinomial logistic model, so a
logistic regression fitted on enough rows is calibrated. The served stream is shifted towards
the hard rows (those the true model is least sure of), so live accuracy falls well below the
hold-out's; the estimate must follow it to within 0.03. An overconfident copy of the model (its
logits tripled) shows the estimate is only as good as the calibration.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression

from function.core.store import ModelStore
from tests.artifacts import publish_object
from tests.conftest import KEY
from tests.inprocess import in_process

CLASSES = np.array(["setosa", "versicolor", "virginica"])
ROWS, BATCH = 8000, 200


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def problem(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and their true class probabilities."""
    W = np.array([[1.2, -0.8, 0.1], [-0.5, 0.9, -0.4], [0.3, 0.2, -0.9], [0.0, -0.6, 0.7]])
    X = rng.normal(0, 1.2, size=(rows, 4))
    return X, softmax(X @ W + np.array([0.2, 0.0, -0.2]))


def draw(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    return CLASSES[(rng.random(len(p))[:, None] > p.cumsum(axis=1)).sum(axis=1)]


def series(page: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no {name} {labels} on the page")


@pytest.fixture(scope="module")
def fitted() -> tuple[LogisticRegression, float]:
    """The fitted model and its hold-out accuracy (unshifted rows)."""
    rng = np.random.default_rng(7)
    X, p = problem(rng, 40_000)
    y = draw(rng, p)
    model = LogisticRegression(C=100.0, max_iter=1000).fit(X[:30_000], y[:30_000])
    return model, float((model.predict(X[30_000:]) == y[30_000:]).mean())


@pytest.mark.parametrize("sharpen", [1.0, 3.0], ids=["calibrated", "overconfident"])
def test_the_estimate_follows_a_shifted_streams_true_accuracy(
    fitted: tuple[LogisticRegression, float],
    iris_artifact: Path,
    tmp_path: Path,
    sharpen: float,
) -> None:
    model, holdout = fitted
    served: Any = copy.deepcopy(model)
    served.coef_, served.intercept_ = model.coef_ * sharpen, model.intercept_ * sharpen
    store = ModelStore((tmp_path / "store" / "iris").as_uri())
    calibration = {"ece": 0.01 if sharpen == 1 else 0.2, "bins": 15, "trusted": sharpen == 1}
    publish_object(store, "v1", served, iris_artifact, tmp_path,
                   metrics={"holdout": {"accuracy": holdout}, "cv": {}},
                   calibration=calibration)  # fmt: skip
    store.promote("v1")
    # The shift: rows drawn in proportion to how unsure the true model is of them.
    rng = np.random.default_rng(11)
    pool, p_pool = problem(rng, 50_000)
    weights = (1 - p_pool.max(axis=1)) ** 2
    chosen = rng.choice(len(pool), size=ROWS, p=weights / weights.sum())
    X, truth = pool[chosen], draw(rng, p_pool[chosen])

    predicted = []
    with in_process({"MODEL_URI": store.uri, "API_KEYS": KEY, "RATE_LIMIT_PER_SECOND": "0"}) as app:
        for start in range(0, ROWS, BATCH):
            answer = app.client.post(
                "/predict", json={"instances": X[start : start + BATCH].tolist()},
                headers={"X-API-Key": KEY},
            )  # fmt: skip
            assert answer.status_code == 200, answer.get_json()
            predicted.extend(answer.get_json()["predictions"])
        page = app.client.get("/metrics", headers={"X-API-Key": KEY}).get_data(as_text=True)

    labels = {"model_version": "v1", "role": "answer"}
    rows = series(page, "modelrun_confidence_rows_total", **labels)
    estimate = series(page, "modelrun_confidence_sum_total", **labels) / rows
    true_accuracy = float((np.array(predicted) == truth).mean())
    assert rows == ROWS
    assert series(page, "modelrun_holdout_accuracy", model_version="v1") == holdout
    assert holdout - true_accuracy > 0.1  # the shift is real: the hold-out's figure misleads
    if sharpen == 1:
        assert abs(estimate - true_accuracy) <= 0.03, (estimate, true_accuracy)
        assert series(page, "modelrun_estimate_trusted", model_version="v1") == 1
    else:  # uncalibrated: the estimate is off, and said not to be trusted
        assert estimate - true_accuracy > 0.05, (estimate, true_accuracy)
        assert series(page, "modelrun_estimate_trusted", model_version="v1") == 0


def test_two_workers_pages_show_one_hold_out_accuracy_not_their_sum() -> None:
    from function.service.workers import merge

    page = (
        "# HELP modelrun_holdout_accuracy h\n# TYPE modelrun_holdout_accuracy gauge\n"
        'modelrun_holdout_accuracy{model_version="v1"} 0.9\n'
        "# HELP modelrun_estimate_trusted t\n# TYPE modelrun_estimate_trusted gauge\n"
        'modelrun_estimate_trusted{model_version="v1"} 1.0\n'
    )

    merged = merge([(page, True), (page.replace("} 1.0", "} 0.0"), True)]).decode()

    assert series(merged, "modelrun_holdout_accuracy", model_version="v1") == 0.9
    assert series(merged, "modelrun_estimate_trusted", model_version="v1") == 0
