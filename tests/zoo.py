"""The model zoo of the conformance matrix (tests/test_conformance.py): the models people bring,
each made the two ways a user makes one, on real public tables.

Tables: Palmer penguins (the `palmerpenguins` package: text with gaps, numbers with gaps, three
species), the cars of the Vega datasets (`vega-datasets`: a cylinder count rare enough that a
hold-out lacks it, horsepower with gaps), and the generated churn table (training/churn.py).

- `package`: a pipeline fitted as in a notebook on a training split, then packaged on a hold-out
  that lacks a category the model knows (`holdout_lacks`), as people do.
- `train`: `python -m training train` on the table written as CSV.

Each entry declares what every path answers (`PATHS`): "exact" (equal to the artifact's own
predict/predict_proba on the same rows, to the bit), "tolerance" (ONNX, within the tolerance its
metadata states), or a refusal (`Refused`), with the reason the README's support table prints.
The matrix checks every declaration; `support_table()` renders them, and a test keeps the
README's copy equal to it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

# The paths a prediction can take, in the support table's order, with its column's heading.
PATHS = {
    "rows": "rows",
    "objects": "objects",
    "vertex": "Vertex",
    "v2_json": "v2 JSON",
    "v2_binary": "v2 binary",
    "batch_csv": "batch CSV",
    "batch_jsonl": "batch JSONL",
    "batch_tab": "Batch tab",
    "shadow": "shadow",
    "canary": "canary",
    "onnx": "ONNX",
    "numpy": "numpy",
}
HOLDOUT_ROWS = 60  # rows each path scores: every gap and category of the hold-out


@dataclass(frozen=True)
class Refused:
    """A cell that cannot work: what the support table says, and the words of the reason the
    artifact or the service gives (checked)."""

    text: str
    because: str


# Why ONNX does not serve a model: training/onnx_export.py's reasons, in metadata "onnx".
NAMED_COLUMNS = Refused(
    "ONNX: not exported, the pipeline takes named columns (a DataFrame); scikit-learn serves it",
    "takes named columns",
)
NO_IMPUTER = Refused(
    "ONNX: not exported, onnxruntime has no float64 imputer; scikit-learn serves it",
    "no implementation of the Imputer operator",
)


# Why the numpy runtime does not serve a model: training/numpy_export.py's reasons, in "numpy".
NOT_HGB = Refused(
    "numpy: not compiled, it compiles HistGradientBoosting only; scikit-learn serves it",
    "compiles HistGradientBoosting models",
)
NATIVE_SPLITS = Refused(
    "numpy: not compiled, native categorical splits; scikit-learn serves it",
    "splits on categories natively",
)
ONNX_SERVES = Refused(
    "numpy: not compiled, the verified ONNX export serves it",
    "the verified ONNX export serves it",
)


def penguins() -> Any:
    import palmerpenguins

    return palmerpenguins.load_penguins()


def cars() -> Any:
    """The Vega cars, with the cylinder count as text ("5 cylinders" is in 3 rows of 406) and the
    model year as a number; rows without a mileage dropped (it is a target)."""
    import pandas as pd

    frame = pd.read_json(resources.files("vega_datasets") / "_data" / "cars.json")
    frame = frame.dropna(subset=["Miles_per_Gallon"]).reset_index(drop=True)
    frame["cylinders"] = frame.pop("Cylinders").map("{} cylinders".format)
    frame["year"] = pd.to_datetime(frame.pop("Year")).dt.year
    return frame.drop(columns=["Name"])


def churn() -> Any:
    from training.churn import churn as make

    return make(1200, seed=5)


def typed_churn() -> Any:
    """Churn with the dtypes pandas users reach for: `category`, nullable `Int64` and
    `boolean`, with gaps in each."""
    frame = churn()
    rng = np.random.default_rng(3)
    frame["plan"] = frame["plan"].astype("category")
    seats = frame["seats"].astype("Int64")
    seats[rng.random(len(frame)) < 0.05] = None
    frame["seats"] = seats
    discount = frame["has_discount"].astype("boolean")
    discount[rng.random(len(frame)) < 0.05] = None
    frame["has_discount"] = discount
    return frame


TABLES: dict[str, tuple[Callable[[], Any], str]] = {
    "penguins": (penguins, "species"),
    "cars": (cars, "Origin"),
    "cars_mpg": (cars, "Miles_per_Gallon"),
    "churn": (churn, "churned"),
    "typed_churn": (typed_churn, "churned"),
}


@functools.cache
def table(name: str) -> Any:
    make, _ = TABLES[name]
    return make()


# --- pipelines as a user fits them --------------------------------------------------------------


def _mixed(categories: list[str], numbers: list[str], encoder: Any, scale: bool) -> Any:
    """Impute and encode the categories, impute (and scale) the numbers, in a ColumnTransformer."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [SimpleImputer(strategy="median")] + ([StandardScaler()] if scale else [])
    return ColumnTransformer(
        [
            ("categories", make_pipeline(SimpleImputer(strategy="most_frequent"), encoder),
             categories),
            ("numbers", make_pipeline(*steps), numbers),
        ]
    )  # fmt: skip


def _onehot() -> Any:
    from sklearn.preprocessing import OneHotEncoder

    return OneHotEncoder(handle_unknown="ignore", sparse_output=False)


def _ordinal() -> Any:
    from sklearn.preprocessing import OrdinalEncoder

    return OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)


PENGUIN_NUMBERS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
CAR_NUMBERS = ["Displacement", "Horsepower", "Weight_in_lbs", "Acceleration", "year"]
CHURN_NUMBERS = ["seats", "monthly_spend", "tenure_months", "has_discount"]


def logistic_onehot() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    columns = _mixed(["island", "sex"], PENGUIN_NUMBERS, _onehot(), scale=True)
    return Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=2000))])


def forest_ordinal() -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    columns = _mixed(["cylinders"], CAR_NUMBERS, _ordinal(), scale=False)
    forest = RandomForestClassifier(n_estimators=40, random_state=0)
    return Pipeline([("columns", columns), ("model", forest)])


def hgb_onehot(categories: list[str], numbers: list[str], regressor: bool = False) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline

    model = (HistGradientBoostingRegressor if regressor else HistGradientBoostingClassifier)(
        max_iter=40, random_state=0
    )
    return Pipeline([("columns", _mixed(categories, numbers, _onehot(), False)), ("model", model)])


def hgb_native() -> Any:
    """HistGradientBoosting's own categories: pandas `category` columns, gaps left to it."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=40, categorical_features="from_dtype", random_state=0
    )


def numbers_only(estimator: Any, scale: bool = True, impute: bool = True) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps = ([SimpleImputer()] if impute else []) + ([StandardScaler()] if scale else [])
    return make_pipeline(*steps, estimator)


def typed_pipeline() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    columns = _mixed(["country", "plan"], CHURN_NUMBERS, _onehot(), scale=True)
    return Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=2000))])


# --- the zoo --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One model of the zoo: how it is made, on which table, and what each path answers."""

    name: str
    kind: str  # the support table's words
    table: str
    made_by: str  # "package" or "train"
    fit: Callable[[], Any] | None = None  # package: the unfitted pipeline
    columns: tuple[str, ...] | None = None  # package: the features it is fitted on
    matrix: bool = False  # package: fitted on a float64 matrix, not a DataFrame
    native_categories: tuple[str, ...] = ()  # package: columns made pandas `category`
    holdout_lacks: tuple[str, str] | None = None  # (column, value) absent from the hold-out
    train_args: tuple[str, ...] = ()  # train: the estimator and its flags
    complete_rows: bool = False  # rows with a gap in `columns` dropped (a model with no imputer)
    # path -> "exact" (the default), "tolerance" (ONNX) or why it is refused
    expect: dict[str, str | Refused] = field(default_factory=dict)

    def expected(self, path: str) -> str | Refused:
        return self.expect.get(path, "exact")


ZOO = [
    Entry(
        "logistic_onehot",
        "logistic regression, one-hot + imputers (3 classes)",
        "penguins",
        "package",
        logistic_onehot,
        ("island", "sex", *PENGUIN_NUMBERS),
        expect={"onnx": NAMED_COLUMNS, "numpy": NOT_HGB},
    ),
    Entry(
        "forest_ordinal",
        "random forest, ordinal encoding (3 classes)",
        "cars",
        "package",
        forest_ordinal,
        ("cylinders", *CAR_NUMBERS),
        holdout_lacks=("cylinders", "5 cylinders"),
        expect={"onnx": NAMED_COLUMNS, "numpy": NOT_HGB},
    ),
    Entry(
        "hgb_binary",
        "HistGradientBoosting, one-hot + imputers (binary)",
        "churn",
        "package",
        lambda: hgb_onehot(["country", "plan"], CHURN_NUMBERS),
        ("country", "plan", *CHURN_NUMBERS),
        holdout_lacks=("country", "LU"),
        expect={"onnx": NAMED_COLUMNS},
    ),
    Entry(
        "hgb_multiclass",
        "HistGradientBoosting, one-hot + imputers (3 classes)",
        "penguins",
        "package",
        lambda: hgb_onehot(["island", "sex"], PENGUIN_NUMBERS),
        ("island", "sex", *PENGUIN_NUMBERS),
        expect={"onnx": NAMED_COLUMNS},
    ),
    Entry(
        "hgb_native",
        "HistGradientBoosting, native categories (`category` dtype)",
        "penguins",
        "package",
        hgb_native,
        ("island", "sex", *PENGUIN_NUMBERS),
        native_categories=("island", "sex"),
        expect={"onnx": NAMED_COLUMNS, "numpy": NATIVE_SPLITS},
    ),
    Entry(
        "hgb_regressor",
        "HistGradientBoosting regressor, one-hot + imputers",
        "cars_mpg",
        "package",
        lambda: hgb_onehot(["cylinders", "Origin"], CAR_NUMBERS, regressor=True),
        ("cylinders", "Origin", *CAR_NUMBERS),
        holdout_lacks=("cylinders", "5 cylinders"),
        expect={"onnx": NAMED_COLUMNS},
    ),
    Entry(
        "ridge",
        "ridge regression, numbers (a matrix)",
        "cars_mpg",
        "package",
        lambda: numbers_only(_ridge(), impute=False),
        tuple(CAR_NUMBERS),
        matrix=True,
        complete_rows=True,
        expect={"onnx": "tolerance", "numpy": ONNX_SERVES},
    ),
    Entry(
        "svc",
        "SVC without probabilities, numbers (a matrix)",
        "penguins",
        "package",
        lambda: numbers_only(_svc(), impute=False),
        tuple(PENGUIN_NUMBERS),
        matrix=True,
        complete_rows=True,
        expect={"onnx": "tolerance", "numpy": ONNX_SERVES},
    ),
    Entry(
        "knn",
        "k-nearest neighbours, numbers (a DataFrame)",
        "penguins",
        "package",
        lambda: numbers_only(_knn()),
        tuple(PENGUIN_NUMBERS),
        expect={"onnx": NAMED_COLUMNS, "numpy": NOT_HGB},
    ),
    Entry(
        "naive_bayes",
        "Gaussian naive Bayes, numbers with gaps (a matrix)",
        "cars",
        "package",
        lambda: numbers_only(_naive_bayes(), scale=False),
        tuple(CAR_NUMBERS),
        matrix=True,
        expect={"onnx": NO_IMPUTER, "numpy": NOT_HGB},
    ),
    Entry(
        "typed_frame",
        "one-hot + imputers on `category`, `Int64`, `boolean` dtypes",
        "typed_churn",
        "package",
        typed_pipeline,
        ("country", "plan", *CHURN_NUMBERS),
        holdout_lacks=("country", "LU"),
        expect={"onnx": NAMED_COLUMNS, "numpy": NOT_HGB},
    ),
    Entry(
        "train_logistic",
        "logistic regression (one-hot, imputed)",
        "penguins",
        "train",
        train_args=("--estimator", "logistic_regression", "--impute", "median"),
        expect={"onnx": NAMED_COLUMNS, "numpy": NOT_HGB},
    ),
    Entry(
        "train_forest",
        "random forest (one-hot, imputed)",
        "cars",
        "train",
        train_args=(
            "--estimator",
            "random_forest",
            "--impute",
            "median",
            "--param",
            "n_estimators=40",
        ),
        expect={"onnx": NAMED_COLUMNS, "numpy": NOT_HGB},
    ),
    Entry(
        "train_hgb",
        "HistGradientBoosting, native categories (3 classes)",
        "penguins",
        "train",
        train_args=("--estimator", "hist_gradient_boosting", "--param", "max_iter=40"),
        expect={"onnx": NAMED_COLUMNS, "numpy": NATIVE_SPLITS},
    ),
    Entry(
        "train_hgb_binary",
        "HistGradientBoosting, native categories (binary)",
        "churn",
        "train",
        train_args=("--estimator", "hist_gradient_boosting", "--param", "max_iter=40"),
        expect={"onnx": NAMED_COLUMNS, "numpy": NATIVE_SPLITS},
    ),
    Entry(
        "train_hgb_regressor",
        "HistGradientBoosting regressor (native categories)",
        "cars_mpg",
        "train",
        train_args=("--estimator", "hist_gradient_boosting_regressor", "--param", "max_iter=40"),
        expect={"onnx": NAMED_COLUMNS, "numpy": NATIVE_SPLITS},
    ),
    Entry(
        "train_svc",
        "SVC without probabilities (`sklearn.svm.SVC`; one-hot, imputed)",
        "penguins",
        "train",
        train_args=("--estimator", "sklearn.svm.SVC", "--impute", "median"),
        expect={"onnx": NAMED_COLUMNS, "numpy": NOT_HGB},
    ),
    Entry(
        "train_ridge",
        "ridge regression, numbers",
        "cars_mpg",
        "train",
        columns=tuple(CAR_NUMBERS),
        complete_rows=True,
        train_args=("--estimator", "ridge"),
        expect={"onnx": "tolerance", "numpy": ONNX_SERVES},
    ),
    Entry(
        "train_knn",
        "k-nearest neighbours (`sklearn.neighbors.KNeighborsClassifier`), numbers",
        "penguins",
        "train",
        columns=tuple(PENGUIN_NUMBERS),
        train_args=("--estimator", "sklearn.neighbors.KNeighborsClassifier", "--impute", "median"),
        expect={"onnx": NO_IMPUTER, "numpy": NOT_HGB},
    ),
]


def _ridge() -> Any:
    from sklearn.linear_model import Ridge

    return Ridge()


def _svc() -> Any:
    from sklearn.svm import SVC

    return SVC()


def _knn() -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier()


def _naive_bayes() -> Any:
    from sklearn.naive_bayes import GaussianNB

    return GaussianNB()


def entry(name: str) -> Entry:
    return next(e for e in ZOO if e.name == name)


# --- made, as a user makes them ----------------------------------------------------------------


@dataclass(frozen=True)
class Made:
    """A model made into an artifact, and the rows every path scores with what the artifact's
    own pipeline answers for them."""

    artifact: Path
    rows: Any  # a DataFrame of the features, as the user holds them (their dtypes, gaps)
    extra: Any  # the same rows' other columns (the target): a batch file carries them too
    X: Any  # the rows as the pipeline takes them
    labels: list[Any]
    probabilities: np.ndarray | None


def make(item: Entry, tmp: Path) -> Made:
    """The artifact of one zoo entry, written under tmp."""
    import joblib

    frame = table(item.table)
    _, target = TABLES[item.table]
    if item.complete_rows:
        frame = frame.dropna(subset=list(item.columns or ())).reset_index(drop=True)
    out = tmp / item.name
    if item.made_by == "package":
        X_fit, X_hold, y_fit, y_hold = _split(item, frame, target)
        from function.core.threads import native_threads_limited
        from training.packager import package

        estimator = item.fit()  # type: ignore[misc]
        with native_threads_limited():  # as training fits (one OpenMP thread: 2 shared cores)
            estimator.fit(X_fit.to_numpy(np.float64) if item.matrix else X_fit, y_fit)

        package(estimator, X_hold, y_hold, out, name=item.name.replace("_", "-"), report=False)
        rows = X_hold.iloc[:HOLDOUT_ROWS].reset_index(drop=True)
        extra = y_hold.iloc[:HOLDOUT_ROWS].reset_index(drop=True).to_frame()
    else:
        csv = tmp / f"{item.name}.csv"
        columns = [*item.columns, target] if item.columns else list(frame.columns)
        frame[columns].to_csv(csv, index=False)
        from training.__main__ import main
        from training.data import load_csv

        code = main(["train", "--data", str(csv), "--target", target, "--cv", "2",
                     "--no-report", "--name", item.name.replace("_", "-"), *item.train_args,
                     "--out", str(out)])  # fmt: skip
        assert code == 0, item.name
        data = load_csv(csv, target)
        rows = data.frame.iloc[:HOLDOUT_ROWS].reset_index(drop=True)
        extra = frame[[target]].iloc[:HOLDOUT_ROWS].reset_index(drop=True)
    pipeline = joblib.load(out / "model.joblib")
    # A matrix row-major, as every path builds it: BLAS rounds a column-major matrix (what
    # DataFrame.to_numpy gives) differently in the last bit, as it does another batch size.
    X = (
        rows
        if hasattr(pipeline, "feature_names_in_")
        else np.ascontiguousarray(rows.to_numpy(np.float64))
    )
    probabilities = pipeline.predict_proba(X) if hasattr(pipeline, "predict_proba") else None
    return Made(out, rows, extra, X, pipeline.predict(X).tolist(), probabilities)


def _split(item: Entry, frame: Any, target: str) -> tuple[Any, Any, Any, Any]:
    """A training split and a hold-out; the hold-out lacks `holdout_lacks` when set."""
    from sklearn.model_selection import train_test_split

    X = frame[list(item.columns or ())].copy()
    for column in item.native_categories:
        X[column] = X[column].astype("category")
    y = frame[target]
    X_fit, X_hold, y_fit, y_hold = train_test_split(X, y, test_size=0.3, random_state=1)
    if item.holdout_lacks:
        column, value = item.holdout_lacks
        moved = X_hold[column] == value
        X_fit, y_fit = _concat(X_fit, X_hold[moved]), _concat(y_fit, y_hold[moved])
        X_hold, y_hold = X_hold[~moved], y_hold[~moved]
        assert (X_fit[column] == value).any()
    return X_fit, X_hold, y_fit, y_hold


def _concat(a: Any, b: Any) -> Any:
    import pandas as pd

    return pd.concat([a, b])


def support_table() -> str:
    """The README's support table: every entry's declared answer on every path (✓ exact, ≈
    within the stated tolerance, a number: refused, for the reason of that footnote)."""
    reasons: list[str] = []
    head = ["model", "made by", *PATHS.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for item in ZOO:
        cells = [item.kind, f"`{item.made_by}`"]
        for path in PATHS:
            said = item.expected(path)
            if isinstance(said, Refused):
                if said.text not in reasons:
                    reasons.append(said.text)
                cells.append(f"no ({reasons.index(said.text) + 1})")
            else:
                cells.append({"exact": "✓", "tolerance": "≈"}[said])
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"({n}) {text}" for n, text in enumerate(reasons, 1)]
    return "\n".join(lines) + "\n\n" + "\n".join(f"{note}  " for note in notes).rstrip() + "\n"


if __name__ == "__main__":
    print(support_table(), end="")
