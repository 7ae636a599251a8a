"""Request ids, payload records and feedback, through the real handler in process."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from function.core import rollout
from function.core.config import load_config
from function.core.errors import ConfigError
from function.core.records import FeedbackRecord, PredictionRecord, encode, parse
from function.core.store import ModelStore
from function.service import payloads
from function.service.payloads import Answered, Payloads, client_of, files, sampled_at
from function.service.redaction import Redactor
from tests.conftest import KEY, UNSIGNED, wait_until
from tests.inprocess import InProcess, in_process

AUTH = {"X-API-Key": KEY}
ROW = [5.1, 3.5, 1.4, 0.2]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture
def iris_uri(tmp_path: Path, iris_artifact: Path) -> str:
    store = ModelStore((tmp_path / "store" / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    return store.uri


@pytest.fixture
def recorded(iris_uri: str, tmp_path: Path) -> Iterator[tuple[InProcess, Path]]:
    """The service with every request recorded into a folder."""
    folder = tmp_path / "payloads"
    env = {"MODEL_URI": iris_uri, "API_KEYS": KEY, "PAYLOAD_SAMPLE_RATE": "1",
           "PAYLOAD_DIR": str(folder), "RATE_LIMIT_PER_SECOND": "0"}  # fmt: skip
    with in_process(env) as app:
        yield app, folder


def records(app: InProcess, folder: Path) -> list[PredictionRecord | FeedbackRecord]:
    """Every record written so far (the writer is made to write what it holds)."""
    app.service.payloads.flush()
    return [
        parse(line, f"{path.name}:{i}")
        for path in files(folder)
        for i, line in enumerate(path.read_text().splitlines(), 1)
    ]


# --- X-Request-Id ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/predict", {"instances": [ROW]}),
        ("/explain", {"instances": [ROW]}),
        ("/v2/models/iris/infer",
         {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}),
    ],
)  # fmt: skip
def test_every_prediction_answer_and_refusal_carries_a_request_id(
    recorded: tuple[InProcess, Path], path: str, body: dict[str, Any]
) -> None:
    app, _ = recorded

    mine = app.client.post(path, json=body, headers={**AUTH, "X-Request-Id": "order-42.a"})
    generated = app.client.post(path, json=body, headers=AUTH)
    refused = app.client.post(path, json=body)  # no key
    bad = app.client.post(path, json=body, headers={**AUTH, "X-Request-Id": "has space"})

    assert mine.status_code == 200, mine.get_json()
    assert mine.headers["X-Request-Id"] == "order-42.a"
    assert len(generated.headers["X-Request-Id"]) == 32
    assert refused.status_code == 401 and len(refused.headers["X-Request-Id"]) == 32
    assert bad.status_code == 400 and "X-Request-Id" in bad.get_data(as_text=True)
    assert len(bad.headers["X-Request-Id"]) == 32
    assert (
        app.client.post(path, json=body, headers={**AUTH, "X-Request-Id": "x" * 129}).status_code
        == 400
    )


def test_v2_request_id_names_the_request_and_is_echoed(recorded: tuple[InProcess, Path]) -> None:
    app, folder = recorded
    tensor = {"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}

    answer = app.client.post("/v2/models/iris/infer", json={"id": "v2-7", "inputs": [tensor]},
                             headers=AUTH)  # fmt: skip
    spaced = app.client.post("/v2/models/iris/infer", json={"id": "a b", "inputs": [tensor]},
                             headers=AUTH)  # fmt: skip

    assert answer.headers["X-Request-Id"] == "v2-7" and answer.get_json()["id"] == "v2-7"
    assert spaced.get_json()["id"] == "a b" and len(spaced.headers["X-Request-Id"]) == 32
    (record,) = [r for r in records(app, folder) if r.request_id == "v2-7"]
    assert isinstance(record, PredictionRecord) and record.protocol == "v2"


def test_other_routes_carry_no_request_id(recorded: tuple[InProcess, Path]) -> None:
    app, _ = recorded
    assert "X-Request-Id" not in app.client.get("/health").headers


def test_vertex_answers_are_recorded_as_vertex_and_feedback_answers_not_at_all(
    iris_uri: str, tmp_path: Path
) -> None:
    folder = tmp_path / "payloads"
    env = {"MODEL_URI": iris_uri, "API_KEYS": KEY, "PAYLOAD_SAMPLE_RATE": "1",
           "PAYLOAD_DIR": str(folder), "AIP_PREDICT_ROUTE": "/vertex/predict",
           "AIP_HEALTH_ROUTE": "/vertex/health"}  # fmt: skip
    labels = {"feedback": [{"request_id": "vx-1", "row": 0, "label": "setosa"}]}
    with in_process(env) as app:
        vertex = app.client.post("/vertex/predict", json={"instances": [ROW]},
                                 headers={**AUTH, "X-Request-Id": "vx-1"})  # fmt: skip
        fed = app.client.post("/feedback", json=labels, headers={**AUTH, "X-Request-Id": "fb-1"})
        found = records(app, folder)

    assert (vertex.status_code, vertex.headers["X-Request-Id"]) == (200, "vx-1")
    assert (fed.status_code, fed.headers["X-Request-Id"]) == (202, "fb-1")
    (answer,) = [r for r in found if isinstance(r, PredictionRecord)]
    assert (answer.request_id, answer.protocol, answer.route) == (
        "vx-1",
        "vertex",
        "/vertex/predict",
    )
    (label,) = [r for r in found if isinstance(r, FeedbackRecord)]
    assert label.request_id == "vx-1"  # the answer it labels; nothing is recorded as fb-1


def test_a_browser_may_send_a_request_id_and_read_it(iris_uri: str) -> None:
    origin = "https://app.example.com"
    with in_process({"MODEL_URI": iris_uri, "API_KEYS": KEY, "CORS_ORIGINS": origin}) as app:
        preflight = app.client.options("/predict", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key, x-request-id",
        })  # fmt: skip
        headers = {**AUTH, "Origin": origin, "X-Request-Id": "web-1"}
        answer = app.client.post("/predict", json={"instances": [ROW]}, headers=headers)

    allowed = preflight.headers["Access-Control-Allow-Headers"].split(", ")
    exposed = answer.headers["Access-Control-Expose-Headers"].split(", ")
    assert preflight.status_code == 204 and "X-Request-Id" in allowed
    assert answer.headers["X-Request-Id"] == "web-1"
    assert {"X-Request-Id", "X-Model-Version"} <= set(exposed)


# --- payload records ---------------------------------------------------------------------


def test_an_answer_and_a_refusal_become_records_with_what_was_asked_and_answered(
    recorded: tuple[InProcess, Path],
) -> None:
    app, folder = recorded

    app.client.post("/predict", json={"instances": [ROW]}, headers={**AUTH, "X-Request-Id": "ok-1"})
    app.client.post(
        "/predict", json={"instances": [[1, 2]]}, headers={**AUTH, "X-Request-Id": "bad-1"}
    )
    app.client.post("/predict", json={"instances": [ROW]}, headers={"X-Request-Id": "nokey-1"})
    broken = {**AUTH, "X-Request-Id": "json-1", "Content-Type": "application/json"}
    app.client.post("/predict", data=b"{", headers=broken)

    by_id = {r.request_id: r for r in records(app, folder)}
    ok = by_id["ok-1"]
    assert isinstance(ok, PredictionRecord)
    assert (ok.model, ok.version, ok.role, ok.protocol, ok.route, ok.status, ok.outcome) == (
        "iris", "v1", "answer", "native", "/predict", 200, "ok",
    )  # fmt: skip
    assert json.loads(ok.inputs or "") == [dict(zip(FEATURES, ROW, strict=True))]
    (answer,) = json.loads(ok.outputs or "")
    assert answer["label"] == "setosa" and set(answer["probabilities"]) == {
        "setosa", "versicolor", "virginica",
    }  # fmt: skip
    assert ok.client == client_of(app.service.keys.check(KEY)) and KEY not in encode(ok)
    assert ok.latency_ms > 0
    bad = by_id["bad-1"]
    assert isinstance(bad, PredictionRecord)
    assert (bad.status, bad.outcome, bad.inputs, bad.outputs) == (422, "invalid-input", None, None)
    nokey = by_id["nokey-1"]
    assert isinstance(nokey, PredictionRecord)
    assert (nokey.status, nokey.outcome, nokey.client, nokey.version) == (
        401, "unauthorized", "unauthenticated", None,
    )  # fmt: skip
    assert by_id["json-1"].outcome == "bad-request"  # type: ignore[union-attr]


def test_each_record_is_also_a_cloud_logging_line_with_the_sink_label(
    iris_uri: str, tmp_path: Path
) -> None:
    out = io.StringIO()
    config = load_config({**UNSIGNED, "MODEL_URI": iris_uri, "API_KEYS": KEY,
                          "PAYLOAD_SAMPLE_RATE": "1"})  # fmt: skip
    writer = Payloads(config, lambda reason: None, stdout=lambda: out)
    writer.submit(FeedbackRecord("r1", 0, "2026-12-08T00:00:00.000Z", "iris", '"setosa"', "k"))

    assert writer.flush() == 1
    (line,) = out.getvalue().splitlines()
    entry = json.loads(line)
    assert entry.pop("logging.googleapis.com/labels") == {"modelrun_record": "payload"}
    assert parse(json.dumps(entry), "stdout") == FeedbackRecord(
        "r1", 0, "2026-12-08T00:00:00.000Z", "iris", '"setosa"', "k"
    )


def test_sampling_is_decided_by_the_request_id_alone() -> None:
    ids = [f"req-{i}" for i in range(20_000)]

    chosen = [i for i in ids if sampled_at(i, 0.1)]

    assert chosen == [i for i in ids if sampled_at(i, 0.1)]  # the same, asked again
    assert 1800 < len(chosen) < 2200
    assert not any(sampled_at(i, 0) for i in ids) and all(sampled_at(i, 1) for i in ids)


def test_a_full_queue_drops_records_and_counts_them(iris_uri: str) -> None:
    config = load_config({**UNSIGNED, "MODEL_URI": iris_uri, "API_KEYS": KEY,
                          "PAYLOAD_SAMPLE_RATE": "1"})  # fmt: skip
    dropped: list[str] = []
    writer = Payloads(config, dropped.append, stdout=io.StringIO)  # never started: no writer
    item = FeedbackRecord("r", 0, "t", "iris", "1", "k")

    for _ in range(payloads.QUEUE_REQUESTS + 5):
        writer.submit(item)

    assert dropped == ["queue_full"] * 5
    assert writer.flush() == payloads.QUEUE_REQUESTS


def test_dropped_records_are_exported_as_modelrun_payload_dropped_total(
    recorded: tuple[InProcess, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = recorded
    monkeypatch.setattr(payloads, "QUEUE_REQUESTS", 0)  # every record finds the queue full

    app.client.post("/predict", json={"instances": [ROW]}, headers=AUTH)

    page = app.client.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert 'modelrun_payload_dropped_total{reason="queue_full"} 1.0' in page


def test_redacted_features_are_digested_with_a_key_or_dropped(
    iris_uri: str, tmp_path: Path
) -> None:
    folder = tmp_path / "payloads"
    env = {"MODEL_URI": iris_uri, "API_KEYS": KEY, "PAYLOAD_SAMPLE_RATE": "1",
           "PAYLOAD_DIR": str(folder), "PAYLOAD_REDACT": "sepal_length,petal_width:drop",
           "PAYLOAD_DIGEST_KEY": "d" * 32}  # fmt: skip
    with in_process(env) as app:
        app.client.post(
            "/predict", json={"instances": [ROW]}, headers={**AUTH, "X-Request-Id": "r"}
        )
        (record,) = records(app, folder)

    (row,) = json.loads(record.inputs or "")  # type: ignore[union-attr]
    assert set(row) == {"sepal_length", "sepal_width", "petal_length"}
    assert row["sepal_length"] == Redactor([("sepal_length", "digest")], "d" * 32).digest(5.1)
    assert row["sepal_length"] != Redactor([("sepal_length", "digest")], "e" * 32).digest(5.1)
    assert len(row["sepal_length"]) == 16 and row["sepal_width"] == 3.5


def test_a_redaction_naming_a_feature_the_model_has_not_refuses_the_model(iris_uri: str) -> None:
    env = {"MODEL_URI": iris_uri, "API_KEYS": KEY, "PAYLOAD_SAMPLE_RATE": "1",
           "PAYLOAD_REDACT": "email:drop,sepal_length:drop"}  # fmt: skip
    with in_process(env, wait_ready=False) as app:
        app.service.start()
        wait_until(lambda: "PAYLOAD_REDACT" in app.service.loader.state.reason, 30, "the refusal")
        reason = app.service.loader.state.reason

    assert "names email" in reason and "sepal_length, sepal_width" in reason


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PAYLOAD_SAMPLE_RATE": "1.5"}, "PAYLOAD_SAMPLE_RATE='1.5' is invalid: expected a share"),
        ({"PAYLOAD_SAMPLE_RATE": "lots"}, "PAYLOAD_SAMPLE_RATE='lots' is invalid"),
        (
            {"PAYLOAD_REDACT": "age:hide"},
            "PAYLOAD_REDACT='age:hide' is invalid: 'age:hide': expected",
        ),
        ({"PAYLOAD_REDACT": "age,age:drop"}, "age is named twice"),
        ({"PAYLOAD_SAMPLE_RATE": "1", "PAYLOAD_REDACT": "age"}, "set PAYLOAD_DIGEST_KEY"),
        ({"PAYLOAD_DIGEST_KEY": "my-secret"}, "PAYLOAD_DIGEST_KEY=(value not shown) is invalid"),
    ],
)
def test_payload_settings_are_checked_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"MODEL_URI": "file:///tmp/m", "API_KEYS": KEY, **env})
    assert message in str(caught.value)
    assert "my-secret" not in str(caught.value)


def test_the_client_is_never_the_key_nor_its_digest() -> None:
    identity = "ab" * 32  # a key's SHA-256, as auth.KeyRing gives it

    shown = client_of(identity)

    assert shown.startswith("key:") and len(shown) == 12 and shown[4:] not in identity
    assert client_of("anonymous") == "anonymous"


def test_stop_writes_what_is_queued(iris_uri: str, tmp_path: Path) -> None:
    config = load_config({**UNSIGNED, "MODEL_URI": iris_uri, "API_KEYS": KEY,
                          "PAYLOAD_SAMPLE_RATE": "1", "PAYLOAD_DIR": str(tmp_path)})  # fmt: skip
    writer = Payloads(config, lambda reason: None, stdout=io.StringIO)
    writer.start()
    item = Answered("r1", 0.0, None, "answer", "native", "/predict", 401, "unauthorized", 1.0,
                    "unauthenticated", None, None)  # fmt: skip
    for _ in range(3):
        writer.submit(item)

    writer.stop()

    (path,) = files(tmp_path)
    assert len(path.read_text().splitlines()) == 3


# --- a shadow candidate's records --------------------------------------------------------


def test_a_shadow_answer_is_its_own_record_with_the_same_request_id(
    iris_uri: str, forest_artifact: Path, tmp_path: Path
) -> None:
    store = ModelStore(iris_uri)
    rollout.start(store, store.publish(forest_artifact, "v2"), "shadow")
    folder = tmp_path / "payloads"
    env = {"MODEL_URI": iris_uri, "API_KEYS": KEY, "PAYLOAD_SAMPLE_RATE": "1",
           "PAYLOAD_DIR": str(folder)}  # fmt: skip
    with in_process(env) as app:
        app.client.post("/predict", json={"instances": [ROW, ROW]},
                        headers={**AUTH, "X-Request-Id": "both"})  # fmt: skip
        wait_until(lambda: len(records(app, folder)) == 2, 30, "the shadow's record")
        found = records(app, folder)

    by_role = {r.role: r for r in found if isinstance(r, PredictionRecord)}
    assert {r.request_id for r in found} == {"both"}
    assert (by_role["answer"].version, by_role["shadow"].version) == ("v1", "v2")
    assert len(json.loads(by_role["shadow"].outputs or "")) == 2
    assert by_role["shadow"].inputs == by_role["answer"].inputs


# --- feedback ----------------------------------------------------------------------------


def test_feedback_is_recorded_and_answered_202(recorded: tuple[InProcess, Path]) -> None:
    app, folder = recorded
    body = {"feedback": [{"request_id": "r-1", "row": 0, "label": "setosa"},
                         {"request_id": "r-2", "row": 3, "label": "virginica"}]}  # fmt: skip

    answer = app.client.post("/feedback", json=body, headers=AUTH)

    assert answer.status_code == 202 and answer.get_json() == {"accepted": 2}
    found = [r for r in records(app, folder) if isinstance(r, FeedbackRecord)]
    assert [(r.request_id, r.row, r.truth, r.model) for r in found] == [
        ("r-1", 0, '"setosa"', "iris"), ("r-2", 3, '"virginica"', "iris"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"feedback": [{"request_id": "a", "row": 0, "label": "setosa"},
                       {"request_id": "b", "row": 0, "label": "rose"}]},
         "feedback[1].label", "not one of the model's classes"),
        ({"feedback": [{"request_id": "a b", "row": 0, "label": "setosa"}]},
         "feedback[0].request_id", "X-Request-Id"),
        ({"feedback": [{"request_id": "a", "row": -1, "label": "setosa"}]},
         "feedback[0].row", "row index"),
        ({"feedback": [{"request_id": "a", "row": 0, "value": 1.5}]},
         "feedback[0]", "missing label, unknown value"),
        ({"feedback": []}, "feedback", "non-empty"),
        ({"feedback": [{"request_id": "a", "row": 0, "label": "setosa"}] * 1001},
         "feedback", "1001 items exceed the limit of 1000"),
    ],
)  # fmt: skip
def test_feedback_is_refused_at_the_exact_place(
    recorded: tuple[InProcess, Path], body: dict[str, Any], field: str, words: str
) -> None:
    app, _ = recorded

    answer = app.client.post("/feedback", json=body, headers=AUTH)

    problem = answer.get_json()
    assert answer.status_code == 422 and answer.mimetype == "application/problem+json"
    assert problem["field"] == field and words in problem["detail"], problem


def test_feedback_needs_a_key_before_its_body_is_read(recorded: tuple[InProcess, Path]) -> None:
    app, _ = recorded
    answer = app.client.post("/feedback", json={"feedback": []})
    assert answer.status_code == 401


def test_feedback_is_refused_while_records_are_off(iris_uri: str) -> None:
    with in_process({"MODEL_URI": iris_uri, "API_KEYS": KEY}) as app:
        answer = app.client.post(
            "/feedback", json={"feedback": [{"request_id": "a", "row": 0, "label": "setosa"}]},
            headers=AUTH,
        )  # fmt: skip
    assert answer.status_code == 409 and "PAYLOAD_SAMPLE_RATE=0" in answer.get_json()["detail"]


def test_nothing_is_recorded_at_rate_zero(iris_uri: str, tmp_path: Path) -> None:
    with in_process({"MODEL_URI": iris_uri, "API_KEYS": KEY, "PAYLOAD_DIR": str(tmp_path)}) as app:
        assert (
            app.client.post("/predict", json={"instances": [ROW]}, headers=AUTH).status_code == 200
        )
        app.service.payloads.flush()
    assert files(tmp_path) == []
