"""A model's metadata for tests that build a LoadedModel around an estimator of their own."""

from __future__ import annotations

from collections.abc import Sequence

from function.core.metadata import Metadata, metadata_of

NO_FILE = "0" * 64  # a digest nothing is read against: the test holds the estimator itself


def metadata_for(names: Sequence[str], task: str = "classification") -> Metadata:
    """The least metadata.json a version can have, checked by the one parser."""
    document = {
        "name": "test",
        "version": "v1",
        "sha256": NO_FILE,
        "task": task,
        "estimator": "Test",
        "feature_names": list(names),
        "class_names": [],
        "files": {"model.joblib": {"sha256": NO_FILE, "size": 0}},
    }
    return metadata_of(document, "test")
