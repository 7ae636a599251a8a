"""Artifacts the tests publish: as an older modelrun wrote them, or around any object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from function.core.drift import BASELINE_FILE
from function.core.store import ModelStore
from training.train import write_artifact


def renamed(artifact: Path, name: str, out: Path) -> Path:
    """A copy of an artifact trained under another model name (the store serves a version only
    from the folder its metadata names)."""
    out.mkdir(parents=True)
    for path in artifact.iterdir():
        if path.is_file():
            (out / path.name).write_bytes(path.read_bytes())
    metadata = json.loads((artifact / "metadata.json").read_text())
    (out / "metadata.json").write_text(json.dumps({**metadata, "name": name}))
    return out


def without_baseline(artifact: Path, out: Path) -> Path:
    """A copy of an artifact as written before versions carried a drift baseline."""
    out.mkdir(parents=True)
    metadata = json.loads((artifact / "metadata.json").read_text())
    del metadata["files"][BASELINE_FILE], metadata["baseline"]
    for name in metadata["files"]:
        (out / name).write_bytes((artifact / name).read_bytes())
    (out / "metadata.json").write_text(json.dumps(metadata))
    return out


def publish_object(
    store: ModelStore, version: str, obj: Any, template: Path, tmp: Path, **changes: Any
) -> None:
    """Publish any object as a version, with the template's metadata changed as asked."""
    base = json.loads((template / "metadata.json").read_text())
    base.pop("files")
    if "feature_names" in changes:  # other features: the template's schema no longer applies
        base.pop("features")
        base.pop("input_example")
    out = tmp / f"artifact-{version}"
    write_artifact(out, obj, {**base, **changes})
    store.publish(out, version)
