"""The churn model a user fits in a notebook (training.churn's data, a HistGradientBoosting
pipeline), as the tests of packaging, serving, batch scoring and tracking bring it."""

from __future__ import annotations

import json
from typing import Any

TARGET = "churned"


def notebook_pipeline(frame: Any, unknown_plan: str = "error") -> Any:
    """What a user fits in a notebook: impute and one-hot inside a ColumnTransformer, then
    HistGradientBoosting. Unknown countries are ignored; unknown plans are an error."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    columns = ColumnTransformer(
        [
            ("country", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["country"]),
            ("plan", OneHotEncoder(handle_unknown=unknown_plan, sparse_output=False), ["plan"]),
            ("numbers", make_pipeline(SimpleImputer(strategy="median")),
             ["seats", "monthly_spend", "tenure_months", "has_discount"]),
        ]
    )  # fmt: skip
    pipeline = Pipeline([("columns", columns), ("model", HistGradientBoostingClassifier(
        max_iter=60, random_state=0))])  # fmt: skip
    return pipeline.fit(frame.drop(columns=TARGET), frame[TARGET])


def rows_of(frame: Any) -> list[dict[str, Any]]:
    """Rows as a client sends them: JSON objects, null where a value is missing."""
    return list(json.loads(frame.to_json(orient="records")))
