"""The ONNX fast path: exported and verified by training, served without scikit-learn."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from function.errors import IntegrityError
from function.model import load_model
from function.store import ModelStore
from tests.conftest import PYTHON, ROOT
from training.__main__ import main as training


def metadata(folder: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((folder / "metadata.json").read_text())


def test_a_linear_model_exports_a_verified_onnx_file(iris_artifact: Path) -> None:
    record = metadata(iris_artifact)["onnx"]

    assert record["verified"] is True
    assert record["labels_mismatched"] == 0
    assert record["max_probability_difference"] <= record["tolerance"] == 1e-9
    assert record["rows_checked"] > 5000  # the hold-out rows and generated ones
    assert (iris_artifact / "model.onnx").exists()
    assert "model.onnx" in metadata(iris_artifact)["files"]


def test_a_regressor_exports_within_tolerance(tmp_path: Path) -> None:
    data = tmp_path / "line.csv"
    data.write_text("x,z,y\n" + "\n".join(f"{i},{i % 7},{3 * i + 1}" for i in range(60)) + "\n")

    assert training(["train", "--data", str(data), "--target", "y", "--estimator", "ridge",
                     "--out", str(tmp_path / "out")]) == 0  # fmt: skip

    assert metadata(tmp_path / "out")["onnx"]["verified"] is True


def test_an_export_that_disagrees_is_not_written(tmp_path: Path) -> None:
    # A 100-tree forest ties 50/50 on one Iris hold-out row; onnxruntime's float32 thresholds
    # move one vote there, so the labels differ and the export must be refused.
    out = tmp_path / "rf"
    assert training(["train", "--estimator", "random_forest", "--out", str(out)]) == 0

    record = metadata(out)["onnx"]
    assert record["verified"] is False
    assert record["labels_mismatched"] >= 1
    assert not (out / "model.onnx").exists()
    assert list(metadata(out)["files"]) == ["model.joblib"]


def test_no_onnx_on_request(tmp_path: Path) -> None:
    assert training(["train", "--no-onnx", "--out", str(tmp_path / "plain")]) == 0

    assert "onnx" not in metadata(tmp_path / "plain")
    assert not (tmp_path / "plain" / "model.onnx").exists()


@pytest.mark.parametrize("runtime, imported", [("auto", False), ("sklearn", True)])
def test_the_onnx_runtime_never_imports_sklearn(
    iris_artifact: Path, tmp_path: Path, runtime: str, imported: bool
) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    script = (
        "import sys; from function.store import ModelStore; from function.model import load_model;"
        f"m = load_model(ModelStore({store.uri!r}), 'current', None, True, {runtime!r});"
        "print(m.runtime, 'sklearn' in sys.modules)"
    )

    result = subprocess.run([PYTHON, "-c", script], cwd=ROOT, capture_output=True, text=True)

    expected = "onnx" if runtime == "auto" else "sklearn"
    assert result.stdout.split() == [expected, str(imported)], result.stderr


def test_onnx_runtime_requires_a_verified_export(tmp_path: Path) -> None:
    assert training(["train", "--no-onnx", "--out", str(tmp_path / "plain")]) == 0
    store = ModelStore((tmp_path / "iris").as_uri())
    store.promote(store.publish(tmp_path / "plain", "v1"))

    with pytest.raises(IntegrityError, match="no verified model.onnx"):
        load_model(store, "current", None, True, "onnx")


def test_a_tampered_onnx_file_is_refused(iris_artifact: Path, tmp_path: Path) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.publish(iris_artifact, "v1")
    (tmp_path / "iris" / "versions" / "v1" / "model.onnx").write_bytes(b"another graph")

    with pytest.raises(IntegrityError, match="model.onnx: sha256"):
        store.promote("v1")
    store.backend.write(
        "current.json",
        json.dumps({"version": "v1", "sha256": store.metadata("v1")["sha256"]}).encode(),
        if_token=None,
    )
    with pytest.raises(IntegrityError, match="model.onnx: sha256"):
        load_model(store, "current", None)
