"""Artifacts as an older modelrun wrote them, for the tests and the benchmark."""

from __future__ import annotations

import json
from pathlib import Path

from function.drift import BASELINE_FILE


def without_baseline(artifact: Path, out: Path) -> Path:
    """A copy of an artifact as written before versions carried a drift baseline."""
    out.mkdir(parents=True)
    metadata = json.loads((artifact / "metadata.json").read_text())
    del metadata["files"][BASELINE_FILE], metadata["baseline"]
    for name in metadata["files"]:
        (out / name).write_bytes((artifact / name).read_bytes())
    (out / "metadata.json").write_text(json.dumps(metadata))
    return out
