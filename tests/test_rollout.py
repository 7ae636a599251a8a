"""Rollouts: the commands, the canary's hash, the comparison and the verdict; then what clients
see, in process where the process plays no part, and on real processes (the Dockerfile's command,
gunicorn workers) against the GCS emulator where it does, with a real Prometheus for --auto."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from function.core import rollout
from function.core.rollout import Rollout
from function.core.store import ModelStore
from function.service.shadow import QUEUE_REQUESTS, SHADOW_BATCH, compare
from local.mirror import Mirror
from tests.artifacts import publish_object
from tests.conftest import (
    KEY,
    OTHER_KEY,
    PYTHON,
    ROOT,
    Emulator,
    Running,
    free_port,
    run_service,
    run_training,
    service_env,
    wait_until,
)
from tests.inprocess import InProcess, in_process
from tests.odd_models import FailingModel, HangingModel
from tests.support.monitoring import monitored_service, query
from training.__main__ import main
from training.errors import EXIT_PIPE_CLOSED, EXIT_ROLLOUT_ABORTED
from training.verdict import Criteria, Figures, bucket_quantile, counted, judge

ROWS = np.random.default_rng(7).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], (48, 4)).round(2)
AUTH = {"X-API-Key": KEY}


def cli(store: ModelStore, *args: str) -> list[str]:
    """Run `python -m training rollout ...` on the store's model as a user would."""
    root, name = store.uri.rsplit("/", 1)
    return ["rollout", *args, "--store", root, "--name", name]


def two_versions(uri: str, first: Path, second: Path) -> ModelStore:
    """A model root with `first` published and current as v1, and `second` published as v2."""
    store = ModelStore(uri, timeout=5)
    store.promote(store.publish(first, "v1"))
    store.publish(second, "v2")
    return store


# --- the commands ------------------------------------------------------------------------


def test_the_commands_answer_in_one_line_with_an_exit_code(
    iris_artifact: Path,
    forest_artifact: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    store = two_versions((tmp_path / "store" / "iris").as_uri(), iris_artifact, forest_artifact)
    store.backend.write("versions/half/model.joblib", b"an interrupted upload", if_token=None)

    def run(*args: str) -> tuple[int, str]:
        code = main(cli(store, *args))
        out, err = capfd.readouterr()
        assert "Traceback" not in out + err
        lines = (out + err).strip().splitlines()
        return code, lines[-1] if lines else ""

    code, said = run("start", "half", "--shadow")
    assert code == 1 and said.startswith("error: version half is incomplete")
    code, said = run("start", "v1", "--shadow")
    assert code == 1 and "already current" in said
    code, said = run("promote")
    assert code == 1 and "no rollout is in progress" in said
    code, said = run("start", "v2", "--canary", "10")
    assert code == 0 and said.startswith("started a canary 10% rollout of v2 beside v1")
    code, said = run("start", "v2", "--shadow")
    assert code == 1 and "a rollout of v2 (canary 10%) is in progress" in said
    assert main(["list", "--store", str(tmp_path / "store"), "--name", "iris"]) == 0
    listing = capfd.readouterr().out.splitlines()
    assert listing[-1].startswith("~ v2") and listing[-1].endswith("(candidate: canary 10%)")
    code, said = run("status")
    assert code == 0 and said == "no comparison: give --prometheus URL (or set PROMETHEUS_URL)"
    code, said = run("abort")
    assert (code, said) == (0, "aborted the rollout of v2: v1 stays current")
    code, said = run("status")
    assert code == 0 and "the last, of v2, was aborted" in said
    code, said = run("start", "v2", "--shadow", "--model-memory-mb", "0.01")
    assert code == 1 and "more than MODEL_MEMORY_MB=0.01 allows" in said
    assert run("start", "v2", "--shadow")[0] == 0
    code, said = run("promote")
    assert (code, said) == (0, "promoted v2: it is current (was v1) and the rollout ended")
    pointer, _ = store.current()
    assert pointer is not None and pointer.version == "v2"
    state, _ = rollout.read_state(store)
    assert [(h.version, h.outcome) for h in state.history] == [
        ("v2", "promoted"),
        ("v2", "aborted"),
    ]


def test_an_unreachable_prometheus_is_named_in_one_line(
    iris_artifact: Path, forest_artifact: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    store = two_versions((tmp_path / "store" / "iris").as_uri(), iris_artifact, forest_artifact)
    rollout.start(store, "v2", "canary", 10)
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for verb in (["status"], ["promote", "--auto"]):
        assert main(cli(store, *verb, "--prometheus", nowhere)) == 1
        err = capfd.readouterr().err
        assert err == f"error: cannot reach Prometheus at {nowhere}: Connection refused\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    "verb",
    [["list"], ["rollout", "status"], ["rollout", "start", "v2", "--shadow"], ["--help"]],
    ids=["list", "rollout status", "rollout start", "help"],
)
def test_a_closed_stdout_ends_a_command_quietly(
    verb: list[str], iris_artifact: Path, forest_artifact: Path, tmp_path: Path
) -> None:
    store = two_versions((tmp_path / "store" / "iris").as_uri(), iris_artifact, forest_artifact)
    if verb[:2] != ["rollout", "start"]:
        rollout.start(store, "v2", "canary", 10)
    where = ["--store", (tmp_path / "store").as_uri(), "--name", "iris"]
    # `| head -0`: the reader has gone before the command writes anything
    command = [PYTHON, "-m", "training", *verb, *([] if verb == ["--help"] else where)]
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    err = child.stderr.read().decode()
    code = child.wait(60)
    assert err == ""  # no traceback, no "Exception ignored … BrokenPipeError"
    assert code == (0 if verb == ["--help"] else EXIT_PIPE_CLOSED)


def test_a_tampered_version_cannot_be_a_candidate(
    iris_artifact: Path, forest_artifact: Path, tmp_path: Path
) -> None:
    store = two_versions((tmp_path / "iris").as_uri(), iris_artifact, forest_artifact)
    model = tmp_path / "iris" / "versions" / "v2" / "model.joblib"
    model.write_bytes(model.read_bytes() + b"tampered")
    with pytest.raises(Exception, match="over its limit"):  # longer than signed: unread
        rollout.start(store, "v2", "shadow")
    assert rollout.active(store) is None


# --- the canary's hash, the shadow's comparison, the verdict -----------------------------


def canary(version: str, percent: float) -> Rollout:
    return Rollout(version, "0" * 64, "canary", percent, "2026-01-01T00:00:00Z", "v1", 1)


def test_a_canary_takes_a_stable_share_of_clients_close_to_its_percentage() -> None:
    clients = [f"client-{i}" for i in range(20_000)]
    chosen = {c for c in clients if canary("v2", 10).answers(c)}
    assert 0.09 < len(chosen) / len(clients) < 0.11
    assert chosen == {c for c in clients if canary("v2", 10).answers(c)}  # stable
    # A larger share keeps the clients of the smaller one: raising 10 % to 50 % moves no one back.
    assert chosen <= {c for c in clients if canary("v2", 50).answers(c)}
    other = {c for c in clients if canary("v3", 10).answers(c)}  # another rollout's own share
    assert len(chosen & other) < 0.02 * len(clients)
    shadow = Rollout("v2", "0" * 64, "shadow", 0, "2026-01-01T00:00:00Z", "v1", 1)
    assert not any(shadow.answers(c) for c in clients)


def test_the_shadow_comparison_counts_agreement_and_difference() -> None:
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    q = np.array([[0.7, 0.3], [0.2, 0.8], [0.3, 0.7]])
    agreed, difference = compare(["a", "b", "a"], ["a", "b", "b"], p, q, classifier=True)
    assert agreed == 2
    assert difference == pytest.approx(0.2 + 0.0 + 0.3)
    assert compare(["a", "b"], ["a", "a"], None, None, classifier=True) == (1, 1.0)
    agreed, difference = compare([100.0, 10.0], [100.5, 12.0], None, None, classifier=False)
    assert (agreed, difference) == (1, pytest.approx(2.5))  # within 1 %: 100.5, not 12


def figures(version: str, role: str, requests: float, errors: float, p95: float) -> Figures:
    return Figures(version, role, requests=requests, errors=errors, p95=p95)


def test_a_candidate_an_instance_refused_is_aborted() -> None:
    current = figures("v1", "answer", 5000, 5, 0.002)
    candidate = figures("v2", "canary", 0, 0, 0.0)
    candidate.refused = True  # it gets no traffic where it was refused: waiting would not help
    verdict = judge(current, candidate, Criteria(), shadow=False)
    assert verdict.decision == "abort"
    assert verdict.checks[0].name == "loading" and "MODEL_MEMORY_MB" in verdict.checks[0].detail


@pytest.mark.parametrize(
    ("candidate", "agreed", "decision"),
    [
        (figures("v2", "shadow", 400, 0, 0.0021), 398, "promote"),
        (figures("v2", "shadow", 120, 0, 0.0021), 120, "wait"),  # too little traffic yet
        (figures("v2", "shadow", 120, 40, 0.0021), 80, "abort"),  # already beyond saving
        (figures("v2", "shadow", 400, 8, 0.0021), 392, "abort"),  # 2 % errors, 1 % allowed
        (figures("v2", "shadow", 400, 0, 0.0090), 400, "abort"),  # p95 over 1.25x and 1 ms
        (figures("v2", "shadow", 400, 0, 0.0021), 300, "abort"),  # agrees on 75 % of rows
    ],
)
def test_the_verdict_promotes_waits_or_aborts(
    candidate: Figures, agreed: float, decision: str
) -> None:
    current = figures("v1", "answer", 5000, 5, 0.002)
    candidate.rows, candidate.agreed = candidate.requests, agreed
    assert judge(current, candidate, Criteria(), shadow=True).decision == decision


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([(90, 10), (100, 10), (105, 12), (110, 20)], 10),  # its value at the start subtracted
        ([(95, 7), (105, 9), (110, 2), (115, 5)], 7),  # restarted: counted from zero again
        ([(105, 4), (110, 9)], 9),  # first seen after the start: all of it is the rollout's
        ([(90, 3), (100, 8)], 0),  # a sample at the start itself is before it
        ([], 0),
    ],
)
def test_a_counter_is_counted_exactly_from_the_start(
    samples: list[tuple[float, float]], expected: float
) -> None:
    assert counted(samples, start=100) == expected


# --- what clients see, in process --------------------------------------------------------


@pytest.fixture
def folder_store(iris_artifact: Path, tmp_path: Path) -> ModelStore:
    store = ModelStore((tmp_path / "store" / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    return store


def following(
    store: ModelStore, emulator: Emulator, artifact: Path, tmp_path: Path
) -> contextlib.AbstractContextManager[tuple[Running, Any]]:
    """The service following `store`'s rollouts every half second, as its own process, beside a
    real Prometheus scraping it (tests/test_monitoring.py's mirror)."""
    return monitored_service(
        emulator, artifact, tmp_path, tmp_path / "mirror", uri=store.uri,
        MODEL_REFRESH_SECONDS="0.5",
    )  # fmt: skip


def serve(store: ModelStore, **settings: str) -> Any:
    env = {
        "MODEL_URI": store.uri,
        "API_KEYS": f"{KEY},{OTHER_KEY}",
        "MODEL_REFRESH_SECONDS": "0.1",
        "RATE_LIMIT_PER_SECOND": "0",
        "MODEL_RUNTIME": "sklearn",
        **settings,
    }
    return in_process(env)


@contextlib.contextmanager
def rolling(
    store: ModelStore, candidate: Path, mode: str, percent: float = 100.0
) -> Iterator[InProcess]:
    """The store's v1 served in process, and `candidate` published as v2 and rolled out."""
    store.publish(candidate, "v2")
    with serve(store) as app:
        rollout.start(store, "v2", mode, percent)
        wait_until(lambda: app.service.loader.state.candidate is not None, 10, "the candidate")
        yield app


def answers(app: InProcess, headers: dict[str, str] = AUTH) -> list[Any]:
    out = []
    for row in ROWS:
        response = app.client.post("/predict", json={"instances": [row.tolist()]}, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.headers["X-Model-Version"] == response.get_json()["model"]["version"]
        out.append(response.get_json())
    return out


def metric(app: InProcess, name: str, **labels: str) -> float:
    """A metric's value summed over the series with these labels (0 if there is none)."""
    page = app.client.get("/metrics", headers=AUTH).get_data(as_text=True)
    total = 0.0
    for line in page.splitlines():
        named = line.startswith(name + "{") or line.startswith(name + " ")
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("candidate", ["raises", "hangs"])
def test_a_shadow_candidate_that_raises_or_hangs_changes_nothing_for_clients(
    candidate: str, folder_store: ModelStore, iris_artifact: Path, tmp_path: Path
) -> None:
    odd = FailingModel() if candidate == "raises" else HangingModel(seconds=3)
    publish_object(folder_store, "odd", odd, iris_artifact, tmp_path)
    with serve(folder_store) as app:
        before = answers(app)
        rollout.start(folder_store, "odd", "shadow")
        wait_until(lambda: app.service.loader.state.candidate is not None, 10, "the candidate")
        during = answers(app) + answers(app) + answers(app)
        assert during == before * 3  # the same answers, all from v1

        # Every request was handed over once: scored by the candidate, or dropped and counted.
        def handled() -> float:
            shadow = metric(app, "modelrun_model_calls_total", role="shadow")
            return shadow + metric(app, "modelrun_shadow_dropped_total", model_version="odd")

        sent = 3 * len(ROWS)
        if candidate == "raises":
            wait_until(lambda: handled() == sent, 10, "every request handed over")
            assert metric(app, "modelrun_model_calls_total", role="shadow", outcome="ok") == 0
        else:  # one batch held by the hung call, the queue kept, the rest dropped and counted
            dropped = metric(app, "modelrun_shadow_dropped_total", model_version="odd")
            assert dropped >= sent - SHADOW_BATCH - QUEUE_REQUESTS
        assert metric(app, "modelrun_model_calls_total", model_version="v1", role="answer") == (
            4 * len(ROWS)
        )


def test_a_shadow_candidate_is_compared_row_by_row(
    folder_store: ModelStore, forest_artifact: Path
) -> None:
    with rolling(folder_store, forest_artifact, "shadow") as app:
        answered = answers(app)
        wait_until(
            lambda: metric(app, "modelrun_shadow_rows_total") == len(ROWS), 10, "every row scored"
        )
        forest = joblib.load(forest_artifact / "model.joblib")
        expected = forest.predict(ROWS).tolist()
        agree = sum(a["predictions"][0] == e for a, e in zip(answered, expected, strict=True))
        assert metric(app, "modelrun_shadow_agreed_total") == agree
        shadow_classes = metric(app, "modelrun_shadow_predictions_total", model_version="v2")
        assert shadow_classes == len(ROWS)
        assert metric(app, "modelrun_rollout_candidate", state="loaded", mode="shadow") == 1
        shown = app.client.get("/model", headers=AUTH).get_json()["rollout"]
        assert (shown["version"], shown["mode"], shown["state"]) == ("v2", "shadow", "loaded")
        rollout.abort(folder_store)
        wait_until(lambda: app.service.loader.state.candidate is None, 10, "the candidate dropped")
        assert app.client.get("/model", headers=AUTH).get_json()["rollout"] is None


def test_an_instance_refuses_a_candidate_that_would_not_fit(
    folder_store: ModelStore, forest_artifact: Path
) -> None:
    folder_store.publish(forest_artifact, "v2")
    with serve(folder_store, MODEL_MEMORY_MB="0.02") as app:  # the forest alone is 0.03 MiB
        rollout.start(folder_store, "v2", "canary", 100)  # the command was given no limit
        wait_until(lambda: app.service.loader.state.refused is not None, 10, "the refusal")
        assert "MODEL_MEMORY_MB=0.02" in app.service.loader.state.refused[1]
        assert {a["model"]["version"] for a in answers(app)} == {"v1"}
        assert metric(app, "modelrun_rollout_candidate", state="refused") == 1
        assert metric(app, "modelrun_errors_total", kind="rollout_refused") == 1  # not each poll
        shown = app.client.get("/model", headers=AUTH).get_json()["rollout"]
        assert shown["state"] == "refused" and "MODEL_MEMORY_MB=0.02" in shown["reason"]


def test_an_oip_request_naming_a_version_gets_it_during_a_canary(
    folder_store: ModelStore, forest_artifact: Path
) -> None:
    """Every v2 route of a version path agrees: the candidate's metadata and readiness answer
    where its infer does (they were 404 while infer answered), and another version is 404."""
    with rolling(folder_store, forest_artifact, "canary", 1) as app:
        body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4],
                            "data": ROWS[0].tolist()}]}  # fmt: skip
        for version in ("v1", "v2"):
            path = f"/v2/models/iris/versions/{version}"
            response = app.client.post(f"{path}/infer", json=body, headers=AUTH)
            metadata = app.client.get(path, headers=AUTH)
            ready = app.client.get(f"{path}/ready", headers=AUTH)
            assert response.status_code == 200, response.get_data(as_text=True)
            assert response.get_json()["model_version"] == version
            assert response.headers["X-Model-Version"] == version
            assert metadata.status_code == ready.status_code == 200, metadata.get_data(as_text=True)
            assert metadata.get_json()["versions"] == [version]
        for route in ("", "/ready"):
            other = app.client.get(f"/v2/models/iris/versions/v3{route}", headers=AUTH)
            assert other.status_code == 404


# --- on real processes against the GCS emulator ------------------------------------------


@pytest.fixture
def gcs_versions(
    gcs_emulator: Emulator,
    iris_artifact: Path,
    forest_artifact: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> ModelStore:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.host)
    uri = f"gs://{gcs_emulator.bucket}/rollout-{time.monotonic_ns()}/iris"
    return two_versions(uri, iris_artifact, forest_artifact)


class Load:
    """Clients posting rows until stopped; every answer kept: (sent, status, version, row, body)."""

    def __init__(self, url: str, clients: int = 4, headers: dict[str, str] = AUTH) -> None:
        self.url, self.headers = url, headers
        self.results: list[tuple[float, int, str, int, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _client(self, seed: int) -> None:
        session, i = requests.Session(), seed
        while not self._stop.is_set():
            row = i % len(ROWS)
            sent = time.monotonic()
            response = session.post(
                f"{self.url}/predict",
                json={"instances": [ROWS[row].tolist()]},
                headers=self.headers,
                timeout=10,
            )
            body = response.json()
            version = response.headers.get("X-Model-Version", "")
            self.results.append((sent, response.status_code, version, row, body))
            i += 1


def test_a_shadow_rollout_under_load_changes_no_answer(
    gcs_versions: ModelStore, gcs_emulator: Emulator, iris_artifact: Path, tmp_path: Path
) -> None:
    current = joblib.load(iris_artifact / "model.joblib")
    # The scikit-learn runtime, one model call per request: answers are compared exactly.
    env = service_env(
        gcs_versions,
        gcs_emulator,
        MODEL_REFRESH_SECONDS="0.5",
        MODEL_RUNTIME="sklearn",
        MICRO_BATCHING="false",
    )
    with run_service(env, tmp_path) as running, Load(running.url) as load:
        time.sleep(1)
        rollout.start(gcs_versions, "v2", "shadow")
        wait_until(
            lambda: "modelrun_shadow_rows_total" in running.get("/metrics", headers=AUTH).text,
            10,
            "the shadow scoring",
        )
        time.sleep(2)
        page = running.get("/metrics", headers=AUTH).text
    assert len(load.results) > 100
    assert [r for r in load.results if r[1] != 200] == []
    for _, _, version, row, body in load.results:
        assert version == body["model"]["version"] == "v1"
        assert (
            list(body["probabilities"][0].values())
            == current.predict_proba([ROWS[row]])[0].tolist()
        )
    assert 'modelrun_rollout_candidate{mode="shadow",model_version="v2",state="loaded"} 1.0' in page


def test_a_50_percent_canary_answers_from_both_and_each_client_from_one(
    gcs_versions: ModelStore, gcs_emulator: Emulator, tmp_path: Path
) -> None:
    rollout.start(gcs_versions, "v2", "canary", 50)
    env = service_env(gcs_versions, gcs_emulator, WORKERS="2", MODEL_REFRESH_SECONDS="0.5")
    with run_service(env, tmp_path) as running:
        seen: dict[str, set[str]] = {}
        for client in [f"user-{i}" for i in range(40)]:
            for row in ROWS[:4]:
                response = running.post(
                    "/predict",
                    json={"features": row.tolist()},
                    headers={**AUTH, "X-Client-Id": client},
                )
                assert response.status_code == 200
                version = response.headers["X-Model-Version"]
                assert version == response.json()["model"]["version"]
                seen.setdefault(client, set()).add(version)
        by_key = {
            key: {version_for(running, {"X-API-Key": key}) for _ in range(8)}
            for key in (KEY, OTHER_KEY)
        }
    assert all(len(versions) == 1 for versions in seen.values())  # one client, one version
    shares = Counter(next(iter(v)) for v in seen.values())
    assert set(shares) == {"v1", "v2"} and min(shares.values()) >= 10
    assert all(len(versions) == 1 for versions in by_key.values())  # without the header: the key
    expected = {
        k: "v2" if canary_of(gcs_versions).answers(key_identity(k)) else "v1" for k in by_key
    }
    assert {k: next(iter(v)) for k, v in by_key.items()} == expected


def version_for(running: Running, headers: dict[str, str]) -> str:
    response = running.post("/predict", json={"features": ROWS[0].tolist()}, headers=headers)
    assert response.status_code == 200
    return str(response.headers["X-Model-Version"])


def canary_of(store: ModelStore) -> Rollout:
    active = rollout.active(store)
    assert active is not None
    return active


def key_identity(key: str) -> str:
    from function.service.auth import KeyRing

    return KeyRing([key]).check(key)


@pytest.mark.parametrize("end", ["promote", "abort"])
def test_promote_and_abort_reach_every_worker_within_the_refresh_and_fail_no_request(
    end: str, gcs_versions: ModelStore, gcs_emulator: Emulator, tmp_path: Path
) -> None:
    refresh = 0.5
    env = service_env(gcs_versions, gcs_emulator, WORKERS="2", MODEL_REFRESH_SECONDS=str(refresh))
    rollout.start(gcs_versions, "v2", "canary", 50)
    with run_service(env, tmp_path) as running:
        # Forty clients by X-Client-Id: about half answered by each version until the end.
        headers = [{"X-Client-Id": f"c{i}", "X-API-Key": KEY} for i in range(40)]
        with Load(running.url, clients=4) as load:
            time.sleep(1.5)
            ended = time.monotonic()
            (rollout.promote if end == "promote" else rollout.abort)(gcs_versions)
            time.sleep(refresh + 2.5)
        after = [version_for(running, h) for h in headers]
    want = "v2" if end == "promote" else "v1"
    assert [r for r in load.results if r[1] != 200] == []
    # The order, not the time (make bench-timings reports how long the switch takes): the other
    # version's last answer comes while the load still runs, every later one is the new version's.
    last_other = max((r[0] for r in load.results if r[2] != want), default=ended)
    assert any(r[0] > last_other for r in load.results), "the switch never came under load"
    assert set(after) == {want}  # every worker, every client


def test_auto_aborts_a_failing_candidate_and_promotes_a_good_one(
    gcs_versions: ModelStore,
    gcs_emulator: Emulator,
    iris_artifact: Path,
    tmp_path: Path,
) -> None:
    publish_object(gcs_versions, "failing", FailingModel(), iris_artifact, tmp_path)
    gcs_versions.publish(iris_artifact, "v3")  # the current model again: a candidate that passes
    with following(gcs_versions, gcs_emulator, iris_artifact, tmp_path) as (running, mirror):
        prometheus = f"http://{mirror.prometheus}"

        def auto() -> subprocess.CompletedProcess[str]:
            # The latency gate is judged on figures in test_the_verdict_promotes_waits_or_aborts.
            # Here a shadow's p95 against the answering model's, measured while the other test
            # workers share these two cores, is noise (6.8 ms against 3.5 ms for the same model
            # once in CI; 10.75 ms against ONNX's 0.50 ms on a loaded machine), so the gate is
            # opened wide: this test is about errors and promotion.
            args = [*cli(gcs_versions, "promote", "--auto", "--prometheus", prometheus),
                    "--min-requests", "40", "--wait", "60", "--every", "2",
                    "--max-latency-ratio", "1000"]  # fmt: skip
            return run_training(
                *args, env={"STORAGE_EMULATOR_HOST": gcs_emulator.host}, timeout=120
            )

        for candidate in ("failing", "v3"):
            rollout.start(gcs_versions, candidate, "shadow")
            with Load(running.url, clients=2):
                decided = auto()
            assert "Traceback" not in decided.stderr
            said = decided.stdout.strip().splitlines()[-1]
            if candidate == "failing":
                assert decided.returncode == EXIT_ROLLOUT_ABORTED, decided.stdout + decided.stderr
                assert said.startswith("aborted the rollout of failing: errors: error ratio 100")
            else:
                assert decided.returncode == 0, decided.stdout + decided.stderr
                assert said.startswith("promoted v3 on metrics (traffic pass")
        pointer, _ = gcs_versions.current()
        assert pointer is not None and pointer.version == "v3"
        state, _ = rollout.read_state(gcs_versions)
        assert [h.outcome for h in state.history] == ["promoted", "aborted"]
        assert query(mirror.prometheus, 'modelrun_model_calls_total{model_version="failing"}')


def calls_served(mirror: Mirror) -> Counter[str]:
    """Each version's model calls as the service itself counts them (its keyless metrics port),
    the truth the verdict's figures must equal."""
    page = requests.get(f"http://{mirror.metrics}/metrics", timeout=5).text
    served: Counter[str] = Counter()
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == "modelrun_model_calls_total":
                served[sample.labels["model_version"]] += int(sample.value)
    return served


def calls_scraped(mirror: Mirror) -> Counter[str]:
    scraped: Counter[str] = Counter()
    for series in query(mirror.prometheus, "modelrun_model_calls_total"):
        scraped[series["metric"]["model_version"]] += int(float(series["value"][1]))
    return scraped


def test_a_rollout_is_judged_on_its_own_requests_counted_exactly(
    gcs_versions: ModelStore,
    gcs_emulator: Emulator,
    iris_artifact: Path,
    forest_artifact: Path,
    tmp_path: Path,
) -> None:
    new = gcs_versions.publish(forest_artifact, "2.0-rc.1")  # a dot and a dash, as ids have
    with following(gcs_versions, gcs_emulator, iris_artifact, tmp_path) as (running, mirror):

        def send(n: int) -> Counter[str]:
            answered: Counter[str] = Counter()
            for i in range(n):
                row = {"instances": [ROWS[i % len(ROWS)].tolist()]}
                response = running.post("/predict", json=row, headers=AUTH)
                assert response.status_code == 200
                answered[response.headers["X-Model-Version"]] += 1
            return answered

        def scraped() -> None:
            wait_until(lambda: calls_scraped(mirror) == calls_served(mirror), 60, "a scrape")

        def judged() -> dict[str, float]:
            args = [*cli(gcs_versions, "status", "--prometheus", f"http://{mirror.prometheus}"),
                    "--json"]  # fmt: skip
            said = run_training(*args, env={"STORAGE_EMULATOR_HOST": gcs_emulator.host})
            assert said.returncode == 0, said.stderr
            return {v["version"]: v["requests"] for v in json.loads(said.stdout)["versions"]}

        # An earlier canary of the same version, and traffic to both versions, then an abort.
        rollout.start(gcs_versions, new, "canary", 100)
        # Each sent over two scrapes, so that Prometheus sees their series rise.
        wait_until(lambda: send(1)[new] == 1, 30, "the earlier canary")
        send(60)
        scraped()
        send(60)
        rollout.abort(gcs_versions)
        wait_until(lambda: send(1)["v1"] == 1, 30, "the abort")
        scraped()
        send(40)
        scraped()
        before = calls_served(mirror)
        # A rollout seconds later: none of that traffic is its own.
        rollout.start(gcs_versions, new, "canary", 100)
        assert judged() == {"v1": 0, new: 0}
        wait_until(lambda: send(1)[new] == 1, 30, "the canary")
        send(53)
        scraped()
        after = calls_served(mirror)
        assert after[new] - before[new] >= 54
        # Exactly what the service counted since the start: not extrapolated, nothing earlier.
        assert judged() == {v: after[v] - before[v] for v in ("v1", new)}
        # The p95 comes from the buckets as PromQL's histogram_quantile reads them.
        at = time.time()
        series = f"modelrun_model_duration_seconds_bucket{{model_version='{new}', role='answer'}}"
        buckets: Counter[float] = Counter()
        for found in instant(mirror, series, at):
            buckets[float(found["metric"]["le"])] += float(found["value"][1])
        for q in (0.5, 0.95, 0.99):
            (theirs,) = instant(mirror, f"histogram_quantile({q}, sum by (le) ({series}))", at)
            assert math.isclose(bucket_quantile(q, buckets) or -1, float(theirs["value"][1]))


def instant(mirror: Mirror, expr: str, at: float) -> list[dict[str, Any]]:
    """An instant query at a given time."""
    url = f"http://{mirror.prometheus}/api/v1/query"
    body = requests.get(url, params={"query": expr, "time": f"{at:.3f}"}, timeout=10).json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_a_partial_shadow_scores_its_share_of_requests(
    folder_store: ModelStore, forest_artifact: Path
) -> None:
    with rolling(folder_store, forest_artifact, "shadow", 25) as app:
        for _ in range(5):
            answers(app)  # 240 requests
        wait_until(
            lambda: (
                metric(app, "modelrun_shadow_rows_total")
                + metric(app, "modelrun_shadow_dropped_total")
                > 0
            ),
            10,
            "the shadow's counts",
        )
        time.sleep(0.5)
        handed = metric(app, "modelrun_model_calls_total", role="shadow") + metric(
            app, "modelrun_shadow_dropped_total"
        )
    assert 30 <= handed <= 90  # a random 25 % of 240: 60 expected, 3.7 standard deviations


def test_a_client_id_is_checked_before_it_is_used(folder_store: ModelStore) -> None:
    with serve(folder_store) as app:
        response = app.client.post(
            "/predict",
            json={"features": ROWS[0].tolist()},
            headers={**AUTH, "X-Client-Id": "x" * 257},
        )
        assert response.status_code == 400
        assert response.get_json()["detail"] == "X-Client-Id is longer than 256 characters"


def test_a_verdict_acts_only_on_the_rollout_it_judged(
    iris_artifact: Path, forest_artifact: Path, tmp_path: Path
) -> None:
    store = two_versions((tmp_path / "iris").as_uri(), iris_artifact, forest_artifact)
    judged = rollout.start(store, "v2", "canary", 10)
    rollout.abort(store)
    rollout.start(store, "v2", "shadow")  # another rollout of the same version since
    with pytest.raises(Exception, match="changed since it was judged"):
        rollout.promote(store, judged=judged)
    pointer, _ = store.current()
    assert pointer is not None and pointer.version == "v1"
    assert rollout.active(store) is not None


@pytest.mark.parametrize("mode", ["canary", "shadow"])
def test_a_candidate_with_other_features_is_checked_against_its_own_schema(
    mode: str, folder_store: ModelStore, iris_artifact: Path, tmp_path: Path
) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length"]
    three = LogisticRegression(max_iter=500).fit(iris.data[:, :3], iris.target_names[iris.target])
    publish_object(folder_store, "v2", three, iris_artifact, tmp_path, feature_names=names)
    with serve(folder_store) as app:
        rollout.start(folder_store, "v2", mode, 100)
        wait_until(lambda: app.service.loader.state.candidate is not None, 10, "the candidate")
        four = app.client.post("/predict", json={"features": ROWS[0].tolist()}, headers=AUTH)
        if mode == "canary":  # every client: the candidate's schema checks the request
            assert four.status_code == 422
            answer = app.client.post(
                "/predict", json={"features": ROWS[0][:3].tolist()}, headers=AUTH
            )
            assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "v2"
        else:  # the current version answers; the candidate fails on rows it cannot take
            assert four.status_code == 200 and four.headers["X-Model-Version"] == "v1"
            wait_until(
                lambda: (
                    metric(app, "modelrun_model_calls_total", role="shadow", outcome="error") == 1
                ),
                10,
                "the candidate's failure counted",
            )


CORRUPT_PERCENTS = ["NaN", "Infinity", '"inf"', "150", "0", "-5", '"50"', "true", "null"]


def corrupt_rollout(store: ModelStore, percent: str) -> None:
    """rollout.json as someone who can write the store leaves it: a canary of v2 whose percentage
    is `percent` (raw JSON, since json.dumps would not write NaN from a string)."""
    state, token = rollout.read_state(store)
    assert state.active is not None
    active = {**dataclasses.asdict(state.active), "percent": "PERCENT"}
    text = json.dumps({"active": active, "history": []}).replace('"PERCENT"', percent)
    store.backend.write(rollout.ROLLOUT_FILE, text.encode(), if_token=token)


@pytest.mark.parametrize("percent", CORRUPT_PERCENTS)
def test_a_corrupt_rollout_is_unreadable_and_fails_no_request(
    folder_store: ModelStore, forest_artifact: Path, percent: str
) -> None:
    with rolling(folder_store, forest_artifact, "canary", 50) as app:
        before = {
            a["model"]["version"] for a in answers(app) + answers(app, {"X-API-Key": OTHER_KEY})
        }
        corrupt_rollout(folder_store, percent)
        wait_until(lambda: app.service.loader.state.unreadable is not None, 10, "the corrupt read")
        time.sleep(0.3)  # a few more polls: counted once, not at each
        during = answers(app) + answers(app, {"X-API-Key": OTHER_KEY})
        shown = app.client.get("/model", headers=AUTH).get_json()["rollout"]
        counted = metric(app, "modelrun_errors_total", kind="rollout_unreadable")

    assert {a["model"]["version"] for a in during} == before == {"v1", "v2"}  # as loaded
    assert shown["state"] == "loaded" and "rollout.json is corrupt" in shown["unreadable"]
    assert counted == 1


@pytest.mark.parametrize("percent", CORRUPT_PERCENTS)
def test_a_corrupt_rollout_on_cold_start_serves_the_current_version(
    folder_store: ModelStore, forest_artifact: Path, percent: str, capfd: pytest.CaptureFixture[str]
) -> None:
    folder_store.publish(forest_artifact, "v2")
    rollout.start(folder_store, "v2", "canary", 50)
    corrupt_rollout(folder_store, percent)
    with serve(folder_store) as app:
        served = {
            a["model"]["version"] for a in answers(app) + answers(app, {"X-API-Key": OTHER_KEY})
        }
        shown = app.client.get("/model", headers=AUTH).get_json()["rollout"]
    code = main(cli(folder_store, "status"))
    said = capfd.readouterr()

    assert served == {"v1"}
    assert "rollout.json is corrupt" in shown["unreadable"]
    assert code == 1 and "rollout.json is corrupt" in said.err
    assert "%" not in said.out + said.err.replace("rollout.json is corrupt", "")
