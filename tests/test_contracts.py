"""The stored documents as typed values: metadata.json, baseline.json, current.json, rollout.json.

Each has one parser that names the field that is wrong, a writer that records schema_version, and
reads what older modelrun wrote (no schema_version, and metadata without the fields added since).
The old artifact is built here with the old field layout, from a real trained model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from function.core import rollout
from function.core.artifact import METADATA_FILE, MODEL_FILE
from function.core.baseline import BASELINE_FILE, parse_baseline
from function.core.current import parse_current
from function.core.errors import IntegrityError
from function.core.metadata import SCHEMA_VERSION, metadata_of, parse_metadata
from function.core.model import load_model
from function.core.store import CURRENT_FILE, ModelStore

# What metadata.json held before each of these was added: none is in the old artifact.
ADDED_SINCE = (
    "schema_version",
    "format",
    "label_type",
    "input",
    "features",
    "input_example",
    "report",
    "onnx",
    "numpy",
    "baseline",
    "background",
    "skops_trusted",
)


def old_artifact(artifact: Path, out: Path) -> Path:
    """A copy of a trained artifact in the oldest layout: its model and a baseline without
    schema_version, and metadata without any field added since."""
    metadata = json.loads((artifact / METADATA_FILE).read_text())
    for name in ADDED_SINCE:
        metadata.pop(name, None)
    baseline = json.loads((artifact / BASELINE_FILE).read_text())
    del baseline["schema_version"]
    files = {MODEL_FILE: (artifact / MODEL_FILE).read_bytes(), BASELINE_FILE: dumps(baseline)}
    metadata["files"] = {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in files.items()
    }
    out.mkdir(parents=True)
    for name, data in {**files, METADATA_FILE: dumps(metadata)}.items():
        (out / name).write_bytes(data)
    return out


def dumps(document: Any) -> bytes:
    return json.dumps(document).encode()


def test_an_artifact_written_in_the_old_layout_still_loads_and_predicts(
    iris_artifact: Path, tmp_path: Path
) -> None:
    store = ModelStore((tmp_path / "store" / "iris").as_uri())
    store.promote(store.publish(old_artifact(iris_artifact, tmp_path / "old"), "v-old"))

    model = load_model(store, "current", None)

    assert model.version == "v-old" and model.runtime == "sklearn"
    assert model.metadata.schema_version == SCHEMA_VERSION  # read as the first version
    assert model.metadata.format == "joblib" and model.metadata.label_type is None
    assert model.label_type == "string"  # told by the estimator's classes
    assert [f.type for f in model.schema.features] == ["number"] * 4
    assert model.baseline is not None and len(model.baseline.features) == 4
    assert list(model.estimator.predict([[5.1, 3.5, 1.4, 0.2]])) == ["setosa"]


def test_parsing_metadata_changes_nothing_it_was_given(iris_artifact: Path) -> None:
    document = json.loads((iris_artifact / METADATA_FILE).read_text())
    for name in ADDED_SINCE:  # the old layout: every default would be filled in
        document.pop(name, None)
    before = copy.deepcopy(document)

    metadata = metadata_of(document, "old")

    assert document == before
    assert metadata.format == "joblib" and "format" not in metadata.raw
    with pytest.raises(TypeError):
        metadata.raw["format"] = "skops"  # type: ignore[index]


def test_every_writer_records_the_schema_version(iris_artifact: Path, tmp_path: Path) -> None:
    root = tmp_path / "store" / "iris"
    store = ModelStore(root.as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    store.publish(iris_artifact, "v2")
    rollout.start(store, "v2", "shadow")

    written = {
        "metadata.json": root / "versions" / "v1" / METADATA_FILE,
        "baseline.json": root / "versions" / "v1" / BASELINE_FILE,
        "current.json": root / CURRENT_FILE,
        "rollout.json": root / rollout.ROLLOUT_FILE,
    }
    versions = {
        name: json.loads(path.read_text()).get("schema_version") for name, path in written.items()
    }
    assert versions == dict.fromkeys(written, 1)


def test_current_and_rollout_json_written_before_schema_version_still_read(
    iris_artifact: Path, tmp_path: Path
) -> None:
    root = tmp_path / "store" / "iris"
    store = ModelStore(root.as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    store.publish(iris_artifact, "v2")
    rollout.start(store, "v2", "canary", 25)
    rollout.abort(store)
    rollout.start(store, "v2", "canary", 50)
    for name in (CURRENT_FILE, rollout.ROLLOUT_FILE):  # as the code before wrote them
        document = json.loads((root / name).read_text())
        del document["schema_version"]
        (root / name).write_bytes(dumps(document))

    pointer, _ = store.current()
    state, _ = rollout.read_state(store)

    assert pointer is not None and pointer.version == "v1" and pointer.history == ()
    assert state.active is not None and state.active.percent == 50
    assert [(e.version, e.outcome, e.rollout.percent) for e in state.history] == [
        ("v2", "aborted", 25)
    ]


def test_each_document_survives_its_own_round_trip(iris_artifact: Path, tmp_path: Path) -> None:
    store = ModelStore((tmp_path / "store" / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    store.publish(iris_artifact, "v2")
    rollout.start(store, "v2", "shadow")
    rollout.promote(store)
    pointer, _ = store.current()
    state, _ = rollout.read_state(store)
    baseline = parse_baseline((iris_artifact / BASELINE_FILE).read_bytes(), "iris")

    assert pointer is not None and parse_current(dumps(pointer.to_json())) == pointer
    assert rollout.parse_state(dumps(state.to_json())) == state
    assert parse_baseline(dumps(baseline.to_json()), "again") == baseline
    assert json.loads((iris_artifact / BASELINE_FILE).read_text()) == baseline.to_json()


@pytest.mark.parametrize(
    ("wrong", "named"),
    [
        (lambda d: d.update(sha256="not-a-digest"), "sha256 must be 64 hex digits"),
        (lambda d: d.update(schema_version=2), "schema_version 2 is not 1"),
        (lambda d: d.update(class_names="setosa"), "class_names must be a list of strings"),
        (lambda d: d["files"].update({MODEL_FILE: {"sha256": "x"}}), "files.model.joblib.sha256"),
        (lambda d: d["files"][MODEL_FILE].update(size=-1), "files.model.joblib.size must be"),
        (lambda d: d.update(estimator=7), "estimator must be a string, got int"),
        (lambda d: d.update(input_example=[1, 2]), "input_example must be an object"),
        (lambda d: d.update(report={"files": "report.html"}), "report.files must be a list"),
        (lambda d: d.update(onnx="yes"), "onnx must be an object"),
        (lambda d: d.update(published_at=3), "published_at must be a string"),
    ],
)
def test_metadata_names_the_field_that_is_wrong(
    iris_artifact: Path, wrong: Callable[[dict[str, Any]], None], named: str
) -> None:
    document = json.loads((iris_artifact / METADATA_FILE).read_text())
    parse_metadata(dumps(document), "v1")  # as written: accepted
    wrong(document)

    with pytest.raises(IntegrityError, match=re.escape(named)):
        parse_metadata(dumps(document), "v1")


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"version": "v1", "sha256": "0" * 64, "history": "v0"}, "history must be a list"),
        ({"version": "v1", "sha256": "abc"}, "sha256 must be 64 hex digits"),
        ({"version": "../v1", "sha256": "0" * 64}, "version: version id '../v1' is invalid"),
        ({"version": "v1", "sha256": "0" * 64, "previous": 1}, "previous must be a string"),
        ({"version": "v1", "sha256": "0" * 64, "schema_version": 9}, "schema_version 9"),
    ],
)
def test_current_json_names_the_field_that_is_wrong(document: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        parse_current(dumps(document))


def test_rollout_json_names_the_history_record_that_is_wrong(
    iris_artifact: Path, tmp_path: Path
) -> None:
    store = ModelStore((tmp_path / "store" / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    store.publish(iris_artifact, "v2")
    rollout.start(store, "v2", "canary", 10)
    rollout.abort(store)
    document = rollout.read_state(store)[0].to_json()
    document["history"][0]["outcome"] = "forgotten"

    with pytest.raises(ValueError, match=r"history\[0\]: outcome must be one of"):
        rollout.parse_state(dumps(document))
