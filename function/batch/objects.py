"""Where a batch job reads and writes: its rules over core's storage (function/core/storage.py).

Inputs are listed once (`Storage.items`) with each one's size and version, and read from any
offset pinned to that version (a file replaced during the job is an error, never a mix).
Outputs are created, never overwritten (`create`): the bytes are staged, and only a complete
object is published under its final name, create-only. A final name that already exists with the
same bytes (a rerun) is success; with other bytes it is a Conflict, and nothing is overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import BinaryIO

from function.core.errors import Conflict, NotFound
from function.core.storage import (
    BATCH,
    CHUNK,
    AlreadyExists,
    FileLocation,
    GcsLocation,
    Location,
    Storage,
    open_storage,
    staged_name,
    staged_prefix,
)


class Writer:
    """What a created object's bytes pass through: counted and hashed on the way."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.size = 0
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.sink.write(data)
        self._hash.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def open_place(uri: str, timeout: float = 30.0) -> Storage:
    """The place a gs://BUCKET/PREFIX or file:///ABS/PATH names (core's BATCH rule)."""
    return open_storage(uri, BATCH, timeout)


def contains(outer: Location, inner: Location) -> bool:
    """Whether `inner` is `outer` or lies under it, as each side names things: a folder by its
    real path (so `//`, `.`, `..`, a trailing slash and symlinks all count), a GCS prefix by
    its object names (GCS normalises none of these: `in//out/x` is listed under `in/`)."""
    if isinstance(outer, FileLocation) and isinstance(inner, FileLocation):
        real_outer, real_inner = outer.path.resolve(), inner.path.resolve()
        return real_inner == real_outer or real_outer in real_inner.parents
    if isinstance(outer, GcsLocation) and isinstance(inner, GcsLocation):
        if outer.bucket != inner.bucket:
            return False
        return not outer.prefix or f"{inner.prefix}/".startswith(f"{outer.prefix}/")
    return False


@contextlib.contextmanager
def create(place: Storage, name: str) -> Iterator[Writer]:
    """Write `name` whole or not at all: staged, then published create-only; the same bytes
    already there (a rerun) are success, other bytes a Conflict."""
    staged = staged_name(name)
    try:
        with place.stream(staged) as sink:
            writer = Writer(sink)
            yield writer
        try:
            place.publish(staged, name)
        except AlreadyExists:
            _same_or_conflict(place, name, writer.sha256)
    finally:
        with contextlib.suppress(Exception):  # a leftover staged object is harmless
            place.delete(staged)


def discard_staged(place: Storage, name: str) -> None:
    """Delete what killed attempts to create `name` left staged."""
    for stale in place.keys(staged_prefix(name)):
        place.delete(stale)


def sha256_of(place: Storage, name: str) -> str | None:
    """The digest of an existing object (None if absent), read in chunks."""
    digest = hashlib.sha256()
    try:
        with place.open_at(name, 0) as stream:
            while block := stream.read(CHUNK):
                digest.update(block)
    except NotFound:
        return None
    return digest.hexdigest()


def join(uri: str, name: str) -> str:
    return f"{uri.rstrip('/')}/{name}" if name else uri


def relative_name(root: str, uri: str) -> str:
    """A file's name under the folder or prefix it was listed from."""
    return uri[len(root.rstrip("/")) + 1 :] if uri.startswith(root.rstrip("/") + "/") else uri


def _same_or_conflict(place: Storage, name: str, sha256: str) -> None:
    """A final name that exists: fine if it holds these bytes (a rerun), else refuse."""
    existing = sha256_of(place, name)
    if existing != sha256:
        raise Conflict(
            f"{join(place.uri, name)} already exists with other contents (sha256 {existing}): "
            "it was written by a run with another input, model or task count; nothing was "
            "overwritten. Write to a new --output prefix"
        )
