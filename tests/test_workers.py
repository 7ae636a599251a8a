"""Several worker processes make one instance: one metrics page, one rate, one CPU count."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from function.core.config import load_config, usable_cpus
from function.core.errors import ConfigError, TooManyRequests
from function.core.store import ModelStore
from function.core.threads import NATIVE_THREADS, native_threads
from function.service.ratelimit import TokenBuckets
from function.service.telemetry import prometheus_telemetry
from function.service.workers import Workers, merge
from local import container
from tests.conftest import run_service, wait_until

KEY = "workers-key-0123456789"
IDENTITY = ({"model_name": "iris", "model_version": "v1"}, True)


def samples(page: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = page.decode() if isinstance(page, bytes) else page
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def predictions(page: bytes | str) -> float:
    return sum(v for (name, _), v in samples(page).items() if name == "modelrun_predictions_total")


def two_workers() -> tuple[bytes, bytes]:
    """The pages of two workers' real registries after different traffic."""
    first, render_first = prometheus_telemetry(lambda: IDENTITY)
    second, render_second = prometheus_telemetry(
        lambda: ({"model_name": "iris", "model_version": "v2"}, False)
    )
    first.request("POST", "/predict", 200, 0.01)
    first.predicted("v1", ["setosa", "setosa", "virginica"], True)
    second.request("POST", "/predict", 200, 0.3)
    second.predicted("v1", ["setosa"], True)
    return render_first(), render_second()


def test_counts_and_histograms_of_all_workers_add_up() -> None:
    first, second = two_workers()

    merged = samples(merge([(first.decode(), True), (second.decode(), True)]))

    setosa = ("modelrun_predictions_total", (("class", "setosa"), ("model_version", "v1")))
    assert merged[setosa] == 3
    route = (("http_request_method", "POST"), ("http_response_status_code", "200"),
             ("http_route", "/predict"))  # fmt: skip
    assert merged[("http_server_request_duration_seconds_count", route)] == 2
    assert merged[("http_server_request_duration_seconds_sum", route)] == pytest.approx(0.31)
    assert merged[("http_server_request_duration_seconds_bucket", (*route, ("le", "0.01")))] == 1
    assert merged[("http_server_request_duration_seconds_bucket", (*route, ("le", "0.5")))] == 2


def test_gauges_describe_the_instance() -> None:
    first, second = two_workers()

    merged = samples(merge([(first.decode(), True), (second.decode(), True)]))

    assert merged[("modelrun_model_ready", ())] == 0  # one worker is not ready: nor is the instance
    versions = {dict(labels)["model_version"] for name, labels in merged
                if name == "modelrun_model_info"}  # fmt: skip
    assert versions == {"v1", "v2"}  # served by either worker during a swap
    memory = ("process_resident_memory_bytes", ())
    assert merged[memory] == samples(first)[memory] + samples(second)[memory]


def test_a_finished_workers_counts_stay_and_its_gauges_go() -> None:
    first, second = two_workers()

    merged = samples(merge([(first.decode(), True), (second.decode(), False)]))

    assert predictions(merge([(first.decode(), True), (second.decode(), False)])) == 4
    assert merged[("modelrun_model_ready", ())] == 1
    assert (
        merged[("process_resident_memory_bytes", ())]
        == samples(first)[("process_resident_memory_bytes", ())]
    )


def test_each_worker_keeps_its_share_of_the_instance_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(10, 4, clock=lambda: now[0], workers=2)

    buckets.take("k")
    buckets.take("k")
    with pytest.raises(TooManyRequests) as raised:
        buckets.take("k")
    assert "rate limit of 10 requests/s (burst 4)" in raised.value.detail  # the instance's
    now[0] += 0.2  # 5 tokens/s each: one is back
    buckets.take("k")


def test_usable_cpus_follow_a_cgroup_quota(tmp_path: Path) -> None:
    quota = tmp_path / "cpu.max"
    affinity = len(os.sched_getaffinity(0))

    quota.write_text("150000 100000\n")  # 1.5 CPUs: two workers, if there are two cores
    assert usable_cpus(quota) == min(affinity, 2)
    quota.write_text("50000 100000\n")
    assert usable_cpus(quota) == 1
    quota.write_text("max 100000\n")
    assert usable_cpus(quota) == affinity
    assert usable_cpus(tmp_path / "absent") == affinity


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_a_wrong_worker_count_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=f"WORKERS={value!r}"):
        load_config({"MODEL_URI": "file:///models/iris", "API_KEYS": KEY, "WORKERS": value})


def worker_pids(master: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


@pytest.mark.slow
def test_the_container_starts_a_worker_per_usable_cpu(iris_artifact: Path, tmp_path: Path) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "WORKERS": ""}  # unset, as in the image

    with run_service(env, tmp_path) as service:
        assert len(worker_pids(service.process.pid)) == usable_cpus()


@pytest.mark.slow
@pytest.mark.skipif(usable_cpus() < 2, reason="two workers need two CPUs to both serve")
def test_two_workers_answer_scrapes_with_the_whole_instance(
    iris_artifact: Path, tmp_path: Path
) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    env = {"MODEL_URI": store.uri, "API_KEYS": KEY, "WORKERS": "2", "TMPDIR": str(tmp_path),
           "RATE_LIMIT_PER_SECOND": "0"}  # fmt: skip
    headers = {"X-API-Key": KEY}
    sent = 300

    with run_service(env, tmp_path) as service:
        workers = worker_pids(service.process.pid)

        def one(_: int) -> int:  # a new connection each time: either worker may accept it
            body = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
            response = requests.post(f"{service.url}/predict", json=body, headers=headers,
                                     timeout=10)  # fmt: skip
            return response.status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(one, range(sent))) == {200}
        # Every worker wrote its own page (named by its process id) and both served.
        (folder,) = tmp_path.glob("modelrun-metrics-*")
        wait_until(lambda: sum(_shares(folder, workers)) == sent, 10, "both workers' pages")
        assert min(_shares(folder, workers)) > 0, _shares(folder, workers)
        # Whichever worker is scraped, the page counts the whole instance.
        wait_until(lambda: predictions(_scrape(service.url)) == sent, 10, "all predictions")
        assert {predictions(_scrape(service.url)) for _ in range(10)} == {sent}
        assert len(worker_pids(service.process.pid)) == 2


def _scrape(url: str) -> bytes:
    return requests.get(f"{url}/metrics", headers={"X-API-Key": KEY}, timeout=10).content


def _shares(folder: Path, workers: list[int]) -> list[float]:
    """Each worker's own count of predictions, from the page it wrote (0 before it wrote)."""
    pages = [folder / f"{pid}.prom" for pid in workers]
    return [predictions(page.read_text()) if page.exists() else 0.0 for page in pages]


@pytest.mark.slow
def test_the_instance_is_ready_once_every_live_worker_is(tmp_path: Path) -> None:
    own_ready = [False]
    workers = Workers(2, lambda: b"", lambda: own_ready[0])
    other = subprocess.Popen(["sleep", "60"])  # stands for the other worker: a live process
    try:
        assert not workers.all_ready()  # nobody is ready
        own_ready[0] = True
        assert not workers.all_ready()  # one of two
        (workers.folder / f"{other.pid}.ready").touch()
        assert workers.all_ready()
    finally:
        other.kill()
        other.wait()
    assert not workers.all_ready()  # a finished worker's mark does not count: its successor loads


def test_a_page_cut_short_is_left_out_and_the_rest_still_answer() -> None:
    first, second = two_workers()
    cut = second.decode()[: len(second) // 2]  # a page written halfway (a full disk)
    with pytest.raises(ValueError):
        samples(cut)

    assert predictions(merge([(first.decode(), True), (cut, True)])) == 3


def test_the_image_and_training_size_native_threads_by_one_rule() -> None:
    image = container.environment()  # function/Dockerfile's ENV
    assert native_threads(image) == NATIVE_THREADS == int(image["OMP_NUM_THREADS"])
    assert native_threads({}) == NATIVE_THREADS
    assert native_threads({"OMP_NUM_THREADS": "4,2"}) == 4  # nested teams: the first level
    assert native_threads({"OMP_NUM_THREADS": "0"}) == NATIVE_THREADS  # not a thread count
