"""The service end to end: its own process, started by the container's command, over real HTTP."""

from __future__ import annotations

import gc
import json
import re
import subprocess
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests

from function.core.artifact import MODEL_FILE
from function.core.errors import ConfigError
from function.core.model import load_model
from function.core.store import ModelStore
from function.service.app import build
from tests.conftest import (
    KEY,
    OTHER_KEY,
    PYTHON,
    ROOT,
    SECRET_NAME,
    SERVE_COMMAND,
    Emulator,
    FakeSecretManager,
    Running,
    publish_to_gcs,
    run_service,
    wait_until,
)

pytestmark = pytest.mark.slow  # every test here starts a server or a process

ROW = [5.1, 3.5, 1.4, 0.2]
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def service(
    gcs_emulator: Emulator, iris_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """One instance, model from the GCS emulator, keys from API_KEYS."""
    uri = publish_to_gcs(gcs_emulator, iris_artifact, f"e2e-{time.monotonic_ns()}")
    env = {
        "MODEL_URI": uri,
        "STORAGE_EMULATOR_HOST": gcs_emulator.host,
        "API_KEYS": f"{KEY},{OTHER_KEY}",
        "MAX_INSTANCES_PER_REQUEST": "200",
        "MAX_REQUEST_BYTES": "65536",
    }
    with run_service(env, tmp_path_factory.mktemp("svc")) as running:
        yield running


def test_predictions_from_gcs_equal_sklearn_on_every_iris_row(
    service: Running, iris_artifact: Path
) -> None:
    from sklearn.datasets import load_iris

    X = load_iris().data.tolist()
    estimator = joblib.load(iris_artifact / MODEL_FILE)

    answer = service.post("/predict", json={"instances": X}, headers=AUTH).json()
    served = service.get("/model", headers=AUTH).json()

    # A verified model.onnx is served by default: the same labels, probabilities within the
    # tolerance its verification recorded.
    assert served["runtime"] == "onnx"
    assert answer["predictions"] == estimator.predict(X).tolist()
    np.testing.assert_allclose(
        [list(p.values()) for p in answer["probabilities"]],
        estimator.predict_proba(X),
        rtol=0,
        atol=served["onnx"]["tolerance"],
    )
    assert answer["model"] == {"name": "iris", "version": "v1"}


def test_the_sklearn_runtime_answers_exactly_as_the_estimator(
    tmp_path: Path, iris_artifact: Path
) -> None:
    from sklearn.datasets import load_iris

    store = ModelStore((tmp_path / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    X = load_iris().data.tolist()
    estimator = joblib.load(iris_artifact / MODEL_FILE)
    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "MODEL_RUNTIME": "sklearn"}

    with run_service(env, tmp_path) as running:
        answer = running.post("/predict", json={"instances": X}, headers=AUTH).json()
        runtime = running.get("/model", headers=AUTH).json()["runtime"]

    assert runtime == "sklearn"
    assert answer["predictions"] == estimator.predict(X).tolist()
    probabilities = [list(p.values()) for p in answer["probabilities"]]
    assert probabilities == estimator.predict_proba(X).tolist()


@pytest.mark.parametrize(
    "body",
    [
        {"instances": [ROW]},
        {"features": ROW},
        {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    ],
)
def test_every_request_shape_answers(service: Running, body: dict[str, Any]) -> None:
    response = service.post("/predict", json=body, headers=AUTH)

    assert response.status_code == 200
    assert response.json()["predictions"] == ["setosa"]


def test_bearer_key_and_second_key_both_work(service: Running) -> None:
    response = service.post(
        "/predict", json={"features": ROW}, headers={"Authorization": f"Bearer {OTHER_KEY}"}
    )

    assert response.status_code == 200


def test_probabilities_off(service: Running) -> None:
    body = {"instances": [ROW], "parameters": {"probabilities": False}}

    answer = service.post("/predict", json=body, headers=AUTH).json()

    assert "probabilities" not in answer


def test_model_metadata(service: Running, iris_artifact: Path) -> None:
    metadata = service.get("/model", headers=AUTH).json()

    assert metadata["version"] == "v1"
    expected = json.loads((iris_artifact / "metadata.json").read_text())["sha256"]
    assert metadata["sha256"] == expected


def test_probes_need_no_key(service: Running) -> None:
    assert service.get("/health").json() == {"status": "ok"}
    assert service.get("/ready").json() == {"status": "ready"}  # no name without a key
    assert service.get("/ready", headers={"X-API-Key": "wrong"}).status_code == 401
    assert service.get("/ready", headers=AUTH).json() == {
        "status": "ready",
        "model": {"name": "iris", "version": "v1"},
    }


def test_openapi_document_is_valid_and_lists_every_route(service: Running) -> None:
    from openapi_spec_validator import validate

    from function.service.router import ROUTES

    document = service.get("/openapi.json").json()

    validate(document)
    assert document["openapi"].startswith("3.1")
    declared = {
        (re.sub(r"<(\w+)>", r"{\1}", path), route.method.lower())
        for route in ROUTES.values()
        for path in route.paths
    }
    assert declared == {
        (path, method) for path, item in document["paths"].items() for method in item
    }


def test_openapi_examples_are_accepted(service: Running) -> None:
    document = service.get("/openapi.json").json()
    content = document["paths"]["/predict"]["post"]["requestBody"]["content"]
    examples = content["application/json"]["examples"]

    for name, example in examples.items():
        response = service.post("/predict", json=example["value"], headers=AUTH)
        assert response.status_code == 200, name


ERRORS: list[tuple[str, str, dict[str, str], Any, int, str | None]] = [
    # method, path, headers, body (bytes are sent raw), status, field
    ("POST", "/predict", {}, {"instances": [ROW]}, 401, None),
    ("POST", "/predict", {"X-API-Key": "wrong-key-0123456789"}, {"instances": [ROW]}, 401, None),
    ("POST", "/predict", {"Authorization": "Basic eDp5"}, {"instances": [ROW]}, 401, None),
    ("GET", "/model", {}, None, 401, None),
    ("POST", "/predict", AUTH, b"{not json", 400, None),
    ("POST", "/predict", AUTH, b"", 400, None),
    ("POST", "/predict", AUTH, b'{"instances": [[1,2,3,4]], "instances": []}', 400, None),
    ("POST", "/predict", {**AUTH, "Content-Type": "text/plain"}, b"{}", 415, None),
    ("POST", "/predict", AUTH, {"instances": [ROW] * 201}, 422, "instances"),
    ("POST", "/predict", AUTH, b'{"pad": "' + b"x" * 70_000 + b'"}', 413, None),
    ("POST", "/predict", AUTH, {"instances": [[1, 2, 3]]}, 422, "instances[0]"),
    ("POST", "/predict", AUTH, {"instances": [ROW, [1, 2, "abc", 4]]}, 422, "instances[1][2]"),
    ("POST", "/predict", AUTH, b'{"instances": [[1, NaN, 3, 4]]}', 422, "instances[0][1]"),
    ("POST", "/predict", AUTH, b'{"instances": [[1, 1e999, 3, 4]]}', 422, "instances[0][1]"),
    (
        "POST",
        "/predict",
        AUTH,
        {"instances": [{"sepal_length": 1, "sepal_width": 2, "petal_length": 3, "petal_wdth": 4}]},
        422,
        "instances[0].petal_wdth",
    ),
    ("POST", "/predict", AUTH, ["not", "an", "object"], 422, None),
    ("GET", "/predict", AUTH, None, 405, None),
    ("DELETE", "/model", AUTH, None, 405, None),
    ("GET", "/nowhere", {}, None, 404, None),
    ("GET", "/robots.txt", {}, None, 404, None),
]


@pytest.mark.parametrize("method, path, headers, body, status, field", ERRORS)
def test_errors_are_problem_documents_with_the_right_status(
    service: Running,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any,
    status: int,
    field: str | None,
) -> None:
    kwargs: dict[str, Any] = {"headers": dict(headers)}
    if isinstance(body, bytes):
        kwargs["data"] = body
        kwargs["headers"].setdefault("Content-Type", "application/json")
    elif body is not None:
        kwargs["json"] = body

    response = requests.request(method, service.url + path, timeout=10, **kwargs)

    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["detail"]
    assert problem.get("field") == field
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if status == 405:
        assert "Allow" in response.headers


def test_logs_are_json_lines_with_trace_and_without_keys(service: Running) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    service.post(
        "/predict",
        json={"features": ROW},
        headers={**AUTH, "traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
    )
    time.sleep(0.2)

    lines = [json.loads(line) for line in service.output().splitlines() if line.startswith("{")]
    traced = [entry for entry in lines if entry.get("logging.googleapis.com/trace") == trace]
    assert traced, "no log line carries the trace id"
    assert traced[0]["severity"] == "INFO"
    assert traced[0]["httpRequest"]["status"] == 200
    assert traced[0]["httpRequest"]["latency"].endswith("s")
    assert KEY not in service.output()
    assert OTHER_KEY not in service.output()


def test_model_from_a_folder(tmp_path: Path, iris_artifact: Path) -> None:
    store = ModelStore((tmp_path / "store" / "iris").as_uri())
    store.publish(iris_artifact, "local1")
    store.promote("local1")

    with run_service({"MODEL_URI": store.uri, "API_KEYS": KEY}, tmp_path) as running:
        answer = running.post("/predict", json={"features": ROW}, headers=AUTH).json()

    assert answer["model"]["version"] == "local1"


def test_pinned_version_is_served_rather_than_current(
    tmp_path: Path, iris_artifact: Path, forest_artifact: Path
) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.publish(iris_artifact, "lr")
    store.publish(forest_artifact, "rf")
    store.promote("rf")
    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "MODEL_VERSION": "lr"}

    with run_service(env, tmp_path) as running:
        assert running.get("/model", headers=AUTH).json()["estimator"] == "LogisticRegression"


def assert_never_serves(running: Running, reason: str) -> None:
    """Not ready, with the reason, and no prediction, for as long as we watch."""
    wait_until(
        lambda: reason in running.get("/ready", headers=AUTH).text, 15, f"/ready to say {reason!r}"
    )
    for _ in range(3):
        ready = running.get("/ready", headers=AUTH)
        unkeyed = [running.get(path) for path in ("/ready", "/v2/health/ready")]
        assert ready.status_code == 503
        assert reason in ready.json()["detail"]
        for probe in unkeyed:  # a caller without a key learns "not ready", not the store or why
            assert probe.status_code == 503
            assert reason not in probe.text and "://" not in probe.text, probe.text
        assert running.post("/predict", json={"features": ROW}, headers=AUTH).status_code == 503
        time.sleep(0.3)


def test_a_tampered_artifact_is_never_served(
    tmp_path: Path, iris_artifact: Path, forest_artifact: Path
) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.publish(iris_artifact, "v1")
    store.promote("v1")
    # Someone with write access to the bucket swaps in another, perfectly loadable model.
    model = tmp_path / "iris" / "versions" / "v1" / MODEL_FILE
    model.write_bytes((forest_artifact / MODEL_FILE).read_bytes())

    env = {"MODEL_URI": store.uri, "API_KEYS": KEY}
    with run_service(env, tmp_path, wait_ready=False) as running:
        # The forest is larger than the size metadata.json records: refused by it, unread.
        assert_never_serves(running, "over its limit")


def test_a_wrong_pinned_digest_is_never_served(tmp_path: Path, iris_artifact: Path) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.publish(iris_artifact, "v1")
    store.promote("v1")
    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "MODEL_SHA256": "0" * 64}

    with run_service(env, tmp_path, wait_ready=False) as running:
        assert_never_serves(running, "MODEL_SHA256 pins")


def test_nothing_promoted_is_not_ready_then_recovers(tmp_path: Path, iris_artifact: Path) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    env = {"MODEL_URI": store.uri, "API_KEYS": KEY}

    with run_service(env, tmp_path, wait_ready=False) as running:
        assert_never_serves(running, "no version")
        store.publish(iris_artifact, "v1")
        store.promote("v1")
        wait_until(lambda: running.get("/ready").status_code == 200, 20, "recovery")
        assert running.post("/predict", json={"features": ROW}, headers=AUTH).status_code == 200


BAD_CONFIGURATIONS = [
    ({"MODEL_URI": "gs://b/m/iris"}, "no API key is configured"),
    ({"API_KEYS": KEY}, "MODEL_URI is required"),
    ({"MODEL_URI": "gs://b/m/iris", "API_KEYS": "tiny"}, "API_KEYS=(value not shown)"),
]


@pytest.mark.parametrize("env, message", BAD_CONFIGURATIONS)
def test_bad_configuration_is_refused_naming_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        build(env)

    assert message in str(refused.value)
    assert "tiny" not in str(refused.value)  # a key is never echoed


def test_bad_configuration_stops_the_container_command() -> None:
    """The process: functions-framework's command exits with the message, no traceback."""
    env, message = BAD_CONFIGURATIONS[2]
    result = subprocess.run(
        [*SERVE_COMMAND, "--port", "1"],
        cwd=ROOT,
        env={"PATH": f"{Path(PYTHON).parent}:/usr/bin:/bin", "HOME": "/tmp", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert f"modelrun: configuration error: {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_development_mode_without_keys_serves_openly(tmp_path: Path, iris_artifact: Path) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.publish(iris_artifact, "v1")
    store.promote("v1")

    with run_service({"MODEL_URI": store.uri, "ENVIRONMENT": "development"}, tmp_path) as running:
        assert running.post("/predict", json={"features": ROW}).status_code == 200


# --- keys from Secret Manager ------------------------------------------------------------


@pytest.fixture
def folder_model(tmp_path: Path, iris_artifact: Path) -> str:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.publish(iris_artifact, "v1")
    store.promote("v1")
    return store.uri


def secret_env(folder_model: str, secret_manager: FakeSecretManager) -> dict[str, str]:
    return {
        "MODEL_URI": folder_model,
        "API_KEYS_SECRET": SECRET_NAME,
        "SECRET_MANAGER_EMULATOR_HOST": secret_manager.address,
        "API_KEYS_REFRESH_SECONDS": "0.3",
    }


def status_with(running: Running, key: str) -> int:
    return running.post("/predict", json={"features": ROW}, headers={"X-API-Key": key}).status_code


def test_keys_from_secret_manager_rotate_without_restart(
    tmp_path: Path, folder_model: str, secret_manager: FakeSecretManager
) -> None:
    old, new = "old-key-0123456789abcdef", "new-key-0123456789abcdef"
    secret_manager.secrets[SECRET_NAME] = old.encode()

    with run_service(secret_env(folder_model, secret_manager), tmp_path) as running:
        assert status_with(running, old) == 200
        assert status_with(running, new) == 401

        secret_manager.secrets[SECRET_NAME] = f"{old},{new}".encode()  # overlap
        wait_until(lambda: status_with(running, new) == 200, 10, "the new key")
        assert status_with(running, old) == 200

        secret_manager.secrets[SECRET_NAME] = new.encode()  # retire the old key
        wait_until(lambda: status_with(running, old) == 401, 10, "the old key's retirement")
        assert status_with(running, new) == 200
        assert old not in running.output() and new not in running.output()


def test_unreachable_secret_manager_fails_closed(
    tmp_path: Path, folder_model: str, secret_manager: FakeSecretManager
) -> None:
    env = secret_env(folder_model, secret_manager)
    secret_manager.stop()  # nothing answers at that address

    with run_service(env, tmp_path, wait_ready=False) as running:
        wait_until(lambda: "API keys" in running.get("/ready", headers=AUTH).text, 15, "the reason")
        assert running.get("/ready").status_code == 503
        assert status_with(running, KEY) == 503
        assert status_with(running, "") == 503
        assert running.get("/model").status_code == 503


def test_a_missing_secret_fails_closed_and_says_why(
    tmp_path: Path, folder_model: str, secret_manager: FakeSecretManager
) -> None:
    with run_service(
        secret_env(folder_model, secret_manager), tmp_path, wait_ready=False
    ) as running:
        wait_until(lambda: "cannot read API keys" in running.output(), 15, "the error log")
        assert status_with(running, KEY) == 503
        assert "NotFound" in running.output()


# --- metrics -----------------------------------------------------------------------------


def scrape(running: Running, headers: dict[str, str]) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    response = running.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def samples(family: Any, suffix: str = "") -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for s in family.samples if s.name == family.name + suffix]


def test_metrics_after_real_traffic(service: Running) -> None:
    service.post("/predict", json={"instances": [ROW, ROW, [6.7, 3.0, 5.2, 2.3]]}, headers=AUTH)
    service.post("/predict", json={"features": ROW}, headers={"X-API-Key": "wrong-key-1234567890"})
    service.post("/predict", json={"features": [1, 2]}, headers=AUTH)

    families = scrape(service, AUTH)

    durations = samples(families["http_server_request_duration_seconds"], "_count")
    routes = {
        (d["http_route"], d["http_response_status_code"]) for d, _ in durations if "http_route" in d
    }
    assert {("/predict", "200"), ("/predict", "401"), ("/predict", "422")} <= routes
    predicted = {d["class"]: v for d, v in samples(families["modelrun_predictions"], "_total")}
    assert predicted["setosa"] >= 2 and predicted["virginica"] >= 1
    assert all(
        d["model_version"] == "v1" for d, _ in samples(families["modelrun_predictions"], "_total")
    )
    assert samples(families["modelrun_batch_size"], "_count")[0][1] >= 1
    assert ({"reason": "invalid"}) in [
        d for d, _ in samples(families["modelrun_auth_failures"], "_total")
    ]
    kinds = {d["kind"] for d, _ in samples(families["modelrun_errors"], "_total")}
    assert {"unauthorized", "invalid_input"} <= kinds
    info = samples(families["modelrun_model_info"])
    assert [(d["model_name"], d["model_version"]) for d, _ in info] == [("iris", "v1")]
    assert samples(families["modelrun_model_ready"]) == [({}, 1.0)]
    loads = samples(families["modelrun_model_load_duration_seconds"], "_count")
    assert ({"outcome": "success", "model_version": "v1"}, 1.0) in loads
    assert samples(families["process_resident_memory_bytes"])[0][1] > 10_000_000
    assert "process_cpu_seconds" in families


def test_metrics_need_a_key_unless_made_public(
    service: Running, tmp_path: Path, iris_artifact: Path
) -> None:
    assert service.get("/metrics").status_code == 401
    store = ModelStore((tmp_path / "iris").as_uri())
    store.publish(iris_artifact, "v1")
    store.promote("v1")

    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "METRICS_PUBLIC": "true"}
    with run_service(env, tmp_path) as running:
        assert "modelrun_model_ready 1.0" in running.get("/metrics").text


@pytest.mark.parametrize("runtime", ["onnx", "sklearn"])
def test_a_model_swapped_out_is_freed_although_frozen(
    forest_artifact: Path, tmp_path: Path, runtime: str
) -> None:
    # The service gc.freeze()s what it loads (a full collection then skips it); a model it
    # swaps out must still be freed, by reference counting, as nothing cyclic holds it.
    store = ModelStore((tmp_path / "iris").as_uri())
    store.promote(store.publish(forest_artifact, "v1"))
    model = load_model(store, "current", None, True, runtime)
    gc.freeze()
    try:
        held = [weakref.ref(model.estimator)]
        held += [weakref.ref(step) for _, step in getattr(model.estimator, "steps", [])]
        del model
        assert [ref() for ref in held] == [None] * len(held)
    finally:
        gc.unfreeze()
