"""Faults, hostile input, hot refresh under load and limits — on real processes (shutdown:
tests/test_shutdown.py).

The store is the real GCS client against gcp-storage-emulator (stopped, restarted, fed bad
objects); keys come from the fake Secret Manager gRPC server where that matters.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from function.core.artifact import encode_metadata
from function.core.store import ModelStore
from tests.artifacts import publish_object
from tests.conftest import (
    KEY,
    OTHER_KEY,
    Emulator,
    Running,
    free_port,
    run_service,
    schemathesis,
    service_env,
    wait_until,
)
from tests.inprocess import in_process
from tests.odd_models import NotAModel, SlowModel

ROW = [5.1, 3.5, 1.4, 0.2]
AUTH = {"X-API-Key": KEY}


def gcs_store(emulator: Emulator, name: str, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    """A fresh model root in an emulator; the client points there for this test only."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)
    return ModelStore(f"gs://{emulator.bucket}/{name}-{time.monotonic_ns()}/iris", timeout=5)


class DiskEmulator:
    """gcp-storage-emulator keeping its data on disk, so it can be stopped and started again."""

    def __init__(self, data: Path, bucket: str) -> None:
        self.port, self.data, self.bucket = free_port(), data, bucket
        self.data.mkdir(parents=True, exist_ok=True)
        self.emulator = Emulator(f"http://127.0.0.1:{self.port}", bucket)
        self._server: Any = None

    def start(self) -> None:
        from gcp_storage_emulator.server import create_server

        self._server = create_server(
            "127.0.0.1", self.port, data_dir=str(self.data), default_bucket=self.bucket
        )
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def point_current_at(store: ModelStore, version: str, sha256: str) -> None:
    """Write current.json by hand (promote would refuse what these tests need to serve)."""
    pointer, token = store.current()
    history = [pointer.version, *pointer.history] if pointer else []
    document = {"version": version, "sha256": sha256, "previous": None, "history": history}
    store.backend.write("current.json", encode_metadata(document), if_token=token)


def version_of(running: Running) -> str:
    response = running.post("/predict", json={"features": ROW}, headers=AUTH)
    assert response.status_code == 200, response.text
    return str(response.json()["model"]["version"])


def ready_reason(running: Running) -> str:
    response = running.get("/ready", headers=AUTH)
    return "" if response.status_code == 200 else str(response.json()["detail"])


# --- faults at cold start ----------------------------------------------------------------


@pytest.fixture
def bad_versions(
    gcs_emulator: Emulator, iris_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModelStore, dict[str, tuple[str, str]]]]:
    """A store with a good v1 and one broken version per fault: name -> (version, sha256)."""
    store = gcs_store(gcs_emulator, "faults", monkeypatch)
    store.publish(iris_artifact, "v1")
    store.promote("v1")
    good_sha = store.metadata("v1").sha256
    store.backend.write("versions/half/model.joblib", b"partial upload", if_token=None)
    publish_object(store, "notamodel", NotAModel(), iris_artifact, tmp_path)
    publish_object(
        store, "threefeatures", joblib.load(iris_artifact / "model.joblib"), iris_artifact,
        tmp_path, feature_names=["a", "b", "c"],
    )  # fmt: skip
    publish_object(
        store, "tampered", joblib.load(iris_artifact / "model.joblib"), iris_artifact, tmp_path
    )
    tampered_sha = store.metadata("tampered").sha256
    from google.cloud import storage  # someone with bucket access replaces the model

    bucket, _, prefix = store.uri.removeprefix("gs://").partition("/")
    blob = storage.Client().bucket(bucket).blob(f"{prefix}/versions/tampered/model.joblib")
    blob.upload_from_string(b"not what was verified")
    cases = {
        "missing": ("ghost", good_sha),
        "half-written": ("half", good_sha),
        "not an estimator": ("notamodel", store.metadata("notamodel").sha256),
        "feature count": ("threefeatures", store.metadata("threefeatures").sha256),
        "digest mismatch": ("tampered", tampered_sha),
    }
    yield store, cases


EXPECTED_REASON = {
    "missing": "version ghost is missing",
    "half-written": "version half is incomplete",
    "not an estimator": "holds a NotAModel, not an estimator",
    "feature count": "fitted on 4 features but its metadata names 3",
    "digest mismatch": "sha256 is",
}


@pytest.mark.parametrize("fault", list(EXPECTED_REASON))
def test_cold_start_never_serves_a_bad_current_version(
    bad_versions: tuple[ModelStore, dict[str, tuple[str, str]]],
    gcs_emulator: Emulator,
    tmp_path: Path,
    fault: str,
) -> None:
    store, cases = bad_versions
    point_current_at(store, *cases[fault])

    with run_service(service_env(store, gcs_emulator), tmp_path, wait_ready=False) as running:
        wait_until(lambda: EXPECTED_REASON[fault] in ready_reason(running), 15, fault)
        for _ in range(3):
            assert running.get("/ready").status_code == 503
            response = running.post("/predict", json={"features": ROW}, headers=AUTH)
            assert response.status_code == 503
            assert EXPECTED_REASON[fault] in response.json()["detail"]
            time.sleep(0.2)


@pytest.mark.slow
def test_an_unreachable_store_heals_by_itself(
    iris_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = DiskEmulator(tmp_path / "gcs-data", "heal")
    disk.start()
    store = gcs_store(disk.emulator, "heal", monkeypatch)
    store.publish(iris_artifact, "v1")
    store.promote("v1")
    disk.stop()  # the store goes away before the service starts

    with run_service(service_env(store, disk.emulator), tmp_path, wait_ready=False) as running:
        wait_until(lambda: "cannot reach" in ready_reason(running), 20, "the reason")
        assert running.post("/predict", json={"features": ROW}, headers=AUTH).status_code == 503
        disk.start()  # it comes back, with its data
        try:
            wait_until(lambda: running.get("/ready").status_code == 200, 40, "recovery")
            assert version_of(running) == "v1"
        finally:
            disk.stop()


# --- hot refresh -------------------------------------------------------------------------


def test_refresh_swaps_in_promotions_and_rollbacks_without_restart(
    gcs_emulator: Emulator,
    iris_artifact: Path,
    forest_artifact: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = gcs_store(gcs_emulator, "refresh", monkeypatch)
    store.publish(iris_artifact, "lr")
    store.publish(forest_artifact, "rf")
    store.promote("lr")
    env = service_env(store, gcs_emulator, MODEL_REFRESH_SECONDS="0.2")

    with run_service(env, tmp_path) as running:
        assert version_of(running) == "lr"
        store.promote("rf")
        wait_until(lambda: version_of(running) == "rf", 15, "the promotion")
        assert running.get("/model", headers=AUTH).json()["version"] == "rf"
        store.rollback()
        wait_until(lambda: version_of(running) == "lr", 15, "the rollback")
        metrics = running.get("/metrics", headers=AUTH).text
        assert 'model_version="lr"' in metrics.split("modelrun_model_info{")[1].split("}")[0]


def test_refresh_never_serves_a_bad_candidate(
    bad_versions: tuple[ModelStore, dict[str, tuple[str, str]]],
    gcs_emulator: Emulator,
    forest_artifact: Path,
    tmp_path: Path,
) -> None:
    store, cases = bad_versions
    env = service_env(store, gcs_emulator, MODEL_REFRESH_SECONDS="0.2")

    with run_service(env, tmp_path) as running:
        for fault, (version, sha256) in cases.items():
            point_current_at(store, version, sha256)
            wait_until(lambda v=version: f"candidate {v} refused" in running.output(), 15, fault)
            assert version_of(running) == "v1", fault
            assert running.get("/ready").status_code == 200, fault
        store.publish(forest_artifact, "v2")
        store.promote("v2")
        wait_until(lambda: version_of(running) == "v2", 15, "a good candidate after bad ones")
        metrics = running.get("/metrics", headers=AUTH).text
        assert 'modelrun_errors_total{kind="model_refresh"}' in metrics


@pytest.mark.slow
def test_refresh_survives_the_store_going_away(
    iris_artifact: Path, forest_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = DiskEmulator(tmp_path / "gcs-data", "away")
    disk.start()
    store = gcs_store(disk.emulator, "away", monkeypatch)
    store.publish(iris_artifact, "v1")
    store.publish(forest_artifact, "v2")
    store.promote("v1")
    env = service_env(store, disk.emulator, MODEL_REFRESH_SECONDS="0.2")

    with run_service(env, tmp_path) as running:
        disk.stop()
        wait_until(lambda: "cannot read current.json" in running.output(), 15, "a failed poll")
        assert version_of(running) == "v1"  # still serving from memory
        disk.start()
        try:
            store.promote("v2")
            wait_until(lambda: version_of(running) == "v2", 20, "the refresh after the outage")
        finally:
            disk.stop()


def test_swaps_under_load_fail_no_request_and_never_mix_versions(
    gcs_emulator: Emulator,
    iris_artifact: Path,
    forest_artifact: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = gcs_store(gcs_emulator, "swap", monkeypatch)
    store.publish(iris_artifact, "lr")
    store.publish(forest_artifact, "rf")
    store.promote("lr")
    estimators = {
        "lr": joblib.load(iris_artifact / "model.joblib"),
        "rf": joblib.load(forest_artifact / "model.joblib"),
    }
    rows = np.random.default_rng(0).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], (64, 4)).round(2)
    history: list[tuple[float, str]] = [(0.0, "lr")]  # (time it became current, version)
    results: list[tuple[float, float, int, dict[str, Any], int]] = []
    stop = threading.Event()
    # The scikit-learn runtime, one model call per request: answers must equal each version's
    # own predict_proba exactly (micro-batching moves BLAS results in the last bit).
    env = service_env(
        store,
        gcs_emulator,
        MODEL_REFRESH_SECONDS="0.1",
        MODEL_RUNTIME="sklearn",
        MICRO_BATCHING="false",
    )

    def client(seed: int) -> None:
        session = requests.Session()
        i = seed
        while not stop.is_set():
            row = rows[i % len(rows)].tolist()
            started = time.monotonic()
            response = session.post(
                f"{running.url}/predict", json={"instances": [row]}, headers=AUTH, timeout=10
            )
            body = response.json() if response.status_code == 200 else {}
            results.append((started, time.monotonic(), response.status_code, body, i % len(rows)))
            i += 1

    with run_service(env, tmp_path) as running:
        threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
        for thread in threads:
            thread.start()
        try:
            for step in ("rf", "lr", "rf", "lr", "rf"):
                time.sleep(1.0)
                if step == "rf":
                    store.promote("rf")
                else:
                    store.rollback()
                history.append((time.monotonic(), step))
            time.sleep(1.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join()

    print(f"swap under load: {len(results)} requests across 5 swaps")  # quoted in RELIABILITY.md
    assert len(results) > 200
    assert [r for r in results if r[2] != 200] == []
    lag = 2.0  # the poll interval plus a load: how long after a promotion the old one may answer
    for started, ended, _, body, row in results:
        version = body["model"]["version"]
        assert version in _current_between(history, started - lag, ended)
        # The answer was computed by the model its version names: nothing mixed.
        expected = estimators[version].predict_proba([rows[row]])[0].tolist()
        assert list(body["probabilities"][0].values()) == expected
    assert {r[3]["model"]["version"] for r in results} == {"lr", "rf"}


def _current_between(history: list[tuple[float, str]], start: float, end: float) -> set[str]:
    """Versions that were current in the store at some moment between start and end."""
    spans = zip(history, [*history[1:], (float("inf"), "")], strict=True)
    return {v for (since, v), (until, _) in spans if since <= end and until >= start}


# --- limits, CORS, headers, time limit ---------------------------------------------------


def folder_env(iris_artifact: Path, tmp_path: Path, **env: str) -> dict[str, str]:
    """Iris promoted in a fresh folder store, two keys, and extra settings."""
    store = ModelStore((tmp_path / f"store-{time.monotonic_ns()}" / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    return {"MODEL_URI": store.uri, "API_KEYS": f"{KEY},{OTHER_KEY}", **env}


@pytest.fixture
def folder_service(iris_artifact: Path, tmp_path: Path) -> Iterator[Any]:
    """Start a service process on a folder store with extra settings."""
    yield lambda **env: run_service(folder_env(iris_artifact, tmp_path, **env), tmp_path)


@pytest.fixture
def folder_app(iris_artifact: Path, tmp_path: Path) -> Iterator[Any]:
    """Serve a folder store with extra settings in this process (tests/inprocess.py)."""
    yield lambda **env: in_process(folder_env(iris_artifact, tmp_path, **env))


def test_rate_limit_per_key_answers_429_with_retry_after(folder_app: Any) -> None:
    now = [1000.0]
    with folder_app(RATE_LIMIT_PER_SECOND="2", RATE_LIMIT_BURST="3") as app:
        app.service.limits.clock = lambda: now[0]  # time moves only when the test says
        post = app.client.post
        statuses = [post("/predict", json={"features": ROW}, headers=AUTH).status_code
                    for _ in range(5)]  # fmt: skip
        limited = post("/predict", json={"features": ROW}, headers=AUTH)
        other = post("/predict", json={"features": ROW}, headers={"X-API-Key": OTHER_KEY})
        now[0] += 1.1
        again = post("/predict", json={"features": ROW}, headers=AUTH)

    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["Content-Type"] == "application/problem+json"
    assert other.status_code == 200  # buckets are per key
    assert again.status_code == 200


def errors_of(app: Any, kind: str) -> float:
    """modelrun_errors_total of one kind, as /metrics shows it."""
    page = app.client.get("/metrics", headers=AUTH).get_data(as_text=True)
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == "modelrun_errors_total" and sample.labels.get("kind") == kind:
                return float(sample.value)
    return 0.0


def test_a_version_naming_another_folder_is_never_served(
    folder_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with folder_app(MODEL_REFRESH_SECONDS="0.05") as app:
        store = ModelStore(app.service.config.model_uri)
        v1 = store.metadata("v1")
        # Someone who can write the store: v1's files under v9, whose metadata says otherwise.
        store.backend.write("versions/v9/model.joblib", store.read_file("v1", "model.joblib"), None)
        forged = {**v1.raw, "version": "../../../elsewhere/v1\r\nX-Injected: 1"}
        store.backend.write("versions/v9/metadata.json", encode_metadata(forged), None)
        point_current_at(store, "v9", v1.sha256)
        wait_until(lambda: errors_of(app, "model_refresh") > 0, 10, "the refresh to refuse v9")
        response = app.client.post("/predict", json={"features": ROW}, headers=AUTH)

    assert response.status_code == 200
    assert response.headers["X-Model-Version"] == "v1"
    assert "X-Injected" not in response.headers
    assert not any("\n" in r.getMessage() or "\r" in r.getMessage() for r in caplog.records)


V2_INFER = "/v2/models/iris/infer"
SURROGATES = [  # a lone surrogate escape: valid JSON text, a str no UTF-8 writer can write
    (V2_INFER, b'{"inputs": [{"name": "input-0", "datatype": "BYTES", "shape": [1, 4],'
               b' "data": ["\\ud800", 1, 1, 1]}]}'),
    (V2_INFER, b'{"id": "\\ud800", "inputs": [{"name": "input-0", "datatype": "FP64",'
               b' "shape": [1, 4], "data": [1, 1, 1, 1]}]}'),
    ("/predict", b'{"instances": [["\\udfff", 1, 1, 1]]}'),
    ("/predict", b'{"features": [1, 2, 3, 4], "\\ud800": 1}'),
    ("/predict", b'{"instances": [{"\\udc00x": 1}], "id": NaN}'),
]  # fmt: skip


@pytest.mark.parametrize("path, body", SURROGATES)
def test_a_lone_surrogate_is_a_counted_4xx_in_its_protocol(
    folder_app: Any, path: str, body: bytes
) -> None:
    with folder_app() as app:
        response = app.client.post(path, data=body, headers=JSON)
        counted = errors_of(app, "bad_request") + errors_of(app, "invalid_input")

    assert response.status_code in (400, 422), response.get_data(as_text=True)[:300]
    assert response.headers["Content-Type"] in ("application/json", "application/problem+json")
    assert "surrogate" in response.get_data(as_text=True)
    assert_secured(response.headers)
    assert counted == 1


def test_wrong_keys_are_throttled_per_address_and_a_valid_key_never_is(folder_app: Any) -> None:
    from function.service.ratelimit import FAILED_KEYS_BURST

    now = [1000.0]
    with folder_app(RATE_LIMIT_PER_SECOND="100", RATE_LIMIT_BURST="100", WORKERS="1") as app:
        app.service.failed_keys.clock = app.service.limits.clock = lambda: now[0]

        def post(key: str, address: str = "203.0.113.7") -> Any:
            return app.client.post(
                "/predict", json={"features": ROW}, headers={"X-API-Key": key},
                environ_base={"REMOTE_ADDR": address},
            )  # fmt: skip

        wrong = [post(f"wrong-key-{i:02d}-0123456789").status_code for i in range(30)]
        throttled = post("wrong-key-again-0123456789")
        valid = [post(KEY).status_code for _ in range(5)]  # the same address, meanwhile
        missing = app.client.post(
            "/predict", json={"features": ROW}, environ_base={"REMOTE_ADDR": "203.0.113.7"}
        )
        elsewhere = post("wrong-key-elsewhere-0123456789", "198.51.100.9")
        # Behind Cloud Run the front end appends the client's address: that one counts.
        forwarded = app.client.post(
            "/predict", json={"features": ROW},
            headers={"X-API-Key": "wrong-key-via-proxy-0", "X-Forwarded-For": "1.2.3.4,192.0.2.1"},
            environ_base={"REMOTE_ADDR": "203.0.113.7"},
        )  # fmt: skip
        now[0] += 1.1
        later = post("wrong-key-later-0123456789")

    assert wrong[:FAILED_KEYS_BURST] == [401] * FAILED_KEYS_BURST
    assert set(wrong[FAILED_KEYS_BURST:]) == {429}
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert "per client address for wrong keys" in throttled.get_json()["detail"]
    assert valid == [200] * 5  # never locked out
    assert missing.status_code == 429  # no key is a wrong key
    assert elsewhere.status_code == 401 and forwarded.status_code == 401
    assert later.status_code == 401  # a token back after a second


def test_cors_allows_listed_origins_only(folder_app: Any) -> None:
    allowed, other = "https://app.example.com", "https://evil.example.com"
    with folder_app(CORS_ORIGINS=allowed) as app:
        preflight = app.client.options(
            "/predict", headers={"Origin": allowed, "Access-Control-Request-Method": "POST"}
        )
        refused = app.client.options(
            "/predict", headers={"Origin": other, "Access-Control-Request-Method": "POST"}
        )
        simple = app.client.post(
            "/predict", json={"features": ROW}, headers={**AUTH, "Origin": allowed}
        )
        foreign = app.client.post(
            "/predict", json={"features": ROW}, headers={**AUTH, "Origin": other}
        )

    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == allowed
    assert "X-API-Key" in preflight.headers["Access-Control-Allow-Headers"]
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert simple.headers["Access-Control-Allow-Origin"] == allowed
    assert "Access-Control-Allow-Origin" not in foreign.headers


SECURED_REQUESTS = [
    ("GET", "/health", {}),
    ("GET", "/ready", {}),
    ("GET", "/openapi.json", {}),
    ("GET", "/metrics", AUTH),
    ("GET", "/model", {}),
    ("POST", "/predict", AUTH),
    ("GET", "/robots.txt", {}),
    ("PATCH", "/predict", AUTH),
]


def assert_secured(headers: Any) -> None:
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in headers["Content-Security-Policy"]


@pytest.mark.parametrize("method, path, headers", SECURED_REQUESTS)
def test_security_headers_on_every_response(
    folder_app: Any, method: str, path: str, headers: dict[str, str]
) -> None:
    with folder_app() as app:
        response = app.client.open(path, method=method, headers=headers)

    assert_secured(response.headers)


@pytest.mark.slow
def test_security_headers_on_functions_frameworks_own_paths(folder_service: Any) -> None:
    """/robots.txt and /favicon.ico are answered by functions-framework, not the handler."""
    with folder_service() as running:
        responses = [running.get(path) for path in ("/robots.txt", "/favicon.ico")]

    for response in responses:
        assert response.status_code == 404
        assert_secured(response.headers)


@pytest.mark.slow
def test_a_request_past_the_time_limit_is_stopped_with_503(
    iris_artifact: Path, tmp_path: Path
) -> None:
    store = ModelStore((tmp_path / "slow" / "iris").as_uri())
    publish_object(store, "slow", SlowModel(), iris_artifact, tmp_path, class_names=["slow"])
    store.promote("slow")
    env = {
        "MODEL_URI": store.uri,
        "API_KEYS": KEY,
        "CLOUD_RUN_TIMEOUT_SECONDS": "1",
    }

    with run_service(env, tmp_path) as running:
        started = time.monotonic()
        response = running.post("/predict", json={"features": ROW}, headers=AUTH)
        took = time.monotonic() - started
        healthy = running.get("/health").status_code

    assert response.status_code == 503
    assert "1s time limit" in response.json()["detail"]
    assert took < 5  # before the model's own 5 s: stopped, not waited for (make bench-timings)
    assert healthy == 200


# --- safer model loading -----------------------------------------------------------------


@pytest.mark.slow
def test_skops_model_serves_without_pickle(forest_artifact: Path, tmp_path: Path) -> None:
    from training.__main__ import main as training

    out = tmp_path / "skops"
    assert training(["train", "--no-report", "--format", "skops", "--estimator", "random_forest",
                     "--param", "n_estimators=20", "--out", str(out)]) == 0  # fmt: skip
    store = ModelStore((tmp_path / "store" / "iris").as_uri())
    store.publish(out, "sk")
    store.promote("sk")
    env = {
        "MODEL_URI": store.uri,
        "API_KEYS": KEY,
        "ALLOW_PICKLE": "false",
        "MODEL_RUNTIME": "sklearn",
    }
    estimator = joblib.load(forest_artifact / "model.joblib")  # same data, seed and params

    with run_service(env, tmp_path) as running:
        answer = running.post("/predict", json={"instances": [ROW]}, headers=AUTH).json()

    assert answer["model"]["version"] == "sk"
    assert answer["predictions"] == estimator.predict([ROW]).tolist()
    assert list(answer["probabilities"][0].values()) == estimator.predict_proba([ROW])[0].tolist()


@pytest.mark.slow
def test_pickle_can_be_refused(iris_artifact: Path, tmp_path: Path) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.publish(iris_artifact, "pickled")
    store.promote("pickled")
    env = {
        "MODEL_URI": store.uri,
        "API_KEYS": KEY,
        "ALLOW_PICKLE": "false",
        "MODEL_RUNTIME": "sklearn",
    }

    with run_service(env, tmp_path, wait_ready=False) as running:
        wait_until(lambda: "ALLOW_PICKLE=false" in ready_reason(running), 15, "the refusal")


@pytest.mark.slow
def test_skops_refuses_to_trust_foreign_types(tmp_path: Path) -> None:
    from training.__main__ import main as training

    out = tmp_path / "skops"
    assert training(["train", "--no-report", "--format", "skops", "--out", str(out)]) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    metadata["skops_trusted"] = ["os.system"]  # a bucket writer tries to widen the trust
    (out / "metadata.json").write_text(json.dumps(metadata))
    store = ModelStore((tmp_path / "store" / "iris").as_uri())
    store.publish(out, "sk")
    store.promote("sk")

    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "MODEL_RUNTIME": "sklearn"}
    with run_service(env, tmp_path, wait_ready=False) as running:
        wait_until(lambda: "outside scikit-learn" in ready_reason(running), 15, "the refusal")


# --- hostile input and the published contract -------------------------------------------


@pytest.fixture(scope="module")
def hardened(iris_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("hostile")
    store = ModelStore((tmp / "iris").as_uri())
    store.publish(iris_artifact, "v1")
    store.promote("v1")
    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "RATE_LIMIT_PER_SECOND": "0",
           "MAX_REQUEST_BYTES": "65536"}  # fmt: skip
    with run_service(env, tmp) as running:
        yield running


JSON = {"Content-Type": "application/json", **AUTH}
HOSTILE: list[tuple[str, str, dict[str, str], bytes]] = [
    ("POST", "/predict", JSON, b"{"),
    ("POST", "/predict", JSON, b"[1, 2"),
    ("POST", "/predict", JSON, b"null"),
    ("POST", "/predict", JSON, b"42"),
    ("POST", "/predict", JSON, b'"a string"'),
    ("POST", "/predict", JSON, b'{"instances": "all"}'),
    ("POST", "/predict", JSON, b'{"instances": [[1, 2, 3, "4"]]}'),
    ("POST", "/predict", JSON, b'{"instances": [[1, 2, 3, true]]}'),
    ("POST", "/predict", JSON, b'{"instances": [[1, 2, 3, NaN]]}'),
    ("POST", "/predict", JSON, b'{"instances": [[1, 2, 3, Infinity]]}'),
    ("POST", "/predict", JSON, b'{"instances": [[1, 2, 3, -Infinity]]}'),
    ("POST", "/predict", JSON, b'{"instances": [[1e308, -1e308, 1e308, 1e308]]}'),
    ("POST", "/predict", JSON, b'{"instances": [[1e400, 2, 3, 4]]}'),
    ("POST", "/predict", JSON, b'{"instances": [[' + b"9" * 5000 + b", 2, 3, 4]]}"),
    ("POST", "/predict", JSON, b'{"instances": [' + b"[" * 5000 + b"]" * 5000 + b"]}"),
    ("POST", "/predict", JSON, b"[" * 60000),
    ("POST", "/predict", JSON, b'{"instances": [' + b"[1,2,3,4]," * 2000 + b"[1,2,3,4]]}"),
    ("POST", "/predict", JSON, b'{"instances": [[1,2,3,4]], "instances": [[1,2,3,4]]}'),
    ("POST", "/predict", JSON, '{"instances": [{"s\u00e9pal": 1}]}'.encode()),
    ("POST", "/predict", JSON, '{"\u2603": "\U0001f600"}'.encode()),
    ("POST", "/predict", JSON, b'{"features": [1, 2, 3, 4], "parameters": {"probabilities": 1}}'),
    ("POST", "/predict", JSON, b"\xff\xfe\x00{"),
    ("POST", "/predict", JSON, b""),
    ("POST", "/predict", JSON, b"   \n "),
    ("POST", "/predict", JSON, b'{"pad": "' + b"x" * 70000 + b'"}'),
    ("POST", "/predict", {**AUTH, "Content-Type": "text/plain"}, b'{"features": [1, 2, 3, 4]}'),
    ("POST", "/predict", {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}, b"a=1"),
    ("POST", "/predict", {**AUTH, "Content-Type": "multipart/form-data; boundary=x"}, b"--x--"),
    ("POST", "/predict", AUTH, b'{"features": [1, 2, 3, 4]}'),
    ("POST", "/predict", {"Content-Type": "application/json", "X-API-Key": "x" * 5000}, b"{}"),
    ("POST", "/predict", {"Content-Type": "application/json", "Authorization": "Bearer"}, b"{}"),
    ("GET", "/predict", AUTH, b""),
    ("PUT", "/model", AUTH, b""),
    ("DELETE", "/health", {}, b""),
    ("TRACE", "/ready", {}, b""),
    ("BREW", "/predict", AUTH, b""),
    ("GET", "/admin", {}, b""),
    ("GET", "/../../etc/passwd", {}, b""),
    ("GET", "/%00", {}, b""),
    ("GET", "/favicon.ico", {}, b""),
    ("GET", "/predict/extra", AUTH, b""),
    ("POST", "/predict//", JSON, b'{"features": [1, 2, 3, 4]}'),
    *(("POST", path, JSON, body) for path, body in SURROGATES if path == "/predict"),
]


@pytest.mark.slow
@pytest.mark.parametrize("method, path, headers, body", HOSTILE)
def test_hostile_input_gets_a_4xx_problem(
    hardened: Running, method: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    response = requests.request(method, hardened.url + path, headers=headers, data=body, timeout=10)

    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == response.status_code


@pytest.mark.slow
def test_a_doubled_slash_on_a_v2_path_is_not_found(hardened: Running) -> None:
    # werkzeug merges slashes by raising a redirect; unhandled, it was a 500
    response = requests.get(hardened.url + "/v2//health/live", timeout=10)

    assert response.status_code == 404
    assert response.json() == {"error": "no route /v2//health/live"}


@pytest.mark.slow
def test_oversized_headers_are_refused_by_the_http_server(hardened: Running) -> None:
    # gunicorn refuses a header over 8190 bytes itself (431, text/html) before the app runs.
    response = requests.get(hardened.url + "/model", headers={"X-API-Key": "x" * 10000}, timeout=10)

    assert response.status_code == 431
    assert hardened.get("/health").status_code == 200


@pytest.mark.slow
def test_still_healthy_after_the_hostile_suite(hardened: Running) -> None:
    for method, path, headers, body in HOSTILE:
        requests.request(method, hardened.url + path, headers=headers, data=body, timeout=10)

    assert hardened.get("/health").status_code == 200
    assert hardened.post("/predict", json={"features": ROW}, headers=AUTH).status_code == 200
    assert hardened.process.poll() is None
    assert "Traceback" not in hardened.output()


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_or_schema_violation(hardened: Running) -> None:
    result = schemathesis(hardened.url, max_examples=40)

    assert result.returncode == 0, result.stdout[-4000:]
    phases = result.stdout.split("Test Phases:", 1)[1].split("\n\n", 1)[0]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in phases, phases
    selected = re.search(r"Selected: (\d+)/(\d+)", result.stdout)
    tested = re.search(r"Tested: (\d+)", result.stdout)
    assert selected and tested and selected[1] == selected[2] == tested[1]
    assert int(tested[1]) >= 13  # the native routes and the Open Inference Protocol's
    assert re.search(r"(\d+) generated, \1 passed", result.stdout), result.stdout[-2000:]
    assert "Traceback" not in hardened.output()


@pytest.mark.slow
def test_a_path_flask_refuses_is_answered_in_its_protocol(hardened: Running) -> None:
    """A newline in a path is refused by Flask before routing; its 404 goes through our handler,
    in the body the OpenAPI document promises for that protocol."""
    v2 = hardened.get("/v2/models/iris/versions/v1%0A", headers=AUTH)
    native = hardened.get("/model%0A", headers=AUTH)

    assert (v2.status_code, v2.headers["Content-Type"]) == (404, "application/json")
    assert "no route" in v2.json()["error"] or "no version 'v1\\n'" in v2.json()["error"]
    assert (native.status_code, native.headers["Content-Type"]) == (404, "application/problem+json")
    assert_secured(v2.headers)


@pytest.mark.slow
@pytest.mark.parametrize("path, body", SURROGATES)
def test_a_lone_surrogate_gets_json_not_flasks_html_500(
    hardened: Running, path: str, body: bytes
) -> None:
    response = requests.post(hardened.url + path, data=body, headers=JSON, timeout=10)

    assert response.status_code in (400, 422), response.text[:300]
    assert response.headers["Content-Type"] in ("application/json", "application/problem+json")
    assert_secured(response.headers)
    assert "Traceback" not in hardened.output()


def not_found_counted(running: Running) -> float:
    page = running.get("/metrics", headers=AUTH).text
    return sum(
        s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if s.name == "modelrun_errors_total" and s.labels.get("kind") == "not_found"
    )


@pytest.mark.slow
def test_a_newline_in_a_path_gets_a_log_line_and_a_metric(hardened: Running) -> None:
    before = not_found_counted(hardened)
    for path in ("/model%0Aprobe-one", "/v2/models/iris/versions/v1%0Aprobe-two"):
        assert hardened.get(path, headers=AUTH).status_code == 404
    wait_until(lambda: "probe-two" in hardened.output(), 5, "the log lines")
    logged = [line for line in hardened.output().splitlines() if "probe-" in line]

    assert not_found_counted(hardened) - before == 2
    assert len(logged) == 2  # one line each, the newline escaped inside it
    assert all(json.loads(line)["httpRequest"]["status"] == 404 for line in logged)
