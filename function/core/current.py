"""current.json, the pointer to a model's current version: its one type and its one parser.

    {"schema_version": 1, "version", "sha256", "promoted_at", "previous", "history": [...]}

Written by `ModelStore.promote` and `rollback` (function/core/store.py), compare-and-swap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from function.core.artifact import SHA256_PATTERN
from function.core.errors import ModelrunError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CurrentPointer:
    """Which version is current, when it was promoted, and the versions current before it."""

    version: str
    sha256: str
    promoted_at: str | None  # None in a pointer written by hand
    previous: str | None
    history: tuple[str, ...]  # newest first: what rollback goes back to
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        """The document as stored, and as /model shows it."""
        return {
            "schema_version": self.schema_version,
            "version": self.version,
            "sha256": self.sha256,
            "promoted_at": self.promoted_at,
            "previous": self.previous,
            "history": list(self.history),
        }


def parse_current(data: bytes) -> CurrentPointer:
    """current.json checked like a request: ValueError naming the field that is wrong."""
    from function.core.store import check_version_id  # the store imports this module

    document = json.loads(data)
    if not isinstance(document, dict):
        raise ValueError("not an object")
    schema = document.get("schema_version", SCHEMA_VERSION)  # pointers before it: the same shape
    if schema != SCHEMA_VERSION:
        raise ValueError(f"schema_version {schema!r:.20} is not {SCHEMA_VERSION}")
    if "version" not in document:
        raise ValueError("version is missing")
    try:
        check_version_id(document["version"])
    except ModelrunError as e:
        raise ValueError(f"version: {e}") from e
    sha256 = document.get("sha256")
    if not isinstance(sha256, str) or not SHA256_PATTERN.match(sha256):
        raise ValueError("sha256 must be 64 hex digits")
    promoted_at = document.get("promoted_at")  # a pointer written by hand may lack these three
    previous = document.get("previous")
    history = document.get("history", [])
    for name, value in (("promoted_at", promoted_at), ("previous", previous)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string or null, got {type(value).__name__}")
    if not isinstance(history, list) or not all(isinstance(v, str) for v in history):
        raise ValueError("history must be a list of version ids")
    return CurrentPointer(document["version"], sha256, promoted_at, previous, tuple(history))
