"""Where a batch job reads and writes: GCS objects or local files, behind one small interface.

Inputs are listed once (`list_inputs`) with each one's size and version (a GCS generation, or
the file's mtime), and read from any offset (`Place.open_at`, pinned to that version: a file
replaced during the job is an error, never a mix). Outputs are created, never overwritten
(`Place.create`): the bytes go to a temporary object under `_tmp/`, and only a complete one is
copied to its final name with a create-only precondition (`ifGenerationMatch=0` on GCS, a hard
link on disk). A final name that already exists with the same bytes (a rerun) is success; with
other bytes it is a Conflict, and nothing is overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlparse

from function.core.errors import ConfigError, Conflict, NotFound
from function.core.store import client_bucket, gcs_errors

READ_CHUNK = 8 << 20  # bytes per ranged GCS read, and per upload request
TMP = "_tmp/"
# Every temporary object's name ends so: the batch bucket's lifecycle rule deletes what a task
# killed between its upload and its copy left behind (infra/batch_job.py).
TMP_SUFFIX = ".modelrun-tmp"


@dataclass(frozen=True)
class Item:
    """One input file: where it is, how big, and which version of it was listed."""

    uri: str
    size: int
    version: str


class Place(Protocol):
    """A folder or a prefix: list it, read from it, create in it."""

    uri: str

    def items(self) -> list[Item]: ...

    def open_at(self, item: Item, offset: int) -> BinaryIO: ...

    def read(self, name: str) -> bytes | None: ...

    def names(self, prefix: str) -> list[str]: ...

    def create(self, name: str) -> contextlib.AbstractContextManager[Writer]: ...

    def delete(self, name: str) -> None: ...

    def tidy(self) -> None: ...


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


def open_place(uri: str) -> Place:
    """The place a gs://BUCKET/PREFIX or file:///ABS/PATH names."""
    parsed = urlparse(uri)
    if parsed.scheme == "gs" and parsed.netloc:
        return GcsPlace(parsed.netloc, parsed.path.strip("/"))
    if parsed.scheme == "file" and parsed.path.startswith("/") and not parsed.netloc:
        return FilePlace(Path(parsed.path))
    raise ConfigError(f"{uri!r} must be gs://BUCKET/PATH or file:///ABSOLUTE/PATH")


def contains(outer: Place, inner: Place) -> bool:
    """Whether `inner` is `outer` or lies under it, as each side names things: a folder by its
    real path (so `//`, `.`, `..`, a trailing slash and symlinks all count), a GCS prefix by
    its object names (GCS normalises none of these: `in//out/x` is listed under `in/`)."""
    if isinstance(outer, FilePlace) and isinstance(inner, FilePlace):
        real_outer, real_inner = (
            Path(os.path.realpath(outer.root)),
            Path(os.path.realpath(inner.root)),
        )
        return real_inner == real_outer or real_outer in real_inner.parents
    if isinstance(outer, GcsPlace) and isinstance(inner, GcsPlace):
        if outer.bucket_name != inner.bucket_name:
            return False
        return not outer.prefix or f"{inner.prefix}/".startswith(f"{outer.prefix}/")
    return False


def sha256_of(place: Place, name: str) -> str | None:
    """The digest of an existing object (None if absent), read in chunks."""
    digest = hashlib.sha256()
    try:
        item = Item(join(place.uri, name), 0, "")
        with place.open_at(item, 0) as stream:
            while block := stream.read(READ_CHUNK):
                digest.update(block)
    except NotFound:
        return None
    return digest.hexdigest()


def join(uri: str, name: str) -> str:
    return f"{uri.rstrip('/')}/{name}" if name else uri


def relative_name(root: str, uri: str) -> str:
    """A file's name under the folder or prefix it was listed from."""
    return uri[len(root.rstrip("/")) + 1 :] if uri.startswith(root.rstrip("/") + "/") else uri


class FilePlace:
    """A folder on local disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = root.as_uri()

    def items(self) -> list[Item]:
        """The file this names, or every file under the folder it names."""
        if self.root.is_dir():
            paths = sorted(p for p in self.root.rglob("*") if p.is_file())
        else:
            paths = [self.root]
        items = []
        for path in paths:
            try:
                stat = path.stat()
            except FileNotFoundError as e:
                raise NotFound(f"{path.as_uri()} does not exist") from e
            items.append(Item(path.as_uri(), stat.st_size, str(stat.st_mtime_ns)))
        return items

    def open_at(self, item: Item, offset: int) -> BinaryIO:
        path = Path(urlparse(item.uri).path)
        try:
            stream = open(path, "rb")  # noqa: SIM115  # the caller closes it
        except FileNotFoundError as e:
            raise NotFound(f"{item.uri} does not exist") from e
        if item.version and str(os.fstat(stream.fileno()).st_mtime_ns) != item.version:
            stream.close()
            raise Conflict(f"{item.uri} changed after the job listed it")
        stream.seek(offset)
        return stream

    def read(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def names(self, prefix: str) -> list[str]:
        base = self.root / prefix
        folder = base if prefix.endswith("/") else base.parent
        if not folder.is_dir():
            return []
        found = (str(p.relative_to(self.root)) for p in folder.rglob("*") if p.is_file())
        return sorted(n for n in found if n.startswith(prefix))

    @contextlib.contextmanager
    def create(self, name: str) -> Iterator[Writer]:
        final = self.root / name
        staged = self.root / _staged_name(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            with _create_staged(staged) as f:
                writer = Writer(f)
                yield writer
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(staged, final)  # fails if the name exists: create-only
            except FileExistsError:
                _same_or_conflict(self, name, writer.sha256)
        finally:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / name).unlink()

    def tidy(self) -> None:
        """Remove _tmp/ if it is empty: a killed task's leftovers keep it, another task's
        objects being written too (rmdir refuses a folder that is not empty)."""
        with contextlib.suppress(OSError):
            (self.root / TMP).rmdir()


class GcsPlace:
    """A prefix in a GCS bucket, through google-cloud-storage."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket_name = bucket
        self.prefix = prefix
        self.uri = f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"
        self._bucket: Any = None

    def items(self) -> list[Item]:
        """The object this names, or every object under the prefix it names."""
        bucket = self._client_bucket()
        with gcs_errors(self.uri):
            blob = bucket.get_blob(self.prefix) if self.prefix else None
            if blob is not None:
                blobs = [blob]
            else:
                prefix = f"{self.prefix}/" if self.prefix else ""
                blobs = list(bucket.client.list_blobs(bucket, prefix=prefix))
        return sorted(
            (Item(f"gs://{self.bucket_name}/{b.name}", b.size, str(b.generation)) for b in blobs),
            key=lambda i: i.uri,
        )

    def open_at(self, item: Item, offset: int) -> BinaryIO:
        name = urlparse(item.uri).path.lstrip("/")
        generation = int(item.version) if item.version else None
        with gcs_errors(item.uri):
            blob = self._client_bucket().blob(name, generation=generation)
            stream = blob.open("rb", chunk_size=READ_CHUNK)
            stream.seek(offset)
        return _Guarded(stream, item.uri)  # type: ignore[return-value]

    def read(self, name: str) -> bytes | None:
        with gcs_errors(join(self.uri, name)):
            blob = self._client_bucket().get_blob(self._name(name))
            return None if blob is None else blob.download_as_bytes()

    def names(self, prefix: str) -> list[str]:
        bucket = self._client_bucket()
        with gcs_errors(join(self.uri, prefix)):
            blobs = bucket.client.list_blobs(bucket, prefix=self._name(prefix))
            start = len(self._name(""))
            return sorted(b.name[start:] for b in blobs)

    @contextlib.contextmanager
    def create(self, name: str) -> Iterator[Writer]:
        bucket = self._client_bucket()
        staged = bucket.blob(self._name(_staged_name(name)))
        where = join(self.uri, name)
        try:
            with gcs_errors(where), staged.open("wb", chunk_size=READ_CHUNK) as sink:
                writer = Writer(sink)
                yield writer
            with gcs_errors(where):
                exists = bucket.get_blob(self._name(name)) is not None
            try:
                if not exists:
                    # ifGenerationMatch=0: the copy succeeds only if no live object has the
                    # name (storage.objects.copy and rewrite; cloud.google.com/storage/docs/
                    # json_api/v1/objects/copy). The check above is what emulators enforce.
                    with gcs_errors(where):
                        bucket.copy_blob(staged, bucket, self._name(name), if_generation_match=0)
            except Conflict:
                exists = True
            if exists:
                _same_or_conflict(self, name, writer.sha256)
        finally:
            with contextlib.suppress(Exception):  # a leftover temporary is harmless
                staged.delete()

    def delete(self, name: str) -> None:
        with contextlib.suppress(NotFound), gcs_errors(join(self.uri, name)):
            self._client_bucket().blob(self._name(name)).delete()

    def tidy(self) -> None:
        """Nothing: a prefix is no object, and _tmp/ is gone once its objects are."""

    def _name(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _client_bucket(self) -> Any:
        if self._bucket is None:
            self._bucket = client_bucket(self.bucket_name)
        return self._bucket


class _Guarded:
    """A GCS reader whose errors become modelrun's (a generation gone: the input changed)."""

    def __init__(self, stream: Any, uri: str) -> None:
        self.stream = stream
        self.uri = uri

    def read(self, size: int = -1) -> bytes:
        with gcs_errors(self.uri):
            return bytes(self.stream.read(size))

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> _Guarded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _create_staged(path: Path) -> BinaryIO:
    """Open a new temporary file in _tmp/, which another task may remove between our mkdir and
    open when it finds it empty (FilePlace.tidy): then make it again."""
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return open(path, "wb")  # the caller closes it
        except FileNotFoundError:
            continue


def _staged_name(name: str) -> str:
    """Where an object is written before it is published: unique to this attempt."""
    return f"{TMP}{name.replace('/', '~')}.{uuid.uuid4().hex}{TMP_SUFFIX}"


def _same_or_conflict(place: Place, name: str, sha256: str) -> None:
    """A final name that exists: fine if it holds these bytes (a rerun), else refuse."""
    existing = sha256_of(place, name)
    if existing != sha256:
        raise Conflict(
            f"{join(place.uri, name)} already exists with other contents (sha256 {existing}): "
            "it was written by a run with another input, model or task count; nothing was "
            "overwritten. Write to a new --output prefix"
        )
