"""scikit-learn's diabetes data as a user's CSV: a model that is not Iris (a regressor, ten
features by name)."""

from __future__ import annotations

import csv
from pathlib import Path


def diabetes_csv(folder: Path) -> Path:
    """scikit-learn's diabetes data (ten named features, a numeric target) as a user's CSV."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(as_frame=True).frame
    path = folder / "diabetes.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(data.columns)
        writer.writerows(data.itertuples(index=False))
    return path
