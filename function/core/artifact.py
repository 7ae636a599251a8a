"""The artifact contract between training/ and function/: file names, digests, how metadata is
written (its type and parser: function/core/metadata.py)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from function.core.errors import IntegrityError

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


def verify_digest(data: bytes, expected: str, what: str) -> None:
    """Refuse data whose sha256 is not the expected one."""
    actual = sha256_hex(data)
    if actual != expected:
        raise IntegrityError(f"{what}: sha256 is {actual}, expected {expected}")
