"""Train, evaluate and publish scikit-learn models into modelrun's versioned store.

In a notebook: `training.package(pipeline, X, y, out="artifacts/churn", name="churn")` writes the
artifact `python -m training publish` uploads (see training/packager.py).
"""

from __future__ import annotations

from typing import Any


def package(estimator: Any, X: Any, y: Any, out: Any, name: str = "model", **options: Any) -> Any:
    """Package a fitted scikit-learn estimator or pipeline; see training.packager.package."""
    from function.core.threads import native_threads_limited
    from training.packager import package as run  # pandas and scikit-learn load on use only

    with native_threads_limited():  # as `python -m training` sizes them, for this call only
        return run(estimator, X, y, out, name, **options)
