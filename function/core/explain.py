"""Exact explanations of a model's answers, in the user's own features (`POST /explain`).

Each answer is split into a base value and one attribution per input feature of the schema, which
add up to the model's output (base + Σ attributions = output). The library is shap, imported when
a model is first explained (it costs seconds to import, which no cold start should pay):

- linear models (`coef_` and `intercept_`: logistic, linear, ridge, lasso...): `LinearExplainer`;
  a classifier's margin (log-odds; a class's logit when multiclass), or a regressor's value;
- random forest, extra trees, decision tree: `TreeExplainer`; a class's probability, or the value;
- gradient boosting, HistGradientBoosting: `TreeExplainer`; a classifier's margin (log-odds; a
  class's raw score when multiclass), or a regressor's value;
- HistGradientBoosting with native categorical features: modelrun's own TreeSHAP
  (function/core/treeshap.py), the same algorithm over the estimator's own nodes, since shap
  reads
  their categorical splits as numeric thresholds; in the same units.

Linear models are explained interventionally against the version's background: a sample of its
training rows (`background.json`, written at training or packaging, listed with its digest in
metadata.files like every file of the version); the base value is the model's mean output over
those rows. Trees are explained path-dependently (TreeSHAP over the training rows as each tree
recorded them, its node sample counts); the base value is the model's mean output over the
training data so weighted. Not interventional for trees: shap 0.49.1's interventional algorithm
does not add up on deep trees (shap#3267; measured here, a 20-tree Iris forest against 80
background rows is off by 0.0025, and path-dependent by 1e-14), and it is slower, one pass per
background row.

The estimator sees the pipeline's preprocessed columns; each column's attribution is summed into the
input feature it was made from (`column_sources`: ColumnTransformer's `output_indices_`, and each
step's `get_feature_names_out`), so a one-hot feature gets one attribution. For a linear model
through per-feature preprocessing this is that feature's exact Shapley value; for trees it is the
sum of the columns' Shapley values, as shap's documentation sums one-hot columns. A step whose
columns mix features (PolynomialFeatures, PCA) cannot be summed back, and is refused by name;
every refusal names the model's kind and the kinds that can be explained (`EXPLAINABLE`).

Every explanation is checked to add up to the model's output before it is answered: a linear
model's own, or for trees the trees as shap read them, checked equal to scikit-learn's on the
version's background rows when the explainer is built (a forest's predict_proba costs milliseconds
a row; shap's reading, microseconds). One that does not add up within ADDITIVITY (of the terms'
size, where it exceeds 1) is an error, never an answer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from function.core.errors import IntegrityError, InvalidInput, ModelrunError
from function.core.model import LoadedModel, canonical_estimator, warm_up_row
from function.core.predict import Instances, rows_to_input
from function.core.schema import kind
from function.core.store import ModelStore
from function.core.treeshap import Trees, Unsupported

BACKGROUND_FILE = "background.json"
BACKGROUND_ROWS = 100  # shap's own advice for a background; a linear explainer's cost grows with it
ADDITIVITY = 1e-6
# An explanation's share of the rate limit, in predictions: a request of 1,000 rows costs 6 (a
# forest) to 24 (the mixed-type pipeline) times its predictions' time, a deep forest's 280
# (tests/perf/explain_rows_bench.py), one row less than one prediction; 10, fixed per request as
# a prediction's 1 is: the request's time limit bounds the rest (docs/PERFORMANCE.md).
EXPLAIN_COST = 10
PARAMETERS = ("class",)

OWN_TREESHAP = "TreeSHAP (modelrun's own: categorical splits)"
LINEAR = "linear"
TREES = "trees"
# By the final estimator's class name: which explainer, and whether a classifier's output is a
# probability (the trees' mean leaf values) or a margin (decision_function).
METHODS: dict[str, tuple[str, str]] = {
    **{
        name: (LINEAR, "margin")
        for name in (
            "LogisticRegression", "LogisticRegressionCV", "LinearRegression", "Ridge", "RidgeCV",
            "Lasso", "LassoCV", "ElasticNet", "ElasticNetCV", "SGDRegressor", "HuberRegressor",
        )
    },
    **{
        name: (TREES, "probability")
        for name in (
            "RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier",
            "ExtraTreesRegressor", "DecisionTreeClassifier", "DecisionTreeRegressor",
        )
    },
    **{
        name: (TREES, "margin")
        for name in (
            "GradientBoostingClassifier", "GradientBoostingRegressor",
            "HistGradientBoostingClassifier", "HistGradientBoostingRegressor",
        )
    },
}  # fmt: skip
# What a kind above cannot do, named in every refusal beside it.
LIMITS = {
    "GradientBoostingClassifier": "binary only",
    "HistGradientBoostingRegressor": "not with a log link: poisson, gamma",
}
EXPLAINABLE = ", ".join(f"{n} ({LIMITS[n]})" if n in LIMITS else n for n in METHODS)


class NotExplainable(InvalidInput):
    """This model cannot be explained exactly (422): the answer names its kind, says why, and
    lists the kinds that can be."""

    def __init__(self, model_kind: str, why: str) -> None:
        super().__init__(
            f"a model of kind {model_kind} cannot be explained exactly: {why}. Explanations are "
            f"exact for {EXPLAINABLE}, after preprocessing that makes each column from one feature"
        )


@dataclass(frozen=True)
class Explanation:
    """Per row: the class explained (None for a regressor), base value, attributions by feature
    (in schema order) and the output they add up to."""

    labels: list[Any]  # the model's predictions
    outputs: list[int | None]
    base: np.ndarray
    attributions: np.ndarray
    output: np.ndarray


@dataclass(frozen=True)
class Explainer:
    """A version's explainer, built once: shap's explainer over the estimator's columns (or, for
    categorical splits, modelrun's own `Trees`, which answers shap_values and expected_value as
    shap's does), and the input feature each column is summed into."""

    method: str
    units: str
    estimator: Any  # the final estimator
    preprocess: Any  # the pipeline's steps before it (None for a bare estimator)
    engine: Any  # shap's explainer, or treeshap.Trees
    groups: np.ndarray  # column -> input feature index
    n_features: int
    classes: list[str]

    def explain(self, instances: Instances, wanted: Any) -> Explanation:
        """Explain a request's rows: the class named, else each row's predicted class; refuse a
        row without a finite explanation (422), and an explanation that does not add up to the
        model's output (500: never answered)."""
        with np.errstate(all="ignore"):  # overflow shows up as non-finite values, refused below
            return self._explain(instances, wanted)

    def _explain(self, instances: Instances, wanted: Any) -> Explanation:
        Z = self._columns(instances.X)
        values = self.engine.shap_values(Z, **self._options())
        values, base = self._per_output(np.asarray(values), self.engine.expected_value)
        own = self._own_output(Z)
        if self.classes:
            picked = self._predicted(Z, own)
            labels = self.estimator.classes_.take(picked).tolist()
            chosen = None if wanted is None else self._class_index(wanted)
            outputs = picked.tolist() if chosen is None else [chosen] * len(Z)
        else:
            if wanted is not None:
                raise InvalidInput(
                    "a regressor has one output, and no class to choose", field="parameters.class"
                )
            # The estimator's own predict, so that the answer is /predict's to the bit (shap's
            # reading of trees agrees within rounding).
            own_labels = self.estimator.predict(Z) if self.method == TREES else own[:, 0]
            labels, outputs = np.asarray(own_labels).tolist(), [0] * len(Z)
        rows = np.arange(len(Z))
        columns = values[rows, :, outputs]  # (rows, columns) for each row's output
        attributions = np.zeros((len(Z), self.n_features))
        np.add.at(attributions.T, self.groups, columns.T)
        base_values = base[outputs]
        output = own[rows, outputs]
        finite = np.isfinite(attributions).all(axis=1) & np.isfinite(output)
        if not finite.all():
            raise InvalidInput(
                "the model gives no finite explanation for this row: its values are too far "
                "outside the range it was trained on",
                field=instances.field(int(np.argmin(finite))),
            )
        gap = np.abs(base_values + attributions.sum(axis=1) - output)
        # Within 1e-6, or 1e-6 of the terms' size where they exceed 1: float rounding grows with
        # them (a row at 1e12 has attributions near 1e12, added up to about 1e-4).
        scale = np.maximum(1.0, np.abs(attributions).sum(axis=1) + np.abs(base_values))
        if not np.all(gap <= ADDITIVITY * scale):
            raise ModelrunError(
                f"the explanation does not add up to the model's output (off by "
                f"{float(np.max(gap)):.3g}, more than {ADDITIVITY:g}); it is not answered"
            )
        explained: list[int | None] = outputs if self.classes else [None] * len(Z)
        return Explanation(labels, explained, base_values, attributions, output)

    def _class_index(self, wanted: Any) -> int:
        """The class asked for: as /predict answers it (a number for integer labels, a boolean
        for boolean labels), or as text (outputDisplayName)."""
        for k, label in enumerate(self.estimator.classes_.tolist()):
            if isinstance(wanted, str):
                if wanted == self.classes[k]:
                    return k
            elif isinstance(wanted, bool) == isinstance(label, bool) and wanted == label:
                return k  # True is not the class 1, nor 1 the class True
        raise InvalidInput(
            f"unknown class {json.dumps(wanted)}; the model's classes are "
            f"{', '.join(self.classes)}",
            field="parameters.class",
        )

    def _predicted(self, Z: np.ndarray, own: np.ndarray) -> np.ndarray:
        """Each row's predicted class: predict's rule, the argmax of the probabilities (which
        rank as the margins do). Where the first two are within rounding of each other (a tie
        the estimator breaks by its own sums), the estimator decides those rows itself."""
        picked = np.argmax(own, axis=1)
        if self.method == TREES and own.shape[1] > 1:
            top = np.sort(own, axis=1)[:, -2:]
            close = np.flatnonzero(top[:, 1] - top[:, 0] <= ADDITIVITY)
            if len(close):
                rows = Z.iloc[close] if hasattr(Z, "iloc") else Z[close]
                mine = scikit_output(self.estimator, rows, self.units, len(self.classes))
                picked[close] = np.argmax(mine, axis=1)
        return picked

    def describe(self) -> dict[str, Any]:
        """How the answer was computed, for the answer itself."""
        linear = self.method == LINEAR
        own = isinstance(self.engine, Trees)
        return {
            "library": "modelrun" if own else f"shap {_shap_version()}",
            "explainer": OWN_TREESHAP if own else "LinearExplainer" if linear else "TreeExplainer",
            "variant": "interventional" if linear else "tree_path_dependent",
            "units": self.units,
            "background": (
                f"{BACKGROUND_FILE}: a sample of the training rows"
                if linear
                else "the training rows as each tree recorded them (its node sample counts)"
            ),
        }

    def _columns(self, X: Any) -> Any:
        Z = X if self.preprocess is None else self.preprocess.transform(X)
        Z = Z.toarray() if hasattr(Z, "toarray") else Z
        if isinstance(self.engine, Trees):  # as the estimator takes them: its own encoder reads
            return Z  # them (objects beside codes, a DataFrame's text categories)
        return np.asarray(Z, dtype=np.float64)

    def _options(self) -> dict[str, Any]:
        # The additivity check is ours, against the model's own output (below), in every case.
        return {"check_additivity": False} if self.method == TREES else {}

    def _per_output(self, values: np.ndarray, expected: Any) -> tuple[np.ndarray, np.ndarray]:
        """shap's values as (rows, columns, outputs) and the base per output; a binary margin
        (one output, class 1's log-odds) becomes two, class 0's being its negation."""
        base = np.atleast_1d(np.asarray(expected, dtype=np.float64))
        if values.ndim == 2:
            values = values[:, :, None]
        if len(self.classes) == 2 and values.shape[2] == 1:
            values = np.concatenate([-values, values], axis=2)
            base = np.concatenate([-base, base])
        return values, base

    def _own_output(self, Z: np.ndarray) -> np.ndarray:
        """The model's output in the units explained, (rows, outputs): a linear model's own; for
        trees, the trees as shap (or treeshap) read them (checked equal to scikit-learn's when the
        explainer was built, `check_trees`), since a forest's predict_proba costs milliseconds a
        row in scikit-learn's thread pool and microseconds here."""
        if self.method == TREES:
            trees = self.engine if isinstance(self.engine, Trees) else self.engine.model
            return _as_outputs(trees.predict(Z), len(self.classes))
        return scikit_output(self.estimator, Z, self.units, len(self.classes))


def scikit_output(estimator: Any, Z: np.ndarray, units: str, classes: int) -> np.ndarray:
    """A final estimator's own output in the units explained, (rows, outputs)."""
    if not classes:
        return np.asarray(estimator.predict(Z), dtype=np.float64).reshape(len(Z), 1)
    if units == "probability":
        return np.asarray(estimator.predict_proba(Z), dtype=np.float64)
    return _as_outputs(estimator.decision_function(Z), classes)


def _as_outputs(output: Any, classes: int) -> np.ndarray:
    """(rows, outputs); a binary margin (class 1's log-odds) as two, class 0's its negation."""
    output = np.asarray(output, dtype=np.float64)
    if output.ndim == 1:
        output = output.reshape(-1, 1)
    if classes == 2 and output.shape[1] == 1:
        output = np.concatenate([-output, output], axis=1)
    return output


def check_trees(explainer: Explainer, rows: Any) -> None:
    """Refuse a model whose trees shap reads otherwise than scikit-learn decides them, on these
    rows (the version's background, or its example row)."""
    Z = explainer._columns(rows)
    with np.errstate(all="ignore"):
        theirs = scikit_output(explainer.estimator, Z, explainer.units, len(explainer.classes))
        ours = explainer._own_output(Z)
    gap = float(np.max(np.abs(theirs - ours), initial=0.0))
    if not gap <= ADDITIVITY * max(1.0, float(np.max(np.abs(theirs), initial=0.0))):
        reader = "modelrun's TreeSHAP" if isinstance(explainer.engine, Trees) else "shap"
        raise NotExplainable(
            type(explainer.estimator).__name__,
            f"{reader} reads its trees otherwise than scikit-learn decides them (off by "
            f"{gap:.3g} on its background rows)",
        )


def _shap_version() -> str:
    import shap

    return str(shap.__version__)


def answer(model: LoadedModel, explainer: Explainer, explanation: Explanation) -> dict[str, Any]:
    """The answer: the predictions, and per row one explanation in the shape of Vertex AI's
    `explain` response (`explanations[].attributions[]`), with how it was computed."""
    names = model.schema.names
    explanations = []
    for i, k in enumerate(explanation.outputs):
        attribution: dict[str, Any] = {
            "baselineOutputValue": float(explanation.base[i]),
            "instanceOutputValue": float(explanation.output[i]),
            "featureAttributions": dict(
                zip(names, explanation.attributions[i].tolist(), strict=True)
            ),
            "outputName": explainer.units,
            # Exact methods: what is left is float rounding, measured (at most ADDITIVITY).
            "approximationError": abs(
                float(explanation.base[i] + explanation.attributions[i].sum())
                - float(explanation.output[i])
            ),
        }
        if k is not None:  # Vertex leaves outputIndex out for a scalar output
            attribution["outputIndex"] = [k]
            attribution["outputDisplayName"] = explainer.classes[k]
        explanations.append({"attributions": [attribution]})
    return {
        "predictions": explanation.labels,
        "explanations": explanations,
        "method": explainer.describe(),
        "model": {"name": model.name, "version": model.version},
    }


def parse_parameters(body: Any) -> tuple[Any, Any]:
    """The request without its explanation parameters (for predict.parse_instances), and the
    class asked for. Parameters come beside `instances` or `features`, as for /predict."""
    if not (isinstance(body, dict) and ("instances" in body or "features" in body)):
        return body, None
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"expected an object, got {kind(parameters)}", field="parameters")
    for key in parameters:
        if key not in PARAMETERS:
            raise InvalidInput(
                f"unknown parameter; expected {', '.join(PARAMETERS)}", field=f"parameters.{key}"
            )
    wanted = parameters.get("class")
    if "class" in parameters and not isinstance(wanted, str | int | float):  # bool is an int
        raise InvalidInput(
            f"expected a class as /predict answers it (a number, a boolean) or as text, got "
            f"{kind(wanted)}",
            field="parameters.class",
        )
    return {k: v for k, v in body.items() if k != "parameters"}, wanted


def method_of(estimator: Any) -> tuple[str, str]:
    """(method, units) for a pipeline or estimator; 422 naming the kind when none is exact."""
    final = final_estimator(estimator)
    name = type(final).__name__
    found = METHODS.get(name)
    if found is None:
        raise NotExplainable(name, "no exact method is known for it")
    classes = len(getattr(final, "classes_", ()))
    if name == "GradientBoostingClassifier" and classes > 2:  # shap 0.49.1 refuses it itself
        raise NotExplainable(name, f"it has {classes} classes, and shap explains it binary only")
    method, units = found
    task_units = units if hasattr(final, "classes_") else "value"
    return method, task_units


def build(
    estimator: Any,
    n_features: int,
    background: Callable[[], Any],
    check_rows: Callable[[], Any] | None = None,
) -> Explainer:
    """A fitted pipeline's explainer; `background()` gives its background rows as the pipeline
    takes them (a linear model's baseline; trees carry their own, and are checked on
    `check_rows()`, the background unless given)."""
    method, units = method_of(estimator)
    steps = getattr(estimator, "steps", None)
    preprocess = estimator[:-1] if steps and len(steps) > 1 else None
    final = final_estimator(estimator)
    name = type(final).__name__
    if preprocess is None:
        groups = np.arange(n_features)
    else:
        try:
            sources = column_sources(preprocess, n_features)
        except Untraceable as e:
            raise NotExplainable(name, str(e)) from None
        groups = np.array([next(iter(s)) for s in sources])
    if native_categories(final):  # shap reads these splits as numeric thresholds: our own
        try:
            engine = Trees.of(final)
        except Unsupported as e:
            raise NotExplainable(name, str(e)) from e
    else:
        engine = _shap_explainer(method, final, preprocess, background)
    classes = [str(c) for c in final.classes_] if hasattr(final, "classes_") else []
    explainer = Explainer(method, units, final, preprocess, engine, groups, n_features, classes)
    if method == TREES:
        check_trees(explainer, (check_rows or background)())
    return explainer


def _shap_explainer(method: str, final: Any, preprocess: Any, background: Callable[[], Any]) -> Any:
    """shap's explainer of the final estimator: linear against the background, or its trees."""
    import shap  # here and only here: seconds to import, paid by the first explanation

    try:
        if method == LINEAR:
            Z = background()
            Z = Z if preprocess is None else preprocess.transform(Z)
            Z = np.asarray(Z.toarray() if hasattr(Z, "toarray") else Z, dtype=np.float64)
            return shap.LinearExplainer(final, Z)
        return shap.TreeExplainer(final, feature_perturbation="tree_path_dependent")
    except (NotImplementedError, ValueError) as e:  # shap's InvalidModelError is a ValueError
        raise NotExplainable(type(final).__name__, f"shap cannot explain it: {e}") from e


def native_categories(final: Any) -> bool:
    """A HistGradientBoosting that splits on categories itself (`categorical_features`)."""
    name = type(final).__name__
    return name.startswith("HistGradientBoosting") and bool(
        np.any(getattr(final, "is_categorical_", None))
    )


def final_estimator(estimator: Any) -> Any:
    """A pipeline's last step, or the estimator itself."""
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


class Untraceable(ValueError):
    """A preprocessing step whose output columns cannot each be traced to one input feature."""


def column_sources(step: Any, n_inputs: int) -> list[frozenset[int]]:
    """For each column a fitted preprocessing step outputs, the one input column it is made
    from; Untraceable, naming the step, where a column is not made from one."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if step is None or (isinstance(step, str) and step == "passthrough"):
        return [frozenset([j]) for j in range(n_inputs)]
    if isinstance(step, Pipeline):
        sources = [frozenset([j]) for j in range(n_inputs)]
        for _, part in step.steps:
            inner = column_sources(part, len(sources))
            sources = [frozenset().union(*(sources[i] for i in made)) for made in inner]
        return sources
    if isinstance(step, ColumnTransformer):
        width = max((s.stop for s in step.output_indices_.values()), default=0)
        out: list[frozenset[int]] = [frozenset() for _ in range(width)]
        indices = step._transformer_to_input_indices
        for part, transformer, _ in step.transformers_:
            where = step.output_indices_[part]
            if where.stop == where.start:
                continue
            inputs = list(indices[part])
            for k, made in enumerate(column_sources(transformer, len(inputs))):
                out[where.start + k] = frozenset(inputs[i] for i in made)
        return out
    return _leaf_sources(step, n_inputs)


def _leaf_sources(step: Any, n_inputs: int) -> list[frozenset[int]]:
    """A single transformer's columns by name: unchanged (a scaler, an imputer), or named
    `<input>_<value>` (OneHotEncoder) or `missingindicator_<input>` (an imputer's indicator)."""
    names = [str(n) for n in getattr(step, "feature_names_in_", [f"x{j}" for j in range(n_inputs)])]
    try:
        made = [str(n) for n in step.get_feature_names_out()]
    except Exception:  # a step that cannot name its columns: none can be traced
        raise Untraceable(
            f"its {type(step).__name__} step does not name its output columns, so they cannot "
            "be traced to input features (give it get_feature_names_out)"
        ) from None
    sources = []
    for column in made:
        matches = [
            j
            for j, name in enumerate(names)
            if column in (name, f"missingindicator_{name}") or column.startswith(f"{name}_")
        ]
        # The longest name wins: "plan_type_a" is plan_type's, not plan's.
        best = max(matches, key=lambda j: len(names[j]), default=None)
        if best is None:  # PCA's "pca0", PolynomialFeatures' "x0 x1": each made from several
            raise Untraceable(
                f"its {type(step).__name__} step mixes input features into the columns it makes "
                f"(such as {column!r}), so their attributions cannot be summed back into features"
            )
        sources.append(frozenset([best]))
    return sources


def background_file(frame: Any, seed: int) -> bytes:
    """background.json: up to BACKGROUND_ROWS training rows drawn at random (seeded), in feature
    order, a gap as null, each value as the API takes it."""
    rows = len(frame)
    chosen = np.sort(np.random.default_rng(seed).permutation(rows)[:BACKGROUND_ROWS])
    sample = frame.iloc[chosen]
    records = [[_json_value(v) for v in row] for row in sample.itertuples(index=False, name=None)]
    document = {"rows": records, "drawn_from": rows, "seed": seed}
    return json.dumps(document, separators=(",", ":")).encode()


def _json_value(value: Any) -> Any:
    """A table's value as JSON carries it: a gap (NaN, None, pd.NA) as null, numpy's as Python's."""
    import pandas as pd

    if pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def parse_background(data: bytes, where: str) -> list[Any]:
    """background.json read back: its rows, checked as a list of lists."""
    try:
        rows = json.loads(data)["rows"]
    except (ValueError, KeyError, TypeError) as e:
        raise IntegrityError(f"{where} {BACKGROUND_FILE} is not a background sample: {e}") from e
    if not (isinstance(rows, list) and rows and all(isinstance(r, list) for r in rows)):
        raise IntegrityError(f"{where} {BACKGROUND_FILE} holds no rows")
    return rows


class Explainers:
    """The explainers built so far, by version and digest (a few: a canary serves two)."""

    KEPT = 4

    def __init__(self) -> None:
        self._built: dict[tuple[str, str], Explainer] = {}
        self._lock = threading.Lock()  # one build at a time: shap's import is not re-entrant

    def get(self, model: LoadedModel, store: ModelStore, allow_pickle: bool) -> Explainer:
        """The served version's explainer, built on its first explanation."""
        key = (model.version, model.sha256)
        found = self._built.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._built.get(key)
            if found is None:
                found = _build_for(model, store, allow_pickle)
                built = dict(self._built) if len(self._built) < self.KEPT else {}
                built[key] = found
                self._built = built  # one assignment: readers see the old dict or the new
        return found


def _build_for(model: LoadedModel, store: ModelStore, allow_pickle: bool) -> Explainer:
    where = f"{store.uri} version {model.version}"
    estimator = model.estimator
    if model.runtime != "sklearn":  # onnxruntime or numpy answers; explanations read the model
        estimator = canonical_estimator(store, model.metadata, where, allow_pickle)

    def background() -> Any:
        if BACKGROUND_FILE not in model.metadata.files:
            raise NotExplainable(
                type(final_estimator(estimator)).__name__,
                f"version {model.version} has no background sample ({BACKGROUND_FILE}), which "
                "explaining a linear model needs: it was published before explanations. Train or "
                "package it again with this modelrun and publish the new version",
            )
        rows = parse_background(store.listed_file(model.metadata, BACKGROUND_FILE, where), where)
        return rows_to_input(rows, "background[{}]", model.pipeline_schema)

    def check_rows() -> Any:
        if BACKGROUND_FILE in model.metadata.files:
            return background()
        return warm_up_row(model.metadata, model.pipeline_schema)  # from before backgrounds

    return build(estimator, len(model.schema.names), background, check_rows)
