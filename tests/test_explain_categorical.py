"""modelrun's own TreeSHAP (function/core/treeshap.py) for HistGradientBoosting with native
categorical
features, which shap reads as numeric thresholds.

Proved three ways, as the brief for it asked: on trees without categories it equals shap's own
path-dependent TreeExplainer within 1e-9 (the same algorithm); on categorical trees it equals the
Shapley values brute-forced here over every subset of features, with the path-dependent value
function (follow the row on the subset's features, average by the nodes' counts elsewhere) and
scikit-learn's categorical rule written here from its Cython (`_predict_one_from_raw_data`), not
taken from treeshap; and base + Σ attributions is scikit-learn's own raw output for the row,
gaps and unseen categories included. Then the service explains a model modelrun's `train` made.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from function.core.explain import NotExplainable, build
from function.core.predict import Instances
from function.core.treeshap import Trees
from tests.conftest import KEY
from tests.inprocess import in_process
from tests.support.churn import TARGET, rows_of
from training.__main__ import main
from training.churn import churn

AUTH = {"X-API-Key": KEY}


def hgb(kind: str, categorical: list[int] | None, n: int = 500, seed: int = 0) -> tuple[Any, Any]:
    """A small fitted HistGradientBoosting on 5 columns (1 and 3 category codes, 6 and 12 of
    them, with gaps), and its rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 6, n), rng.normal(size=n),
                         rng.integers(0, 12, n), rng.normal(size=n)]).astype(float)  # fmt: skip
    X[rng.random(n) < 0.08, 1] = np.nan
    X[rng.random(n) < 0.08, 2] = np.nan
    score = np.isin(X[:, 1], [1, 3, 4]) + (X[:, 3] % 3 == 0) + X[:, 0] + np.nan_to_num(X[:, 2])
    params = {"max_iter": 8, "categorical_features": categorical, "random_state": 0}
    if kind == "regressor":
        return HistGradientBoostingRegressor(**params).fit(X, score), X
    y = score > 1 if kind == "binary" else np.digitize(score, [0.5, 1.5])
    return HistGradientBoostingClassifier(**params).fit(X, y), X


def odd_rows(X: np.ndarray) -> np.ndarray:
    """Training rows, and rows with gaps, unseen codes (9, 40), a negative code and a fraction."""
    odd = np.array([[0.1, 9, np.nan, 40, 0.0], [np.nan, -1, 0.3, 2.5, 1.0],
                    [0.5, np.nan, 1.0, np.nan, np.nan], [2.0, 3, -1.0, 11, -2.0]])  # fmt: skip
    return np.vstack([X[:4], odd])


def goes_left(node: Any, code: float, tree: Any, known: np.ndarray, row: int) -> bool:
    """scikit-learn 1.9's _predict_one_from_raw_data at one node, from its Cython."""
    if math.isnan(code):
        return bool(node["missing_go_to_left"])
    if not node["is_categorical"]:
        return bool(code <= node["num_threshold"])
    if code < 0:
        return bool(node["missing_go_to_left"])
    c = int(code)
    if (tree.raw_left_cat_bitsets[node["bitset_idx"], c // 32] >> (c % 32)) & 1:
        return True
    if (known[row, c // 32] >> (c % 32)) & 1:
        return False
    return bool(node["missing_go_to_left"])


def expected(tree: Any, x: np.ndarray, subset: set[int], columns: np.ndarray, known: Any) -> float:
    """One tree's E[f(x) | x_subset], path-dependent: the row's way at a split on a column of
    the subset, elsewhere both ways averaged by the children's training counts."""
    bitsets, rows = known
    nodes = tree.nodes

    def walk(i: int) -> float:
        node = nodes[i]
        if node["is_leaf"]:
            return float(node["value"])
        f = int(node["feature_idx"])
        if columns[f] in subset:
            left = goes_left(node, x[f], tree, bitsets, int(rows[f]))
            return walk(int(node["left"] if left else node["right"]))
        a, b = int(node["left"]), int(node["right"])
        return float(nodes[a]["count"] * walk(a) + nodes[b]["count"] * walk(b)) / node["count"]

    return walk(0)


def brute_force(model: Any, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapley values by enumerating every subset of the model's input columns, and the base
    v(∅), with the path-dependent value function over scikit-learn's own nodes."""
    pre = model._preprocessor
    one = row if hasattr(row, "iloc") else row[None, :]  # a one-row DataFrame, or a row
    x = row if pre is None else np.asarray(pre.transform(one), dtype=float)[0]
    m = one.shape[1]
    columns = np.arange(m)
    if pre is not None:  # the encoded columns, in the order its parts selected them
        columns = np.concatenate([np.flatnonzero(np.asarray(selected, dtype=bool))
                                  for _, _, selected in pre.transformers_[:2]])  # fmt: skip
    known = model._bin_mapper.make_known_categories_bitsets()
    trees = [(k, tree) for iteration in model._predictors for k, tree in enumerate(iteration)]

    def value(subset: set[int]) -> np.ndarray:
        total = np.asarray(model._baseline_prediction, dtype=float).ravel().copy()
        for k, tree in trees:
            total[k] += expected(tree, x, subset, columns, known)
        return total

    values = {
        subset: value(set(subset))
        for size in range(m + 1)
        for subset in itertools.combinations(range(m), size)
    }
    phi = np.zeros((m, len(np.ravel(model._baseline_prediction))))
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for size in range(m):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for chosen in itertools.combinations(others, size):
                phi[i] += weight * (values[tuple(sorted((*chosen, i)))] - values[chosen])
    return phi, values[()]


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regressor"])
def test_without_categories_it_equals_shaps_tree_explainer(kind: str) -> None:
    import shap

    model, X = hgb(kind, None)
    rows = np.vstack([X[:40], odd_rows(X)])  # gaps, and the codes as plain numbers
    ours = Trees.of(model)
    theirs = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")
    expected = np.asarray(theirs.shap_values(rows, check_additivity=False))
    expected = expected[:, :, None] if expected.ndim == 2 else expected
    np.testing.assert_allclose(ours.shap_values(rows), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.expected_value, np.ravel(theirs.expected_value), atol=1e-9)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regressor"])
def test_with_categories_it_equals_the_brute_forced_shapley_values(kind: str) -> None:
    model, X = hgb(kind, [1, 3])
    rows = odd_rows(X)
    trees = Trees.of(model)
    values = trees.shap_values(rows)
    raw = model._raw_predict(rows)
    np.testing.assert_array_equal(trees.predict(rows), raw)  # sklearn's decisions, to the bit
    for i in (0, 4, 5, 6):  # a training row; unseen codes; a negative one and a fraction; gaps
        phi, base = brute_force(model, rows[i])
        np.testing.assert_allclose(values[i], phi, rtol=0, atol=1e-9)
        np.testing.assert_allclose(trees.expected_value, base, rtol=0, atol=1e-9)
    np.testing.assert_allclose(trees.expected_value + values.sum(axis=1), raw, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["multiclass", "regressor"])
def test_codes_its_encoder_never_gives_are_decided_as_scikit_learn_decides_them(
    kind: str,
) -> None:
    """Past the estimator's encoder a category is a known code or a gap; the walk still decides
    any other code as scikit-learn's own predictor does (unknown: as a gap; negative: a gap;
    a fraction: its integer part), compared here with TreePredictor.predict itself."""
    model, X = hgb(kind, [1, 3])
    trees = Trees.of(model)
    encoded = trees._encoded(X[:300])
    rng = np.random.default_rng(0)
    odd = [6, 7, 200, 255, 0.5, 3.7, -2, np.nan, 0, 1, 2, 3, 4, 5]
    encoded[:, :2] = rng.choice(odd, (300, 2))  # the codes of categories 1 and 3, first
    known, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
    theirs = np.tile(np.ravel(model._baseline_prediction), (len(encoded), 1))
    for iteration in model._predictors:
        for k, tree in enumerate(iteration):
            theirs[:, k] += tree.predict(encoded, known, f_idx_map, 1)
    np.testing.assert_array_equal(trees.predict_encoded(encoded), theirs)


def test_the_brute_force_catches_what_shap_reads_wrong() -> None:
    """The proof above can fail: shap's values for the same categorical trees are not these."""
    import shap

    model, X = hgb("binary", [1, 3])
    phi, _ = brute_force(model, X[1])
    theirs = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")
    wrong = np.ravel(theirs.shap_values(X[1:2], check_additivity=False))
    assert np.max(np.abs(wrong - phi[:, 0])) > 1e-3


@pytest.mark.parametrize("kind", ["multiclass", "regressor"])
def test_the_explainer_answers_the_predicted_class_or_the_value(kind: str) -> None:
    """Through explain.build as the service builds it: a class's raw score column (margin), or a
    regressor's value, adding up to scikit-learn's own."""
    model, X = hgb(kind, [1, 3])
    rows = odd_rows(X)
    explainer = build(model, 5, lambda: X[:50])
    explanation = explainer.explain(Instances(rows), None)
    assert explainer.describe()["library"] == "modelrun"
    assert explainer.describe()["variant"] == "tree_path_dependent"
    if kind == "regressor":
        assert explainer.units == "value"
        own = model.predict(rows)
    else:
        assert explainer.units == "margin"
        assert explanation.labels == model.predict(rows).tolist()
        own = model.decision_function(rows)[np.arange(len(rows)), explanation.outputs]
    np.testing.assert_allclose(explanation.output, own, rtol=0, atol=1e-12)
    total = explanation.base + explanation.attributions.sum(axis=1)
    np.testing.assert_allclose(total, own, rtol=0, atol=1e-6)


def test_a_bare_estimator_on_text_categories_is_explained_from_its_dataframe() -> None:
    """categorical_features="from_dtype": the estimator's own encoder reads the text."""
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"plan": pd.Categorical(rng.choice(["free", "pro", "team"], 300)),
                          "spend": rng.normal(size=300)})  # fmt: skip
    y = (frame["plan"] == "pro") ^ (frame["spend"] > 0)
    model = HistGradientBoostingClassifier(max_iter=5, categorical_features="from_dtype")
    model.fit(frame, y)
    rows = pd.DataFrame({"plan": pd.Categorical(["pro", "gold", None], categories=["free", "gold",
                         "pro", "team"]), "spend": [0.5, -1.0, np.nan]})  # fmt: skip
    explainer = build(model, 2, lambda: frame.iloc[:50])
    explanation = explainer.explain(Instances(rows), None)
    margin = model.decision_function(rows)
    own = np.where(np.array(explanation.outputs) == 1, margin, -margin)
    np.testing.assert_allclose(explanation.output, own, rtol=0, atol=1e-12)
    for i in range(len(rows)):
        phi, _ = brute_force(model, rows.iloc[i : i + 1])
        sign = 1 if explanation.outputs[i] == 1 else -1
        np.testing.assert_allclose(explanation.attributions[i], sign * phi[:, 0], atol=1e-9)


def test_what_it_does_not_read_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    import function.core.treeshap

    model, X = hgb("binary", [1, 3])
    monkeypatch.setattr(function.core.treeshap, "VERIFIED_SKLEARN", ("1.8",))
    with pytest.raises(NotExplainable, match="reads scikit-learn 1.8's HistGradientBoosting"):
        build(model, 5, lambda: X[:10])
    monkeypatch.undo()
    y = np.abs(X[:, 0]) + 1
    poisson = HistGradientBoostingRegressor(loss="poisson", categorical_features=[1], max_iter=3)
    with pytest.raises(NotExplainable, match="predicts through a LogLink"):
        build(poisson.fit(X, y), 5, lambda: X[:10])


def test_the_service_explains_what_modelrun_trains_with_native_categories(
    tmp_path: Path,
) -> None:
    import joblib

    frame = churn(600, seed=7)
    frame.to_csv(csv := tmp_path / "churn.csv", index=False)
    out, root = tmp_path / "hgb", tmp_path / "store"
    assert main(["train", "--data", str(csv), "--target", TARGET, "--estimator",
                 "hist_gradient_boosting", "--param", "max_iter=8", "--cv", "2", "--no-report",
                 "--name", "churn", "--out", str(out)]) == 0  # fmt: skip
    assert main(["publish", "--store", root.as_uri(), "--version", "v1", str(out),
                 "--promote"]) == 0  # fmt: skip
    pipeline = joblib.load(out / "model.joblib")
    X = frame.drop(columns=TARGET).iloc[:20]
    rows = rows_of(X)
    rows[1] = {**rows[1], "country": "PT", "monthly_spend": None}  # unseen, and a gap
    with in_process({"MODEL_URI": f"{root.as_uri()}/churn", "API_KEYS": KEY}) as service:
        response = service.client.post("/explain", json={"instances": rows}, headers=AUTH)
        predicted = service.client.post("/predict", json={"instances": rows}, headers=AUTH)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert pipeline[-1].is_categorical_.any()
    assert body["method"]["library"] == "modelrun"
    assert body["predictions"] == predicted.get_json()["predictions"]
    import pandas as pd

    frame_rows = pd.DataFrame(rows)[list(X.columns)]
    Z = pipeline[:-1].transform(frame_rows)
    margin = pipeline[-1].decision_function(Z)
    names = list(X.columns)
    encoded = [str(n).split("__", 1)[-1] for n in pipeline[:-1].get_feature_names_out()]
    for i, explanation in enumerate(body["explanations"]):
        (attribution,) = explanation["attributions"]
        sign = 1 if attribution["outputIndex"] == [1] else -1
        got = attribution["featureAttributions"]
        assert attribution["instanceOutputValue"] == pytest.approx(sign * margin[i], abs=1e-12)
        total = attribution["baselineOutputValue"] + sum(got.values())
        assert total == pytest.approx(sign * margin[i], abs=1e-6)
        if i < 2:  # a training row, and the one with an unseen country and a gap
            phi, _ = brute_force(pipeline[-1], Z[i])  # objects, as the estimator was given
            for j, column in enumerate(encoded):
                assert got[column] == pytest.approx(sign * phi[j, 0], abs=1e-9)
            assert set(encoded) == set(names)
