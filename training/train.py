"""Fit a pipeline, judge it on held-out data and by cross-validation, and write the artifact."""

from __future__ import annotations

import io
import json
import math
import operator
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from function.core.artifact import (
    METADATA_FILE,
    MODEL_FILES,
    NUMPY_FILE,
    ONNX_FILE,
    encode_metadata,
    label_type,
    sha256_hex,
)
from function.core.drift import BASELINE_FILE, build_baseline
from function.core.explain import (
    BACKGROUND_FILE,
    BACKGROUND_ROWS,
    background_file,
    parse_background,
)
from function.core.metadata import SCHEMA_VERSION as METADATA_SCHEMA
from function.core.predict import rows_to_input
from function.core.schema import from_metadata
from function.core.store import utc_now
from training.data import Dataset
from training.errors import GateFailed, TrainingError
from training.estimators import REGRESSORS, build_pipeline, spec
from training.progress import step
from training.schema import infer_schema

# metric name -> (scorer for cross_validate, sign to turn the scorer back into the metric)
SCORERS = {
    "classification": {
        "accuracy": ("accuracy", 1),
        "balanced_accuracy": ("balanced_accuracy", 1),
        "f1_macro": ("f1_macro", 1),
    },
    "regression": {
        "r2": ("r2", 1),
        "rmse": ("neg_root_mean_squared_error", -1),
        "mae": ("neg_mean_absolute_error", -1),
    },
}
GATE_PATTERN = re.compile(r"^\s*([a-z_0-9]+)\s*(>=|<=|>|<)\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*$")
OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass(frozen=True)
class Gate:
    """A threshold on one metric, e.g. accuracy>=0.9 (hold-out) or cv_accuracy>=0.9."""

    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def parse_gate(text: str) -> Gate:
    """Parse METRIC>=VALUE (or <=, >, <), the comparison pointing the metric's good way.

    A gate sets the worst value a model may have: a floor for a higher-is-better metric
    (accuracy>=0.9), a ceiling for a lower-is-better one (rmse<=30). A gate the other way round
    would pass the bad models and refuse the good ones, so it is refused.
    """
    match = GATE_PATTERN.match(text)
    if not match:
        raise TrainingError(
            f"gate {text!r} must look like METRIC>=VALUE or METRIC<=VALUE, e.g. accuracy>=0.9"
        )
    gate = Gate(match[1], match[2], float(match[3]))
    signs = {m: sign for scorers in SCORERS.values() for m, (_, sign) in scorers.items()}
    sign = signs.get(gate.metric.removeprefix("cv_"))
    if sign is None:
        known = ", ".join(f"{m}, cv_{m}" for m in signs)
        raise TrainingError(f"gate {text!r} names an unknown metric; known: {known}")
    if sign > 0 and gate.op in ("<=", "<"):
        raise TrainingError(
            f"gate {text!r} is upside down: higher {gate.metric} is better, so a gate sets its "
            f"floor; use {gate.metric}>={match[3]}"
        )
    if sign < 0 and gate.op in (">=", ">"):
        raise TrainingError(
            f"gate {text!r} is upside down: lower {gate.metric} is better, so a gate sets its "
            f"ceiling; use {gate.metric}<={match[3]}"
        )
    return gate


@dataclass(frozen=True)
class Options:
    """How to train; defaults give the built-in Iris model."""

    name: str = "iris"
    estimator: str = "logistic_regression"
    params: dict[str, Any] | None = None
    seed: int = 42
    test_size: float = 0.2
    cv: int = 5
    impute: str | None = None
    gates: Sequence[Gate] = ()
    onnx: bool = True
    report: bool = True


def train(data: Dataset, options: Options) -> tuple[Any, dict[str, Any], dict[str, bytes]]:
    """Fit on the training split; return the pipeline, its metadata and any extra files
    (a verified model.onnx); raise if gated out."""
    from sklearn.model_selection import KFold, StratifiedKFold, cross_validate, train_test_split

    chosen = spec(options.estimator)
    task = chosen.task
    _check_missing(data, options, chosen.handles_missing)
    _check_shape(data, task, options)
    numbers, categories = [], []  # all-numeric data: a matrix, no ColumnTransformer
    if not data.numeric:
        numbers = [str(c) for c in data.frame.columns if _is_number(data.frame[c])]
        categories = [name for name in data.feature_names if name not in numbers]
    pipeline, params = build_pipeline(
        options.estimator, options.params or {}, options.seed, options.impute,
        categories, numbers,
    )  # fmt: skip
    stratify = data.y if task == "classification" else None
    train_frame, test_frame, y_train, y_test = train_test_split(
        data.frame, data.y, test_size=options.test_size, random_state=options.seed,
        stratify=stratify,
    )  # fmt: skip
    X_train, X_test = _fit_input(train_frame, data.numeric), _fit_input(test_frame, data.numeric)
    folds = (StratifiedKFold if task == "classification" else KFold)(
        n_splits=options.cv, shuffle=True, random_state=options.seed
    )
    scorers = SCORERS[task]
    try:
        with step(f"cross-validation: {options.cv} folds of {len(y_train)} rows"):
            cv = cross_validate(
                pipeline,
                X_train,
                y_train,
                cv=folds,
                scoring={m: s for m, (s, _) in scorers.items()},
                error_score="raise",
            )
        with step(f"fitting {options.estimator} on {len(y_train)} rows"):
            pipeline.fit(X_train, y_train)
    except ValueError as e:  # sklearn's InvalidParameterError is a ValueError
        raise TrainingError(
            f"{options.estimator} cannot be trained with these parameters: {e}"
        ) from e
    holdout = holdout_metrics(task, y_test, pipeline.predict(X_test))
    cv_metrics = {
        m: {
            "mean": float(np.mean(sign * cv[f"test_{m}"])),
            "std": float(np.std(sign * cv[f"test_{m}"])),
            "folds": options.cv,
        }
        for m, (_, sign) in scorers.items()
    }
    described = {
        "name": options.name,
        "version": None,
        "created_at": utc_now(),
        "task": task,
        "estimator": type(pipeline[-1]).__name__,
        "estimator_name": options.estimator,
        "pipeline": [step for step, _ in pipeline.steps],
        "params": jsonable(params),
        **describe_inputs(pipeline, train_frame, task),
        "metrics": {"holdout": holdout, "cv": cv_metrics},
        **_calibration(task, pipeline, X_test, y_test),
        "dataset": {
            "source": data.source,
            "target": data.target,
            "rows": data.rows,
            "train_rows": len(y_train),
            "test_rows": len(y_test),
            "sha256": data.sha256,
        },
        "training": {"seed": options.seed, "test_size": options.test_size, "cv": options.cv},
        "gates": [str(g) for g in options.gates],
        "versions": library_versions(),
        "git_commit": git_commit(),
    }
    apply_gates(options.gates, described)
    extra, records = extra_files(
        pipeline, described, X_train, X_test, y_test, options.seed, options.report, options.onnx
    )
    # Built once, from the parts: what was trained, and what each extra file records of itself.
    return pipeline, {**described, **records}, extra


def _calibration(task: str, pipeline: Any, X_test: Any, y_test: Any) -> dict[str, Any]:
    """The "calibration" field: a classifier's ECE on the hold-out (none for a regressor, or a
    classifier without probabilities)."""
    from training.calibration import calibration

    found = calibration(pipeline, X_test, y_test) if task == "classification" else None
    return {"calibration": found} if found is not None else {}


def describe_inputs(pipeline: Any, frame: Any, task: str) -> dict[str, Any]:
    """The metadata fields that say what the pipeline takes and answers: its features' schema,
    an example row, its classes and their label type."""
    with step(f"schema: what the model accepts, probed on each of {frame.shape[1]} features"):
        schema, example = infer_schema(frame, pipeline)
    guessed = [f.name for f in schema.features if f.type == "category" and
               f.categories_from == "data"]  # fmt: skip
    if guessed:
        print(
            f"warning: the categories of {', '.join(guessed)} could not be read from the fitted "
            "model (a step before its encoder does not name its output columns), so the values "
            "in the data given are the ones accepted: a value the model knows but these rows "
            "lack will be refused. Give rows holding every category, or let the step name its "
            "columns (FunctionTransformer(..., feature_names_out='one-to-one')).",
            file=sys.stderr,
        )
    fields: dict[str, Any] = {
        "feature_names": schema.names,
        "features": [f.describe() for f in schema.features],
        "input": "frame" if schema.frame else "array",
        # A row any client can send (the deploy's smoke test does).
        "input_example": example,
        "class_names": [],
    }
    if task == "classification":
        fields["class_names"] = [str(c) for c in pipeline.classes_]
        fields["label_type"] = label_type(pipeline.classes_)
    return fields


def extra_files(
    pipeline: Any,
    metadata: dict[str, Any],
    X_fit: Any,
    X_eval: Any,
    y_eval: Any,
    seed: int,
    report: bool,
    onnx: bool,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The artifact's files besides the model: the drift baseline and the explanations'
    background sample of the rows fitted on, then each asked for: the training report on the
    evaluation rows, and the verified ONNX export. Return them, and their records for the
    metadata ("baseline", "background", "report", "onnx", "numpy"); `metadata` is not changed."""
    extra: dict[str, bytes] = {}
    records: dict[str, Any] = {}
    with step("drift baseline: the training rows' bins"):
        extra[BASELINE_FILE], records["baseline"] = _baseline(pipeline, metadata, X_fit, X_eval)
    extra[BACKGROUND_FILE], records["background"] = _background(metadata, X_fit, seed)
    if report:
        from training.report import build_report

        def background() -> Any:  # as the service reads it: parsed, then checked as a request
            rows = parse_background(extra[BACKGROUND_FILE], "the background")
            return rows_to_input(rows, "background[{}]", from_metadata(metadata, "the model"))

        files, records["report"] = build_report(
            pipeline, X_eval, y_eval, metadata, seed, background
        )
        extra.update(files)
    if onnx:
        nullable = [j for j, f in enumerate(metadata["features"]) if f["nullable"]]
        with step("ONNX: export, then verification against scikit-learn"):
            exported, records["onnx"] = _export_onnx(
                pipeline, X_fit, X_eval, seed, metadata["task"], nullable
            )
        if exported is not None:
            extra[ONNX_FILE] = exported
        with step("numpy: compile, then verification against scikit-learn"):
            compiled, records["numpy"] = _compile_numpy(
                pipeline, X_fit, X_eval, metadata, records["onnx"], seed
            )
        if compiled is not None:
            extra[NUMPY_FILE] = compiled
    return extra, records


def _baseline(
    pipeline: Any, metadata: dict[str, Any], X_fit: Any, X_eval: Any
) -> tuple[bytes, dict[str, Any]]:
    """The drift baseline (function/core/drift.py) of the rows fitted on and of the predictions on
    the evaluation rows, and its summary for the metadata ("baseline")."""
    import pandas as pd

    schema = from_metadata(metadata, "the trained model")
    frame = X_fit if hasattr(X_fit, "columns") else pd.DataFrame(X_fit, columns=schema.names)
    try:
        baseline = build_baseline(frame, schema, pipeline.predict(X_eval), metadata["class_names"])
    except ValueError as e:
        raise TrainingError(f"cannot record the drift baseline: {e}") from e
    record = {
        "file": BASELINE_FILE,
        "bins": baseline.bins,
        "rows": baseline.rows,
        "prediction_rows": baseline.prediction_rows,
    }
    return json.dumps(baseline.to_json(), separators=(",", ":")).encode(), record


def _background(metadata: dict[str, Any], X_fit: Any, seed: int) -> tuple[bytes, dict[str, Any]]:
    """The explanations' background (function/core/explain.py): a seeded sample of the rows
    fitted on, and its summary for the metadata ("background")."""
    import pandas as pd

    schema = from_metadata(metadata, "the trained model")
    frame = X_fit if hasattr(X_fit, "columns") else pd.DataFrame(X_fit, columns=schema.names)
    data = background_file(frame[schema.names], seed)
    record = {
        "file": BACKGROUND_FILE,
        "rows": min(len(frame), BACKGROUND_ROWS),
        "drawn_from": len(frame),
        "seed": seed,
    }
    return data, record


def _export_onnx(
    pipeline: Any, X_train: Any, X_test: Any, seed: int, task: str, nullable: list[int]
) -> tuple[bytes | None, dict[str, Any]]:
    """The verified ONNX export of a pipeline that takes a matrix; a pipeline that selects
    DataFrame columns by name is served by scikit-learn, and the record says so."""
    if not isinstance(X_train, np.ndarray):
        reason = (
            "not exported because the pipeline takes named columns of mixed types: skl2onnx "
            "turns such a pipeline into a float32 graph (its category encoders output float32), "
            "which cannot decide exactly as scikit-learn does in float64; scikit-learn serves "
            "it, exactly"
        )
        return None, {"exported": False, "verified": False, "reason": reason}
    from sklearn.pipeline import Pipeline

    from training.onnx_export import export

    if not isinstance(pipeline, Pipeline):  # a bare estimator: the same model, as one step
        pipeline = Pipeline([("model", pipeline)])
    return export(pipeline, X_train, X_test, seed, task, nullable)


def _compile_numpy(
    pipeline: Any,
    X_fit: Any,
    X_eval: Any,
    metadata: dict[str, Any],
    onnx: dict[str, Any],
    seed: int,
) -> tuple[bytes | None, dict[str, Any]]:
    """The verified numpy compilation (function/core/numpy_model.py), skipped where the ONNX export
    (its record: `onnx`) serves the model already."""
    if onnx["verified"]:
        reason = "not compiled because the verified ONNX export serves it"
        return None, {"exported": False, "verified": False, "reason": reason}
    from training.numpy_export import export

    return export(pipeline, X_fit, X_eval, metadata, seed)


def _fit_input(frame: Any, numeric: bool) -> Any:
    """What the pipeline is fitted on: a float64 matrix for all-numeric data, else the frame."""
    return frame.to_numpy(dtype=np.float64) if numeric else frame


def _is_number(column: Any) -> bool:
    """A column the pipeline treats as a number (booleans included), not a category."""
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column))


def _check_missing(data: Dataset, options: Options, handled: bool) -> None:
    """Missing numbers need an imputer, unless the estimator handles them (categories always
    have one: missing is a category of its own)."""
    if options.impute or handled:
        return
    numbers = [c for c in data.missing() if _is_number(data.frame[c])]
    if numbers:
        raise TrainingError(
            f"{data.source}: column(s) {', '.join(numbers)} have missing values; fill them, "
            "pass --impute mean|median to add an imputing step to the pipeline, or use "
            "hist_gradient_boosting, which handles missing values itself"
        )


def write_artifact(
    out: Path,
    pipeline: Any,
    metadata: dict[str, Any],
    fmt: str = "joblib",
    extra_files: dict[str, bytes] | None = None,
    stamp: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write the model (joblib, or skops with the types it needs trusted), any extra files
    (model.onnx), then metadata.json with every file's digest, passed through `stamp` (which
    names the MLflow run) when given."""
    model, extra = _serialise(pipeline, fmt)
    digest = sha256_hex(model)
    name = MODEL_FILES[fmt]
    files = {name: model, **(extra_files or {})}
    metadata = {
        "schema_version": METADATA_SCHEMA,
        **metadata,
        **extra,
        "format": fmt,
        "sha256": digest,
        "files": {f: {"sha256": sha256_hex(d), "size": len(d)} for f, d in files.items()},
    }
    if stamp is not None:
        metadata = stamp(metadata)
    out.mkdir(parents=True, exist_ok=True)
    # A folder written before holds files this model does not have (a report's other plots).
    for stale in ({*MODEL_FILES.values(), ONNX_FILE, NUMPY_FILE} | _listed(out)) - set(files):
        (out / stale).unlink(missing_ok=True)
    for filename, data in (*files.items(), (METADATA_FILE, encode_metadata(metadata))):
        staged = out / f".{filename}.partial"
        staged.write_bytes(data)
        staged.replace(out / filename)
    return metadata


def _listed(out: Path) -> set[str]:
    """The file names an earlier metadata.json in `out` lists (plain names only)."""
    try:
        listed = json.loads((out / METADATA_FILE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return {name for name in listed if isinstance(name, str) and name == Path(name).name}


def _serialise(pipeline: Any, fmt: str) -> tuple[bytes, dict[str, Any]]:
    if fmt == "skops":
        import skops.io

        data = skops.io.dumps(pipeline)
        return data, {"skops_trusted": sorted(skops.io.get_untrusted_types(data=data))}
    if fmt != "joblib":
        raise TrainingError(f"unknown model format {fmt!r}; choose joblib or skops")
    import joblib

    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer)
    return buffer.getvalue(), {}


def git_commit() -> str | None:
    """Return the commit the code was trained from (GITHUB_SHA in CI), or None."""
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _check_shape(data: Dataset, task: str, options: Options) -> None:
    if not 0 < options.test_size < 1:
        raise TrainingError(f"test size must be between 0 and 1, got {options.test_size}")
    if options.cv < 2:
        raise TrainingError(f"cross-validation needs at least 2 folds, got {options.cv}")
    # Every class needs a row in the hold-out set and `cv` rows in the training split.
    needed = max(2, math.ceil(options.cv / (1 - options.test_size)) + 1)
    if task == "regression":
        if not np.issubdtype(data.y.dtype, np.number):
            raise TrainingError(f"target {data.target!r} is not numeric; a regressor needs numbers")
        if data.rows < needed:
            raise TrainingError(f"{data.rows} rows are too few: need at least {needed}")
        return
    if np.issubdtype(data.y.dtype, np.floating) and not np.all(np.mod(data.y, 1) == 0):
        raise TrainingError(
            f"target {data.target!r} holds continuous numbers; use a regression estimator "
            f"({', '.join(REGRESSORS)})"
        )
    labels, counts = np.unique(data.y, return_counts=True)
    if len(labels) < 2:
        raise TrainingError(f"target {data.target!r} has a single class; a classifier needs two")
    # Whole numbers with nearly as many values as rows (prices, counts) are a quantity to
    # predict, not classes: say so, rather than list thousands of one-row "classes".
    if np.issubdtype(data.y.dtype, np.number) and len(labels) > max(20, data.rows // 2):
        raise TrainingError(
            f"target {data.target!r} looks continuous ({len(labels)} distinct values in "
            f"{data.rows} rows); use a regression estimator ({', '.join(REGRESSORS)})"
        )
    small = [
        f"{label!s} ({count})"
        for label, count in zip(labels, counts, strict=True)
        if count < needed
    ]
    if small:
        shown = ", ".join(small[:10]) + (f" and {len(small) - 10} more" if len(small) > 10 else "")
        raise TrainingError(
            f"too few rows per class for a stratified split and {options.cv}-fold "
            f"cross-validation (need {needed}): {shown}; add data or lower --cv"
        )


def holdout_metrics(task: str, y_true: Any, y_pred: Any) -> dict[str, float]:
    from sklearn import metrics

    if task == "classification":
        return {
            "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, y_pred)),
            "f1_macro": float(metrics.f1_score(y_true, y_pred, average="macro")),
        }
    return {
        "r2": float(metrics.r2_score(y_true, y_pred)),
        "rmse": float(metrics.root_mean_squared_error(y_true, y_pred)),
        "mae": float(metrics.mean_absolute_error(y_true, y_pred)),
    }


def apply_gates(gates: Sequence[Gate], metadata: dict[str, Any]) -> None:
    """Raise GateFailed (carrying the metadata) at the first gate the metrics fail."""
    holdout, cv = metadata["metrics"]["holdout"], metadata["metrics"]["cv"]
    available = {**holdout, **{f"cv_{m}": v["mean"] for m, v in cv.items()}}
    for gate in gates:
        if gate.metric not in available:
            raise TrainingError(
                f"gate {gate} names an unknown metric; available: {', '.join(available)}"
            )
        value = available[gate.metric]
        if not OPERATORS[gate.op](value, gate.threshold):
            raise GateFailed(f"quality gate {gate} failed: {gate.metric} is {value:.4f}", metadata)


def flat_metrics(metadata: dict[str, Any]) -> dict[str, float]:
    """Hold-out metrics by name (accuracy), cross-validated ones as cv_NAME and cv_NAME_std:
    the names `--gate` takes, as MLflow and `dvc metrics` show them."""
    found = dict(metadata["metrics"]["holdout"])
    for name, cv in metadata["metrics"]["cv"].items():
        found[f"cv_{name}"], found[f"cv_{name}_std"] = cv["mean"], cv["std"]
    return found


def library_versions() -> dict[str, str]:
    import joblib
    import sklearn

    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
