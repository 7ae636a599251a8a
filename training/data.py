"""Training data: the bundled Iris set, or a user's CSV, checked column by column.

Feature columns may be numbers, whole numbers, booleans or text (categories), with missing values;
the target may not be missing.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import TrainingError

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@dataclass(frozen=True)
class Dataset:
    """Feature columns in a fixed order (a DataFrame), and the target."""

    frame: Any
    y: np.ndarray
    target: str
    source: str
    sha256: str

    @property
    def feature_names(self) -> list[str]:
        return [str(c) for c in self.frame.columns]

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def numeric(self) -> bool:
        """Every feature is a number (not a boolean): the pipeline takes a float64 matrix."""
        import pandas as pd

        types = pd.api.types
        return all(
            types.is_numeric_dtype(t) and not types.is_bool_dtype(t) for t in self.frame.dtypes
        )

    def missing(self) -> list[str]:
        """The feature columns with missing values."""
        return [str(c) for c in self.frame.columns if self.frame[c].isna().any()]


def load_iris() -> Dataset:
    """Return Iris (shipped with scikit-learn) with species names as labels."""
    import pandas as pd
    from sklearn.datasets import load_iris as sk_load_iris

    bunch = sk_load_iris()
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target_names)[bunch.target].astype(str)
    digest = hashlib.sha256(X.tobytes() + "\n".join(y).encode()).hexdigest()
    frame = pd.DataFrame(X, columns=IRIS_FEATURES)
    return Dataset(frame, y, "species", "sklearn.datasets.load_iris", digest)


def load_csv(path: Path, target: str) -> Dataset:
    """Read a CSV: any feature columns, a target without gaps; name every column not usable."""
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
    missing_target = int(frame[target].isna().sum())
    if missing_target:
        raise TrainingError(f"{path}: target column {target!r} is empty in {missing_target} row(s)")
    empty = [str(c) for c in features.columns if features[c].isna().all()]
    if empty:
        raise TrainingError(f"{path}: column(s) {', '.join(empty)} have no values at all")
    numbers = features.select_dtypes("number")
    infinite = [str(c) for c in numbers.columns if np.isinf(numbers[c].to_numpy(float)).any()]
    if infinite:
        raise TrainingError(f"{path}: column(s) {', '.join(infinite)} hold infinite values")
    y = frame[target].to_numpy()
    if y.dtype.kind in "OUT":  # text labels (pandas' str dtype too)
        y = y.astype(str)
    return Dataset(features, y, target, str(path), hashlib.sha256(raw).hexdigest())
