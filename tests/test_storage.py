"""The one storage layer: its two URI acceptance rules, and its calls on a folder and on GCS."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from function.core.errors import ConfigError, Conflict, IntegrityError, NotFound
from function.core.storage import (
    BATCH,
    STORE,
    AlreadyExists,
    FileLocation,
    GcsLocation,
    Location,
    Rule,
    Storage,
    open_storage,
    parse_uri,
    staged_name,
    staged_prefix,
)
from tests.conftest import Emulator

# --- the acceptance rules: what each caller takes, and each refusal's words ----------------------

BOTH: list[tuple[str, Location]] = [
    ("gs://bucket", GcsLocation("bucket", "")),
    ("gs://bucket/", GcsLocation("bucket", "")),
    ("gs://bucket/models/iris", GcsLocation("bucket", "models/iris")),
    ("gs://bucket//models/iris/", GcsLocation("bucket", "models/iris")),
    ("gs://bucket/in/./out", GcsLocation("bucket", "in/./out")),  # GCS normalises nothing
    ("gs://bucket/x?generation=1#frag", GcsLocation("bucket", "x")),
    ("file:///abs/path", FileLocation(Path("/abs/path"))),
    ("file:///abs/path/", FileLocation(Path("/abs/path"))),
    ("file:/abs/path", FileLocation(Path("/abs/path"))),
    ("file:///abs/my%20data", FileLocation(Path("/abs/my data"))),  # as Path.as_uri writes it
    ("gs://bucket/my%20data", GcsLocation("bucket", "my%20data")),  # an object name as written
]


@pytest.mark.parametrize("rule", [STORE, BATCH], ids=["store", "batch"])
@pytest.mark.parametrize("uri, location", BOTH)
def test_both_rules_take_a_bucket_prefix_and_an_absolute_file_uri(
    rule: Rule, uri: str, location: Location
) -> None:
    assert parse_uri(uri, rule) == location


@pytest.mark.parametrize(
    "uri, location",
    [
        ("file://localhost/abs/path", FileLocation(Path("/abs/path"))),
        ("relative/store", FileLocation(Path.cwd() / "relative" / "store")),
        ("/abs/store/../store", FileLocation(Path("/abs/store"))),
    ],
)
def test_the_store_also_takes_localhost_and_plain_paths(uri: str, location: Location) -> None:
    assert parse_uri(uri, STORE) == location


@pytest.mark.parametrize(
    "uri, message",
    [
        ("s3://bucket/x", "store URI 's3://bucket/x' must start with gs:// or file://"),
        ("https://storage.googleapis.com/b/x", "must start with gs:// or file://"),
        ("", "store URI '' must start with gs:// or file://"),
        ("gs:///x", "store URI 'gs:///x' has no bucket \\(expected gs://BUCKET/PREFIX\\)"),
        ("gs:x", "has no bucket"),
        ("file://host/x", "store URI 'file://host/x' must be file:///ABSOLUTE/PATH"),
        ("file:relative/x", "must be file:///ABSOLUTE/PATH"),
        ("file://", "must be file:///ABSOLUTE/PATH"),
    ],
)
def test_the_store_refuses_with_the_reason(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_uri(uri, STORE)


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/x",
        "",
        "gs:///x",
        "file://host/x",
        "file:relative/x",
        # What the store takes and a batch job does not: its command makes plain paths file://
        # URIs itself, so a plain path here is a mistake, and localhost is not its spelling.
        "file://localhost/abs/path",
        "relative/path",
        "/abs/path",
    ],
)
def test_a_batch_job_refuses_anything_else(uri: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_uri(uri, BATCH)
    assert str(refused.value) == f"{uri!r} must be gs://BUCKET/PATH or file:///ABSOLUTE/PATH"


def test_a_refusal_is_a_config_error_with_its_status() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_uri("s3://b", STORE)
    assert refused.value.status == 500  # a setting of the operator's, not a client's mistake


# --- the calls, on a folder and on the GCS emulator ----------------------------------------------


@pytest.fixture(params=["file", pytest.param("gcs", marks=pytest.mark.slow)])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "file":
        return open_storage((tmp_path / "place").as_uri(), BATCH, timeout=5)
    # fake-gcs-server: it enforces generation preconditions, which gcp-storage-emulator ignores.
    emulator: Emulator = request.getfixturevalue("fake_gcs")
    request.getfixturevalue("monkeypatch").setenv("STORAGE_EMULATOR_HOST", emulator.host)
    return open_storage(f"gs://{emulator.bucket}/s{time.monotonic_ns()}", BATCH, timeout=5)


def test_a_create_only_write_refuses_a_second_and_keeps_the_first(place: Storage) -> None:
    place.write("a/doc.json", b"first", if_token=None)

    with pytest.raises(Conflict, match="already exists"):
        place.write("a/doc.json", b"second", if_token=None)
    assert place.read("a/doc.json")[0] == b"first"


def test_a_compare_and_swap_refuses_a_stale_token(place: Storage) -> None:
    place.write("doc.json", b"one", if_token=None)
    _, token = place.read("doc.json")
    place.write("doc.json", b"two", if_token=token)

    with pytest.raises(Conflict):
        place.write("doc.json", b"three", if_token=token)
    assert place.read("doc.json")[0] == b"two"


def test_a_read_over_its_limit_is_refused_and_an_absent_key_is_not_found(place: Storage) -> None:
    place.write("big", b"x" * 101, if_token=None)

    with pytest.raises(IntegrityError, match="over its limit of 100: refused unread"):
        place.read("big", limit=100)
    assert place.read("big", limit=101)[0] == b"x" * 101
    with pytest.raises(NotFound, match="does not exist"):
        place.read("absent")


def test_keys_are_every_name_that_starts_with_the_prefix(place: Storage) -> None:
    for key in ("part-1.csv", "part-2.csv", "parts/x", "errors-1.jsonl", "_tasks/1.json"):
        place.write(key, b".", if_token=None)

    assert place.keys("part-") == ["part-1.csv", "part-2.csv"]
    assert place.keys("_tasks/") == ["_tasks/1.json"]
    assert place.keys("") == sorted(
        ["_tasks/1.json", "errors-1.jsonl", "part-1.csv", "part-2.csv", "parts/x"]
    )
    assert place.keys("nothing/") == []


def test_a_staged_object_is_published_once_and_the_name_is_then_taken(place: Storage) -> None:
    staged = staged_name("out/part.csv")
    with place.stream(staged) as sink:
        sink.write(b"whole")
    place.publish(staged, "out/part.csv")

    with pytest.raises(AlreadyExists, match="already exists"):
        place.publish(staged, "out/part.csv")
    place.delete(staged)
    assert place.keys("") == ["out/part.csv"]
    assert place.keys(staged_prefix("out/part.csv")) == []
    assert place.read("out/part.csv")[0] == b"whole"


def test_items_list_every_object_with_its_key_or_the_one_the_place_names(place: Storage) -> None:
    place.write("b.csv", b"12", if_token=None)
    place.write("in/a.csv", b"1", if_token=None)
    # (On disk, write() has also made the lock: a hidden file, never listed.)

    items = place.items()
    one = open_storage(f"{place.uri}/in/a.csv", BATCH, timeout=5).items()

    assert [(i.key, i.size) for i in items] == [("b.csv", 2), ("in/a.csv", 1)]
    assert [i.uri for i in items] == [f"{place.uri}/b.csv", f"{place.uri}/in/a.csv"]
    assert [(i.key, i.uri, i.size) for i in one] == [("", f"{place.uri}/in/a.csv", 1)]
    with place.open_at(items[0].key, 1, items[0].version) as stream:
        assert stream.read() == b"2"


def test_a_file_side_write_stages_beside_its_name_and_lists_no_hidden_file(
    tmp_path: Path,
) -> None:
    place = open_storage(str(tmp_path), STORE)
    place.write("v/doc", b"1", if_token=None)
    (tmp_path / "v" / ".hidden").write_bytes(b"")

    assert place.keys("") == ["v/doc"]
    assert sorted(os.listdir(tmp_path)) == [".lock", "v"]  # the lock, and nothing staged left


def test_a_folder_and_a_file_whose_names_a_uri_escapes_are_listed_and_read(
    tmp_path: Path,
) -> None:
    """A space is %20 in a file:// URI (Path.as_uri, the batch command's plain paths): the
    place, its listing and its reads agree on it."""
    folder = tmp_path / "my data"
    folder.mkdir()
    (folder / "a b.csv").write_bytes(b"a\n1\n")
    place = open_storage(folder.as_uri(), BATCH)

    [item] = place.items()

    assert (item.key, item.uri) == ("a b.csv", (folder / "a b.csv").as_uri())
    with place.open_at(item.key, 0, item.version) as stream:
        assert stream.read() == b"a\n1\n"
