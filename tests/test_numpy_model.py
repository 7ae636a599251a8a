"""The numpy fast path: a pipeline compiled at packaging, verified identical to scikit-learn,
served without it (function/core/numpy_model.py, training/numpy_export.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

import training
from function.core.model import load_model
from function.core.numpy_model import BitVectors, numpy_model
from function.core.predict import answer, infer, parse_instances
from function.core.store import ModelStore
from function.core.threads import native_threads_limited
from training.churn import churn
from training.numpy_export import compile_pipeline, verify

TARGET = "churned"
# Rows a request may carry that a compiled step could get wrong: an unknown country (ignored by
# its encoder), gaps, magnitudes at the schema's limit, a threshold's neighbourhood.
ODD_ROWS = [
    {"country": "ES", "plan": "pro", "seats": 2, "monthly_spend": 47.66, "tenure_months": 9,
     "has_discount": False},
    {"country": "ZZ", "plan": "team", "seats": 40, "monthly_spend": None, "tenure_months": 0,
     "has_discount": True},
    {"country": "LU", "plan": "free", "seats": 10**300, "monthly_spend": -1e300,
     "tenure_months": -(10**300), "has_discount": False},
    {"country": "FR", "plan": "free", "seats": 1, "monthly_spend": 0.0, "tenure_months": 71,
     "has_discount": True},
]  # fmt: skip


def mixed_pipeline(frame: Any, final: Any = None, scaler: Any = None) -> Any:
    """One-hot (unknowns ignored) and ordinal encoders, an imputer and a scaler (standard, or
    `scaler`) in a ColumnTransformer, then a small HistGradientBoosting (or `final`)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    columns = ColumnTransformer(
        [
            ("country", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["country"]),
            ("plan", OrdinalEncoder(), ["plan"]),
            ("spend", make_pipeline(SimpleImputer(strategy="median"), scaler or StandardScaler()),
             ["monthly_spend"]),
        ],
        remainder="passthrough",
    )  # fmt: skip
    model = final or HistGradientBoostingClassifier(max_iter=15, random_state=0)
    return Pipeline([("columns", columns), ("model", model)]).fit(
        frame.drop(columns=TARGET), frame[TARGET]
    )


@pytest.fixture(scope="module", autouse=True)
def one_native_thread() -> Iterator[None]:
    """Fit as training does (function/core/threads.py): an OpenMP team on busy cores is slow. (The
    OpenMP runtime is loaded by the import above, so the limit reaches it.)"""
    with native_threads_limited():
        yield


@pytest.fixture(scope="module")
def frame() -> Any:
    return churn(600, seed=3)


@pytest.fixture(scope="module")
def fitted(frame: Any) -> Any:
    return mixed_pipeline(frame)


@pytest.fixture(scope="module")
def packaged(frame: Any, fitted: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("numpy") / "churn"
    X, y = frame.drop(columns=TARGET), frame[TARGET]
    training.package(fitted, X, y, out=out, name="churn", report=False)
    return out


@pytest.fixture(scope="module")
def store(packaged: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    store = ModelStore(str(tmp_path_factory.mktemp("store") / "churn"))
    store.promote(store.publish(packaged, "v1"))
    return store


def metadata_of(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "metadata.json").read_text()))


def test_a_mixed_pipeline_is_compiled_and_verified_identical(packaged: Path) -> None:
    metadata = metadata_of(packaged)
    record = metadata["numpy"]

    assert record["verified"] is True, record
    assert record["rows_mismatched"] == 0
    assert record["tolerance"] == 0.0
    assert record["rows_checked"] > 3000  # the rows given, then generated ones
    assert "model.numpy.json" in metadata["files"]


def test_the_service_serves_it_with_numpy_and_answers_as_scikit_learn(store: ModelStore) -> None:
    fast = load_model(store, "current", None)
    slow = load_model(store, "current", None, runtime="sklearn")
    body = {"instances": ODD_ROWS}

    answers = [answer(m, infer(m, parse_instances(body, m.schema, 100))) for m in (fast, slow)]

    assert (fast.runtime, fast.schema.frame) == ("numpy", False)
    assert slow.runtime == "sklearn"
    assert answers[0] == answers[1]  # labels and probabilities, to the last bit


def test_a_pin_keeps_scikit_learn(store: ModelStore) -> None:
    pinned = load_model(store, "current", store.resolve("current").sha256)

    assert pinned.runtime == "sklearn"


@pytest.mark.parametrize("classes", [2, 3])
def test_regressors_and_multiclass_models_are_identical_too(frame: Any, classes: int) -> None:
    data = frame.copy()
    if classes == 3:
        data[TARGET] = data["tenure_months"] // 25  # 0, 1, 2
        final: Any = HistGradientBoostingClassifier(max_iter=10, random_state=0)
        task = "classification"
    else:
        data[TARGET] = data["monthly_spend"].fillna(0) * 2 + data["seats"]
        final = HistGradientBoostingRegressor(max_iter=10, random_state=0)
        task = "regression"
    from sklearn.preprocessing import MinMaxScaler

    pipeline = mixed_pipeline(data, final, MinMaxScaler() if classes == 3 else None)
    metadata = _metadata(data, pipeline, task)
    X = data.drop(columns=TARGET)

    record = verify(_compiled(pipeline, metadata), pipeline, X, X[:50], metadata, seed=0)

    assert record["verified"] is True, record


def test_verification_catches_a_compiled_model_that_differs(frame: Any, fitted: Any) -> None:
    pipeline = fitted
    metadata = _metadata(frame, pipeline, "classification")
    spec = compile_pipeline(pipeline, metadata)
    tenure = 9  # after 6 one-hot columns, the plan's code, the spend and the seats
    tree, split = next((tree, k) for tree in spec["trees"]["nodes"]
                       for k, (feature, leaf) in enumerate(zip(tree[0], tree[5], strict=True))
                       if feature == tenure and not leaf)  # fmt: skip
    tree[1][split] -= 1.0  # one month of tenure goes the other way at one split
    X = frame.drop(columns=TARGET)

    record = verify(json.dumps(spec).encode(), pipeline, X, X, metadata, seed=0)

    assert record["verified"] is False
    assert record["rows_mismatched"] > 0
    assert "differs from scikit-learn" in record["reason"]


@pytest.mark.parametrize(
    "final, reason",
    [
        ("logistic", "compiles HistGradientBoosting models, not LogisticRegression"),
        ("native", "splits on categories natively"),
    ],
)
def test_what_it_cannot_compile_stays_with_scikit_learn_and_says_why(
    frame: Any, tmp_path: Path, final: str, reason: str
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    X, y = frame.drop(columns=TARGET), frame[TARGET]
    if final == "logistic":
        pipeline = mixed_pipeline(frame, LogisticRegression(max_iter=200))
    else:  # native categorical splits on ordinal codes: bitsets, not compiled
        from sklearn.compose import ColumnTransformer

        codes = ColumnTransformer([("c", OrdinalEncoder(), ["country", "plan"])],
                                  remainder="passthrough")  # fmt: skip
        model = HistGradientBoostingClassifier(max_iter=5, categorical_features=[0, 1])
        pipeline = Pipeline([("codes", codes), ("model", model)]).fit(X, y)

    metadata = training.package(pipeline, X, y, out=tmp_path / "out", report=False)

    assert metadata["numpy"]["verified"] is False
    assert reason in metadata["numpy"]["reason"]
    assert "model.numpy.json" not in metadata["files"]


def test_an_ensemble_too_large_for_bit_vectors_walks_its_trees_to_the_same_answers(
    frame: Any, fitted: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    metadata = _metadata(frame, fitted, "classification")
    data = _compiled(fitted, metadata)
    monkeypatch.setattr(BitVectors, "MAX_TABLE_BYTES", 0)
    X = frame.drop(columns=TARGET)

    record = verify(data, fitted, X, X, metadata, seed=0)

    assert numpy_model(data, metadata).trees.bits is None  # the level walk
    assert record["verified"] is True, record


def _metadata(frame: Any, pipeline: Any, task: str) -> dict[str, Any]:
    """The metadata packaging records (features and classes), without writing an artifact."""
    from training.train import describe_inputs

    X = frame.drop(columns=TARGET)
    metadata = {"task": task, **describe_inputs(pipeline, X, task)}
    return metadata


def _compiled(pipeline: Any, metadata: dict[str, Any]) -> bytes:
    data = json.dumps(compile_pipeline(pipeline, metadata)).encode()
    numpy_model(data, metadata)  # loads
    return data
