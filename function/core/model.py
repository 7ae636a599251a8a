"""Fetch a model version from the store, verify it, unpickle it, warm it up."""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from function.core.artifact import NUMPY_FILE, ONNX_FILE, TRUSTED_PREFIXES, label_type
from function.core.baseline import BASELINE_FILE, Baseline, parse_baseline
from function.core.current import CurrentPointer
from function.core.errors import IntegrityError
from function.core.metadata import Metadata
from function.core.numpy_model import numpy_model
from function.core.onnx_model import onnx_model
from function.core.schema import Schema
from function.core.store import ModelStore

# Files that serve a version without scikit-learn, each written only where verified against it
# (metadata records why not otherwise), in the order MODEL_RUNTIME=auto prefers them.
FASTER_RUNTIMES = (("onnx", ONNX_FILE, onnx_model), ("numpy", NUMPY_FILE, numpy_model))


@dataclass(frozen=True)
class LoadedModel:
    """A verified, warmed-up estimator and what the service needs to know about it."""

    estimator: Any
    metadata: Metadata
    load_seconds: float
    runtime: str = "sklearn"  # or "onnx" (model.onnx, onnxruntime), "numpy" (model.numpy.json)
    schema: Schema = field(default_factory=lambda: Schema(()))
    promotion: CurrentPointer | None = None  # current.json when served as current (its history)
    baseline: Baseline | None = None  # the drift baseline (function/core/baseline.py), if any

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def pipeline_schema(self) -> Schema:
        """The schema the fitted scikit-learn pipeline takes (what explanations run): the served
        one, but a DataFrame where training gave one; the numpy runtime takes a matrix."""
        frame = self.metadata.schema.frame
        if self.schema.frame == frame:
            return self.schema
        return dataclasses.replace(self.schema, frame=frame)

    @property
    def version(self) -> str:
        return str(self.metadata.version)  # a loaded version always has one (the store checks)

    @property
    def sha256(self) -> str:
        return self.metadata.sha256

    @property
    def model_bytes(self) -> int:
        """Its model file's size: the estimate of its memory (function/core/rollout.py)."""
        return self.metadata.model_bytes

    @property
    def feature_names(self) -> list[str]:
        return list(self.metadata.feature_names)

    @property
    def label_type(self) -> str:
        """How labels are sent: integer, number, boolean or string (each as its JSON type)."""
        recorded = self.metadata.label_type
        return recorded or label_type(getattr(self.estimator, "classes_", []))

    @property
    def has_probabilities(self) -> bool:
        return self.metadata.classifier and hasattr(self.estimator, "predict_proba")


def load_model(
    store: ModelStore,
    version: str,
    pinned_sha256: str | None,
    allow_pickle: bool = True,
    runtime: str = "auto",
) -> LoadedModel:
    """Resolve version ('current' or an id), then fetch and check it before deserialising."""
    started = time.perf_counter()
    metadata, promotion = store.resolve_with_pointer(version)
    where = f"{store.uri} version {metadata.version}"
    schema = metadata.schema
    if pinned_sha256 and metadata.sha256 != pinned_sha256:
        raise IntegrityError(
            f"{where} has sha256 {metadata.sha256}, but MODEL_SHA256 pins {pinned_sha256}"
        )
    baseline = _baseline(store, metadata, where)
    chosen = _faster_runtime(metadata, runtime, pinned_sha256, where)
    if chosen is not None:
        name, file, build = chosen
        # The canonical model must be intact too, though it is not deserialised here.
        store.listed_file(metadata, metadata.model_file, where)
        data = store.listed_file(metadata, file, where)
        try:
            estimator: Any = build(data, metadata.raw)
        except Exception as e:
            raise IntegrityError(f"{where} {file} cannot be loaded: {e}") from e
        del data
        if name == "numpy":  # it takes the checked columns as a matrix, not a DataFrame
            schema = dataclasses.replace(schema, frame=False)
        _check(estimator, metadata, schema, where)
        seconds = time.perf_counter() - started
        return LoadedModel(estimator, metadata, seconds, name, schema, promotion, baseline)
    # The download is not kept beside the model (Cloud Run counts both against memory).
    estimator = canonical_estimator(store, metadata, where, allow_pickle)
    _check(estimator, metadata, schema, where)
    seconds = time.perf_counter() - started
    return LoadedModel(estimator, metadata, seconds, "sklearn", schema, promotion, baseline)


def _faster_runtime(
    metadata: Metadata, runtime: str, pinned_sha256: str | None, where: str
) -> tuple[str, str, Callable[[bytes, Any], Any]] | None:
    """The runtime that serves the version other than scikit-learn (its name, file and loader),
    if asked for or, with MODEL_RUNTIME=auto, verified at packaging; None for scikit-learn.
    A pin names the canonical model's digest: the other files are trusted only without one."""
    for name, file, build in FASTER_RUNTIMES:
        record = metadata.runtime(name)
        verified = record.get("verified") and file in metadata.files
        if runtime == name and not verified:
            why = record.get("reason") or "packaged before this runtime"
            raise IntegrityError(f"{where} has no verified {file} (MODEL_RUNTIME={name}): {why}")
        if runtime == name or (runtime == "auto" and verified and not pinned_sha256):
            return name, file, build
    return None


def _baseline(store: ModelStore, metadata: Metadata, where: str) -> Baseline | None:
    """The version's drift baseline, verified (None for a version trained before baselines)."""
    if BASELINE_FILE not in metadata.files:
        return None
    return parse_baseline(store.listed_file(metadata, BASELINE_FILE, where), where)


def canonical_estimator(
    store: ModelStore, metadata: Metadata, where: str, allow_pickle: bool
) -> Any:
    """The version's scikit-learn model, verified and deserialised: what explanations read when
    onnxruntime serves the answers (function/core/explain.py)."""
    if metadata.format == "joblib" and not allow_pickle:
        raise IntegrityError(
            f"{where} is a pickle (joblib) and ALLOW_PICKLE=false: publish it with --format skops"
        )
    return _deserialise(store.listed_file(metadata, metadata.model_file, where), metadata, where)


def _deserialise(data: bytes, metadata: Metadata, where: str) -> Any:
    try:
        if metadata.format == "skops":
            return _load_skops(data, metadata, where)
        import joblib

        return joblib.load(io.BytesIO(data))
    except IntegrityError:
        raise
    except Exception as e:  # a verified file that still fails to load: incompatible libraries
        raise IntegrityError(f"{where} cannot be loaded: {type(e).__name__}: {e}") from e


def _load_skops(data: bytes, metadata: Metadata, where: str) -> Any:
    """Load without pickle, trusting only the recorded types that belong to known libraries."""
    import skops.io

    trusted = metadata.skops_trusted
    foreign = [t for t in trusted if not t.startswith(TRUSTED_PREFIXES)]
    if foreign:
        raise IntegrityError(
            f"{where} asks to trust types outside scikit-learn/numpy/scipy: {foreign}"
        )
    return skops.io.loads(data, trusted=list(trusted))


def _check(estimator: Any, metadata: Metadata, schema: Schema, where: str) -> None:
    if not callable(getattr(estimator, "predict", None)):
        raise IntegrityError(f"{where} holds a {type(estimator).__name__}, not an estimator")
    n_features = len(metadata.feature_names)
    fitted = getattr(estimator, "n_features_in_", n_features)
    if fitted != n_features:
        raise IntegrityError(
            f"{where} was fitted on {fitted} features but its metadata names {n_features}"
        )
    if metadata.classifier:
        classes = [str(c) for c in getattr(estimator, "classes_", [])]
        if classes != list(metadata.class_names):
            raise IntegrityError(
                f"{where} predicts the classes {classes}, its metadata names "
                f"{list(metadata.class_names)}"
            )
    # Warm-up: the first real request should not pay for lazy initialisation. The recorded
    # example row goes through the schema as a request's would (zeros for older artifacts).
    try:
        probe = warm_up_row(metadata, schema)
        predictions = estimator.predict(probe)
        if metadata.classifier and hasattr(estimator, "predict_proba"):
            estimator.predict_proba(probe)
    except Exception as e:
        raise IntegrityError(f"{where} fails a warm-up prediction: {type(e).__name__}: {e}") from e
    if np.shape(predictions) != (1,):
        raise IntegrityError(f"{where} returns predictions of shape {np.shape(predictions)}")


def warm_up_row(metadata: Metadata, schema: Schema) -> Any:
    """The metadata's example row as the pipeline takes it (zeros when there is none)."""
    from function.core.predict import rows_to_input

    example = metadata.input_example or {}
    row = [example.get(f.name, 0.0) for f in schema.features]
    return rows_to_input([row], "input_example", schema)
