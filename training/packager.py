"""Package a model the user fitted themselves into the same artifact `train` writes.

Any fitted scikit-learn estimator or pipeline (an object, or a joblib or skops file) is checked
against the data it is given: the same columns it was fitted with, scikit-learn's own classes only
(the service imports nothing else), then evaluated on that data and gated. Its feature schema is
inferred from the data and probed on the model (training/schema.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from function.core.artifact import TRUSTED_LIBRARIES, TRUSTED_PREFIXES
from function.core.store import check_version_id, utc_now
from training.data import Dataset
from training.errors import TrainingError
from training.progress import step
from training.train import (
    Gate,
    apply_gates,
    describe_inputs,
    extra_files,
    git_commit,
    holdout_metrics,
    jsonable,
    library_versions,
    parse_gate,
    write_artifact,
)


def package(
    estimator: Any,
    X: Any,
    y: Any,
    out: str | Path,
    name: str = "model",
    gates: Sequence[Gate | str] = (),
    fmt: str = "joblib",
    onnx: bool = True,
    report: bool = True,
) -> dict[str, Any]:
    """Package a fitted estimator, evaluated on X and y (a DataFrame or a matrix, and labels or
    values), into `out`; return the metadata written. Gates are as `train --gate` takes them
    ("accuracy>=0.8"). Raises TrainingError naming what is wrong, GateFailed when a gate refuses
    it."""
    import pandas as pd

    checked = [parse_gate(g) if isinstance(g, str) else g for g in gates]

    if isinstance(X, pd.DataFrame):
        frame = X.reset_index(drop=True)
    else:
        matrix = np.asarray(X)
        if matrix.ndim != 2:
            raise TrainingError(f"X must be a table (2 dimensions), got shape {matrix.shape}")
        names = getattr(estimator, "feature_names_in_", None)
        if names is None or len(names) != matrix.shape[1]:
            names = [f"x{i}" for i in range(matrix.shape[1])]
        frame = pd.DataFrame(matrix, columns=[str(n) for n in names])
    target = np.asarray(y)
    if target.ndim != 1 or len(target) != len(frame):
        raise TrainingError(
            f"y must hold one value per row of X ({len(frame)}), got shape {target.shape}"
        )
    digest = hashlib.sha256(
        pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes() + target.tobytes()
    ).hexdigest()
    data = Dataset(frame, target, str(getattr(y, "name", None) or "y"), "in-memory data", digest)
    model, metadata, extra = build_package(
        estimator, data, name, checked, onnx, "in-memory object", report
    )
    return write_artifact(Path(out), model, metadata, fmt, extra)


def load_estimator(path: Path) -> Any:
    """Load a joblib (pickle) or skops file; TrainingError when it does not load."""
    if not path.is_file():
        raise TrainingError(f"model file {path} does not exist")
    try:
        if path.suffix == ".skops":
            import skops.io

            types = skops.io.get_untrusted_types(file=path)
            foreign = [t for t in types if not t.startswith(TRUSTED_PREFIXES)]
            if foreign:
                raise TrainingError(
                    f"{path} holds types outside scikit-learn/numpy/scipy: {', '.join(foreign)}"
                )
            return skops.io.load(path, trusted=types)
        import joblib

        return joblib.load(path)
    except TrainingError:
        raise
    except Exception as e:  # unpickling runs arbitrary code: any failure means "not loadable"
        raise TrainingError(
            f"{path} does not load as a joblib or skops file: {type(e).__name__}: {e}"
        ) from e


def build_package(
    estimator: Any,
    data: Dataset,
    name: str,
    gates: Sequence[Gate],
    onnx: bool,
    origin: str,
    report: bool = True,
) -> tuple[Any, dict[str, Any], dict[str, bytes]]:
    """Check, evaluate and gate; return the estimator, its metadata and the artifact's other
    files, for write_artifact."""
    check_version_id(name)
    task = _task(estimator)
    frame = _columns_it_was_fitted_with(estimator, data.frame)
    cv_gates = [str(g) for g in gates if g.metric.startswith("cv_")]
    if cv_gates:
        raise TrainingError(
            f"gate(s) {', '.join(cv_gates)} need cross-validation, which refits the model; "
            "package evaluates the fitted model on the data given: use hold-out metrics"
        )
    frame_input = hasattr(estimator, "feature_names_in_")
    numeric = data.numeric
    X = frame if frame_input else frame.to_numpy(dtype=np.float64 if numeric else object)
    try:
        with np.errstate(all="ignore"), step(f"predicting the {len(X)} rows given"):
            predicted = estimator.predict(X)
    except Exception as e:
        raise TrainingError(
            f"the model cannot predict the data given: {type(e).__name__}: {e}"
        ) from e
    if task == "classification":
        unknown = sorted(set(map(str, data.y)) - {str(c) for c in estimator.classes_})
        if unknown:
            raise TrainingError(
                f"target {data.target!r} holds label(s) the model does not predict: "
                f"{', '.join(unknown[:10])}; is it the column the model was fitted on?"
            )
        truth = np.asarray(data.y).astype(estimator.classes_.dtype)
    else:
        truth = np.asarray(data.y, dtype=np.float64)
    metrics = holdout_metrics(task, truth, predicted)
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    metadata = {
        "name": name,
        "version": None,
        "created_at": utc_now(),
        "task": task,
        "estimator": type(final).__name__,
        "estimator_name": "packaged",
        "pipeline": [s for s, _ in estimator.steps] if hasattr(estimator, "steps") else ["model"],
        "params": jsonable(final.get_params()),
        **describe_inputs(estimator, frame, task),
        # Packaged models are evaluated on the data given: the "holdout" is that data.
        "metrics": {"holdout": metrics, "cv": {}, "evaluated_on": "the data given to package"},
        "dataset": {
            "source": data.source,
            "target": data.target,
            "rows": data.rows,
            "test_rows": data.rows,
            "sha256": data.sha256,
        },
        "packaged": {"from": origin},
        "gates": [str(g) for g in gates],
        "versions": library_versions(),
        "git_commit": git_commit(),
    }
    apply_gates(gates, metadata)
    extra, records = extra_files(estimator, metadata, X, X, truth, 0, report, onnx)
    return estimator, {**metadata, **records}, extra  # built once, from the parts


def _task(estimator: Any) -> str:
    """classification or regression; refuse what is not a fitted scikit-learn estimator."""
    from sklearn.base import BaseEstimator, is_classifier, is_regressor
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not isinstance(estimator, BaseEstimator):
        kind = f"{type(estimator).__module__}.{type(estimator).__qualname__}"
        raise TrainingError(f"this is a {kind}, not a scikit-learn estimator or pipeline")
    foreign = sorted(set(_foreign_parts(estimator)))
    if foreign:
        raise TrainingError(
            f"the model holds {', '.join(foreign)}, which is not part of scikit-learn; the "
            "service loads scikit-learn's own classes and functions only"
        )
    try:
        check_is_fitted(estimator)
    except NotFittedError as e:
        raise TrainingError("the model is not fitted: fit it before packaging it") from e
    if is_classifier(estimator):
        return "classification"
    if is_regressor(estimator):
        return "regression"
    raise TrainingError(
        f"{type(estimator).__name__} is neither a classifier nor a regressor; package the "
        "estimator (or the pipeline ending in it) that predicts"
    )


def _foreign_parts(value: Any) -> list[str]:
    """Classes and functions in an estimator's parameters that do not come from scikit-learn
    (or numpy/scipy functions)."""
    from sklearn.base import BaseEstimator

    if isinstance(value, BaseEstimator):
        module, cls = type(value).__module__, type(value).__name__
        found = [] if module.startswith("sklearn.") else [f"{module}.{cls}"]
        for param in value.get_params(deep=False).values():
            found += _foreign_parts(param)
        return found
    if isinstance(value, (list, tuple)):
        return [part for item in value for part in _foreign_parts(item)]
    if callable(value) and not isinstance(value, type):
        module = getattr(value, "__module__", None) or ""
        # e.g. FunctionTransformer(np.log1p): a function of numpy's is as safe as its classes
        if module.split(".")[0] not in TRUSTED_LIBRARIES:
            return [f"{module}.{getattr(value, '__qualname__', repr(value))}"]
    return []


def _columns_it_was_fitted_with(estimator: Any, frame: Any) -> Any:
    """The data's columns in the model's order; refuse other columns than it was fitted with."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        fitted = getattr(estimator, "n_features_in_", frame.shape[1])
        if fitted != frame.shape[1]:
            raise TrainingError(
                f"the model was fitted on {fitted} columns, the data has {frame.shape[1]} "
                f"besides the target ({', '.join(map(str, frame.columns))})"
            )
        return frame
    names = [str(n) for n in names]
    missing = [n for n in names if n not in frame.columns]
    extra = [str(c) for c in frame.columns if str(c) not in names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the data lacks {', '.join(missing)}")
        if extra:
            parts.append(f"the model was not fitted with {', '.join(extra)}")
        raise TrainingError(
            f"the model was fitted with other columns than the data has: {'; '.join(parts)}"
        )
    return frame[names]
