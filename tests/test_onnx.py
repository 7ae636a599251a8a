"""The ONNX fast path: exported and verified by training, served without scikit-learn."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.tree._tree import TREE_UNDEFINED

from function.core.errors import IntegrityError
from function.core.model import load_model
from function.core.onnx_model import onnx_model
from function.core.store import ModelStore
from tests.conftest import PYTHON, ROOT
from training import onnx_export
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
                     "--no-report", "--out", str(tmp_path / "out")]) == 0  # fmt: skip

    assert metadata(tmp_path / "out")["onnx"]["verified"] is True


def test_a_forest_exports_a_verified_onnx_file(tmp_path: Path) -> None:
    # 100 trees tie 50/50 on one Iris hold-out row: one threshold rounded the wrong way in the
    # graph would move a vote there and fail verification.
    out = tmp_path / "rf"
    assert training(["train", "--estimator", "random_forest", "--param", "n_estimators=100",
                     "--no-report", "--out", str(out)]) == 0  # fmt: skip

    record = metadata(out)["onnx"]
    assert record["verified"] is True
    assert record["labels_mismatched"] == 0
    assert record["max_probability_difference"] <= record["tolerance"] == 1e-5


def test_forest_decisions_equal_scikit_learn_at_every_threshold(
    forest_artifact: Path, tmp_path: Path
) -> None:
    # The rows most likely to split differently: every feature exactly at each float32 next to
    # each threshold (scikit-learn compares float32(x) <= its float64 threshold).
    pipeline = joblib.load(forest_artifact / "model.joblib")
    onnx = onnx_model((forest_artifact / "model.onnx").read_bytes(), metadata(forest_artifact))
    rng = np.random.default_rng(0)
    thresholds = np.concatenate([t.tree_.threshold for t in pipeline[-1].estimators_])
    thresholds = thresholds[thresholds != TREE_UNDEFINED].astype(np.float32)
    near = np.concatenate([np.nextafter(thresholds, -np.inf), thresholds,
                           np.nextafter(thresholds, np.inf)])  # fmt: skip
    rows = rng.choice(near, size=(20000, 4)).astype(np.float64)

    labels, probabilities = onnx.predict_both(rows)

    assert (labels == pipeline.predict(rows)).all()
    assert np.abs(probabilities - pipeline.predict_proba(rows)).max() <= 1e-5


@pytest.mark.parametrize(
    "step, trees",
    [
        ("sklearn_trees", 100),  # skl2onnx's own graph: float64 in, nearest float32 thresholds
        ("_count_votes", 20),  # votes summed as 1/n in float32: 7 against 7 no longer ties
    ],
)
def test_without_each_exactness_step_a_forest_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, trees: int
) -> None:
    monkeypatch.setattr(onnx_export, step, lambda *args: None)
    out = tmp_path / "rf"
    assert training(["train", "--estimator", "random_forest", "--param", f"n_estimators={trees}",
                     "--no-report", "--out", str(out)]) == 0  # fmt: skip

    record = metadata(out)["onnx"]
    assert record["verified"] is False
    assert record["labels_mismatched"] >= 1
    assert not (out / "model.onnx").exists()
    assert "model.onnx" not in metadata(out)["files"]


def test_a_value_beyond_float32_is_refused_by_both_runtimes(forest_artifact: Path) -> None:
    row = np.array([[5.1, 3.5, 1e39, 0.2]])
    onnx = onnx_model((forest_artifact / "model.onnx").read_bytes(), metadata(forest_artifact))

    with pytest.raises(ValueError, match="too large for float32"):
        onnx.predict_both(row)
    forest = joblib.load(forest_artifact / "model.joblib")
    # scikit-learn's own cast overflows (a warning), then it refuses the row
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="dtype\\('float32'\\)"):
        forest.predict(row)


@pytest.mark.parametrize(
    "estimator, classes",
    [("random_forest_regressor", 0), ("gradient_boosting_regressor", 0), ("gradient_boosting", 3),
     ("random_forest", 2)],
)  # fmt: skip
def test_other_tree_ensembles_export_verified(tmp_path: Path, estimator: str, classes: int) -> None:
    data = tmp_path / "wave.csv"
    rows = [(i / 7, (i * 37) % 11, i % classes if classes else i % 13 / 3) for i in range(300)]
    data.write_text("a,b,y\n" + "\n".join(f"{a},{b},{y}" for a, b, y in rows) + "\n")

    out = tmp_path / "out"
    assert training(["train", "--data", str(data), "--target", "y", "--estimator", estimator,
                     "--no-report", "--param", "n_estimators=30",
                     "--out", str(out)]) == 0  # fmt: skip

    record = metadata(out)["onnx"]
    assert record["verified"] is True, record


def test_no_onnx_on_request(tmp_path: Path) -> None:
    assert training(["train", "--no-report", "--no-onnx", "--out", str(tmp_path / "plain")]) == 0

    assert "onnx" not in metadata(tmp_path / "plain")
    assert not (tmp_path / "plain" / "model.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("runtime, imported", [("auto", False), ("sklearn", True)])
def test_the_onnx_runtime_never_imports_sklearn(
    iris_artifact: Path, tmp_path: Path, runtime: str, imported: bool
) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    script = (
        "import sys; from function.core.store import ModelStore; "
        "from function.core.model import load_model;"
        f"m = load_model(ModelStore({store.uri!r}), 'current', None, True, {runtime!r});"
        "print(m.runtime, 'sklearn' in sys.modules)"
    )

    result = subprocess.run([PYTHON, "-c", script], cwd=ROOT, capture_output=True, text=True)

    expected = "onnx" if runtime == "auto" else "sklearn"
    assert result.stdout.split() == [expected, str(imported)], result.stderr


def test_onnx_runtime_requires_a_verified_export(tmp_path: Path) -> None:
    assert training(["train", "--no-report", "--no-onnx", "--out", str(tmp_path / "plain")]) == 0
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
        json.dumps({"version": "v1", "sha256": store.metadata("v1").sha256}).encode(),
        if_token=None,
    )
    with pytest.raises(IntegrityError, match="model.onnx: sha256"):
        load_model(store, "current", None)


def test_a_pipeline_onnxruntime_cannot_run_says_why_in_plain_words(tmp_path: Path) -> None:
    """A linear model with an imputer converts, but onnxruntime has no float64 Imputer kernel:
    metadata says that, not onnxruntime's raw error, and scikit-learn serves the model."""
    rows = "".join(f"{i % 5 if i % 7 else ''},{(i * 3) % 4},{'pq'[i % 2]}\n" for i in range(40))
    data = tmp_path / "gaps.csv"
    data.write_text("a,b,label\n" + rows)

    assert training(["train", "--data", str(data), "--target", "label", "--impute", "mean",
                 "--no-report", "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    onnx = json.loads((tmp_path / "out" / "metadata.json").read_text())["onnx"]

    assert onnx["exported"] is False
    assert onnx["reason"].startswith(
        "not exported because onnxruntime has no implementation of the Imputer operator"
    )
    assert "ONNXRuntimeError" not in onnx["reason"]
    assert not (tmp_path / "out" / "model.onnx").exists()
