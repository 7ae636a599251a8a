"""The training report: report.html and its plots, written into the artifact, covered by the
digests, published with the version; for classifiers (binary and not), regressors and packaged
models."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from function.core.store import ModelStore
from training.__main__ import main
from training.churn import churn

PNG = b"\x89PNG\r\n\x1a\n"


def train(out: Path, *args: str) -> dict[str, Any]:
    assert main(["train", *args, "--out", str(out)]) == 0
    return dict(json.loads((out / "metadata.json").read_text()))


def assert_report(out: Path, metadata: dict[str, Any], plots: set[str]) -> str:
    """Every report file is there, listed with its digest; the page shows every plot and
    metric; return the page."""
    listed = set(metadata["report"]["files"])
    assert listed == {"report.html", *plots}
    for name in listed:
        data = (out / name).read_bytes()
        assert metadata["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
        if name.endswith(".png"):
            assert data.startswith(PNG) and len(data) > 2000
    page = (out / "report.html").read_text()
    assert set(re.findall(r'<img src="([^"]+)"', page)) == plots
    for value in metadata["metrics"]["holdout"].values():
        assert f"{value:.4f}" in page
    # servable under a strict CSP: nothing inline, nothing from elsewhere
    assert "<script" not in page and "style=" not in page and "<style" not in page
    assert "http" not in page
    return page


def test_a_classifier_reports_its_confusion_calibration_and_importance(tmp_path: Path) -> None:
    metadata = train(tmp_path)

    assert_report(tmp_path, metadata, {
        "confusion_matrix.png", "precision_recall_per_class.png", "calibration.png",
        "permutation_importance.png",
    })  # fmt: skip
    importance = metadata["report"]["permutation_importance"]
    assert set(importance) == set(metadata["feature_names"])
    assert max(importance, key=lambda n: importance[n]["mean"]).startswith("petal")


def test_a_binary_classifier_adds_roc_and_precision_recall_curves(tmp_path: Path) -> None:
    churn(1000, seed=7).to_csv(csv := tmp_path / "churn.csv", index=False)
    out = tmp_path / "out"

    metadata = train(out, "--data", str(csv), "--target", "churned", "--estimator",
                      "hist_gradient_boosting", "--cv", "2", "--param", "max_iter=20")  # fmt: skip

    page = assert_report(out, metadata, {
        "confusion_matrix.png", "precision_recall_per_class.png", "calibration.png",
        "permutation_importance.png", "roc_curve.png", "precision_recall_curve.png",
    })  # fmt: skip
    assert "200 hold-out rows" in page


def test_a_regressor_reports_residuals(tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X.assign(target=y).to_csv(csv := tmp_path / "diabetes.csv", index=False)
    out = tmp_path / "out"

    metadata = train(out, "--data", str(csv), "--target", "target", "--estimator", "ridge")

    assert_report(out, metadata, {
        "residuals.png", "predicted_vs_actual.png", "permutation_importance.png"})  # fmt: skip


def test_a_packaged_model_is_reported_on_the_data_given(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    import training

    X, y = load_iris(return_X_y=True, as_frame=True)
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)

    metadata = training.package(model, X, y, out=tmp_path, name="iris")

    page = assert_report(tmp_path, metadata, {
        "confusion_matrix.png", "precision_recall_per_class.png", "calibration.png",
        "permutation_importance.png",
    })  # fmt: skip
    assert "the data given to package" in page


def test_no_report_leaves_no_stale_plots_behind(tmp_path: Path) -> None:
    train(tmp_path)

    metadata = train(tmp_path, "--no-report")

    assert "report" not in metadata
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*metadata["files"], "metadata.json"])  # fmt: skip


def test_the_report_is_published_with_the_version_and_verified(tmp_path: Path) -> None:
    out = tmp_path / "out"
    metadata = train(out)
    store = ModelStore((tmp_path / "store" / "iris").as_uri())
    version = store.publish(out, "v1")

    for name in metadata["report"]["files"]:
        assert store.read_file(version, name) == (out / name).read_bytes()


@pytest.mark.parametrize("tampered", ["report.html", "confusion_matrix.png"])
def test_a_tampered_report_file_is_refused_at_publish(tmp_path: Path, tampered: str) -> None:
    out = tmp_path / "out"
    train(out)
    (out / tampered).write_bytes(b"changed after training")

    code = main(["publish", "--store", (tmp_path / "store").as_uri(), str(out)])

    assert code == 1
