"""The model store on both sides: a folder, and the real GCS client on gcp-storage-emulator."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from function.core.artifact import METADATA_FILE, MODEL_FILE
from function.core.errors import ConfigError, Conflict, IntegrityError, NotFound, StoreUnavailable
from function.core.storage import STORE, parse_uri
from function.core.store import ModelStore


@pytest.fixture(params=["file", pytest.param("gcs", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ModelStore:
    if request.param == "file":
        return ModelStore((tmp_path / "store" / "iris").as_uri(), timeout=5)
    return ModelStore(request.getfixturevalue("gcs_uri"), timeout=5)


def test_publish_then_promote_makes_it_current(store: ModelStore, iris_artifact: Path) -> None:
    version = store.publish(iris_artifact, "v1")
    pointer = store.promote(version)

    assert pointer.version == "v1"
    assert pointer.previous is None
    assert store.resolve().version == "v1"
    published = json.loads((iris_artifact / METADATA_FILE).read_text())
    assert store.read_file("v1", MODEL_FILE) == (iris_artifact / MODEL_FILE).read_bytes()
    assert store.metadata("v1").sha256 == published["sha256"]


def test_published_metadata_records_version_and_time(
    store: ModelStore, iris_artifact: Path
) -> None:
    store.publish(iris_artifact, "v1")

    metadata = store.metadata("v1")

    assert metadata.version == "v1"
    assert metadata.published_at is not None and metadata.published_at.endswith("Z")


def test_default_version_id_is_time_and_digest(store: ModelStore, iris_artifact: Path) -> None:
    version = store.publish(iris_artifact)

    digest = json.loads((iris_artifact / METADATA_FILE).read_text())["sha256"]
    assert version.endswith(digest[:8])
    assert version[:8].isdigit()


def test_a_version_is_never_overwritten(
    store: ModelStore, iris_artifact: Path, forest_artifact: Path
) -> None:
    store.publish(iris_artifact, "v1")

    with pytest.raises(Conflict, match="v1 already exists"):
        store.publish(forest_artifact, "v1")
    assert store.metadata("v1").estimator == "LogisticRegression"


def test_rollback_walks_back_through_history(
    store: ModelStore, iris_artifact: Path, forest_artifact: Path
) -> None:
    for version, artifact in (
        ("v1", iris_artifact),
        ("v2", forest_artifact),
        ("v3", iris_artifact),
    ):
        store.publish(artifact, version)
        store.promote(version)

    assert store.rollback().version == "v2"
    assert store.rollback().version == "v1"
    with pytest.raises(NotFound, match="no earlier version"):
        store.rollback()
    assert store.resolve().version == "v1"


def test_promoting_the_current_version_changes_nothing(
    store: ModelStore, iris_artifact: Path, forest_artifact: Path
) -> None:
    store.publish(iris_artifact, "v1")
    store.publish(forest_artifact, "v2")
    store.promote("v1")
    before = store.promote("v2")

    again = store.promote("v2")

    assert again == before  # not written again: same promoted_at, same history
    assert store.rollback().version == "v1"  # a real change, not v2 again
    with pytest.raises(NotFound, match="no earlier version"):
        store.rollback()


def test_rollback_skips_history_entries_equal_to_the_current_version(
    store: ModelStore, iris_artifact: Path
) -> None:
    """current.json files written before promote skipped the current version."""
    store.publish(iris_artifact, "v1")
    store.promote("v1")
    pointer, token = store.current()
    assert pointer is not None
    store._point("v1", pointer.sha256, ["v1", "v1"], token)

    with pytest.raises(NotFound, match="no earlier version"):
        store.rollback()


def test_list_marks_complete_and_incomplete_versions(
    store: ModelStore, iris_artifact: Path
) -> None:
    store.publish(iris_artifact, "v1")
    # An interrupted publish: the model reached the store, metadata.json (written last) did not.
    store.backend.write("versions/v2/model.joblib", b"partial", if_token=None)

    listed = {v.version: v.complete for v in store.versions()}

    assert listed == {"v1": True, "v2": False}


def test_an_incomplete_version_cannot_be_promoted(store: ModelStore, iris_artifact: Path) -> None:
    store.backend.write("versions/v2/model.joblib", b"partial", if_token=None)

    with pytest.raises(NotFound, match="v2 is incomplete"):
        store.promote("v2")
    assert store.current() == (None, None)


def test_interrupted_publish_leaves_current_untouched(
    store: ModelStore, iris_artifact: Path, forest_artifact: Path
) -> None:
    store.publish(iris_artifact, "v1")
    store.promote("v1")
    real_write = store.backend.write

    def crash_on_metadata(key: str, data: bytes, if_token: str | None) -> None:
        if key.endswith(METADATA_FILE):  # fault injection: the process dies before the last write
            raise KeyboardInterrupt
        real_write(key, data, if_token)

    store.backend.write = crash_on_metadata  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        store.publish(forest_artifact, "v2")
    store.backend.write = real_write  # type: ignore[method-assign]

    assert store.resolve().version == "v1"
    assert {v.version: v.complete for v in store.versions()} == {"v1": True, "v2": False}
    with pytest.raises(Conflict, match="v2 already exists"):
        store.publish(forest_artifact, "v2")


def test_promote_refuses_a_model_that_does_not_match_its_digest(
    store: ModelStore, iris_artifact: Path
) -> None:
    store.publish(iris_artifact, "v1")
    # A version written by hand (or tampered with) whose model is not the one its metadata names.
    metadata = {**store.metadata("v1").raw, "version": "v9"}
    store.backend.write("versions/v9/model.joblib", b"evil", if_token=None)
    store.backend.write("versions/v9/metadata.json", json.dumps(metadata).encode(), if_token=None)

    with pytest.raises(IntegrityError, match="sha256"):
        store.promote("v9")
    assert store.current() == (None, None)


def test_publish_refuses_an_artifact_whose_model_was_altered(
    store: ModelStore, iris_artifact: Path, tmp_path: Path
) -> None:
    altered = tmp_path / "altered"
    shutil.copytree(iris_artifact, altered)
    (altered / MODEL_FILE).write_bytes(b"not the model that was evaluated")

    with pytest.raises(IntegrityError, match="sha256"):
        store.publish(altered, "v1")
    assert store.versions() == []


def test_publish_names_a_folder_that_is_not_an_artifact(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="metadata.json is missing"):
        store.publish(tmp_path, "v1")


def test_resolve_without_promotion_says_so(store: ModelStore) -> None:
    with pytest.raises(NotFound, match="no version .* promoted"):
        store.resolve()


@pytest.mark.parametrize("version", ["current", "../escape", "a/b", "", "x" * 65, "-lead"])
def test_version_ids_that_could_escape_are_refused(
    store: ModelStore, iris_artifact: Path, version: str
) -> None:
    with pytest.raises(ConfigError, match="version id"):
        store.publish(iris_artifact, version)


def test_corrupt_current_json_is_reported(store: ModelStore, iris_artifact: Path) -> None:
    store.backend.write("current.json", b"{not json", if_token=None)

    with pytest.raises(StoreUnavailable, match="current.json is corrupt"):
        store.resolve()


@pytest.mark.parametrize(
    "uri, message",
    [
        ("s3://bucket/x", "must start with gs:// or file://"),
        ("gs:///x", "has no bucket"),
        ("file://host/x", "file:///ABSOLUTE/PATH"),
    ],
)
def test_bad_store_uris_are_named(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_uri(uri, STORE)


def test_unreachable_gcs_is_a_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import free_port

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    store = ModelStore("gs://nowhere/models/iris", timeout=1)

    with pytest.raises(StoreUnavailable, match="cannot reach gs://nowhere/models/iris"):
        store.resolve()


def test_missing_bucket_is_named(gcs_emulator, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.host)
    store = ModelStore("gs://no-such-bucket/models/iris", timeout=2)

    with pytest.raises(NotFound, match="no-such-bucket"):
        store.metadata("v1")


def test_promote_refuses_a_version_missing_a_file_its_metadata_lists(
    store: ModelStore, tmp_path: Path
) -> None:
    from training.__main__ import main

    assert main(["train", "--out", str(tmp_path / "out")]) == 0
    version = store.publish(tmp_path / "out", "v1")
    key = f"versions/{version}/calibration.png"
    if store.uri.startswith("gs://"):
        from google.cloud import storage

        bucket, _, prefix = store.uri.removeprefix("gs://").partition("/")
        storage.Client().bucket(bucket).blob(f"{prefix}/{key}").delete()
    else:
        (Path(store.uri.removeprefix("file://")) / key).unlink()

    with pytest.raises(IntegrityError, match="lacks calibration.png, which its metadata lists"):
        store.promote(version)
    assert store.current() == (None, None)


def test_published_files_are_as_readable_as_open_makes_them(
    tmp_path: Path, iris_artifact: Path
) -> None:
    """The image's user (10001) reads a store its publisher (root, or you) mounts for it: files
    get the umask's mode, not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        store = ModelStore((tmp_path / "store" / "iris").as_uri())
        store.promote(store.publish(iris_artifact, "v1"))
    finally:
        os.umask(old)

    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "store").rglob("*")
             if p.is_file() and not p.name.startswith(".")}  # fmt: skip
    assert modes and set(modes.values()) == {0o644}, modes


@pytest.mark.parametrize("named", ["../../elsewhere/v1", "v9\r\nX-Injected: 1", "v9\n", "v1"])
def test_a_version_whose_metadata_names_another_never_loads(
    store: ModelStore, iris_artifact: Path, named: str
) -> None:
    store.publish(iris_artifact, "v1")
    # Written by whoever can write the store: the files of v1, a metadata naming another version.
    metadata = {**store.metadata("v1").raw, "version": named}
    store.backend.write("versions/v9/model.joblib", store.read_file("v1", MODEL_FILE), None)
    store.backend.write("versions/v9/metadata.json", json.dumps(metadata).encode(), None)

    with pytest.raises(IntegrityError, match="not its folder's") as refused:
        store.verify("v9")
    with pytest.raises(IntegrityError):
        store.promote("v9")
    assert "\n" not in str(refused.value) and "\r" not in str(refused.value)


@pytest.mark.parametrize("version", ["abc\n", "abc\r\n", "../v1", "a/b", "current", ""])
def test_a_version_id_is_checked_to_its_last_character(store: ModelStore, version: str) -> None:
    with pytest.raises(ConfigError, match="is invalid"):
        store.metadata(version)
