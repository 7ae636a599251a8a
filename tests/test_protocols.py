"""The standard protocols, driven by their real clients.

Open Inference Protocol v2: tritonclient[http] (JSON tensors, binary_data=False) against the
running service. Vertex AI: the service started with only the AIP_* variables Vertex sets, the
model coming from a gs:// URI in the GCS emulator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import KEY, Emulator, Running, free_port, publish_to_gcs, run_service

AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def served(
    gcs_emulator: Emulator, iris_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    uri = publish_to_gcs(gcs_emulator, iris_artifact, f"oip-{time.monotonic_ns()}")
    env = {"MODEL_URI": uri, "STORAGE_EMULATOR_HOST": gcs_emulator.host, "API_KEYS": KEY}
    with run_service(env, tmp_path_factory.mktemp("oip")) as running:
        yield running


@pytest.fixture(scope="module")
def client(served: Running) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=served.url.removeprefix("http://"))


@pytest.fixture(scope="module")
def estimator(iris_artifact: Path) -> Any:
    return joblib.load(iris_artifact / "model.joblib")


def iris_rows() -> np.ndarray:
    from sklearn.datasets import load_iris

    return np.asarray(load_iris().data[::7], dtype=np.float64)


def test_health_and_readiness(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris", headers=AUTH)
    assert client.is_model_ready("iris", "v1", headers=AUTH)
    assert not client.is_model_ready("iris", "v9", headers=AUTH)
    assert not client.is_model_ready("other", headers=AUTH)
    # Without a key a model's readiness confirms nothing: not its name, not its versions.
    assert not client.is_model_ready("iris")


def test_server_and_model_metadata(client: triton.InferenceServerClient) -> None:
    server = client.get_server_metadata(headers=AUTH)
    model = client.get_model_metadata("iris", headers=AUTH)

    assert server["name"] == "modelrun"
    assert model["name"] == "iris" and model["versions"] == ["v1"]
    assert model["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert model["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3],
         "parameters": {"classes": ["setosa", "versicolor", "virginica"]}},  # column k's class
    ]  # fmt: skip
    assert client.get_model_metadata("iris", "v1", headers=AUTH) == model


@pytest.mark.parametrize("datatype, dtype", [("FP64", np.float64), ("FP32", np.float32)])
def test_infer_equals_the_estimator(
    client: triton.InferenceServerClient, estimator: Any, datatype: str, dtype: type
) -> None:
    X = iris_rows().astype(dtype)
    tensor = triton.InferInput("input-0", list(X.shape), datatype)
    tensor.set_data_from_numpy(X, binary_data=False)
    outputs = [
        triton.InferRequestedOutput("predict", binary_data=False),
        triton.InferRequestedOutput("predict_proba", binary_data=False),
    ]

    result = client.infer("iris", [tensor], outputs=outputs, headers=AUTH, request_id="req-7")

    exact = X.astype(np.float64)  # what the server receives: the client's values, as sent
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict")]
    assert labels == estimator.predict(exact).tolist()
    np.testing.assert_allclose(
        result.as_numpy("predict_proba"), estimator.predict_proba(exact), rtol=0, atol=1e-9
    )  # the verified ONNX export's recorded tolerance for this linear model
    answer = result.get_response()
    assert answer["id"] == "req-7"
    assert (answer["model_name"], answer["model_version"]) == ("iris", "v1")


def test_infer_on_a_named_version_and_one_output(
    client: triton.InferenceServerClient, estimator: Any
) -> None:
    X = iris_rows()[:2]
    tensor = triton.InferInput("input-0", [2, 4], "FP64")
    tensor.set_data_from_numpy(X, binary_data=False)

    result = client.infer(
        "iris", [tensor], model_version="v1", headers=AUTH,
        outputs=[triton.InferRequestedOutput("predict_proba", binary_data=False)],
    )  # fmt: skip

    assert [o["name"] for o in result.get_response()["outputs"]] == ["predict_proba"]
    np.testing.assert_allclose(
        result.as_numpy("predict_proba"), estimator.predict_proba(X), rtol=0, atol=1e-9
    )


def infer_error(client: triton.InferenceServerClient, **kwargs: Any) -> InferenceServerException:
    shape = kwargs.pop("shape", [1, 4])
    data = np.ones(shape, dtype=np.float64)
    tensor = triton.InferInput("input-0", shape, "FP64")
    tensor.set_data_from_numpy(data, binary_data=False)
    with pytest.raises(InferenceServerException) as raised:
        client.infer(kwargs.pop("model", "iris"), [tensor], **kwargs)
    return raised.value


def test_a_wrong_shape_is_rejected_naming_it(client: triton.InferenceServerClient) -> None:
    error = infer_error(client, shape=[2, 3], headers=AUTH)

    assert error.status() == "400"
    assert "inputs[0].shape" in error.message()
    assert "the model takes 4 features" in error.message()


def test_a_missing_key_is_rejected(client: triton.InferenceServerClient) -> None:
    error = infer_error(client)

    assert error.status() == "401"
    assert "API key" in error.message()
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("iris")


def test_an_unknown_model_or_version_is_404(client: triton.InferenceServerClient) -> None:
    assert infer_error(client, model="other", headers=AUTH).status() == "404"
    assert infer_error(client, model_version="v9", headers=AUTH).status() == "404"


@pytest.mark.parametrize(
    "tensor, status, detail",
    [
        ({"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3]}, 400,
         "shape [2, 4] needs 8 values, data holds 3"),
        ({"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}, 400,
         "datatype 'BYTES' is not supported"),
        ({"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3.5, 4]}, 400,
         "inputs[0].data[2]: datatype INT64 needs integers"),
        ({"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, "x", 4]}, 400,
         "inputs[0].data[row 0][2]: expected a finite number for petal_length"),
        ({"name": "x", "shape": [1, 4], "datatype": "FP64"}, 400, "inputs[0]: missing data"),
    ],
)  # fmt: skip
def test_bad_tensors_name_the_field(
    served: Running, tensor: dict[str, Any], status: int, detail: str
) -> None:
    response = requests.post(
        f"{served.url}/v2/models/iris/infer", json={"inputs": [tensor]}, headers=AUTH, timeout=10
    )

    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert detail in response.json()["error"]


def test_nested_data_and_no_content_type(served: Running, estimator: Any) -> None:
    rows = iris_rows()[:3].tolist()
    body = {"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP64", "data": rows}]}
    import json

    response = requests.post(
        f"{served.url}/v2/models/iris/infer", data=json.dumps(body), headers=AUTH, timeout=10
    )  # no Content-Type, as tritonclient sends none

    assert response.status_code == 200
    labels = response.json()["outputs"][0]["data"]
    assert labels == estimator.predict(rows).tolist()


# --- Vertex AI ---------------------------------------------------------------------------


def test_vertex_contract_with_only_the_aip_variables(
    gcs_emulator: Emulator, iris_artifact: Path, estimator: Any, tmp_path: Path
) -> None:
    uri = publish_to_gcs(gcs_emulator, iris_artifact, f"vertex-{time.monotonic_ns()}")
    port = free_port()
    env = {
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": "/vertex/health",
        "AIP_PREDICT_ROUTE": "/vertex/predict",
        "AIP_STORAGE_URI": uri,
        "PORT": "1",  # Vertex's port wins over PORT
        "STORAGE_EMULATOR_HOST": gcs_emulator.host,  # this machine's stand-in for GCS
    }
    rows = iris_rows()[:5].tolist()

    with run_service(env, tmp_path, port=port, wait_ready=False) as running:
        deadline = time.monotonic() + 30
        while running.get("/vertex/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        health = running.get("/vertex/health")
        answer = running.post(
            "/vertex/predict", json={"instances": rows, "parameters": {"probabilities": False}}
        )
        too_big = running.post("/vertex/predict", json={"instances": [rows[0]] * 1001})

    assert health.status_code == 200
    assert answer.status_code == 200
    assert answer.json() == {"predictions": estimator.predict(rows).tolist()}
    assert too_big.status_code == 422


def test_the_specialised_document_states_the_tensor_the_server_takes() -> None:
    """What the schema allows, the server takes: rows from 1 to the request limit, exactly the
    model's features, data present, at least one output asked for (schemathesis found the
    document allowing shape [0, 0] and "outputs": [], which the server refuses)."""
    from jsonschema import Draft202012Validator

    from function.core.model import LoadedModel
    from function.core.schema import Schema
    from function.service.openapi import document
    from tests.support.metadata import metadata_for

    names = ["a", "b", "c", "d"]
    model = LoadedModel(
        None, metadata_for(names, "regression"), 0.0, schema=Schema.of_numbers(names)
    )
    schemas = document(model, max_instances=10)["components"]["schemas"]
    tensor = Draft202012Validator(schemas["V2InputTensor"])
    outputs = Draft202012Validator(schemas["V2InferRequest"]["properties"]["outputs"])

    def valid(shape: list[int], data: list[float]) -> bool:
        return tensor.is_valid(
            {"name": "input-0", "shape": shape, "datatype": "FP64", "data": data}
        )

    assert valid([2, 4], [0.0] * 8)
    assert not valid([0, 0], [0.0])
    assert not valid([2, 5], [0.0] * 10)  # not the model's feature count
    assert not valid([11, 4], [0.0] * 44)  # over the request's row limit
    assert not valid([1, 4], [])
    assert not outputs.is_valid([])
    assert outputs.is_valid([{"name": "predict"}])


@pytest.mark.parametrize("datatype, dtype", [("FP64", np.float64), ("FP32", np.float32)])
def test_tritonclients_defaults_binary_tensors_work(
    client: triton.InferenceServerClient, estimator: Any, datatype: str, dtype: type
) -> None:
    """tritonclient as users call it: binary input data, no outputs named (so it asks for
    binary outputs). The inputs are read from the bytes; the JSON answer is what it reads."""
    X = iris_rows().astype(dtype)
    tensor = triton.InferInput("input-0", list(X.shape), datatype)
    tensor.set_data_from_numpy(X)  # binary_data=True, the client's default

    result = client.infer("iris", [tensor], headers=AUTH)

    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict")]
    assert labels == estimator.predict(X.astype(np.float64)).tolist()


def binary_body(header: dict[str, Any], payload: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + payload, {**AUTH, "Inference-Header-Content-Length": str(len(text))}


def test_a_binary_input_of_an_unreadable_datatype_is_a_400(served: Running) -> None:
    for datatype in ("BYTES", ["FP64"]):  # a list is no dict key: never a 500
        header = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": datatype,
                              "parameters": {"binary_data_size": 32}}]}  # fmt: skip
        body, headers = binary_body(header, np.zeros(4).tobytes())

        response = served.post("/v2/models/iris/infer", data=body, headers=headers)

        assert response.status_code == 400, response.text
        assert "inputs[0].datatype" in response.json()["error"]


@pytest.mark.parametrize(
    "header_length, size, payload, field, message",
    [
        ("lots", 32, np.zeros(4).tobytes(), None, "must be the length of the body's JSON part"),
        ("999999", 32, np.zeros(4).tobytes(), None, "must be the length of the body's JSON part"),
        (None, 31, np.zeros(4).tobytes(), "binary_data_size", "whole number of 8-byte values"),
        (None, 64, np.zeros(4).tobytes(), "binary_data_size", "within the 32 bytes left"),
        (None, 32, np.zeros(5).tobytes(), "inputs", "8 bytes that no input's binary_data_size"),
        # Binary has no null: NaN is a missing value, refused where the feature may not be missing
        (None, 32, np.array([1, 2, np.nan, 4.0]).tobytes(), "inputs[0].data", "may not be null"),
        (None, 32, np.array([1, 2, np.inf, 4.0]).tobytes(), "inputs[0].data", "finite"),
    ],
)
def test_bad_binary_bodies_are_400s_naming_what_is_wrong(
    served: Running,
    header_length: str | None,
    size: int,
    payload: bytes,
    field: str | None,
    message: str,
) -> None:
    header = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                          "parameters": {"binary_data_size": size}}]}  # fmt: skip
    body, headers = binary_body(header, payload)
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length

    response = served.post("/v2/models/iris/infer", data=body, headers=headers)

    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    if field:
        assert field in response.json()["error"]


@pytest.mark.parametrize(
    "tensor, payload, status, message",
    [
        # A BYTES tensor for a number, whose elements would not even decode: refused for its
        # datatype, before any element is read (decoding would say "runs past binary_data_size")
        ({"datatype": "BYTES", "shape": [262069, 4]}, b"\xff\xff\xff\x7f" + b"\x00" * 28, 400,
         "input-0 takes FP32 or FP64 or INT32 or INT64, got 'BYTES'"),
        # More rows than a request may hold: refused before the bytes are read as numbers
        ({"datatype": "FP64", "shape": [5000, 4]}, np.zeros(3).tobytes() + b"\x00", 400,
         "5000 rows exceed the limit"),
    ],
)  # fmt: skip
def test_a_binary_tensor_is_checked_against_the_model_before_it_is_decoded(
    served: Running, tensor: dict[str, Any], payload: bytes, status: int, message: str
) -> None:
    header = {"inputs": [{"name": "input-0", **tensor,
                          "parameters": {"binary_data_size": len(payload)}}]}  # fmt: skip
    body, headers = binary_body(header, payload)

    response = served.post("/v2/models/iris/infer", data=body, headers=headers)

    assert response.status_code == status, response.text
    assert message in response.json()["error"]
