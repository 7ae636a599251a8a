"""Where modelrun's bytes live: a folder on disk or a prefix in a GCS bucket, behind one interface.

Two callers name places by URI, each with its own acceptance rule (`parse_uri`):

- STORE, the model store (`MODEL_URI`, `--store`): gs://BUCKET[/PREFIX], file:///ABS/PATH,
  file://localhost/ABS/PATH, or a plain path (resolved against the working directory);
- BATCH, a batch job's `--input` and `--output` (its command has already made plain paths
  file:// URIs): gs://BUCKET[/PREFIX] or file:///ABS/PATH, nothing else.

Both refuse another scheme, gs:// without a bucket, and file:// with a relative path or another
host. A GCS prefix keeps no leading or trailing slash, and is taken as written (GCS decodes
nothing); a file:// path is percent-decoded, as `Path.as_uri` encodes it (`a%20b` is `a b`). A
query or a fragment is ignored.

Keys are '/'-separated names under the place. The two sides offer the same calls:

    read(key, limit) -> (bytes, token)   refused unread over `limit`; NotFound when absent
    write(key, data, if_token)           if_token=None: create only; else only if unchanged
    keys(prefix)                         every key that starts with `prefix`, sorted
    items()                              the object the place names, or every one under it,
                                         each with its size and version (Item)
    open_at(key, offset, version)        a stream from `offset`, of that version only
    stream(key)                          write an object too large to hold (a staged one)
    publish(staged, key)                 a staged object under its final name, create-only
    delete(key), tidy()                  a staged object, once published or left behind

A token identifies what `read` returned (a GCS generation, or on disk the content's sha256), for
compare-and-swap; an Item's version pins a stream (a generation, or the file's mtime: an input
too large to hash twice). Create-only writes stop a second writer silently replacing the first:
a document goes up in one request with `ifGenerationMatch=0`, or is linked into place on disk;
a streamed object is staged under `_tmp/` (`staged_name`), then published: copied with the same
precondition, or linked. No reader ever sees part of an object.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote, urlparse

from function.core.errors import (
    ConfigError,
    Conflict,
    IntegrityError,
    ModelrunError,
    NotFound,
    StoreUnavailable,
)

CHUNK = 8 << 20  # bytes per ranged GCS read, and per upload request of a streamed object
TMP = "_tmp/"
# Every staged object's name ends so: the batch bucket's lifecycle rule deletes what a writer
# killed between its upload and its copy left behind (infra/batch_job.py).
TMP_SUFFIX = ".modelrun-tmp"


@dataclass(frozen=True)
class Rule:
    """Which URIs a caller accepts, and what its refusals say (by the URI's scheme)."""

    plain_paths: bool  # a path without a scheme names a folder on disk
    file_hosts: tuple[str, ...]  # what may stand between file:// and the absolute path
    refusals: dict[str, str]  # scheme -> message; "" for any other scheme


STORE = Rule(
    plain_paths=True,
    file_hosts=("", "localhost"),
    refusals={
        "gs": "store URI {uri!r} has no bucket (expected gs://BUCKET/PREFIX)",
        "file": "store URI {uri!r} must be file:///ABSOLUTE/PATH",
        "": "store URI {uri!r} must start with gs:// or file://",
    },
)
BATCH = Rule(
    plain_paths=False,
    file_hosts=("",),
    refusals={"": "{uri!r} must be gs://BUCKET/PATH or file:///ABSOLUTE/PATH"},
)


@dataclass(frozen=True)
class GcsLocation:
    """A prefix (or one object) in a bucket."""

    bucket: str
    prefix: str


@dataclass(frozen=True)
class FileLocation:
    """A folder (or one file) on disk, by its absolute path."""

    path: Path


Location = GcsLocation | FileLocation


def parse_uri(uri: str, rule: Rule) -> Location:
    """Return the place `uri` names, or raise ConfigError when `rule` refuses it."""
    parsed = urlparse(uri)
    if parsed.scheme == "gs" and parsed.netloc:
        return GcsLocation(parsed.netloc, parsed.path.strip("/"))
    if parsed.scheme == "file" and parsed.netloc in rule.file_hosts and parsed.path.startswith("/"):
        return FileLocation(Path(unquote(parsed.path)))
    if rule.plain_paths and parsed.scheme == "" and uri:
        return FileLocation(Path(uri).resolve())
    refusal = rule.refusals.get(parsed.scheme, rule.refusals[""])
    raise ConfigError(refusal.format(uri=uri))


@dataclass(frozen=True)
class Item:
    """One object as listed: where it is, how big, and which version of it was listed."""

    uri: str
    size: int
    version: str
    key: str = ""  # its name under the place listed ("": the object the place names)


class AlreadyExists(Conflict):
    """A create-only write found its name taken."""


class Storage(Protocol):
    """A folder or a prefix: the calls the module docstring describes."""

    uri: str

    @property
    def location(self) -> Location: ...

    def read(self, key: str, limit: int | None = None) -> tuple[bytes, str]: ...

    def write(self, key: str, data: bytes, if_token: str | None) -> None: ...

    def keys(self, prefix: str) -> list[str]: ...

    def items(self) -> list[Item]: ...

    def open_at(self, key: str, offset: int, version: str | None = None) -> BinaryIO: ...

    def stream(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]: ...

    def publish(self, staged: str, key: str) -> None: ...

    def delete(self, key: str) -> None: ...

    def tidy(self) -> None: ...


def open_storage(uri: str, rule: Rule, timeout: float = 30.0) -> Storage:
    """Return the storage `uri` names under `rule`."""
    location = parse_uri(uri, rule)
    if isinstance(location, GcsLocation):
        return GcsStorage(location, timeout)
    return FileStorage(location)


def check_size(size: int, limit: int | None, where: str) -> None:
    """Refuse an object larger than its limit (before it is read, where the size is known)."""
    if limit is not None and size > limit:
        raise IntegrityError(
            f"{where} is {size:,} bytes or more, over its limit of {limit:,}: refused unread"
        )


def read_or_none(storage: Storage, key: str) -> bytes | None:
    """An object's bytes, or None when it does not exist."""
    try:
        return storage.read(key)[0]
    except NotFound:
        return None


def staged_name(key: str) -> str:
    """Where an object is written before it is published: unique to this attempt."""
    return f"{staged_prefix(key)}{uuid.uuid4().hex}{TMP_SUFFIX}"


def staged_prefix(key: str) -> str:
    """The start of every staged name of `key`, whichever attempt wrote it."""
    return f"{TMP}{key.replace('/', '~')}."


class FileStorage:
    """A folder (or a file) on local disk; links, atomic renames and a lock file stand in for
    GCS preconditions."""

    def __init__(self, location: FileLocation) -> None:
        self.location = location
        self.root = location.path
        self.uri = self.root.as_uri()

    def read(self, key: str, limit: int | None = None) -> tuple[bytes, str]:
        where = self._uri(key)
        try:
            with open(self.root / key, "rb") as f:
                check_size(os.fstat(f.fileno()).st_size, limit, where)
                # At most limit + 1 bytes: a file that grew since fstat is refused all the same.
                data = f.read() if limit is None else f.read(limit + 1)
        except FileNotFoundError as e:
            raise NotFound(f"{where} does not exist") from e
        except OSError as e:
            raise StoreUnavailable(f"cannot read {where}: {e.strerror}") from e
        check_size(len(data), limit, where)
        return data, hashlib.sha256(data).hexdigest()

    def write(self, key: str, data: bytes, if_token: str | None) -> None:
        path, where = self.root / key, self._uri(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked(), self._staged_beside(path, data) as staged:
                if if_token is None:
                    # link() fails if the name exists: create-only, and never a partial file.
                    os.link(staged, path)
                else:
                    _, token = self.read(key)
                    if token != if_token:
                        raise Conflict(f"{where} changed since it was read")
                    os.replace(staged, path)
        except FileExistsError as e:
            raise AlreadyExists(f"{where} already exists") from e
        except NotFound as e:
            raise Conflict(f"{where} was removed since it was read") from e
        except OSError as e:
            raise StoreUnavailable(f"cannot write {where}: {e.strerror}") from e

    def keys(self, prefix: str) -> list[str]:
        """Every file whose key starts with `prefix`, but hidden ones (here as in `items`: the
        lock, what a write stages beside its name)."""
        base = self.root / prefix
        folder = base if not prefix or prefix.endswith("/") else base.parent
        if not folder.is_dir():
            return []
        found = (
            str(p.relative_to(self.root))
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
        return sorted(k for k in found if k.startswith(prefix))

    def items(self) -> list[Item]:
        if self.root.is_dir():
            found = self.root.rglob("*")
            paths = sorted(p for p in found if p.is_file() and not p.name.startswith("."))
        else:
            paths = [self.root]
        items = []
        for path in paths:
            try:
                stat = path.stat()
            except FileNotFoundError as e:
                raise NotFound(f"{path.as_uri()} does not exist") from e
            key = str(path.relative_to(self.root)) if path != self.root else ""
            items.append(Item(path.as_uri(), stat.st_size, str(stat.st_mtime_ns), key))
        return items

    def open_at(self, key: str, offset: int, version: str | None = None) -> BinaryIO:
        where = self._uri(key)
        try:
            stream = open(self.root / key, "rb")  # noqa: SIM115  # the caller closes it
        except FileNotFoundError as e:
            raise NotFound(f"{where} does not exist") from e
        if version and str(os.fstat(stream.fileno()).st_mtime_ns) != version:
            stream.close()
            raise Conflict(f"{where} changed after the job listed it")
        stream.seek(offset)
        return stream

    @contextlib.contextmanager
    def stream(self, key: str) -> Iterator[BinaryIO]:
        with _open_new(self.root / key) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())

    def publish(self, staged: str, key: str) -> None:
        final = self.root / key
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(self.root / staged, final)  # fails if the name exists: create-only
        except FileExistsError as e:
            raise AlreadyExists(f"{self._uri(key)} already exists") from e

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / key).unlink()

    def tidy(self) -> None:
        """Remove _tmp/ if it is empty: a killed writer's leftovers keep it, another writer's
        objects being written too (rmdir refuses a folder that is not empty)."""
        with contextlib.suppress(OSError):
            (self.root / TMP).rmdir()

    def _uri(self, key: str) -> str:
        return (self.root / key).as_uri()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @contextlib.contextmanager
    def _staged_beside(self, path: Path, data: bytes) -> Iterator[str]:
        # Created as open() creates a file (0666 less the umask), not mkstemp's 0600: a service
        # running as another user (the image's) reads a store its publisher mounts for it.
        staged = str(path.parent / f".staged-{uuid.uuid4().hex}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            yield staged
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)


def _open_new(path: Path) -> BinaryIO:
    """Open a new file, whose folder (_tmp/) another writer may remove between our mkdir and
    open when it finds it empty (FileStorage.tidy): then make it again."""
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return open(path, "wb")  # the caller closes it
        except FileNotFoundError:
            continue


class GcsStorage:
    """A prefix (or an object) in a GCS bucket, through google-cloud-storage (the client is made
    on first use)."""

    def __init__(self, location: GcsLocation, timeout: float) -> None:
        # The library now, the client (its connections) on first use: the service makes its
        # store in gunicorn's master, so the workers it forks share the imported modules' memory.
        import google.cloud.storage  # noqa: F401

        self.location = location
        self.bucket_name, self.prefix = location.bucket, location.prefix
        self.uri = (
            f"gs://{self.bucket_name}/{self.prefix}" if self.prefix else f"gs://{self.bucket_name}"
        )
        self.timeout = timeout
        self._bucket: Any = None

    def read(self, key: str, limit: int | None = None) -> tuple[bytes, str]:
        where = self._uri(key)
        with gcs_errors(where):
            blob = self._client_bucket().get_blob(
                self._object(key), timeout=self.timeout, retry=self._retry()
            )
            if blob is None:
                raise NotFound(f"{where} does not exist")
            # The object's size comes with its generation, which the download must match.
            check_size(blob.size or 0, limit, where)
            generation = blob.generation  # taken first: a download may reset blob properties
            data = blob.download_as_bytes(
                if_generation_match=generation, timeout=self.timeout, retry=self._retry()
            )
            return data, str(generation)

    def write(self, key: str, data: bytes, if_token: str | None) -> None:
        content_type = "application/json" if key.endswith(".json") else "application/octet-stream"
        with gcs_errors(self._uri(key)):
            self._client_bucket().blob(self._object(key)).upload_from_string(
                data,
                content_type=content_type,
                if_generation_match=int(if_token) if if_token else 0,
                timeout=self.timeout,
                retry=self._retry(),
            )

    def keys(self, prefix: str) -> list[str]:
        with gcs_errors(self._uri(prefix)):
            return sorted(b.name[len(self._under("")) :] for b in self._list(self._under(prefix)))

    def items(self) -> list[Item]:
        with gcs_errors(self.uri):
            blob = (
                self._client_bucket().get_blob(
                    self.prefix, timeout=self.timeout, retry=self._retry()
                )
                if self.prefix
                else None
            )
            blobs = [blob] if blob is not None else list(self._list(self._under("")))
        start = len(self._under(""))
        return sorted(
            (
                Item(
                    f"gs://{self.bucket_name}/{b.name}",
                    b.size,
                    str(b.generation),
                    "" if blob is not None else b.name[start:],
                )
                for b in blobs
            ),
            key=lambda i: i.uri,
        )

    def open_at(self, key: str, offset: int, version: str | None = None) -> BinaryIO:
        where = self._uri(key)
        with gcs_errors(where):
            blob = self._client_bucket().blob(
                self._object(key), generation=int(version) if version else None
            )
            stream = blob.open("rb", chunk_size=CHUNK)
            stream.seek(offset)
        return _Guarded(stream, where)  # type: ignore[return-value]

    @contextlib.contextmanager
    def stream(self, key: str) -> Iterator[BinaryIO]:
        blob = self._client_bucket().blob(self._object(key))
        with gcs_errors(self._uri(key)), blob.open("wb", chunk_size=CHUNK) as sink:
            yield sink

    def publish(self, staged: str, key: str) -> None:
        bucket, where = self._client_bucket(), self._uri(key)
        with gcs_errors(where):
            taken = bucket.get_blob(self._object(key), timeout=self.timeout) is not None
        if taken:  # what emulators enforce: they ignore the copy's precondition
            raise AlreadyExists(f"{where} already exists")
        try:
            with gcs_errors(where):
                # ifGenerationMatch=0: the copy succeeds only if no live object has the name
                # (storage.objects.copy and rewrite; cloud.google.com/storage/docs/json_api/v1/
                # objects/copy).
                bucket.copy_blob(
                    bucket.blob(self._object(staged)),
                    bucket,
                    self._object(key),
                    if_generation_match=0,
                    timeout=self.timeout,
                )
        except Conflict as e:
            raise AlreadyExists(f"{where} already exists") from e

    def delete(self, key: str) -> None:
        with contextlib.suppress(NotFound), gcs_errors(self._uri(key)):
            self._client_bucket().blob(self._object(key)).delete(timeout=self.timeout)

    def tidy(self) -> None:
        """Nothing: a prefix is no object, and _tmp/ is gone once its objects are."""

    def _object(self, key: str) -> str:
        """The object a key names ("" names the place itself)."""
        return self._under(key) if key else self.prefix

    def _under(self, prefix: str) -> str:
        """A listing prefix: under the place's prefix, as a folder."""
        return f"{self.prefix}/{prefix}" if self.prefix else prefix

    def _uri(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._object(key)}"

    def _list(self, prefix: str) -> Any:
        bucket = self._client_bucket()
        return bucket.client.list_blobs(
            bucket, prefix=prefix, timeout=self.timeout, retry=self._retry()
        )

    def _client_bucket(self) -> Any:
        if self._bucket is None:
            self._bucket = client_bucket(self.bucket_name)
        return self._bucket

    def _retry(self) -> Any:
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.timeout)


class _Guarded:
    """A GCS reader whose errors become modelrun's (a generation gone: the object changed)."""

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


def client_bucket(name: str) -> Any:
    """A bucket through a new google-cloud-storage client (made on first use by its callers:
    the service builds its store in gunicorn's master, before the workers fork)."""
    from google.cloud import storage

    return storage.Client().bucket(name)


@contextlib.contextmanager
def gcs_errors(where: str) -> Iterator[None]:
    """Turn the GCS client's errors about `where` into modelrun's (each with its status)."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from requests import exceptions as req_exc

    try:
        yield
    except ModelrunError:
        raise
    except gexc.PreconditionFailed as e:
        raise Conflict(f"{where} changed since it was read, or already exists") from e
    except gexc.NotFound as e:
        raise NotFound(f"{where} does not exist (or the bucket does not)") from e
    except gexc.Forbidden as e:
        raise StoreUnavailable(f"access to {where} was denied: {e.message}") from e
    except (gexc.GoogleAPIError, auth_exc.GoogleAuthError, req_exc.RequestException) as e:
        raise StoreUnavailable(f"cannot reach {where}: {type(e).__name__}: {e}") from e
