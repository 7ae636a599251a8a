"""Drift: the baseline a version carries, the rows the service counts into it, and the PSI the
rules compute from them.

Each expectation is computed here, independently of function/core/drift.py: bins with pandas and
numpy
from the data, PSI with numpy. The service runs in process on a folder store (tests/inprocess.py)
except in the end-to-end test, where the function, Prometheus and Alertmanager are the real
processes of the local mirror.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from function.core.baseline import parse_baseline
from function.core.drift import BASELINE_FILE, MAX_CATEGORIES, Watch, number_labels
from function.core.schema import from_metadata
from function.service.workers import merge
from local.mirror import ALERT_RULES, LOCAL, shortened_drift_rules
from tests.artifacts import without_baseline
from tests.conftest import KEY, require_binary, wait_until
from tests.inprocess import InProcess, in_process
from training.__main__ import main
from training.churn import churn
from training.packager import package

AUTH = {"X-API-Key": KEY}
TARGET = "churned"
DECILES = np.linspace(0, 1, 11)[1:-1]


def fitted_churn(frame: pd.DataFrame) -> Any:
    """A user's pipeline on mixed types with gaps: impute, one-hot (unknown countries ignored)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
             ["country", "plan"]),
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
             ["seats", "monthly_spend", "tenure_months", "has_discount"]),
        ]
    )  # fmt: skip
    pipeline = Pipeline([("columns", columns), ("model", LogisticRegression(max_iter=500))])
    return pipeline.fit(frame.drop(columns=TARGET), frame[TARGET])


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return churn(1500, seed=11)


@pytest.fixture(scope="module")
def artifact(data: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("churn-drift") / "artifact"
    X = data.drop(columns=TARGET)
    package(fitted_churn(data), X, data[TARGET], out, name="churn", onnx=False, report=False)
    return out


def read(artifact: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    metadata = json.loads((artifact / "metadata.json").read_text())
    return metadata, json.loads((artifact / BASELINE_FILE).read_text())


def serve(artifact: Path, store: Path, env: dict[str, str] | None = None) -> InProcess:
    assert main(["publish", "--store", store.as_uri(), str(artifact), "--promote"]) == 0
    name = json.loads((artifact / "metadata.json").read_text())["name"]
    return in_process({"MODEL_URI": f"{store.as_uri()}/{name}", "API_KEYS": KEY, **(env or {})})


@pytest.fixture(scope="module")
def service(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    with serve(artifact, tmp_path_factory.mktemp("store")) as running:
        yield running


def samples(page: str, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    """A family's samples from a metrics page, by their labels (the version left out)."""
    found = {}
    for metric in text_string_to_metric_families(page):
        for sample in metric.samples:
            if sample.name == family:
                labels = {k: v for k, v in sample.labels.items() if k != "model_version"}
                found[tuple(sorted(labels.items()))] = sample.value
    return found


def metrics(service: InProcess) -> str:
    return str(service.client.get("/metrics", headers=AUTH).get_data(as_text=True))


def number_bins(values: pd.Series, edges: list[float]) -> pd.Series:
    """Each value's bin, counted independently: pandas' intervals closed on the left."""
    cuts = [-math.inf, *edges, math.inf]
    return pd.cut(values, cuts, right=False, labels=False)


# --- the baseline ----------------------------------------------------------------------------


def test_a_trained_version_carries_its_baseline_under_its_digest(iris_artifact: Path) -> None:
    metadata, baseline = read(iris_artifact)
    data = (iris_artifact / BASELINE_FILE).read_bytes()

    assert metadata["files"][BASELINE_FILE]["sha256"] == hashlib.sha256(data).hexdigest()
    assert metadata["baseline"]["rows"] == metadata["dataset"]["train_rows"] == baseline["rows"]
    assert baseline["prediction_rows"] == metadata["dataset"]["test_rows"]
    for record in baseline["features"]:
        assert math.isclose(sum(record["shares"]), 1.0), record["name"]
        # Shares of whole rows: each a count of the training rows.
        counts = [s * baseline["rows"] for s in record["shares"]]
        assert all(math.isclose(c, round(c), abs_tol=1e-6) for c in counts), record["name"]
    assert [r["name"] for r in baseline["features"]] == metadata["feature_names"]
    assert baseline["prediction"]["values"] == metadata["class_names"]


def test_a_packaged_mixed_model_baseline_is_the_data_given(
    data: pd.DataFrame, artifact: Path
) -> None:
    metadata, baseline = read(artifact)
    X = data.drop(columns=TARGET)
    records = {r["name"]: r for r in baseline["features"]}
    n = len(X)

    spend = records["monthly_spend"]  # a number with gaps
    present = X["monthly_spend"].dropna()
    edges = [e for e in np.unique(np.quantile(present, DECILES)) if e > present.min()]
    assert spend["edges"] == pytest.approx(edges)
    assert (spend["min"], spend["max"]) == (present.min(), present.max())
    counted = (
        number_bins(present, edges).value_counts().reindex(range(len(edges) + 1), fill_value=0)
    )
    assert spend["shares"][:-1] == pytest.approx((counted / n).tolist())
    assert spend["shares"][-1] == pytest.approx(X["monthly_spend"].isna().mean())  # (missing)
    assert X["monthly_spend"].isna().any()

    country = records["country"]  # a category with a rare value: every value its own bin
    shares = X["country"].value_counts(normalize=True)
    assert country["values"] == sorted(shares.index)
    assert country["shares"] == pytest.approx([*shares[country["values"]], 0.0, 0.0, 0.0])

    discount = records["has_discount"]  # a boolean: false, true
    assert discount["values"] == ["false", "true"]
    true_share = X["has_discount"].mean()
    assert discount["shares"] == pytest.approx([1 - true_share, true_share, 0, 0, 0])

    predicted = pd.Series(fitted_churn(data).predict(X)).astype(str).value_counts(normalize=True)
    assert baseline["prediction"]["values"] == metadata["class_names"]
    assert baseline["prediction"]["shares"] == pytest.approx(
        [predicted.get(c, 0.0) for c in metadata["class_names"]]
    )


def test_a_category_with_many_values_keeps_the_most_frequent_and_counts_the_rest_as_other(
    tmp_path: Path,
) -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(3)
    cities = [f"city{i:02d}" for i in range(30)]
    weights = np.arange(30, 0, -1) / np.arange(30, 0, -1).sum()
    X = pd.DataFrame({"city": rng.choice(cities, 3000, p=weights)})
    y = (X["city"] < "city10").astype(int)
    model = make_pipeline(OneHotEncoder(handle_unknown="ignore"), DecisionTreeClassifier())
    package(model.fit(X, y), X, y, tmp_path / "a", onnx=False, report=False)

    (record,) = read(tmp_path / "a")[1]["features"]
    top = X["city"].value_counts().index[:MAX_CATEGORIES]
    assert record["values"] == sorted(top)
    other = (~X["city"].isin(top)).mean()
    assert record["shares"][MAX_CATEGORIES] == pytest.approx(other) and other > 0


def test_a_regressor_baseline_bins_its_predictions_and_the_service_counts_them(
    tmp_path: Path,
) -> None:
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(4)
    X = rng.normal(size=(800, 3))
    y = X @ [2.0, -1.0, 0.5] + rng.normal(0, 0.1, 800)
    model = LinearRegression().fit(X, y)
    package(model, X, y, tmp_path / "a", name="reg", onnx=False, report=False)
    _, baseline = read(tmp_path / "a")

    predicted = model.predict(X)
    prediction = baseline["prediction"]
    edges = np.quantile(predicted, DECILES)
    assert prediction["edges"] == pytest.approx(edges)
    counted = number_bins(pd.Series(predicted), prediction["edges"]).value_counts(normalize=True)
    assert prediction["shares"] == pytest.approx(counted.sort_index().tolist())

    with serve(tmp_path / "a", tmp_path / "store") as running:
        row = [0.0, 0.0, 0.0]  # predicts about the intercept: the middle of the deciles
        assert (
            running.client.post("/predict", json={"features": row}, headers=AUTH).status_code == 200
        )
        page = metrics(running)
    index = int(number_bins(pd.Series(model.predict([row])), prediction["edges"]).iloc[0])
    label = number_labels(prediction["edges"])[index]
    assert {
        k: v for k, v in samples(page, "modelrun_drift_prediction_rows_total").items() if v
    } == {(("bin", label),): 1.0}


# --- what the service counts -----------------------------------------------------------------


def test_the_service_counts_each_row_into_its_bin(artifact: Path, service: InProcess) -> None:
    _, baseline = read(artifact)
    records = {r["name"]: r for r in baseline["features"]}
    before_rows = samples(metrics(service), "modelrun_drift_rows_total")
    before_out = samples(metrics(service), "modelrun_drift_out_of_range_total")
    rows = [
        {"country": "FR", "plan": "pro", "seats": 2, "monthly_spend": 31.5, "tenure_months": 12,
         "has_discount": False},
        {"country": "XX", "plan": "team", "seats": 500, "monthly_spend": None,
         "tenure_months": 0, "has_discount": True},
        {"country": "LU", "plan": "free", "seats": 1, "monthly_spend": -40.0,
         "tenure_months": 71, "has_discount": False},
    ]  # fmt: skip

    answer = service.client.post("/predict", json={"instances": rows}, headers=AUTH)
    assert answer.status_code == 200, answer.get_json()
    page = metrics(service)

    counted = samples(page, "modelrun_drift_rows_total")
    added = {k: v - before_rows.get(k, 0) for k, v in counted.items() if v != before_rows.get(k, 0)}
    expected: dict[tuple[tuple[str, str], ...], float] = {}
    for row in rows:
        for name, value in row.items():
            record = records[name]
            if value is None:
                label = "(missing)"
            elif record["kind"] == "number":
                index = int(number_bins(pd.Series([float(value)]), record["edges"]).iloc[0])
                label = number_labels(record["edges"])[index]
            elif isinstance(value, bool):
                label = str(value).lower()
            else:
                label = value if value in record["values"] else "(unknown)"
            key = (("bin", label), ("feature", name))
            expected[key] = expected.get(key, 0) + 1
    assert added == expected
    outside = samples(page, "modelrun_drift_out_of_range_total")
    moved = {k: v - before_out.get(k, 0) for k, v in outside.items() if v != before_out.get(k, 0)}
    assert moved == {
        (("feature", "seats"), ("side", "above")): 1,  # 500 seats: more than any in training
        (("feature", "monthly_spend"), ("side", "below")): 1,  # a negative spend
    }
    reference = samples(page, "modelrun_drift_reference_ratio")
    labels = [*number_labels(records["seats"]["edges"]), "(missing)"]
    assert [reference[(("bin", b), ("feature", "seats"))] for b in labels] == pytest.approx(
        records["seats"]["shares"]
    )
    predicted = samples(page, "modelrun_drift_prediction_rows_total")
    assert sum(predicted.values()) >= len(rows)


def test_a_refused_request_counts_nothing(service: InProcess) -> None:
    before = samples(metrics(service), "modelrun_drift_rows_total")

    bad = {"instances": [{"country": "FR", "plan": "pro", "seats": "many", "monthly_spend": 1.0,
                          "tenure_months": 1, "has_discount": False}]}  # fmt: skip
    assert service.client.post("/predict", json=bad, headers=AUTH).status_code == 422

    assert samples(metrics(service), "modelrun_drift_rows_total") == before


def test_drift_features_limits_the_watched_features_and_the_series_are_as_stated(
    artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, baseline = read(artifact)
    records = {r["name"]: r for r in baseline["features"]}
    env = {"DRIFT_FEATURES": "seats, plan, nonexistent"}
    with caplog.at_level(logging.WARNING), serve(artifact, tmp_path, env) as running:
        row = {"country": "FR", "plan": "pro", "seats": 2, "monthly_spend": 31.5,
               "tenure_months": 12, "has_discount": False}  # fmt: skip
        assert running.client.post("/predict", json=row, headers=AUTH).status_code == 200
        page = metrics(running)

    rows = samples(page, "modelrun_drift_rows_total")
    assert {dict(k)["feature"] for k in rows} == {"seats", "plan"}
    # A number: its bins and (missing), in rows and in reference, and two sides.
    seats = len(records["seats"]["edges"]) + 1 + 1
    plan = len(records["plan"]["values"]) + 3  # (other), (unknown), (missing)
    assert len(rows) == len(samples(page, "modelrun_drift_reference_ratio")) == seats + plan
    assert len(samples(page, "modelrun_drift_out_of_range_total")) == 2
    assert "DRIFT_FEATURES names nonexistent" in caplog.text


def test_drift_features_none_still_counts_the_predictions(artifact: Path, tmp_path: Path) -> None:
    with serve(artifact, tmp_path, {"DRIFT_FEATURES": "none"}) as running:
        row = {"country": "FR", "plan": "pro", "seats": 2, "monthly_spend": 31.5,
               "tenure_months": 12, "has_discount": False}  # fmt: skip
        assert running.client.post("/predict", json=row, headers=AUTH).status_code == 200
        page = metrics(running)

    assert samples(page, "modelrun_drift_rows_total") == {}
    assert sum(samples(page, "modelrun_drift_prediction_rows_total").values()) == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: b["features"][0]["shares"].pop(), "expected 11 shares"),
        (lambda b: b["prediction"].update(kind="text"), "kind 'text' is neither"),
        (lambda b: b.pop("prediction"), "'prediction'"),
        (lambda b: b["features"][0].update(min="low"), "min and max must be numbers"),
    ],
)
def test_a_malformed_baseline_is_refused_naming_what_is_wrong(
    iris_artifact: Path, change: Any, reason: str
) -> None:
    from function.core.errors import IntegrityError

    baseline = json.loads((iris_artifact / BASELINE_FILE).read_bytes())
    parse_baseline(json.dumps(baseline).encode(), "v1")  # as written: accepted
    change(baseline)

    with pytest.raises(IntegrityError, match=re.escape(reason)):
        parse_baseline(json.dumps(baseline).encode(), "v1")


def test_a_tampered_baseline_is_refused_like_a_tampered_model(
    artifact: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    assert main(["publish", "--store", store.as_uri(), str(artifact), "--promote"]) == 0
    (published,) = store.glob(f"churn/versions/*/{BASELINE_FILE}")
    # Another share, in as many bytes: past the size check, refused by its digest
    data = bytearray(published.read_bytes())
    digit = data.index(b"0.") + 2
    data[digit] = ord("1") if data[digit] != ord("1") else ord("2")
    published.write_bytes(bytes(data))

    env = {"MODEL_URI": f"{store.as_uri()}/churn", "API_KEYS": KEY}
    with in_process(env, wait_ready=False) as running:

        def detail() -> str:
            return str(running.client.get("/ready", headers=AUTH).get_json()["detail"])

        wait_until(lambda: "not loaded yet" not in detail(), 30, "the first load to fail")
        ready = running.client.get("/ready", headers=AUTH)
    assert ready.status_code == 503
    assert f"{BASELINE_FILE}: sha256 is " in ready.get_json()["detail"]


def test_a_version_published_before_baselines_is_served_unwatched(
    iris_artifact: Path, tmp_path: Path
) -> None:
    old = without_baseline(iris_artifact, tmp_path / "old")

    with serve(old, tmp_path / "store") as running:
        answer = running.client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]},
                                     headers=AUTH)  # fmt: skip
        page = metrics(running)

    assert answer.status_code == 200
    assert "modelrun_drift_rows_total" not in page


def test_rows_kept_across_requests_count_as_rows_counted_at_once(artifact: Path) -> None:
    metadata, baseline = read(artifact)
    schema = from_metadata(metadata, "test")
    frame = churn(300, seed=5).drop(columns=TARGET)
    labels = ["0", "1"] * 150
    bins = parse_baseline(json.dumps(baseline).encode(), "test")
    at_once, kept = Watch("v", bins, schema), Watch("v", bins, schema)

    at_once.count(frame, labels)
    for start in range(0, 300, 7):  # requests of up to 7 rows, flushed when read
        kept.observe(frame.iloc[start : start + 7], labels[start : start + 7])
    assert not kept.counts.any()  # nothing counted until read
    kept.flush()

    assert kept.counts.tolist() == at_once.counts.tolist()
    assert at_once.counts.sum() > 0


def test_worker_pages_add_counts_and_keep_the_training_shares(service: InProcess) -> None:
    page = metrics(service)

    merged = merge([(page, True), (page, True)]).decode()

    for family in ("modelrun_drift_rows_total", "modelrun_drift_prediction_rows_total"):
        assert samples(merged, family) == {k: 2 * v for k, v in samples(page, family).items()}
    for family in ("modelrun_drift_reference_ratio", "modelrun_drift_prediction_reference_ratio"):
        assert samples(merged, family) == samples(page, family)


@pytest.mark.parametrize("value", [",", " , "])
def test_drift_features_without_a_name_is_refused(value: str) -> None:
    from function.core.config import load_config
    from function.core.errors import ConfigError

    with pytest.raises(ConfigError, match="DRIFT_FEATURES=.* is invalid"):
        load_config({"MODEL_URI": "file:///m", "API_KEYS": KEY, "DRIFT_FEATURES": value})


# --- the PSI in PromQL -----------------------------------------------------------------------


def psi(live: list[float], reference: list[float], floor: float = 0.0001) -> float:
    p = np.maximum(np.array(live) / sum(live), floor)
    q = np.maximum(np.array(reference), floor)
    return float(((p - q) * np.log(p / q)).sum())


def promtool_psi_test(tmp_path: Path, live: list[int], reference: list[float], value: float) -> int:
    """Run promtool on the real rules: one feature whose bins grow by `live` a minute, against
    `reference`; the recorded PSI must equal `value` to 1e-9. Return promtool's exit code."""
    series = []
    for i, (increase, share) in enumerate(zip(live, reference, strict=True)):
        labels = f'job="modelrun", instance="a", model_version="v", feature="f", bin="{i:02d}"'
        series += [
            {"series": f"modelrun_drift_rows_total{{{labels}}}", "values": f"0+{increase}x150"},
            {"series": f"modelrun_drift_reference_ratio{{{labels}}}", "values": f"{share}x150"},
        ]
    test = {
        "rule_files": [str(ALERT_RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": f"abs(modelrun:drift_feature_psi - {value!r}) < bool 1e-9",
                        "eval_time": "2h",
                        "exp_samples": [{"labels": '{model_version="v", feature="f"}', "value": 1}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "psi.test.yml"
    path.write_text(yaml.safe_dump(test))
    result = subprocess.run(
        [require_binary("promtool"), "test", "rules", str(path)], capture_output=True, text=True
    )
    return result.returncode


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_the_psi_rule_equals_an_independent_computation(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    reference = rng.dirichlet(np.ones(6)).round(6).tolist()
    reference[-1] = 0.0  # a bin training never filled: the floor applies
    live = rng.integers(0, 40, 6).tolist()
    live[0] = 0  # a bin no live row fell into
    live[-1] = 7

    expected = psi(live, reference)

    assert promtool_psi_test(tmp_path, live, reference, expected) == 0
    assert promtool_psi_test(tmp_path, live, reference, expected + 0.001) != 0  # it can fail


def test_the_shortened_drift_rules_change_the_drift_group_only() -> None:
    original = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    short = yaml.safe_load(shortened_drift_rules(ALERT_RULES.read_text(), "30s", "10s"))["groups"]

    for before, after in zip(original, short, strict=True):
        if before["name"] != "modelrun-drift":
            assert before == after
            continue
        for rule_before, rule_after in zip(before["rules"], after["rules"], strict=True):
            assert rule_after["expr"] == rule_before["expr"].replace("[1h]", "[30s]")
            assert rule_after.get("for") == ("10s" if "alert" in rule_before else None)
    assert (LOCAL / "prometheus" / "alerts.yml") == ALERT_RULES


# --- end to end: the real function, Prometheus, Alertmanager ---------------------------------

WINDOW, HOLD = "20s", "5s"  # the rules' 1h and 30m, shortened (local.mirror.shortened_drift_rules)


@pytest.mark.slow
def test_shifted_traffic_fires_the_drift_alert_for_that_feature_only(
    gcs_emulator: Any, iris_artifact: Path, tmp_path: Path
) -> None:
    from local import drift_traffic
    from local.alert_sink import AlertSink
    from local.mirror import process, wait_for
    from tests.support.monitoring import monitored_service, query

    require_binary("prometheus-alertmanager")
    sink = AlertSink("127.0.0.1", 0, echo=False).start()
    shift, stop = threading.Event(), threading.Event()
    try:
        with monitored_service(
            gcs_emulator, iris_artifact, tmp_path, tmp_path / "mirror", drift=(WINDOW, HOLD)
        ) as (service, mirror):
            mirror.alert_sink = f"127.0.0.1:{sink.port}"
            with process(mirror.alertmanager_command(), tmp_path / "alertmanager.log"):
                wait_for(f"http://{mirror.alertmanager}/-/ready")
                traffic = threading.Thread(
                    target=drift_traffic.replay, args=(service.url, KEY, shift.is_set, stop)
                )
                traffic.start()
                started = time.monotonic()

                def psi() -> dict[str, float]:
                    found = query(mirror.prometheus, "modelrun:drift_feature_psi")
                    return {r["metric"]["feature"]: float(r["value"][1]) for r in found}

                # Rows like the training data, for longer than the window: every PSI stays low.
                wait_until(lambda: len(psi()) == 4 and time.monotonic() - started > 25, 90,
                           "a window of training-like traffic")  # fmt: skip
                steady = psi()
                assert max(steady.values()) < 0.1, steady
                assert sink.alerts == []

                shift.set()
                assert sink.received.wait(150), "no alert reached the webhook"
                wait_until(lambda: any(drifted(sink.alerts)), 60, "ModelrunFeatureDrift")
                moved = psi()
                stop.set()
                traffic.join(15)
    finally:
        stop.set()
        sink.stop()

    assert drifted(sink.alerts) == {drift_traffic.SHIFTED_FEATURE}
    (alert,) = [a for a in sink.alerts if a["labels"]["alertname"] == "ModelrunFeatureDrift"]
    assert alert["labels"]["model_version"] == "v1" and alert["status"] == "firing"
    assert moved[drift_traffic.SHIFTED_FEATURE] > 0.2
    others = {f: v for f, v in moved.items() if f != drift_traffic.SHIFTED_FEATURE}
    assert max(others.values()) < 0.1, moved


def drifted(alerts: list[dict[str, Any]]) -> set[str]:
    """The features ModelrunFeatureDrift fired for."""
    return {
        a["labels"]["feature"] for a in alerts if a["labels"]["alertname"] == "ModelrunFeatureDrift"
    }


def test_the_baseline_file_is_served_to_the_model_card_with_a_key(
    artifact: Path, service: InProcess
) -> None:
    answer = service.client.get(f"/model/files/{BASELINE_FILE}", headers=AUTH)

    assert answer.status_code == 200 and answer.content_type == "application/json"
    assert answer.get_json() == read(artifact)[1]
    assert service.client.get(f"/model/files/{BASELINE_FILE}").status_code == 401
    assert (
        service.client.get("/model", headers=AUTH).get_json()["baseline"]["file"] == BASELINE_FILE
    )
