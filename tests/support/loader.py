"""function/service/loader.py's loader on its own thread, with the service's telemetry read back
from its
page: the harness of tests/test_loader.py and tests/test_signing.py."""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from function.core.config import load_config
from function.core.store import ModelStore
from function.service.loader import ModelLoader
from function.service.telemetry import prometheus_telemetry

KEY = "loader-test-key-0123456789"


PAGES: dict[int, Callable[[], bytes]] = {}


def errors_counted(loader: ModelLoader, kind: str) -> float:
    """The loader's errors of one kind, read from its telemetry's Prometheus page."""
    for family in text_string_to_metric_families(PAGES[id(loader)]().decode()):
        for sample in family.samples:
            if sample.name == "modelrun_errors_total" and sample.labels.get("kind") == kind:
                return float(sample.value)
    return 0.0


def loader_for(store: ModelStore, **env: str) -> tuple[ModelLoader, threading.Thread, list[str]]:
    config = load_config({"MODEL_URI": store.uri, "API_KEYS": KEY, **env})
    telemetry, page = prometheus_telemetry(lambda: (None, False))
    first_loads: list[str] = []
    loader = ModelLoader(
        config, store, telemetry, on_first_load=lambda: first_loads.append("loaded")
    )
    PAGES[id(loader)] = page
    thread = threading.Thread(target=loader.run, daemon=True)
    thread.start()
    return loader, thread, first_loads
