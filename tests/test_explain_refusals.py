"""What `POST /explain` refuses and how it says so, and the class a request may name: the
explainer built in process on real small estimators (function/core/explain.py), no service."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from function.core.errors import InvalidInput
from function.core.explain import NotExplainable, build, parse_parameters
from function.core.predict import Instances


def iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data, data.target


def refusal(estimator: Any, X: np.ndarray) -> str:
    with pytest.raises(NotExplainable) as refused:
        build(estimator, X.shape[1], lambda: X[:50])
    return refused.value.detail


def test_a_refusal_names_the_kind_and_every_kind_that_can_be_explained() -> None:
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    X, y = iris()
    models = [GradientBoostingClassifier(n_estimators=3).fit(X, y), SVC().fit(X, y),
              KNeighborsClassifier().fit(X, y)]  # fmt: skip
    for model in models:
        detail = refusal(model, X)
        assert f"a model of kind {type(model).__name__} cannot be explained" in detail
        assert "GradientBoostingClassifier (binary only)" in detail
        assert "LogisticRegression" in detail and "RandomForestClassifier" in detail
    multiclass = refusal(models[0], X)
    assert "3 classes" in multiclass and "only supported" not in multiclass  # not shap's words


@pytest.mark.parametrize("step", ["PCA", "PolynomialFeatures"])
def test_a_step_that_mixes_features_is_named(step: str) -> None:
    from sklearn import decomposition, preprocessing
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    X, y = iris()
    kind = getattr(decomposition, step, None) or getattr(preprocessing, step)
    detail = refusal(make_pipeline(kind(), LogisticRegression(max_iter=500)).fit(X, y), X)
    assert "a model of kind LogisticRegression" in detail
    assert f"its {step} step mixes input features" in detail
    assert "made from 0 input features" not in detail


@pytest.mark.parametrize(
    ("labels", "asked", "index"),
    [
        ([0, 1, 2], 1, 1),  # as /predict answers it
        ([0, 1, 2], "2", 2),  # as text
        ([0, 1, 2], 1.0, 1),
        (["a", "b", "c"], "c", 2),
        ([False, True], True, 1),
        ([False, True], "False", 0),
    ],
)
def test_the_class_is_named_as_predict_answers_it_or_as_text(
    labels: list[Any], asked: Any, index: int
) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = iris()
    if len(labels) == 2:
        y = np.minimum(y, 1)
    target = np.array(labels, dtype=object if isinstance(labels[0], str) else None)[y]
    model = LogisticRegression(max_iter=500).fit(X, target)
    body, wanted = parse_parameters({"instances": [], "parameters": {"class": asked}})
    explanation = build(model, 4, lambda: X[:50]).explain(Instances(X[:3]), wanted)
    assert body == {"instances": []} and explanation.outputs == [index] * 3


@pytest.mark.parametrize(("labels", "asked"), [([0, 1], True), ([False, True], 1), ([0, 1], 3)])
def test_a_class_the_model_has_not_is_refused(labels: list[Any], asked: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = iris()
    model = LogisticRegression(max_iter=500).fit(X, np.array(labels)[np.minimum(y, 1)])
    with pytest.raises(InvalidInput, match="unknown class") as refused:
        build(model, 4, lambda: X[:50]).explain(Instances(X[:1]), asked)
    assert refused.value.field == "parameters.class"


def test_a_class_that_is_neither_text_nor_a_label_is_refused() -> None:
    with pytest.raises(InvalidInput, match="as /predict answers it") as refused:
        parse_parameters({"instances": [], "parameters": {"class": [1]}})
    assert refused.value.field == "parameters.class"
