"""The estimators training/ can fit, by name or scikit-learn class path, each wrapped in the
pipeline it needs.

Numeric data is a float64 matrix: an imputer if asked, a scaler for linear models, the estimator.
Data with categories is a DataFrame: a ColumnTransformer one-hot encodes the categories (unknown
values ignored) for linear models and trees, or ordinal-encodes them for HistGradientBoosting's
native categorical support (unknown values treated as missing).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any

from training.errors import TrainingError


@dataclass(frozen=True)
class Spec:
    """Where an estimator class lives, its defaults, what it predicts, and its family: linear
    (scaled, one-hot), trees (one-hot) or hist (native categories and missing values)."""

    path: str
    defaults: dict[str, Any]
    task: str
    family: str

    @property
    def scale(self) -> bool:
        return self.family == "linear"

    @property
    def handles_missing(self) -> bool:
        return self.family == "hist"

    def create(self) -> Any:
        module, _, cls = self.path.rpartition(".")
        return getattr(importlib.import_module(module), cls)(**self.defaults)


ESTIMATORS = {
    "logistic_regression": Spec(
        "sklearn.linear_model.LogisticRegression", {"max_iter": 1000}, "classification", "linear"
    ),
    "random_forest": Spec("sklearn.ensemble.RandomForestClassifier", {}, "classification", "trees"),
    "gradient_boosting": Spec(
        "sklearn.ensemble.GradientBoostingClassifier", {}, "classification", "trees"
    ),
    "hist_gradient_boosting": Spec(
        "sklearn.ensemble.HistGradientBoostingClassifier", {}, "classification", "hist"
    ),
    "ridge": Spec("sklearn.linear_model.Ridge", {}, "regression", "linear"),
    "random_forest_regressor": Spec(
        "sklearn.ensemble.RandomForestRegressor", {}, "regression", "trees"
    ),
    "gradient_boosting_regressor": Spec(
        "sklearn.ensemble.GradientBoostingRegressor", {}, "regression", "trees"
    ),
    "hist_gradient_boosting_regressor": Spec(
        "sklearn.ensemble.HistGradientBoostingRegressor", {}, "regression", "hist"
    ),
}
REGRESSORS = [n for n, s in ESTIMATORS.items() if s.task == "regression"]


def spec(name: str) -> Spec:
    """Return the spec of a named estimator or of a scikit-learn class path
    (sklearn.svm.SVC), or say what can be named."""
    if name in ESTIMATORS:
        return ESTIMATORS[name]
    choices = f"choose one of: {', '.join(ESTIMATORS)}, or a class path such as sklearn.svm.SVC"
    if not name.startswith("sklearn."):
        raise TrainingError(
            f"unknown estimator {name!r}; only scikit-learn's estimators can be named ({choices}); "
            "fit anything else yourself and use `package`"
        )
    module, _, cls = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError, ValueError):
        raise TrainingError(f"scikit-learn has no class {name!r}; {choices}") from None
    from sklearn.base import ClassifierMixin, RegressorMixin

    kinds = [(ClassifierMixin, "classification"), (RegressorMixin, "regression")]
    tasks = [t for mixin, t in kinds if isinstance(found, type) and issubclass(found, mixin)]
    if not tasks:
        raise TrainingError(f"{name} is not a scikit-learn classifier or regressor")
    task = tasks[0]
    family = (
        "hist"
        if cls.startswith("HistGradientBoosting")
        else "trees"
        if module.startswith(("sklearn.ensemble", "sklearn.tree"))
        else "linear"
    )
    return Spec(name, {}, task, family)


def parse_param(text: str) -> tuple[str, Any]:
    """Parse KEY=VALUE, reading VALUE as JSON when it is JSON (numbers, true, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise TrainingError(f"parameter {text!r} must look like KEY=VALUE")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def build_pipeline(
    name: str,
    params: dict[str, Any],
    seed: int,
    impute: str | None,
    categories: list[str] | None = None,
    numbers: list[str] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Return an unfitted Pipeline and the estimator's full parameters. With `categories`
    (column names), the pipeline takes a DataFrame with those and the `numbers` columns."""
    from sklearn.pipeline import Pipeline

    chosen = spec(name)
    estimator = chosen.create()
    valid = estimator.get_params()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TrainingError(
            f"{name} has no parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    defaults: dict[str, Any] = {"random_state": seed} if "random_state" in valid else {}
    if categories and chosen.family == "hist":  # ordinal codes come first (see _columns)
        defaults["categorical_features"] = list(range(len(categories)))
    estimator.set_params(**{**defaults, **params})
    if categories:
        steps = [("columns", _columns(chosen, impute, categories, numbers or []))]
    else:
        steps = _number_steps(chosen, impute)
    steps.append(("model", estimator))
    return Pipeline(steps), estimator.get_params()


def _number_steps(chosen: Spec, impute: str | None) -> list[tuple[str, Any]]:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    steps: list[tuple[str, Any]] = []
    if impute:
        steps.append(("impute", SimpleImputer(strategy=impute)))
    if chosen.scale:
        steps.append(("scale", StandardScaler()))
    return steps


def _columns(chosen: Spec, impute: str | None, categories: list[str], numbers: list[str]) -> Any:
    """Categories encoded for the family (one-hot, or ordinal codes for HistGradientBoosting),
    numbers imputed and scaled as on their own. Missing categories are a value of their own."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    if chosen.family == "hist":
        encoder: Any = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan)
    else:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    number_steps = _number_steps(chosen, impute)
    parts: list[tuple[str, Any, list[str]]] = [("categories", encoder, categories)]
    if numbers:
        parts.append(
            ("numbers", Pipeline(number_steps) if number_steps else "passthrough", numbers)
        )
    return ColumnTransformer(parts, sparse_threshold=0.0, verbose_feature_names_out=False)
