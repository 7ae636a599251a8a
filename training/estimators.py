"""The estimators training/ can fit, by name, each wrapped in the pipeline it needs."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any

from training.errors import TrainingError


@dataclass(frozen=True)
class Spec:
    """Where an estimator class lives, its defaults, what it predicts, whether it needs scaling."""

    path: str
    defaults: dict[str, Any]
    task: str
    scale: bool

    def create(self) -> Any:
        module, _, cls = self.path.rpartition(".")
        return getattr(importlib.import_module(module), cls)(**self.defaults)


ESTIMATORS = {
    "logistic_regression": Spec(
        "sklearn.linear_model.LogisticRegression", {"max_iter": 1000}, "classification", True
    ),
    "random_forest": Spec("sklearn.ensemble.RandomForestClassifier", {}, "classification", False),
    "gradient_boosting": Spec(
        "sklearn.ensemble.GradientBoostingClassifier", {}, "classification", False
    ),
    "ridge": Spec("sklearn.linear_model.Ridge", {}, "regression", True),
    "random_forest_regressor": Spec(
        "sklearn.ensemble.RandomForestRegressor", {}, "regression", False
    ),
    "gradient_boosting_regressor": Spec(
        "sklearn.ensemble.GradientBoostingRegressor", {}, "regression", False
    ),
}


def spec(name: str) -> Spec:
    """Return the spec of a named estimator, or say which names exist."""
    if name not in ESTIMATORS:
        raise TrainingError(f"unknown estimator {name!r}; choose one of: {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name]


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
    name: str, params: dict[str, Any], seed: int, impute: str | None
) -> tuple[Any, dict[str, Any]]:
    """Return an unfitted Pipeline and the estimator's full parameters."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    chosen = spec(name)
    estimator = chosen.create()
    valid = estimator.get_params()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TrainingError(
            f"{name} has no parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    defaults = {"random_state": seed} if "random_state" in valid else {}
    estimator.set_params(**{**defaults, **params})
    steps: list[tuple[str, Any]] = []
    if impute:
        steps.append(("impute", SimpleImputer(strategy=impute)))
    if chosen.scale:
        steps.append(("scale", StandardScaler()))
    steps.append(("model", estimator))
    return Pipeline(steps), estimator.get_params()
