"""The artifact contract between training/ and function/: file names, digests, metadata."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from function.errors import IntegrityError

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"

# Every field the service relies on; training writes these and more (see docs/ARCHITECTURE.md).
REQUIRED_FIELDS = ("name", "sha256", "task", "estimator", "feature_names", "class_names", "files")
TASKS = ("classification", "regression")


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
    files = metadata["files"]
    if not (isinstance(files, dict) and MODEL_FILE in files):
        raise IntegrityError(f"{where}: files must describe {MODEL_FILE}")
    if files[MODEL_FILE].get("sha256") != metadata["sha256"]:
        raise IntegrityError(f"{where}: files.{MODEL_FILE}.sha256 disagrees with sha256")
    return metadata


def verify_digest(data: bytes, expected: str, what: str) -> None:
    """Refuse data whose sha256 is not the expected one."""
    actual = sha256_hex(data)
    if actual != expected:
        raise IntegrityError(f"{what}: sha256 is {actual}, expected {expected}")
