"""The versioned model store, shared by training/ and function/.

Two ideas, two names, one definition each (below):
- the *store* is where models are published, the parent of them all: `gs://BUCKET/models` in the
  cloud (`bucket_store`), a folder offline (`file:///abs/.modelrun/store`); `--store` and `STORE`;
- a *model root* is one model's folder in it, `STORE/NAME` (`model_root`); what the service
  serves, `MODEL_URI`, and what a `ModelStore` object holds the versions of.

Layout under a model root (gs://BUCKET/models/NAME or file:///abs/path/NAME):

    versions/<version>/model.joblib     immutable, written first (each file metadata.json lists)
    versions/<version>/metadata.sig     immutable, the publisher's signature of metadata.json
    versions/<version>/metadata.json    immutable, written last: marks the version complete
    current.json                        the current version (function/core/current.py)
    rollout.json                        a candidate in shadow or canary (function/core/rollout.py)

The bytes live in core's storage layer (function/core/storage.py: a folder or a GCS prefix,
under its STORE acceptance rule), through three of its calls: read(key) -> (bytes, token),
write(key, data, if_token) and keys(prefix). Versions are written create-only, so never
overwritten; current.json and rollout.json are replaced only if they still hold what was read
(`write_document`), so concurrent promotions cannot silently overwrite each other.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from function.core.artifact import METADATA_FILE, encode_metadata, verify_digest
from function.core.current import CurrentPointer, parse_current
from function.core.errors import (
    ConfigError,
    Conflict,
    IntegrityError,
    NotFound,
    StoreUnavailable,
)
from function.core.metadata import Metadata, parse_metadata
from function.core.signing import SIGNATURE_FILE, Signer, Trust, sign_metadata
from function.core.storage import STORE, Storage, open_storage

CURRENT_FILE = "current.json"
ROLLOUT_FILE = "rollout.json"  # its state: function/core/rollout.py
HISTORY_LIMIT = 50
# The most a small store document may hold; one larger is refused before a byte of it is read
# (a 50 MB metadata.sig would otherwise be downloaded whole, at every refresh). Far above what
# publish and promote write: a signature is ~0.3 KiB, current.json ~3 KiB with HISTORY_LIMIT
# entries, metadata.json ~10 KiB (a model of 1,000 features with their categories ~0.5 MiB).
DOCUMENT_LIMITS = {
    SIGNATURE_FILE: 16 * 1024,
    METADATA_FILE: 4 * 1024 * 1024,
    CURRENT_FILE: 256 * 1024,
    ROLLOUT_FILE: 1024 * 1024,
}
# \A and \Z, not ^ and $: "$" also matches before a final newline, so "abc\n" would pass.
VERSION_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@dataclass(frozen=True)
class VersionInfo:
    """One version as listed: complete versions carry their metadata; one the store's trust
    refuses (a signature that does not verify, another model's) carries the reason instead."""

    version: str
    metadata: Metadata | None
    refused: str | None = None

    @property
    def complete(self) -> bool:
        return self.metadata is not None


class ModelStore:
    """The versions of one model and the pointer to the current one."""

    def __init__(self, uri: str, *, timeout: float = 30.0, trust: Trust | None = None) -> None:
        self.backend: Storage = open_storage(uri.rstrip("/"), STORE, timeout)
        self.uri = self.backend.uri
        self.name = self.uri.rsplit("/", 1)[-1]  # the model's name: its root's last segment
        # A loader's (the service's, the batch job's): every version's metadata.json must pass it
        # before anything in it is used. None: the publisher's own commands, which check digests.
        self.trust = trust

    def publish(
        self, artifact_dir: Path, version: str | None = None, signer: Signer | None = None
    ) -> str:
        """Upload an artifact folder as a new immutable version, signed by `signer` (unsigned
        without one), and return its id."""
        metadata, files = read_artifact_dir(artifact_dir)
        version = default_version(metadata.sha256) if version is None else version
        check_version_id(version)
        prefix = f"versions/{version}/"
        if self.backend.keys(prefix):
            raise Conflict(
                f"version {version} already exists in {self.uri}; versions are immutable"
            )
        # To the microsecond: `list` orders versions by it, and two can be published in a second.
        published = {
            **metadata.to_json(),
            "version": version,
            "published_at": utc_now("microseconds"),
        }
        encoded = encode_metadata(published)
        # Signed before anything is written: a signer that refuses leaves no trace in the store.
        signature = {SIGNATURE_FILE: sign_metadata(encoded, signer)} if signer else {}
        # The signature before metadata.json: a complete version is a signed one.
        for name, data in {**files, **signature}.items():
            self.backend.write(prefix + name, data, if_token=None)
        # Written last: until it exists the version is incomplete and cannot be promoted.
        self.backend.write(prefix + METADATA_FILE, encoded, if_token=None)
        return version

    def current(self) -> tuple[CurrentPointer | None, str | None]:
        """Return current.json (None if nothing was promoted) and its token."""
        try:
            data, token = self.read_document(CURRENT_FILE)
        except NotFound:
            return None, None
        try:
            pointer = parse_current(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise StoreUnavailable(f"{self.uri}/{CURRENT_FILE} is corrupt: {e}") from e
        return pointer, token

    def read_document(self, name: str) -> tuple[bytes, str]:
        """Return one of the root's documents (current.json, rollout.json) and its token,
        refused unread over its limit; NotFound when it does not exist."""
        return self.backend.read(name, DOCUMENT_LIMITS[name])

    def write_document(self, name: str, data: bytes, if_token: str | None) -> None:
        """Replace one of the root's documents only if it still holds what was read as
        `if_token` (None: create it only if absent); Conflict otherwise."""
        self.backend.write(name, data, if_token=if_token)

    def metadata(self, version: str) -> Metadata:
        """Return a complete version's metadata, or raise NotFound naming what is missing."""
        check_version_id(version)
        key = f"versions/{version}/{METADATA_FILE}"
        try:
            data, _ = self.backend.read(key, DOCUMENT_LIMITS[METADATA_FILE])
        except NotFound as e:
            state = "incomplete" if self.backend.keys(f"versions/{version}/") else "missing"
            raise NotFound(f"version {version} is {state} in {self.uri}") from e
        signature = None
        if self.trust is not None:  # before a field of it is read
            where = f"{self.uri} version {version}"
            signature = self.trust.check(data, self._signature(version), where)
        metadata = parse_metadata(data, f"{self.uri}/{key}")
        # The version a model is served, logged and answered as is its folder's: a metadata.json
        # naming another (a path, a header-breaking line) never loads.
        if metadata.version != version:
            raise IntegrityError(
                f"{self.uri}/{key} names version {metadata.version!r:.80}, not its folder's"
            )
        # And the model it is served as is its root's: one model's signed version copied into
        # another's folder (and pointed at) is refused, as a version naming another folder is.
        if metadata.name != self.name:
            raise IntegrityError(
                f"{self.uri}/{key}: metadata names model {metadata.name!r:.80}, not its "
                f"folder's {self.name!r}"
            )
        if self.trust is not None:  # what a loader verified, as /model and `list --json` say it
            return dataclasses.replace(metadata, signature=signature, signature_checked=True)
        return metadata

    def _signature(self, version: str) -> bytes | None:
        """A version's metadata.sig, or None when it has none (published unsigned)."""
        try:
            return self.read_file(version, SIGNATURE_FILE, DOCUMENT_LIMITS[SIGNATURE_FILE])
        except NotFound:
            return None

    def read_file(self, version: str, name: str, limit: int | None = None) -> bytes:
        """Return the bytes of one file of a version (refused unread when over `limit`)."""
        data, _ = self.backend.read(f"versions/{version}/{name}", limit)
        return data

    def listed_file(self, metadata: Metadata, name: str, where: str) -> bytes:
        """One file a version's metadata lists, refused unless it has the size (when recorded:
        checked before it is read) and the digest recorded there."""
        listed = metadata.files[name]
        if metadata.version is None:
            raise IntegrityError(f"{where}: its metadata names no version (never published)")
        data = self.read_file(metadata.version, name, listed.size)
        verify_digest(data, listed.sha256, f"{where} {name}")
        return data

    def resolve(self, version: str = "current") -> Metadata:
        """Return the metadata of a version id, or of the current one."""
        return self.resolve_with_pointer(version)[0]

    def resolve_with_pointer(
        self, version: str = "current"
    ) -> tuple[Metadata, CurrentPointer | None]:
        """Return the metadata of a version id, or of the current one with current.json (its
        promotion: when, and the versions before it); a version asked for by id has none."""
        if version != "current":
            return self.metadata(version), None
        pointer, _ = self.current()
        if pointer is None:
            raise NotFound(f"no version of {self.uri} has been promoted yet")
        metadata = self.metadata(pointer.version)
        if pointer.sha256 != metadata.sha256:
            raise IntegrityError(
                f"{self.uri}/{CURRENT_FILE} names sha256 {pointer.sha256} for version "
                f"{pointer.version}, whose metadata says {metadata.sha256}"
            )
        return metadata, pointer

    def promote(self, version: str) -> CurrentPointer:
        """Point current.json at a complete, verified version; history remembers the old one.

        Promoting the version already current changes nothing (and returns the pointer as it
        is): recording it again would make the next rollback "succeed" without a change.
        """
        metadata = self.verify(version)
        pointer, token = self.current()
        if pointer and (pointer.version, pointer.sha256) == (version, metadata.sha256):
            return pointer
        history = [pointer.version, *pointer.history] if pointer else []
        return self._point(version, metadata.sha256, history, token)

    def verify(self, version: str) -> Metadata:
        """Return a complete version's metadata once every file it lists has its digest."""
        metadata = self.metadata(version)
        model = metadata.model_file
        # The model first (its digest is the version's), then its export and its report.
        for name in sorted(metadata.files, key=lambda n: n != model):
            try:
                self.listed_file(metadata, name, f"{self.uri} {version}")
            except NotFound as e:
                raise IntegrityError(
                    f"{self.uri} {version} lacks {name}, which its metadata lists"
                ) from e
        return metadata

    def rollback(self) -> CurrentPointer:
        """Point current.json back at the version promoted before the current one."""
        pointer, token = self.current()
        if not pointer:
            raise NotFound(f"{self.uri} has no earlier version to roll back to")
        # Entries equal to the current version (written before promote skipped them) are no
        # earlier version: rolling back to them would change nothing.
        earlier = [v for v in pointer.history if v != pointer.version]
        if not earlier:
            raise NotFound(f"{self.uri} has no earlier version to roll back to")
        version, *history = earlier
        metadata = self.verify(version)  # as promote does: never back to a changed version
        return self._point(version, metadata.sha256, history, token)

    def versions(self) -> list[VersionInfo]:
        """List every version, oldest first; incomplete ones have no metadata."""
        ids = sorted({key.split("/")[1] for key in self.backend.keys("versions/")})
        infos = []
        for version in ids:
            try:
                infos.append(VersionInfo(version, self.metadata(version)))
            except NotFound:
                infos.append(VersionInfo(version, None))
            except IntegrityError as e:
                infos.append(VersionInfo(version, None, str(e)))
        return sorted(
            infos, key=lambda v: ((v.metadata and v.metadata.published_at) or "", v.version)
        )

    def _point(
        self, version: str, sha256: str, history: list[str], token: str | None
    ) -> CurrentPointer:
        history = history[:HISTORY_LIMIT]
        previous = history[0] if history else None
        pointer = CurrentPointer(version, sha256, utc_now(), previous, tuple(history))
        try:
            self.write_document(CURRENT_FILE, encode_metadata(pointer.to_json()), if_token=token)
        except Conflict as e:
            raise Conflict(
                f"{self.uri}/{CURRENT_FILE} was changed by someone else while promoting "
                f"{version}; nothing was overwritten - check `list` and retry"
            ) from e
        return pointer


def read_artifact_dir(path: Path) -> tuple[Metadata, dict[str, bytes]]:
    """Read a training output folder; check its model against its metadata before upload."""
    where = path / METADATA_FILE
    try:
        metadata = parse_metadata(where.read_bytes(), str(where))
        files = {name: (path / name).read_bytes() for name in metadata.files}
    except FileNotFoundError as e:
        raise NotFound(f"{path} is not a training output folder: {e.filename} is missing") from e
    except OSError as e:
        raise NotFound(f"cannot read artifact folder {path}: {e}") from e
    for name, data in files.items():
        verify_digest(data, metadata.files[name].sha256, str(path / name))
    return metadata, files


MODELS_FOLDER = "models"  # in a bucket, every model sits under gs://BUCKET/models/


def bucket_store(bucket: str) -> str:
    """The store in a bucket: gs://BUCKET/models."""
    return f"gs://{bucket}/{MODELS_FOLDER}"


def model_root(store: str, name: str) -> str:
    """One model's root in a store: STORE/NAME (MODEL_URI); the name must be a safe id."""
    check_version_id(name)
    return f"{store.rstrip('/')}/{name}"


def store_models(store: str, timeout: float = 30.0) -> list[str]:
    """The names of the models in a store: each folder holding versions or a current.json."""
    names = set()
    for key in open_storage(store, STORE, timeout).keys(""):
        name, _, rest = key.partition("/")
        if (rest == CURRENT_FILE or rest.startswith("versions/")) and VERSION_PATTERN.match(name):
            names.add(name)
    return sorted(names)


def check_version_id(version: str) -> None:
    """Refuse version ids that could escape the layout or shadow current.json."""
    if not isinstance(version, str) or not VERSION_PATTERN.match(version) or version == "current":
        raise ConfigError(
            f"version id {version!r} is invalid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, and not 'current'"
        )


def default_version(sha256: str) -> str:
    """Return a sortable, unique-enough version id: UTC time plus the digest's head."""
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}Z-{sha256[:8]}"


def utc_now(timespec: str = "seconds") -> str:
    """Return the current UTC time as RFC 3339."""
    return dt.datetime.now(dt.UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
