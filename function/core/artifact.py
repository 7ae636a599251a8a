"""The artifact contract between training/ and function/: file names, digests, metadata."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from function.core.errors import IntegrityError
from function.core.schema import from_metadata

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
# The model's serialisation, and its file: joblib (pickle) by default, or skops (no pickle).
MODEL_FILES = {"joblib": MODEL_FILE, "skops": "model.skops"}
# A verified ONNX export of the same model, served by onnxruntime when present (MODEL_RUNTIME).
ONNX_FILE = "model.onnx"
# A verified compilation of the same pipeline, served with numpy alone
# (function/core/numpy_model.py).
NUMPY_FILE = "model.numpy.json"

# scikit-learn classifiers whose predict() is, by definition, classes_.take(argmax(predict_proba)):
# the service gets both answers from one predict_proba call (a forest otherwise computes it
# twice), and training exports them to ONNX as that argmax.
ARGMAX_CLASSIFIERS = {"RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier"}

# The libraries whose classes and functions a served model may hold: the service imports these
# and nothing else. Training refuses a pipeline holding anything more; a skops artifact may ask to
# trust types from these only (a signature says who published it, not that it is harmless).
TRUSTED_LIBRARIES = ("sklearn", "numpy", "scipy")
TRUSTED_PREFIXES = tuple(f"{library}." for library in TRUSTED_LIBRARIES)

# Every field the service relies on; training writes these and more (see docs/ARCHITECTURE.md).
REQUIRED_FIELDS = ("name", "sha256", "task", "estimator", "feature_names", "class_names", "files")
TASKS = ("classification", "regression")
# A class label is answered as its own JSON type (probability keys are its text: JSON keys are
# strings), and as this Open Inference Protocol datatype.
LABEL_TYPES = {"integer": "INT64", "number": "FP64", "boolean": "BOOL", "string": "BYTES"}


def label_type(classes: Any) -> str:
    """The label type of a classifier's classes_: integer, number, boolean or string."""
    import numpy as np

    kinds = {"i": "integer", "u": "integer", "f": "number", "b": "boolean"}
    return kinds.get(np.asarray(classes).dtype.kind, "string")


# A sha256 as every document and setting writes it: 64 lowercase hex digits, and nothing after
# (\Z: `$` would let a trailing newline through).
SHA256_PATTERN = re.compile(r"\A[0-9a-f]{64}\Z")


def sha256_hex(data: bytes) -> str:
    """Return the hex sha256 of data."""
    return hashlib.sha256(data).hexdigest()


def encode_metadata(metadata: dict[str, Any]) -> bytes:
    """Serialise metadata the one way it is stored everywhere."""
    return (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode()


def parse_metadata(data: bytes, where: str) -> dict[str, Any]:
    """Parse and check metadata.json, naming the file and the field that is wrong."""
    try:
        metadata = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{where} is not valid JSON: {e}") from e
    if not isinstance(metadata, dict):
        raise IntegrityError(f"{where} must hold a JSON object")
    missing = [f for f in REQUIRED_FIELDS if f not in metadata]
    if missing:
        raise IntegrityError(f"{where} lacks the field(s) {', '.join(missing)}")
    if metadata["task"] not in TASKS:
        raise IntegrityError(f"{where}: task must be one of {TASKS}, got {metadata['task']!r}")
    names = metadata["feature_names"]
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise IntegrityError(f"{where}: feature_names must be a non-empty list of strings")
    if len(set(names)) != len(names):
        raise IntegrityError(f"{where}: feature_names has duplicates")
    if metadata.get("label_type", "string") not in LABEL_TYPES:
        raise IntegrityError(f"{where}: label_type must be one of {', '.join(LABEL_TYPES)}")
    from_metadata(metadata, where)  # the features' types, when recorded, are well formed
    fmt = metadata.setdefault("format", "joblib")
    if fmt not in MODEL_FILES:
        raise IntegrityError(f"{where}: format must be one of {tuple(MODEL_FILES)}, got {fmt!r}")
    name = MODEL_FILES[fmt]
    files = metadata["files"]
    if not (isinstance(files, dict) and isinstance(files.get(name), dict)):
        raise IntegrityError(f"{where}: files must describe {name}")
    if files[name].get("sha256") != metadata["sha256"]:
        raise IntegrityError(f"{where}: files.{name}.sha256 disagrees with sha256")
    return metadata


def model_file(metadata: dict[str, Any]) -> str:
    """Return the name of the model file a (parsed) metadata describes."""
    return MODEL_FILES[metadata.get("format", "joblib")]


def model_size(metadata: dict[str, Any]) -> int:
    """The model file's size in bytes, as the metadata records it (the estimate of a model's
    memory in function/core/rollout.py)."""
    return int(metadata["files"][model_file(metadata)].get("size", 0))


def verify_digest(data: bytes, expected: str, what: str) -> None:
    """Refuse data whose sha256 is not the expected one."""
    actual = sha256_hex(data)
    if actual != expected:
        raise IntegrityError(f"{what}: sha256 is {actual}, expected {expected}")
