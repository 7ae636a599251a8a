"""The instruments, read back with the SDK's InMemoryMetricReader."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from function.service.telemetry import Telemetry, prometheus_telemetry


class State:
    identity: dict[str, str] | None = None
    ready = False

    def __call__(self) -> tuple[dict[str, str] | None, bool]:
        return self.identity, self.ready


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def state() -> State:
    return State()


@pytest.fixture
def telemetry(reader: InMemoryMetricReader, state: State) -> Telemetry:
    return Telemetry(reader, state)


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    """(attributes, value) of every point of a metric; a histogram's value is (count, sum)."""
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    value = (point.count, point.sum) if hasattr(point, "count") else point.value
                    found.append((dict(point.attributes), value))
    return found


def test_request_duration_uses_the_route_template_and_semantic_names(
    telemetry: Telemetry, reader: InMemoryMetricReader
) -> None:
    telemetry.request("POST", "/predict", 200, 0.02)
    telemetry.request("POST", "/predict", 200, 0.04)
    telemetry.request("BREW", None, 405, 0.001)

    recorded = points(reader, "http.server.request.duration")

    assert sorted(recorded, key=str) == sorted(
        [
            (
                {
                    "http.request.method": "POST",
                    "http.route": "/predict",
                    "http.response.status_code": 200,
                },
                (2, pytest.approx(0.06)),
            ),
            ({"http.request.method": "_OTHER", "http.response.status_code": 405}, (1, 0.001)),
        ],
        key=str,
    )


def test_predictions_are_counted_by_version_and_class(
    telemetry: Telemetry, reader: InMemoryMetricReader
) -> None:
    telemetry.predicted("v1", ["setosa", "virginica", "setosa"], classifier=True)

    counted = {p[0]["class"]: p[1] for p in points(reader, "modelrun.predictions")}

    assert counted == {"setosa": 2, "virginica": 1}
    assert points(reader, "modelrun.batch.size") == [({}, (1, 3))]


def test_regressor_predictions_carry_no_class(
    telemetry: Telemetry, reader: InMemoryMetricReader
) -> None:
    telemetry.predicted("v2", [1.5, 2.5], classifier=False)

    assert points(reader, "modelrun.predictions") == [({"model.version": "v2"}, 2)]


def test_auth_failures_errors_and_loads(telemetry: Telemetry, reader: InMemoryMetricReader) -> None:
    telemetry.auth_failed("invalid")
    telemetry.auth_failed("invalid")
    telemetry.error("invalid_input")
    telemetry.model_loaded(1.25, "v1", "success")

    assert points(reader, "modelrun.auth.failures") == [({"reason": "invalid"}, 2)]
    assert points(reader, "modelrun.errors") == [({"kind": "invalid_input"}, 1)]
    assert points(reader, "modelrun.model.load.duration") == [
        ({"outcome": "success", "model.version": "v1"}, (1, 1.25))
    ]


def test_model_info_and_readiness_follow_the_service_state(
    telemetry: Telemetry, reader: InMemoryMetricReader, state: State
) -> None:
    assert points(reader, "modelrun.model.info") == []
    assert points(reader, "modelrun.model.ready") == [({}, 0)]

    state.identity, state.ready = {"model.name": "iris", "model.version": "v3"}, True

    assert points(reader, "modelrun.model.info") == [
        ({"model.name": "iris", "model.version": "v3"}, 1)
    ]
    assert points(reader, "modelrun.model.ready") == [({}, 1)]


def test_error_kinds_are_snake_case() -> None:
    from function.core.errors import InvalidInput, ModelrunError, PayloadTooLarge, Unauthorized

    assert InvalidInput("x").kind == "invalid_input"
    assert PayloadTooLarge("x").kind == "payload_too_large"
    assert Unauthorized("x", "missing").kind == "unauthorized"
    assert ModelrunError("x").kind == "internal"


def page_families(page: bytes) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(page.decode())}


def test_model_calls_count_by_version_and_time_only_the_timed_ones() -> None:
    """function/service/model_calls.py's counts, as the one /metrics page shows them."""
    from function.service.model_calls import BUCKETS

    telemetry, page = prometheus_telemetry(lambda: (None, False))
    times = [0.0004, 0.001, 0.001, 0.003, 0.2, 12.0]  # 0.001 sits on a bound: le="0.001" holds it
    for seconds in times:
        telemetry.scored("v1", "answer", seconds, ok=True)
    telemetry.scored("v1", "answer", 0.0, ok=False)
    telemetry.scored("v2", "shadow", 0.002, ok=True, requests=7, timed=False)  # a shared call

    families = page_families(page())
    counted = {
        (s.labels["model_version"], s.labels["role"], s.labels["outcome"]): s.value
        for s in families["modelrun_model_calls"].samples
    }
    assert counted == {
        ("v1", "answer", "ok"): 6,
        ("v1", "answer", "error"): 1,
        ("v2", "shadow", "ok"): 7,
    }
    assert families["modelrun_model_calls"].type == "counter"
    duration = families["modelrun_model_duration_seconds"]
    assert duration.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in duration.samples if s.name.endswith("_bucket")}
    for bound in BUCKETS:
        assert buckets[str(bound)] == sum(t <= bound for t in times), bound
    assert buckets["+Inf"] == len(times)
    assert not any(s.labels.get("model_version") == "v2" for s in duration.samples)


def test_no_call_counted_shows_no_model_call_family() -> None:
    _, page = prometheus_telemetry(lambda: (None, False))

    families = page_families(page())

    assert "modelrun_model_calls" not in families
    assert "modelrun_model_duration_seconds" not in families


def test_every_declared_series_is_on_the_page_under_its_prometheus_name(iris_artifact: Any) -> None:
    """metrics.py is the one place: each series it declares reaches /metrics, named as declared,
    of its kind, with its help text; and nothing but the process collector's is undeclared."""
    import json
    from types import SimpleNamespace

    import numpy as np

    from function.core.baseline import parse_baseline
    from function.core.drift import BASELINE_FILE, Drift
    from function.core.metadata import metadata_of
    from function.core.model import LoadedModel
    from function.service import metrics

    document = json.loads((iris_artifact / "metadata.json").read_text())
    metadata = metadata_of({**document, "version": "v1"}, "iris")
    baseline = parse_baseline((iris_artifact / BASELINE_FILE).read_bytes(), "iris")
    model = LoadedModel(None, metadata, 0.0, schema=metadata.schema, baseline=baseline)
    drift = Drift(None)
    # What the confidence series read of a served classifier (LoadedModel's fields).
    calibrated = {"metrics": {"holdout": {"accuracy": 0.9}}, "calibration": {"ece": 0.01}}
    served = SimpleNamespace(
        has_probabilities=True, version="v1", metadata=SimpleNamespace(raw=calibrated)
    )
    identity = {"model.name": "iris", "model.version": "v1"}
    telemetry, page = prometheus_telemetry(
        lambda: (identity, True),
        drift,
        candidate_state=lambda: {"model.version": "v2"},
        models=lambda: [served],
    )
    for series in metrics.SERIES:
        if series.kind == "counter" and not series.counted:
            telemetry.add(series, 1, {"model.version": "v1"})
        elif series.kind == "histogram" and not series.counted:
            telemetry.record(series, 0.5)
    telemetry.scored("v1", "answer", 0.001, ok=True)
    telemetry.confident("v1", "answer", np.array([[0.9, 0.1]]))
    drift.observe(model, np.array([[5.1, 3.5, 1.4, 0.2]]), ["setosa"])

    families = page_families(page())

    for series in metrics.SERIES:
        family = families[series.prometheus]
        assert (family.type, family.documentation) == (series.kind, series.description)
    declared = {s.prometheus for s in metrics.SERIES} | {"target_info"}
    assert {n for n in families if not n.startswith("process_")} == declared
    assert set(metrics.PROCESS_GAUGES) <= set(families)


def test_a_series_is_declared_once() -> None:
    from function.service import metrics

    with pytest.raises(ValueError, match="modelrun.errors is declared twice"):
        metrics.counter("modelrun.errors", "{error}", "again")
