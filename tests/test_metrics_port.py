"""METRICS_PORT: the instance's metrics without a key, on a second port for a scraper inside the
instance (the Cloud Run sidecar, the mirror's Prometheus), while the public port keeps its keyed
/metrics. The service as its own process, as the container runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from function.core.config import load_config
from function.core.errors import ConfigError
from function.core.store import ModelStore
from tests.conftest import KEY, free_port, run_service, wait_until

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_metrics_port_serves_the_whole_instance_without_a_key(
    iris_artifact: Path, tmp_path: Path, workers: str
) -> None:
    store = ModelStore((tmp_path / "iris").as_uri())
    store.promote(store.publish(iris_artifact, "v1"))
    port = free_port()
    env = {
        "MODEL_URI": store.uri,
        "API_KEYS": KEY,
        "METRICS_PORT": str(port),
        "WORKERS": workers,
        "K_REVISION": "modelrun-00042-abc",  # as Cloud Run sets it
    }
    with run_service(env, tmp_path) as running:
        for _ in range(6):
            answer = running.post("/predict", json={"instances": [ROW]}, headers={"X-API-Key": KEY})
            assert answer.status_code == 200
        assert running.get("/metrics").status_code == 401  # the public port still asks

        private = f"http://127.0.0.1:{port}"

        def predictions() -> float:
            page = requests.get(f"{private}/metrics", timeout=10)
            assert page.status_code == 200
            assert page.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in page.text.splitlines()
                if line.startswith("modelrun_predictions_total{")
            )

        # Workers publish their pages every second; then every scrape counts all six
        # predictions, whichever worker takes it.
        wait_until(lambda: predictions() == 6, 10, "the six predictions on the metrics port")
        assert [predictions() for _ in range(6)] == [6] * 6
        assert "cannot serve metrics" not in running.output()  # every worker bound the port
        page = requests.get(f"{private}/metrics", timeout=10).text
        info = next(line for line in page.splitlines() if line.startswith("modelrun_model_info{"))
        assert 'cloud_run_revision="modelrun-00042-abc"' in info  # revisions told apart
        assert 'model_version="v1"' in info
        # The sidecar scrapes "0.0.0.0:PORT" (run-gmp-sidecar, confgenerator/config.go), which
        # Linux connects to the loopback listener.
        assert requests.get(f"http://0.0.0.0:{port}/metrics", timeout=10).status_code == 200
        assert requests.get(f"{private}/predict", timeout=10).status_code == 404
        assert requests.get(f"{private}/", timeout=10).status_code == 404


def test_the_metrics_port_listens_on_loopback_unless_told() -> None:
    base = {"MODEL_URI": "file:///tmp/m", "API_KEYS": KEY}
    assert load_config({**base, "METRICS_PORT": "9464"}).metrics_host == "127.0.0.1"
    assert load_config({**base}).metrics_port == 0  # none unless asked for
    assert load_config({**base, "METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"METRICS_PORT": "8080"}, "METRICS_PORT=8080 is the serving port"),
        ({"METRICS_PORT": "9000", "PORT": "9000"}, "METRICS_PORT=9000 is the serving port"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT='70000' is invalid: expected a port number"),
        ({"METRICS_PORT": "x"}, "METRICS_PORT='x' is invalid"),
    ],
)
def test_a_bad_metrics_port_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config({"MODEL_URI": "file:///tmp/m", "API_KEYS": KEY, **env})
