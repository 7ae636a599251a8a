"""infra/smoke_test.py, the deploy's last step, against the real service serving a model that is
not Iris (a regressor on scikit-learn's diabetes data, ten features by name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from function.core.store import ModelStore
from tests.conftest import run_service, train_artifact
from tests.support.diabetes import diabetes_csv
from tests.support.infra import infra_module

# Run as `python infra/smoke_test.py URL` (deploy.yml): a top-level module of infra/.
smoke = infra_module("smoke_test")

KEY = "smoke-test-key-0123456789"


@pytest.fixture(scope="module")
def diabetes_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("diabetes")
    path = diabetes_csv(folder)
    return train_artifact(
        folder / "artifact", "--data", str(path), "--target", "target", "--estimator", "ridge"
    )


@pytest.mark.slow
def test_a_deploy_of_any_model_passes_with_a_row_from_its_metadata(
    tmp_path: Path, diabetes_artifact: Path
) -> None:
    store = ModelStore((tmp_path / "diabetes").as_uri())
    store.promote(store.publish(diabetes_artifact, "v1"))

    with run_service({"MODEL_URI": store.uri, "API_KEYS": KEY}, tmp_path) as running:
        summary = smoke.smoke_test(running.url, KEY)

    assert summary.startswith("diabetes version v1 predicted ")
    assert '"bmi": ' in summary  # the row is the model's own, by feature name


@pytest.mark.slow
def test_a_wrong_key_fails_the_smoke_test_naming_the_step(
    tmp_path: Path, diabetes_artifact: Path
) -> None:
    store = ModelStore((tmp_path / "diabetes").as_uri())
    store.promote(store.publish(diabetes_artifact, "v1"))

    with (
        run_service({"MODEL_URI": store.uri, "API_KEYS": KEY}, tmp_path) as running,
        pytest.raises(smoke.SmokeTestFailed, match="GET /ready answered 401"),
    ):
        smoke.smoke_test(running.url, "not-the-key-0123456789")


def test_the_example_row_is_the_recorded_one_else_zeros_by_feature() -> None:
    assert smoke.example_row({"input_example": {"a": 1.5}, "feature_names": ["a"]}) == {"a": 1.5}
    assert smoke.example_row({"feature_names": ["a", "b"]}) == {"a": 0.0, "b": 0.0}
    with pytest.raises(smoke.SmokeTestFailed, match="names no features"):
        smoke.example_row({})


def test_training_records_each_features_median_as_the_example(diabetes_artifact: Path) -> None:
    import json

    import numpy as np
    from sklearn.datasets import load_diabetes

    metadata = json.loads((diabetes_artifact / "metadata.json").read_text())
    data = load_diabetes(as_frame=True).frame

    assert set(metadata["input_example"]) == set(metadata["feature_names"])
    # the training split's median: within the whole column's range, near its median
    bmi = data["bmi"].to_numpy()
    assert bmi.min() <= metadata["input_example"]["bmi"] <= bmi.max()
    assert abs(metadata["input_example"]["bmi"] - float(np.median(bmi))) < 0.01
