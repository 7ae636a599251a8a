"""Training data: the bundled Iris set, or a user's CSV, checked column by column."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.errors import TrainingError

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@dataclass(frozen=True)
class Dataset:
    """Numeric features in a fixed column order, and the target."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target: str
    source: str
    sha256: str

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])


def load_iris() -> Dataset:
    """Return Iris (shipped with scikit-learn) with species names as labels."""
    from sklearn.datasets import load_iris as sk_load_iris

    bunch = sk_load_iris()
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target_names)[bunch.target].astype(str)
    digest = hashlib.sha256(X.tobytes() + "\n".join(y).encode()).hexdigest()
    return Dataset(X, y, list(IRIS_FEATURES), "species", "sklearn.datasets.load_iris", digest)


def load_csv(path: Path, target: str, impute: str | None = None) -> Dataset:
    """Read a CSV whose feature columns are numeric; name every column that is not usable."""
    import pandas as pd

    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise TrainingError(f"data file {path} does not exist") from e
    except OSError as e:
        raise TrainingError(f"cannot read data file {path}: {e.strerror}") from e
    try:
        frame = pd.read_csv(io.BytesIO(raw))
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise TrainingError(f"{path} is not a readable CSV file: {e}") from e
    header = next(csv.reader(io.StringIO(raw.decode("utf-8-sig", "replace"))), [])
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise TrainingError(f"{path}: column name(s) {', '.join(repeated)} appear more than once")
    if target not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise TrainingError(f"{path} has no column {target!r}; its columns are: {columns}")
    if frame.empty:
        raise TrainingError(f"{path} has a header but no rows of data")
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise TrainingError(f"{path} has no feature columns besides the target {target!r}")
    non_numeric = [
        str(c)
        for c in features.columns
        if not pd.api.types.is_numeric_dtype(features[c]) or pd.api.types.is_bool_dtype(features[c])
    ]
    if non_numeric:
        raise TrainingError(
            f"{path}: feature column(s) {', '.join(non_numeric)} are not numeric; "
            "encode them as numbers before training (e.g. one-hot) or drop them"
        )
    missing_target = int(frame[target].isna().sum())
    if missing_target:
        raise TrainingError(f"{path}: target column {target!r} is empty in {missing_target} row(s)")
    X = features.to_numpy(dtype=np.float64)
    if np.isinf(X).any():
        bad = [str(c) for i, c in enumerate(features.columns) if np.isinf(X[:, i]).any()]
        raise TrainingError(f"{path}: column(s) {', '.join(bad)} hold infinite values")
    with_missing = [str(c) for c in features.columns if features[c].isna().any()]
    if with_missing and impute is None:
        raise TrainingError(
            f"{path}: column(s) {', '.join(with_missing)} have missing values; "
            "fill them, or pass --impute mean|median to add an imputing step to the pipeline"
        )
    y = frame[target].to_numpy()
    if y.dtype == object:
        y = y.astype(str)
    return Dataset(
        X,
        y,
        [str(c) for c in features.columns],
        target,
        str(path),
        hashlib.sha256(raw).hexdigest(),
    )
