"""Why this answer: `POST /explain` (function/core/explain.py) against shap itself, in process.

The service runs in process (tests/inprocess.py) on a folder store with real artifacts: the churn
notebook pipeline (one-hot, imputer, HistGradientBoosting; packaged), and Iris trained as a
logistic regression (served by onnxruntime, so the explanation reads the scikit-learn model) and
as a random forest. Every answer is checked two ways: it adds up to the model's own output
(decision_function or predict_proba, called here) within 1e-6, and it equals shap's own
explanation of the same pipeline and rows, computed here and summed into the input features by
the columns' names (not by the service's tracing), within 1e-9.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from function.core.errors import TooManyRequests
from function.core.explain import (
    BACKGROUND_FILE,
    EXPLAIN_COST,
    METHODS,
    NotExplainable,
    Untraceable,
    column_sources,
)
from function.core.model import canonical_estimator
from function.core.store import ModelStore
from function.service.ratelimit import TokenBuckets
from tests.artifacts import publish_object
from tests.conftest import KEY
from tests.inprocess import InProcess, in_process
from tests.support.churn import TARGET, notebook_pipeline, rows_of
from training.__main__ import main
from training.churn import churn

AUTH = {"X-API-Key": KEY}
ROWS = 40


@pytest.fixture(scope="module")
def churn_frame(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    import pandas as pd

    path = tmp_path_factory.mktemp("churn") / "churn.csv"
    churn(1000, seed=7).to_csv(path, index=False)
    return pd.read_csv(path), path


@pytest.fixture(scope="module")
def store(
    churn_frame: tuple[Any, Path],
    iris_artifact: Path,
    forest_artifact: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> ModelStore:
    """One folder store: churn (packaged), and iris's versions lr and rf (trained)."""
    frame, csv = churn_frame
    tmp = tmp_path_factory.mktemp("explain")
    joblib.dump(notebook_pipeline(frame), tmp / "churn.joblib")
    assert main(["package", str(tmp / "churn.joblib"), "--data", str(csv), "--target", TARGET,
                 "--no-report", "--out", str(tmp / "churn")]) == 0  # fmt: skip
    root = tmp / "store"
    for artifact, version in [(tmp / "churn", "v1"), (iris_artifact, "lr"),
                              (forest_artifact, "rf")]:  # fmt: skip
        assert main(["publish", "--store", root.as_uri(), "--version", version, str(artifact),
                     "--promote"]) == 0  # fmt: skip
    return ModelStore(f"{root.as_uri()}/churn")


def serving(store: ModelStore, name: str, **env: str) -> Any:
    uri = store.uri.rsplit("/", 1)[0] + f"/{name}"
    return in_process({"MODEL_URI": uri, "API_KEYS": KEY, **env})


@pytest.fixture(scope="module")
def churn_service(store: ModelStore) -> Iterator[InProcess]:
    with serving(store, "churn") as running:
        yield running


def pipeline_of(service: InProcess) -> Any:
    """The served version's scikit-learn pipeline (the numpy or ONNX runtime may answer)."""
    model = service.service.require_model()
    return canonical_estimator(service.service.loader.store, model.metadata, "test", True)


def explain(service: InProcess, body: Any, headers: dict[str, str] | None = None) -> Any:
    return service.client.post("/explain", json=body, headers=headers or AUTH)


def by_feature(pipeline: Any, columns: np.ndarray, names: list[str]) -> np.ndarray:
    """shap's column values summed into input features by the columns' names: a one-hot column
    is named `feature_value`, a passed-on one `feature` (prefixed by its ColumnTransformer part)."""
    out_names = [str(n).split("__", 1)[-1] for n in pipeline[:-1].get_feature_names_out()]
    summed = np.zeros((len(columns), len(names)))
    for j, column in enumerate(out_names):
        owner = max((n for n in names if column == n or column.startswith(f"{n}_")), key=len)
        summed[:, names.index(owner)] += columns[:, j]
    return summed


def test_churn_explanations_add_up_and_equal_shap_in_process(
    churn_service: InProcess, churn_frame: tuple[Any, Path]
) -> None:
    import shap

    frame, _ = churn_frame
    X = frame.drop(columns=TARGET).iloc[:ROWS]
    response = explain(churn_service, {"instances": rows_of(X)})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    pipeline = pipeline_of(churn_service)
    names = list(X.columns)
    Z = pipeline[:-1].transform(X)
    margin = pipeline[-1].decision_function(Z)
    expected = shap.TreeExplainer(pipeline[-1], feature_perturbation="tree_path_dependent")
    values = by_feature(pipeline, expected.shap_values(Z, check_additivity=False), names)
    assert body["predictions"] == pipeline.predict(X).tolist()
    assert body["method"]["variant"] == "tree_path_dependent"
    assert body["method"]["units"] == "margin"
    for i, explanation in enumerate(body["explanations"]):
        (attribution,) = explanation["attributions"]
        k = attribution["outputIndex"][0]
        assert attribution["outputDisplayName"] == str(pipeline.classes_[k])
        assert k == list(pipeline.classes_).index(body["predictions"][i])
        assert list(attribution["featureAttributions"]) == names  # one per input feature
        got = np.array(list(attribution["featureAttributions"].values()))
        sign = 1 if k == 1 else -1  # class 0's log-odds are class 1's negated
        output = sign * margin[i]
        assert attribution["instanceOutputValue"] == pytest.approx(output, abs=1e-9)
        assert attribution["baselineOutputValue"] + got.sum() == pytest.approx(output, abs=1e-6)
        assert attribution["baselineOutputValue"] == pytest.approx(
            sign * float(np.asarray(expected.expected_value).ravel()[0]), abs=1e-9
        )
        np.testing.assert_allclose(got, sign * values[i], rtol=0, atol=1e-9)


def test_a_named_class_is_explained_for_every_row(churn_service: InProcess) -> None:
    row = {"country": "FR", "plan": "free", "seats": 1, "monthly_spend": None,
           "tenure_months": 3, "has_discount": False}  # fmt: skip
    both = [
        explain(churn_service, {"instances": [row], "parameters": {"class": c}}).get_json()
        for c in ("0", "1")
    ]
    zero, one = (b["explanations"][0]["attributions"][0] for b in both)
    assert zero["outputIndex"] == [0] and one["outputIndex"] == [1]
    for name, value in one["featureAttributions"].items():
        assert zero["featureAttributions"][name] == pytest.approx(-value, abs=1e-12)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"instances": [[1]], "parameters": {"class": "2"}}, "parameters.class", "unknown class"),
        ({"instances": [[1]], "parameters": {"class": [1]}}, "parameters.class", "as text"),
        ({"instances": [[1]], "parameters": {"probabilities": True}}, "parameters.probabilities",
         "unknown parameter"),
        ({"instances": [{"country": "FR"}]}, "instances[0].plan", "missing feature"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(
    churn_service: InProcess, body: Any, field: str, words: str
) -> None:
    if field == "parameters.class" and words == "unknown class":
        body["instances"] = [{"country": "FR", "plan": "free", "seats": 1, "monthly_spend": 3.0,
                              "tenure_months": 3, "has_discount": False}]  # fmt: skip
    response = explain(churn_service, body)
    assert response.status_code == 422
    problem = response.get_json()
    assert problem["field"] == field and words in problem["detail"]


def test_explain_needs_the_key(churn_service: InProcess) -> None:
    response = explain(churn_service, {"instances": [[1]]}, headers={"X-API-Key": "wrong"})
    assert response.status_code == 401


def test_a_linear_model_served_by_onnx_equals_shap_on_the_stored_background(
    store: ModelStore, iris_artifact: Path
) -> None:
    import shap

    from function.core.explain import parse_background

    with serving(store, "iris", MODEL_VERSION="lr") as service:
        model = service.service.require_model()
        assert model.runtime == "onnx"  # the explanation reads the scikit-learn model itself
        rows = [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5], [5.9, 3.0, 4.2, 1.5]]
        body = explain(service, {"instances": rows}).get_json()
    pipeline = joblib.load(iris_artifact / "model.joblib")
    background = np.array(parse_background((iris_artifact / BACKGROUND_FILE).read_bytes(), "x"))
    expected = shap.LinearExplainer(pipeline[-1], pipeline[:-1].transform(background))
    values = np.asarray(expected.shap_values(pipeline[:-1].transform(np.array(rows))))
    logits = pipeline.decision_function(np.array(rows))
    assert body["method"] == {**body["method"], "explainer": "LinearExplainer",
                              "variant": "interventional", "units": "margin"}  # fmt: skip
    for i, explanation in enumerate(body["explanations"]):
        (attribution,) = explanation["attributions"]
        (k,) = attribution["outputIndex"]
        got = np.array(list(attribution["featureAttributions"].values()))
        np.testing.assert_allclose(got, values[i, :, k], rtol=0, atol=1e-9)
        assert attribution["baselineOutputValue"] == pytest.approx(
            expected.expected_value[k], abs=1e-9
        )
        assert attribution["baselineOutputValue"] + got.sum() == pytest.approx(
            logits[i, k], abs=1e-6
        )


def test_a_forest_is_explained_in_probabilities(store: ModelStore, forest_artifact: Path) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]]
    with serving(store, "iris", MODEL_VERSION="rf", MODEL_RUNTIME="sklearn") as service:
        body = explain(service, {"instances": rows}).get_json()
    pipeline = joblib.load(forest_artifact / "model.joblib")
    probabilities = pipeline.predict_proba(np.array(rows))
    assert body["method"]["units"] == "probability"
    for i, explanation in enumerate(body["explanations"]):
        (attribution,) = explanation["attributions"]
        (k,) = attribution["outputIndex"]
        attributions = attribution["featureAttributions"].values()
        total = attribution["baselineOutputValue"] + sum(attributions)
        assert total == pytest.approx(probabilities[i, k], abs=1e-6)
        assert attribution["instanceOutputValue"] == pytest.approx(probabilities[i].max())


def test_other_models_and_old_versions_get_a_422_saying_why(
    store: ModelStore, iris_artifact: Path, tmp_path: Path
) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    iris = load_iris()
    X, y = iris.data, iris.target_names[iris.target]
    names = json.loads((iris_artifact / "metadata.json").read_text())["feature_names"]
    old = ModelStore(store.uri.rsplit("/", 1)[0] + "/old")
    models = [("knn", KNeighborsClassifier()), ("lr", LogisticRegression(max_iter=1000))]
    for version, estimator in models:
        publish_object(old, version, estimator.fit(X, y), iris_artifact, tmp_path,
                       estimator=type(estimator).__name__, feature_names=names,
                       name="old")  # fmt: skip
    for version, words in [("knn", "KNeighborsClassifier cannot be explained exactly"),
                           ("lr", "has no background sample")]:  # fmt: skip
        with serving(old, "old", MODEL_VERSION=version) as service:
            response = explain(service, {"instances": [[5.1, 3.5, 1.4, 0.2]]})
        assert response.status_code == 422
        assert words in response.get_json()["detail"]
    assert "RandomForestClassifier" in str(METHODS) and "LogisticRegression" in str(METHODS)


def test_columns_that_mix_features_cannot_be_traced() -> None:
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    X = np.arange(12.0).reshape(4, 3)
    assert column_sources(StandardScaler().fit(X), 3) == [{0}, {1}, {2}]
    with pytest.raises(Untraceable, match="PolynomialFeatures step mixes"):  # "x0 x1"
        column_sources(PolynomialFeatures(2, include_bias=False).fit(X), 3)


def test_an_explanation_costs_several_predictions() -> None:
    now = [0.0]
    buckets = TokenBuckets(1.0, 2 * EXPLAIN_COST, clock=lambda: now[0])
    buckets.take("k", EXPLAIN_COST)
    buckets.take("k", EXPLAIN_COST)
    with pytest.raises(TooManyRequests):
        buckets.take("k")  # the bucket is empty: two explanations spent it
    now[0] += EXPLAIN_COST
    buckets.take("k", EXPLAIN_COST)
    small = TokenBuckets(1.0, 3, clock=lambda: now[0])
    small.take("k", EXPLAIN_COST)  # a bucket smaller than the cost still lets one through


def test_openapi_documents_explain_and_its_examples_are_answered(churn_service: InProcess) -> None:
    from openapi_spec_validator import validate

    document = churn_service.client.get("/openapi.json").get_json()
    validate(document)
    post = document["paths"]["/explain"]["post"]
    examples = post["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples) == {"instances", "class"}
    schemas = document["components"]["schemas"]
    assert schemas["ExplainRequest"]["oneOf"][2]["required"]  # this model's own features
    for name, example in examples.items():
        response = explain(churn_service, example["value"])
        assert response.status_code == 200, name
        assert set(response.get_json()) == set(schemas["ExplainResponse"]["required"])


def test_rows_far_out_add_up_to_their_scale(store: ModelStore) -> None:
    """Float rounding grows with the terms: a row at 1e300 adds up within 1e-6 of its size."""
    with serving(store, "iris", MODEL_VERSION="lr") as service:
        rows = [[5.1, 3.5, 1.4, 0.2], [1e300, 1e300, -1e300, 1e300]]
        response = explain(service, {"instances": rows})
    assert response.status_code == 200, response.get_json()
    far = response.get_json()["explanations"][1]["attributions"][0]
    size = sum(abs(v) for v in far["featureAttributions"].values())
    assert size > 1e299 and far["approximationError"] <= 1e-6 * size


def test_the_model_cards_global_importance_is_the_mean_absolute_attribution(
    churn_service: InProcess, churn_frame: tuple[Any, Path]
) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    from training.report import attribution_importance

    frame, _ = churn_frame
    X = frame.drop(columns=TARGET).iloc[:ROWS]
    model = churn_service.service.require_model()
    summary = attribution_importance(pipeline_of(churn_service), X, model.metadata.raw, 0, None)
    body = explain(churn_service, {"instances": rows_of(X)}).get_json()
    shown = [e["attributions"][0]["featureAttributions"] for e in body["explanations"]]
    assert summary["explained"] and summary["units"] == "margin" and summary["rows"] == ROWS
    for name, value in summary["mean_abs"].items():
        assert value == pytest.approx(np.mean([abs(row[name]) for row in shown]), abs=1e-9)
    knn = KNeighborsClassifier().fit(np.zeros((4, 6)), [0, 1, 0, 1])
    refused = attribution_importance(knn, np.zeros((2, 6)), model.metadata.raw, 0, None)
    assert refused == {"explained": False, "reason": refused["reason"]}
    assert "KNeighborsClassifier cannot be explained" in refused["reason"]


def test_trees_that_shap_reads_otherwise_than_scikit_learn_are_refused() -> None:
    """Why native categories are modelrun's own TreeSHAP's (tests/test_explain_categorical.py),
    and the check that would catch it: shap reads a categorical split's threshold as a number
    (its bitset unread)."""
    import shap
    from sklearn.ensemble import HistGradientBoostingClassifier

    from function.core.explain import TREES, Explainer, check_trees

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 6, 400), rng.normal(size=400)]).astype(float)
    y = np.isin(X[:, 0], [1, 3, 4]).astype(int)  # no threshold separates these codes
    model = HistGradientBoostingClassifier(categorical_features=[0], max_iter=5).fit(X, y)
    tree = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")
    explainer = Explainer(TREES, "margin", model, None, tree, np.arange(2), 2, ["0", "1"])
    with pytest.raises(NotExplainable, match="otherwise than scikit-learn decides them"):
        check_trees(explainer, X[:100])


@pytest.mark.slow  # a fresh interpreter, to see what an import pulls in
def test_shap_is_imported_only_when_a_model_is_explained(store: ModelStore) -> None:
    """Cold start and the answer path never import shap (seconds, and numba's LLVM): the
    service's entry, a prediction in process, then an explanation."""
    import os
    import subprocess
    import sys

    uri = store.uri.rsplit("/", 1)[0] + "/iris"
    script = f"""
import sys
import function.service.main
from tests.inprocess import in_process
loaded = lambda: sorted(m for m in ("shap", "numba", "llvmlite") if m in sys.modules)
with in_process({{"MODEL_URI": {uri!r}, "API_KEYS": {KEY!r}, "MODEL_VERSION": "lr"}}) as s:
    headers = {{"X-API-Key": {KEY!r}}}
    body = {{"instances": [[5.1, 3.5, 1.4, 0.2]]}}
    assert s.client.post("/predict", json=body, headers=headers).status_code == 200
    print("loaded:", loaded())
    assert s.client.post("/explain", json=body, headers=headers).status_code == 200
    print("loaded:", loaded())
"""
    env = {**os.environ, "MODEL_URI": uri, "API_KEYS": KEY}  # function.service.main reads them
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = [line for line in done.stdout.splitlines() if line.startswith("loaded:")]
    assert shown == ["loaded: []", "loaded: ['llvmlite', 'numba', 'shap']"]


def test_a_regressor_answers_predict_to_the_bit_and_its_value_is_explained(
    store: ModelStore, iris_artifact: Path, tmp_path: Path
) -> None:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import Ridge

    iris = load_iris()
    X, y = iris.data[:, :3], iris.data[:, 3]  # petal width from the other three
    names = ["sepal_length", "sepal_width", "petal_length"]
    root = ModelStore(store.uri.rsplit("/", 1)[0] + "/width")
    models = {"forest": RandomForestRegressor(30, random_state=0), "ridge": Ridge()}
    for version, model in models.items():
        changes = {"task": "regression", "class_names": [], "feature_names": names, "name": "width"}
        publish_object(root, version, model.fit(X, y), iris_artifact, tmp_path,
                       estimator=type(model).__name__, **changes)  # fmt: skip
    rows = [[5.1, 3.5, 1.4], [6.3, 3.3, 6.0]]
    with serving(root, "width", MODEL_VERSION="forest") as service:
        body = explain(service, {"instances": rows}).get_json()
        predicted = service.client.post("/predict", json={"instances": rows}, headers=AUTH)
        named = explain(service, {"instances": rows, "parameters": {"class": "x"}}).get_json()
    assert named["field"] == "parameters.class" and "no class to choose" in named["detail"]
    assert body["predictions"] == predicted.get_json()["predictions"]  # to the bit
    assert body["method"]["units"] == "value"
    for i, explanation in enumerate(body["explanations"]):
        (attribution,) = explanation["attributions"]
        assert "outputIndex" not in attribution  # a scalar output, as Vertex leaves it out
        total = attribution["baselineOutputValue"] + sum(
            attribution["featureAttributions"].values()
        )
        assert total == pytest.approx(body["predictions"][i], abs=1e-6)
    with serving(root, "width", MODEL_VERSION="ridge") as service:  # linear, no background
        response = explain(service, {"instances": rows})
    assert response.status_code == 422 and "no background sample" in response.get_json()["detail"]
