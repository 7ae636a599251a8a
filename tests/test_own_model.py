"""Bring your own model: a pipeline fitted as in a notebook, on mixed-type data with gaps and a
rare category, packaged, published and served; and `train` on the same CSV.

Data: training.churn (2,000 rows, seed 7: text, whole numbers, a boolean, 5 % missing spend, a
country in 0.3 % of rows, here 3 of them). The service runs in process (tests/inprocess.py) on a
folder store.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from tests.conftest import KEY
from tests.inprocess import InProcess, in_process
from tests.support.churn import TARGET, notebook_pipeline, rows_of
from training.__main__ import main
from training.churn import churn

AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    frame = churn(2000, seed=7)
    path = tmp_path_factory.mktemp("churn") / "churn.csv"
    frame.to_csv(path, index=False)
    import pandas as pd

    return pd.read_csv(path), path  # as the user's CSV reads back


@pytest.fixture(scope="module")
def fitted(data: tuple[Any, Path]) -> Any:
    """The notebook pipeline, fitted once per module."""
    return notebook_pipeline(data[0])


@pytest.fixture(scope="module")
def packaged(data: tuple[Any, Path], fitted: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, csv = data
    tmp = tmp_path_factory.mktemp("packaged")
    joblib.dump(fitted, tmp / "churn.joblib")
    code = main(["package", str(tmp / "churn.joblib"), "--data", str(csv), "--target", TARGET,
                 "--gate", "accuracy>=0.7", "--out", str(tmp / "artifact")])  # fmt: skip
    assert code == 0
    return tmp / "artifact"


@contextlib.contextmanager
def serve(artifact: Path, store: Path, name: str = "churn") -> Iterator[InProcess]:
    assert main(["publish", "--store", store.as_uri(), str(artifact), "--promote"]) == 0
    with in_process({"MODEL_URI": f"{store.as_uri()}/{name}", "API_KEYS": KEY}) as running:
        yield running


@pytest.fixture(scope="module")
def service(packaged: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    with serve(packaged, tmp_path_factory.mktemp("store")) as running:
        yield running


def post(service: InProcess, path: str, body: Any) -> Any:
    return service.client.post(path, json=body, headers=AUTH)


# --- package ------------------------------------------------------------------------------


def test_package_records_the_schema_the_pipeline_implies(packaged: Path) -> None:
    metadata = json.loads((packaged / "metadata.json").read_text())
    features = {f["name"]: f for f in metadata["features"]}

    assert metadata["task"] == "classification"
    assert metadata["input"] == "frame"
    assert metadata["estimator"] == "HistGradientBoostingClassifier"
    assert metadata["label_type"] == "integer"
    assert {n: f["type"] for n, f in features.items()} == {
        "country": "category", "plan": "category", "seats": "integer",
        "monthly_spend": "number", "tenure_months": "integer", "has_discount": "boolean",
    }  # fmt: skip
    assert features["country"]["categories"] == ["DE", "ES", "FR", "GB", "IT", "LU"]  # LU: rare
    assert features["country"]["unknown"] == "accept"  # its encoder ignores unknowns
    assert features["plan"]["unknown"] == "refuse"  # its encoder errors on them
    assert features["monthly_spend"]["nullable"]  # imputed by the pipeline
    assert not features["plan"]["nullable"]  # missing is unknown to an erroring encoder
    assert metadata["metrics"]["holdout"]["accuracy"] >= 0.7
    assert metadata["gates"] == ["accuracy>=0.7"]
    assert "named columns of mixed types" in metadata["onnx"]["reason"]


def test_the_notebook_function_writes_the_same_artifact(
    data: tuple[Any, Path], fitted: Any, tmp_path: Path
) -> None:
    import training

    frame, _ = data
    X, y = frame.drop(columns=TARGET), frame[TARGET]

    metadata = training.package(fitted, X, y, out=tmp_path, name="churn", report=False)

    assert (tmp_path / "model.joblib").exists()
    assert metadata["name"] == "churn"
    assert metadata["feature_names"] == list(X.columns)
    assert metadata["dataset"]["rows"] == 2000


def test_categories_come_from_the_fitted_model_not_the_rows_packaged_on(
    data: tuple[Any, Path], fitted: Any, tmp_path: Path
) -> None:
    """Packaged on a hold-out without the rare LU and with plan "pro" only: the schema still
    lists what the encoders know, and the service answers LU as the pipeline does."""
    import training

    frame, _ = data
    holdout = frame[(frame["country"] != "LU") & (frame["plan"] == "pro")].iloc[:200]
    X, y = holdout.drop(columns=TARGET), holdout[TARGET]

    metadata = training.package(fitted, X, y, out=tmp_path / "a", name="churn", report=False)

    features = {f["name"]: f for f in metadata["features"]}
    assert features["country"]["categories"] == ["DE", "ES", "FR", "GB", "IT", "LU"]
    assert features["plan"]["categories"] == ["free", "pro", "team"]
    assert {features[n]["categories_from"] for n in ("country", "plan")} == {"model"}
    with serve(tmp_path / "a", tmp_path / "store") as service:
        lu = frame[frame["country"] == "LU"].drop(columns=TARGET)
        answer = post(service, "/predict", {"instances": rows_of(lu)})
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["predictions"] == fitted.predict(lu).tolist()


def test_a_custom_step_falls_back_to_the_categories_seen_and_says_so(
    data: tuple[Any, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An encoder behind a step that cannot name its output columns cannot be traced to the
    input: the data's values are used, and the feature says where they came from."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    import training

    frame, _ = data
    X, y = frame[["plan", "seats"]], frame[TARGET]
    opaque = make_pipeline(FunctionTransformer(), OneHotEncoder(handle_unknown="ignore"))
    columns = ColumnTransformer([("plan", opaque, ["plan"]), ("n", "passthrough", ["seats"])])
    pipeline = make_pipeline(columns, LogisticRegression()).fit(X, y)
    pro = frame["plan"] == "pro"

    metadata = training.package(pipeline, X[pro], y[pro], out=tmp_path / "a", report=False)

    plan = metadata["features"][0]
    assert (plan["categories"], plan["categories_from"]) == (["pro"], "data")
    warned = capsys.readouterr().err
    assert "warning: the categories of plan could not be read from the fitted model" in warned
    # Named one to one, the step lets the encoder's categories be traced.
    opaque.steps[0][1].set_params(feature_names_out="one-to-one")
    pipeline.fit(X, y)
    metadata = training.package(pipeline, X[pro], y[pro], out=tmp_path / "b", report=False)
    plan = metadata["features"][0]
    assert (plan["categories"], plan["categories_from"]) == (["free", "pro", "team"], "model")


def test_a_regressor_fitted_on_a_matrix_is_packaged_as_one(tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True)
    import training

    metadata = training.package(Ridge().fit(X, y), X, y, out=tmp_path, name="diabetes")

    assert metadata["task"] == "regression"
    assert metadata["input"] == "array"
    assert metadata["feature_names"] == [f"x{i}" for i in range(10)]
    assert metadata["onnx"]["verified"]  # a numeric matrix keeps the fast path


class Custom:
    """Not a scikit-learn estimator."""

    def predict(self, X: Any) -> Any:
        return X


def custom_scaler() -> Any:
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(lambda X: X)


@pytest.mark.parametrize(
    "make, columns, message",
    [
        ("drop-column", None, "the data lacks tenure_months"),
        ("extra-column", None, "the model was not fitted with extra"),
        ("garbage", None, "does not load as a joblib or skops file"),
        ("custom", None, "not a scikit-learn estimator"),
        ("lambda", None, "which is not part of scikit-learn"),
        ("unfitted", None, "is not fitted"),
        ("cv-gate", None, "need cross-validation"),
    ],
)
def test_package_refuses_clearly(
    data: tuple[Any, Path], fitted: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    make: str, columns: Any, message: str,
) -> None:  # fmt: skip
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    frame, csv = data
    model_file = tmp_path / "model.joblib"
    extra: list[str] = []
    if make == "drop-column":
        joblib.dump(fitted, model_file)
        frame.drop(columns="tenure_months").to_csv(csv := tmp_path / "less.csv", index=False)
    elif make == "extra-column":
        joblib.dump(fitted, model_file)
        frame.assign(extra=1).to_csv(csv := tmp_path / "more.csv", index=False)
    elif make == "garbage":
        model_file.write_bytes(b"not a pickle at all")
    elif make == "custom":
        joblib.dump(Custom(), model_file)
    elif make == "lambda":
        numbers = frame[["seats", "tenure_months"]]
        pipeline = make_pipeline(custom_scaler(), LogisticRegression()).fit(numbers, frame[TARGET])
        import cloudpickle  # a lambda pickles only by value

        model_file.write_bytes(cloudpickle.dumps(pipeline))
    elif make == "unfitted":
        joblib.dump(LogisticRegression(), model_file)
    elif make == "cv-gate":
        joblib.dump(fitted, model_file)
        extra = ["--gate", "cv_accuracy>=0.5"]

    code = main(["package", str(model_file), "--data", str(csv), "--target", TARGET,
                 "--out", str(tmp_path / "out"), *extra])  # fmt: skip

    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "metadata.json").exists()


def test_a_failing_gate_writes_nothing(data: tuple[Any, Path], fitted: Any, tmp_path: Path) -> None:
    _, csv = data
    joblib.dump(fitted, tmp_path / "m.joblib")

    code = main(["package", str(tmp_path / "m.joblib"), "--data", str(csv), "--target", TARGET,
                 "--gate", "accuracy>=0.99", "--out", str(tmp_path / "out")])  # fmt: skip

    assert code == 3
    assert not (tmp_path / "out").exists()


# --- serving it -----------------------------------------------------------------------------


def test_answers_equal_the_pipeline_on_the_same_rows(
    service: InProcess, packaged: Path, data: tuple[Any, Path]
) -> None:
    frame, _ = data
    X = frame.drop(columns=TARGET).iloc[:400]  # missing spends included
    pipeline = joblib.load(packaged / "model.joblib")

    answer = post(service, "/predict", {"instances": rows_of(X)}).get_json()

    assert answer["predictions"] == pipeline.predict(X).tolist()  # integers, as fitted
    expected = pipeline.predict_proba(X)
    got = np.array([[p["0"], p["1"]] for p in answer["probabilities"]])
    assert np.array_equal(got, expected)


def test_v2_takes_one_tensor_per_column_and_answers_exactly(
    service: InProcess, packaged: Path, data: tuple[Any, Path]
) -> None:
    frame, _ = data
    X = frame.drop(columns=TARGET).iloc[:50]
    rows = rows_of(X)
    datatypes = {"country": "BYTES", "plan": "BYTES", "seats": "INT64", "tenure_months": "INT64",
                 "has_discount": "BOOL", "monthly_spend": "FP64"}  # fmt: skip
    inputs = [
        {"name": n, "shape": [len(rows), 1], "datatype": d, "data": [r[n] for r in rows]}
        for n, d in datatypes.items()
    ]
    body = {"inputs": inputs, "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}

    answer = post(service, "/v2/models/churn/infer", body).get_json()

    labels, probabilities = answer["outputs"]
    pipeline = joblib.load(packaged / "model.joblib")
    assert labels["datatype"] == "INT64"
    assert labels["data"] == pipeline.predict(X).tolist()
    assert np.array_equal(np.reshape(probabilities["data"], (-1, 2)), pipeline.predict_proba(X))


def test_tritonclient_sends_categories_as_binary_bytes(
    service: InProcess, packaged: Path, data: tuple[Any, Path]
) -> None:
    """tritonclient's default: BYTES as 4-byte-length-prefixed elements after the JSON part."""
    import tritonclient.http as triton

    frame, _ = data
    X = frame.drop(columns=TARGET).iloc[:5].fillna({"monthly_spend": 30.0})
    tensors = []
    columns = [
        ("country", "BYTES", object), ("plan", "BYTES", object), ("seats", "INT64", np.int64),
        ("tenure_months", "INT64", np.int64), ("has_discount", "BOOL", bool),
        ("monthly_spend", "FP64", float),
    ]  # fmt: skip
    for name, datatype, dtype in columns:
        tensor = triton.InferInput(name, [len(X)], datatype)
        tensor.set_data_from_numpy(X[name].to_numpy(dtype=dtype))  # binary_data=True
        tensors.append(tensor)
    body, length = triton.InferenceServerClient.generate_request_body(tensors)

    response = service.client.post(
        "/v2/models/churn/infer", data=body,
        headers={**AUTH, "Inference-Header-Content-Length": str(length)},
    )  # fmt: skip

    assert response.status_code == 200, response.get_json()
    pipeline = joblib.load(packaged / "model.joblib")
    assert response.get_json()["outputs"][0]["data"] == pipeline.predict(X).tolist()


def test_the_schema_decides_what_may_be_missing_or_unknown(
    service: InProcess, data: tuple[Any, Path], packaged: Path
) -> None:
    frame, _ = data
    row = rows_of(frame.drop(columns=TARGET).iloc[:1])[0]
    pipeline = joblib.load(packaged / "model.joblib")
    import pandas as pd

    def expected(changed: dict[str, Any]) -> Any:
        X = pd.DataFrame([{**row, **changed}]).astype({"monthly_spend": float})
        return pipeline.predict(X).tolist()

    absent = {k: v for k, v in row.items() if k != "monthly_spend"}  # nullable: may be absent
    assert post(service, "/predict", absent).get_json()["predictions"] == expected(
        {"monthly_spend": None})  # fmt: skip
    unseen = post(service, "/predict", {**row, "country": "NZ"})  # its encoder ignores it
    assert unseen.status_code == 200
    assert unseen.get_json()["predictions"] == expected({"country": "NZ"})


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"plan": "enterprise"}, "plan", 'unknown category "enterprise" for plan; allowed: '
                                         "free, pro, team"),
        ({"plan": None}, "plan", "plan may not be null"),
        ({"country": 7}, "country", "expected a string (a category) for country, got 7"),
        ({"seats": 2.5}, "seats", "expected an integer for seats, got 2.5"),
        ({"seats": "2"}, "seats", 'expected an integer for seats, got "2"'),
        ({"has_discount": "yes"}, "has_discount", 'expected true or false for has_discount'),
        ({"has_discount": 1}, "has_discount", "expected true or false for has_discount, got 1"),
        ({"monthly_spend": [1]}, "monthly_spend", "got a list"),
        ({"monthly_spend": 1e301}, "monthly_spend", "out of range"),
    ],
)  # fmt: skip
def test_a_value_against_the_schema_is_a_422_naming_the_field(
    service: InProcess, data: tuple[Any, Path], change: dict[str, Any], field: str, message: str
) -> None:
    frame, _ = data
    row = rows_of(frame.drop(columns=TARGET).iloc[:1])[0]

    bodies = [
        ({**row, **change}, field),
        ({"instances": [row, {**row, **change}]}, f"instances[1].{field}"),
    ]
    for body, where in bodies:
        response = post(service, "/predict", body)

        assert response.status_code == 422, response.get_json()
        problem = response.get_json()
        assert problem["field"] == where
        assert message in problem["detail"]


def test_positional_rows_name_the_index_and_the_feature(service: InProcess) -> None:
    row = ["FR", "gold", 2, 30.0, 12, False]

    problem = post(service, "/predict", {"instances": [row]}).get_json()

    assert problem["field"] == "instances[0][1]"
    assert "for plan" in problem["detail"]


def test_v2_column_errors_name_the_tensor(service: InProcess) -> None:
    def tensors(**changes: Any) -> list[dict[str, Any]]:
        base = {"country": ("BYTES", "FR"), "plan": ("BYTES", "pro"), "seats": ("INT64", 2),
                "monthly_spend": ("FP64", 30.0), "tenure_months": ("INT64", 5),
                "has_discount": ("BOOL", True)}  # fmt: skip
        base.update(changes)
        return [{"name": n, "shape": [1], "datatype": d, "data": [v]} for n, (d, v) in base.items()]

    cases = [
        (tensors(plan=("BYTES", "gold")), "inputs[1].data[0]", "unknown category"),
        (tensors(plan=("FP64", 1.0)), "inputs[1].datatype", "must be BYTES"),
        (tensors(seats=("INT64", 2.5)), "inputs[2].data[0]", "needs integers"),
        ([t for t in tensors() if t["name"] != "plan"], "inputs", "missing a tensor for plan"),
        ([{"name": "input-0", "shape": [1, 6], "datatype": "FP64", "data": [0.0] * 6}],
         "inputs[0].name", "send one tensor per feature"),
        ([*tensors(), {"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["x"]}],
         "inputs[6].name", "no feature named 'colour'"),
    ]  # fmt: skip
    for inputs, field, message in cases:
        response = post(service, "/v2/models/churn/infer", {"inputs": inputs})

        assert response.status_code == 400, inputs
        assert f"{field}: " in response.get_json()["error"] and message in response.get_json()[
            "error"], response.get_json()  # fmt: skip


def test_metadata_and_openapi_describe_each_feature(service: InProcess) -> None:
    from jsonschema import Draft202012Validator
    from openapi_spec_validator import validate

    model = service.client.get("/model", headers=AUTH).get_json()
    v2 = service.client.get("/v2/models/churn", headers=AUTH).get_json()
    document = service.client.get("/openapi.json").get_json()

    validate(document)
    assert [f["name"] for f in model["features"]] == model["feature_names"]
    assert {i["name"]: i["datatype"] for i in v2["inputs"]}["country"] == "BYTES"
    assert v2["outputs"][0]["datatype"] == "INT64"
    row = document["components"]["schemas"]["Row"]["oneOf"][1]
    assert row["properties"]["plan"] == {"type": "string", "enum": ["free", "pro", "team"]}
    assert row["properties"]["monthly_spend"]["type"] == ["number", "null"]
    assert "monthly_spend" not in row["required"] and "plan" in row["required"]
    schema = Draft202012Validator(row)
    assert schema.is_valid(model["input_example"])
    assert not schema.is_valid({**model["input_example"], "plan": "gold"})
    examples = document["paths"]["/predict"]["post"]["requestBody"]["content"]
    for example in examples["application/json"]["examples"].values():  # the model's own row
        assert post(service, "/predict", example["value"]).status_code == 200


# --- train on a CSV with text columns -----------------------------------------------------


@pytest.mark.parametrize("estimator", ["logistic_regression", "hist_gradient_boosting"])
def test_train_encodes_categories_inside_the_pipeline(
    data: tuple[Any, Path], tmp_path: Path, estimator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    frame, _ = data
    frame = frame.iloc[:1000]  # enough for both encoders; the rare country still appears
    frame.to_csv(csv := tmp_path / "churn.csv", index=False)
    out = tmp_path / estimator
    impute = ["--impute", "median"] if estimator == "logistic_regression" else []

    code = main(["train", "--data", str(csv), "--target", TARGET, "--estimator", estimator,
                 "--no-report", *impute, "--cv", "2", "--out", str(out)])  # fmt: skip

    assert code == 0
    pipeline = joblib.load(out / "model.joblib")
    encoders = {type(t).__name__ for _, t, _ in pipeline.named_steps["columns"].transformers_}
    if estimator == "hist_gradient_boosting":  # native categories: ordinal codes, flagged
        assert "OrdinalEncoder" in encoders
        assert pipeline[-1].is_categorical_[:2].all()
    else:
        assert "OneHotEncoder" in encoders
    metadata = json.loads((out / "metadata.json").read_text())
    spend = next(f for f in metadata["features"] if f["name"] == "monthly_spend")
    assert spend["nullable"]  # imputed, or handled by the trees themselves
    # Read from the pipeline's own encoder, not from HistGradientBoosting's encoding of its codes
    categories = [f for f in metadata["features"] if f["type"] == "category"]
    assert {f["categories_from"] for f in categories} == {"model"}
    assert "warning" not in capsys.readouterr().err
    X = frame.drop(columns=TARGET).iloc[:200]
    with serve(out, tmp_path / "store") as running:
        answer = post(running, "/predict", {"instances": rows_of(X)}).get_json()
        assert answer["predictions"] == pipeline.predict(X).tolist()


def test_an_imputing_model_accepts_null_and_absent_features(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame.loc[::9, "petal_width"] = np.nan
    frame.to_csv(csv := tmp_path / "iris.csv", index=False)
    out = tmp_path / "artifact"
    assert main(["train", "--data", str(csv), "--target", "target", "--impute", "mean",
                 "--no-report", "--name", "iris", "--out", str(out)]) == 0  # fmt: skip
    pipeline = joblib.load(out / "model.joblib")

    with serve(out, tmp_path / "store", "iris") as running:
        row = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 4.2}
        for body in ({**row, "petal_width": None}, row, {"instances": [[5.9, 3.0, 4.2, None]]}):
            response = post(running, "/predict", body)
            assert response.status_code == 200, response.get_json()
            assert response.get_json()["predictions"] == pipeline.predict(
                np.array([[5.9, 3.0, 4.2, np.nan]])).tolist()  # fmt: skip


def test_labels_keep_their_type_in_every_protocol(tmp_path: Path) -> None:
    """Integer classes are numbers in /predict and INT64 in v2; probability keys are their text
    (JSON keys are strings). Text classes are strings everywhere (BYTES in v2)."""
    frame = churn(600, seed=3).drop(columns=["country", "plan", "has_discount"]).dropna()
    frame.to_csv(csv := tmp_path / "c.csv", index=False)
    out = tmp_path / "artifact"
    assert main(["train", "--no-report", "--data", str(csv), "--target", TARGET, "--name", "churn",
                 "--cv", "2", "--out", str(out)]) == 0  # fmt: skip

    with serve(out, tmp_path / "store") as running:
        example = running.client.get("/model", headers=AUTH).get_json()["input_example"]
        native = post(running, "/predict", example).get_json()
        v2 = post(running, "/v2/models/churn/infer", {"inputs": [{
            "name": "input-0", "shape": [1, 3], "datatype": "FP64",
            "data": [example[n] for n in ("seats", "monthly_spend", "tenure_months")]}]},
        ).get_json()  # fmt: skip
        assert isinstance(native["predictions"][0], int)
        assert set(native["probabilities"][0]) == {"0", "1"}
        assert v2["outputs"][0]["datatype"] == "INT64"
        assert v2["outputs"][0]["data"] == native["predictions"]


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_on_a_mixed_type_model(
    packaged: Path, tmp_path: Path
) -> None:
    """The fuzzer against the served churn model's own document: categories, integers,
    booleans and nulls, positional and named, native and v2 (0 x 5xx, schema-true answers)."""
    from function.core.store import ModelStore
    from tests.conftest import run_service, schemathesis

    store = ModelStore((tmp_path / "churn").as_uri())
    store.promote(store.publish(packaged, "v1"))
    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "RATE_LIMIT_PER_SECOND": "0"}
    with run_service(env, tmp_path) as running:
        # the routes' own fuzzing; the stateful phase adds nothing per schema (the iris run has it)
        result = schemathesis(running.url, max_examples=20, phases="examples,coverage,fuzzing")
        output = running.output()

    assert result.returncode == 0, result.stdout[-4000:]
    assert "Traceback" not in output


def test_a_skops_file_is_packaged_and_served_without_pickle(
    data: tuple[Any, Path], fitted: Any, tmp_path: Path
) -> None:
    """The no-pickle path end to end: a skops file in, a skops artifact out, served with
    ALLOW_PICKLE=false, answering as the pipeline does."""
    import skops.io

    frame, csv = data
    pipeline = fitted
    skops.io.dump(pipeline, tmp_path / "churn.skops")
    out = tmp_path / "artifact"

    code = main(["package", str(tmp_path / "churn.skops"), "--data", str(csv), "--target", TARGET,
                 "--format", "skops", "--no-report", "--out", str(out)])  # fmt: skip

    assert code == 0
    assert (out / "model.skops").exists() and not (out / "model.joblib").exists()
    store = tmp_path / "store"
    assert main(["publish", "--store", store.as_uri(), str(out), "--promote"]) == 0
    env = {"MODEL_URI": f"{store.as_uri()}/churn", "API_KEYS": KEY, "ALLOW_PICKLE": "false"}
    X = frame.drop(columns=TARGET).iloc[:100]
    with in_process(env) as running:
        answer = post(running, "/predict", {"instances": rows_of(X)}).get_json()
    assert answer["predictions"] == pipeline.predict(X).tolist()


def test_a_skops_file_with_foreign_types_is_refused(tmp_path: Path, capsys: Any) -> None:
    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    skops.io.dump(make_pipeline(custom_scaler(), LogisticRegression()).fit(X, y),
                  tmp_path / "m.skops")  # fmt: skip
    pd_csv = tmp_path / "d.csv"
    pd_csv.write_text("x0,y\n0,0\n1,0\n2,1\n3,1\n")

    code = main(["package", str(tmp_path / "m.skops"), "--data", str(pd_csv), "--target", "y",
                 "--out", str(tmp_path / "out")])  # fmt: skip

    assert code == 1
    assert "holds types outside scikit-learn/numpy/scipy" in capsys.readouterr().err
