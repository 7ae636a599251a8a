"""metadata.json, a version's description: its one type, its one parser, and its old formats.

Training writes it (training/train.py, once, from the parts); the store reads it back as input
from anyone who can write there, so `parse_metadata` checks every field the service reads and
names the one that is wrong. `Metadata.raw` is the document as read, for the places that show it
whole (/model, the model card, `list --json`); everything else reads the typed fields.

Older formats, all accepted here and nowhere else (`_upgrade`):
- no `schema_version`: the same layout, version 1 (the first that records it);
- no `format`: joblib (before skops); no `label_type`: told by the estimator's classes;
- no `input`/`features`: numbers in an array (function/core/schema.py `from_metadata`);
- no `skops_trusted`, `report`, `onnx`, `numpy`, `input_example`, `calibration`: none of each;
- no `version`: a training output folder, not yet published.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from function.core.artifact import LABEL_TYPES, MODEL_FILES, SHA256_PATTERN, TASKS
from function.core.errors import IntegrityError
from function.core.schema import Schema, from_metadata

SCHEMA_VERSION = 1
REQUIRED_FIELDS = ("name", "sha256", "task", "estimator", "feature_names", "class_names", "files")


@dataclass(frozen=True)
class FileEntry:
    """One file a version lists: its digest, and its size when recorded."""

    sha256: str
    size: int | None


@dataclass(frozen=True)
class Metadata:
    """A version's metadata.json, checked."""

    name: str
    version: str | None  # None in a training output folder, before it is published
    sha256: str  # the model file's
    task: str  # classification or regression
    estimator: str
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]  # () for a regressor
    label_type: str | None  # None: recorded before label types, told by the classes
    format: str  # joblib or skops
    files: Mapping[str, FileEntry]
    schema: Schema  # what a request must hold (features, input)
    input_example: Mapping[str, Any] | None
    skops_trusted: tuple[str, ...]
    report_files: tuple[str, ...]
    runtimes: Mapping[str, Mapping[str, Any]]  # "onnx", "numpy": each export's record
    published_at: str | None
    calibration: Mapping[str, Any] | None  # how far its probabilities can be trusted, if recorded
    raw: Mapping[str, Any] = field(repr=False)  # the document as read
    schema_version: int = SCHEMA_VERSION
    # What the loader's trust found of metadata.sig (set by the store when it checks one).
    signature: Mapping[str, Any] | None = None
    signature_checked: bool = False

    @property
    def model_file(self) -> str:
        return MODEL_FILES[self.format]

    @property
    def model_bytes(self) -> int:
        """The model file's size as recorded (0 when not): the estimate of its memory."""
        return self.files[self.model_file].size or 0

    @property
    def classifier(self) -> bool:
        return self.task == "classification"

    def runtime(self, name: str) -> Mapping[str, Any]:
        """An export's record ({} for a version packaged before it)."""
        return self.runtimes.get(name, {})

    def to_json(self) -> dict[str, Any]:
        """The document as /model and `list --json` show it: as read, with its format, and
        what the signature check found when there was one."""
        shown = {**self.raw, "format": self.format}
        if self.signature_checked:
            shown["signature"] = None if self.signature is None else dict(self.signature)
        return shown


def parse_metadata(data: bytes, where: str) -> Metadata:
    """Parse and check metadata.json, naming the file and the field that is wrong."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{where} is not valid JSON: {e}") from e
    if not isinstance(document, dict):
        raise IntegrityError(f"{where} must hold a JSON object")
    return metadata_of(document, where)


def metadata_of(document: Mapping[str, Any], where: str) -> Metadata:
    """Check a metadata document already decoded (never changed: the value has its own copy)."""
    missing = [f for f in REQUIRED_FIELDS if f not in document]
    if missing:
        raise IntegrityError(f"{where} lacks the field(s) {', '.join(missing)}")
    fields = _upgrade(document, where)

    def text(name: str, optional: bool = False) -> Any:
        value = fields[name]
        if not (isinstance(value, str) or (optional and value is None)):
            raise IntegrityError(f"{where}: {name} must be a string, got {type(value).__name__}")
        return value

    if fields["task"] not in TASKS:
        raise IntegrityError(f"{where}: task must be one of {TASKS}, got {fields['task']!r:.40}")
    names = fields["feature_names"]
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise IntegrityError(f"{where}: feature_names must be a non-empty list of strings")
    if len(set(names)) != len(names):
        raise IntegrityError(f"{where}: feature_names has duplicates")
    classes = fields["class_names"]
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise IntegrityError(f"{where}: class_names must be a list of strings")
    if fields["label_type"] is not None and fields["label_type"] not in LABEL_TYPES:
        raise IntegrityError(f"{where}: label_type must be one of {', '.join(LABEL_TYPES)}")
    if fields["format"] not in MODEL_FILES:
        raise IntegrityError(
            f"{where}: format must be one of {tuple(MODEL_FILES)}, got {fields['format']!r:.40}"
        )
    sha256 = text("sha256")
    if not SHA256_PATTERN.match(sha256):
        raise IntegrityError(f"{where}: sha256 must be 64 hex digits")
    files = _files(fields["files"], where)
    model = MODEL_FILES[fields["format"]]
    if model not in files:
        raise IntegrityError(f"{where}: files must describe {model}")
    if files[model].sha256 != sha256:
        raise IntegrityError(f"{where}: files.{model}.sha256 disagrees with sha256")
    example = fields["input_example"]
    if example is not None and not isinstance(example, dict):
        raise IntegrityError(f"{where}: input_example must be an object")
    trusted = fields["skops_trusted"]
    if not (isinstance(trusted, list) and all(isinstance(t, str) for t in trusted)):
        raise IntegrityError(f"{where}: skops_trusted must be a list of type names")
    report = fields["report"]
    listed = report.get("files", []) if isinstance(report, dict) else None
    if not (isinstance(listed, list) and all(isinstance(f, str) for f in listed)):
        raise IntegrityError(f"{where}: report.files must be a list of file names")
    runtimes = {name: fields[name] for name in ("onnx", "numpy") if fields[name] is not None}
    for name, record in {**runtimes, "calibration": fields["calibration"]}.items():
        if record is not None and not isinstance(record, dict):
            raise IntegrityError(f"{where}: {name} must be an object")
    schema_version = fields["schema_version"]
    if schema_version != SCHEMA_VERSION:
        raise IntegrityError(
            f"{where}: schema_version {schema_version!r:.20} is not {SCHEMA_VERSION} (a newer "
            "modelrun wrote it?)"
        )
    return Metadata(
        name=text("name"),
        version=text("version", optional=True),
        sha256=sha256,
        task=fields["task"],
        estimator=text("estimator"),
        feature_names=tuple(names),
        class_names=tuple(classes),
        label_type=fields["label_type"],
        format=fields["format"],
        files=MappingProxyType(files),
        schema=from_metadata(fields, where),  # the features' types, when recorded
        input_example=MappingProxyType(dict(example)) if example is not None else None,
        skops_trusted=tuple(trusted),
        report_files=tuple(listed),
        runtimes=MappingProxyType(runtimes),
        published_at=text("published_at", optional=True),
        calibration=_frozen(fields["calibration"]),
        raw=MappingProxyType(json.loads(json.dumps(document))),  # its own copy, read-only
        schema_version=schema_version,
    )


def _upgrade(document: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Every older format's defaults, in one place: the fields the parser reads, as the current
    version writes them (a new dict; the document is not changed)."""
    defaults: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,  # before it was recorded: the same layout
        "format": "joblib",  # before skops
        "label_type": None,  # before label types: the estimator's classes tell
        "input": "array",  # before DataFrame pipelines
        "input_example": None,
        "skops_trusted": [],
        "report": {},  # trained with --no-report, or before reports
        "onnx": None,  # packaged before each runtime
        "numpy": None,
        "version": None,  # a training output folder
        "published_at": None,
        "calibration": None,  # before calibration was measured
    }
    return {**defaults, **document}


def _frozen(record: dict[str, Any] | None) -> Mapping[str, Any] | None:
    return None if record is None else MappingProxyType(dict(record))


def _files(listed: Any, where: str) -> dict[str, FileEntry]:
    if not isinstance(listed, dict):
        raise IntegrityError(f"{where}: files must be an object")
    files = {}
    for name, entry in listed.items():
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not SHA256_PATTERN.match(digest):
            raise IntegrityError(f"{where}: files.{name:.80}.sha256 must be 64 hex digits")
        size = entry.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise IntegrityError(f"{where}: files.{name:.80}.size must be a count of bytes")
        files[name] = FileEntry(digest, size)
    return files
