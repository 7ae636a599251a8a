"""The running service: it composes what requests use, each part in its own module.

- the model, loaded and kept current by `loader.ModelLoader` (its own thread), read by each
  request once, as one snapshot (`served.Served`);
- the keys (`auth.KeyRing`), re-read from Secret Manager by `auth.SecretKeySource` when set;
- the request time limit (`deadline.Deadlines`), rate limits (`ratelimit.TokenBuckets`),
  telemetry (`telemetry.Telemetry`) with the drift counts (`drift.Drift`), the workers' shared
  page (`workers.Workers`) and the micro-batcher (`batching.MicroBatcher`); with METRICS_PORT,
  the keyless metrics listener (`metrics_port.serve_metrics`).

Nothing starts at import or construction: `start()` runs the threads, once per process (gunicorn
forks after importing the app), and `stop()` ends them.
"""

from __future__ import annotations

import http.server
import threading
from typing import Any

from werkzeug.datastructures import Headers

from function.core.config import Config
from function.core.drift import BASELINE_FILE, Drift
from function.core.errors import BadRequest, NotFound, Unauthorized
from function.core.explain import Explainers
from function.core.model import LoadedModel
from function.core.predict import Run, run_model
from function.core.rollout import CLIENT_HEADER, MAX_CLIENT_ID
from function.core.store import ModelStore
from function.service.auth import KeyRing, SecretKeySource, client_address, presented_key
from function.service.batching import MicroBatcher
from function.service.deadline import Deadlines
from function.service.loader import ModelLoader
from function.service.metrics_port import serve_metrics
from function.service.payloads import Payloads
from function.service.protocols.v2_metadata import select
from function.service.ratelimit import FAILED_KEYS_BURST, FAILED_KEYS_PER_SECOND, TokenBuckets
from function.service.served import Served
from function.service.shadow import ShadowScorer
from function.service.telemetry import prometheus_telemetry
from function.service.workers import Workers

REPORT_FILES_KEPT = 32  # the plots of a version or two, a few hundred kB
ANONYMOUS = "anonymous"  # the one caller identity when keys are off (development)


class Service:
    """What requests read: the model, the keys, the limits, the telemetry."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # onnxruntime is imported by the loader thread, after gunicorn forks, never here: its
        # import starts a native thread, and a worker forked from a master holding that thread
        # inherits its locks without it. At the worker's exit, onnxruntime's destructors then
        # join a thread that is not there (`std::system_error: Invalid argument`, an abort) or
        # wait forever on its condition variable (killed by gunicorn after 30 s).
        self.keys = KeyRing(config.api_keys) if config.api_keys else KeyRing()
        self.secret = SecretKeySource(config, self.keys) if config.api_keys_secret else None
        self.deadlines = Deadlines(config.request_timeout_seconds)
        self.limits = TokenBuckets(
            config.rate_limit_per_second, config.rate_limit_burst, workers=config.workers
        )
        # With rate limits on: the wrong keys a client address may send, per worker's share.
        self.failed_keys = TokenBuckets(
            FAILED_KEYS_PER_SECOND if config.rate_limit_per_second > 0 else 0,
            FAILED_KEYS_BURST,
            workers=config.workers,
            per="client address for wrong keys",
        )
        self.drift = Drift(config.drift_features)
        self.telemetry, page = prometheus_telemetry(
            self.model_state,
            self.drift,
            candidate_state=lambda: self.loader.state.candidate_state(),
            models=self.loaded_models,
        )
        self.payloads = Payloads(config, self.telemetry.payload_not_written)
        # Several workers answer as one instance: one merged page, one readiness.
        self.workers = (
            Workers(config.workers, page, lambda: self._own_readiness() is None)
            if config.workers > 1
            else None
        )
        self.metrics_page = self.workers.page if self.workers else page
        self.loader = ModelLoader(
            config,
            ModelStore(config.model_uri, timeout=config.store_timeout_seconds, trust=config.trust),
            self.telemetry,
            # At once, not at the next page write: /ready waits for every worker's mark.
            on_first_load=self.workers.mark_if_ready if self.workers else lambda: None,
        )
        self.run_model = self._model_runner()
        self._report_files: dict[tuple[str, str], bytes] = {}  # a model card's plots, read once
        self.explainers = Explainers()  # built on a version's first explanation
        self._started = False
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._metrics_server: http.server.HTTPServer | None = None  # METRICS_PORT's listener

    @property
    def model(self) -> LoadedModel | None:
        """The model served now (None until the first load)."""
        return self.loader.state.model

    def served(self) -> Served:
        """What this process serves now, one snapshot: read it once per request."""
        return self.loader.state

    def loaded_models(self) -> list[LoadedModel]:
        """The served version, and a rollout's candidate beside it (one snapshot)."""
        state = self.loader.state
        found = [state.model, state.candidate.model if state.candidate else None]
        return [m for m in found if m is not None]

    def start(self) -> None:
        """Start the threads (once per process; called after fork and on the first request)."""
        if self._started:  # every request calls this: no lock once started
            return
        with self._start_lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self.loader.run, name="model-loader", daemon=True).start()
        self.payloads.start()
        if self.workers:
            threading.Thread(
                target=self.workers.run, args=(self._stop,), name="worker-pages", daemon=True
            ).start()
        if self.secret:
            threading.Thread(target=self.secret.run, name="key-refresher", daemon=True).start()
        if self.config.metrics_port:
            self._metrics_server = serve_metrics(
                self.config.metrics_host, self.config.metrics_port, self.metrics_page
            )

    def stop(self) -> None:
        """End the threads start() began (tests; a process that exits needs none of this)."""
        self._stop.set()
        if self._metrics_server:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self.loader.stop()
        self.payloads.stop()
        if self.secret:
            self.secret.stop()

    def require_model(self) -> LoadedModel:
        """Return the loaded model, or raise 503 with the reason it is not there."""
        return self.loader.state.require_model()

    def report_file(self, model: LoadedModel, name: str) -> bytes:
        """One of the files the served version shows a person, verified: its report (plots,
        report.html) and its drift baseline."""
        listed = [*model.metadata.report_files]
        if model.baseline is not None:
            listed.append(BASELINE_FILE)
        if name not in listed:
            shown = ", ".join(listed) or "none (trained with --no-report, or before reports)"
            raise NotFound(f"version {model.version} has no report file {name!r}; it has {shown}")
        key = (model.version, name)
        data = self._report_files.get(key)  # one lookup: another request may clear the cache
        if data is None:
            store = self.loader.store
            where = f"{store.uri} version {model.version}"
            data = store.listed_file(model.metadata, name, where)
            if len(self._report_files) >= REPORT_FILES_KEPT:
                self._report_files.clear()
            self._report_files[key] = data
        return data

    def authorize(self, headers: Headers, address: str | None = None, cost: int = 1) -> str:
        """Return the caller's identity; raise 401 without a valid key (unless keys are off in
        development), 429 over the rate (a request costs `cost` predictions), or for a wrong key
        from an address that sent too many.

        Every key is checked, however many wrong ones its address sent: a valid key is never
        locked out (behind a shared address too), and only wrong keys are answered 429.
        """
        if not self.config.auth_enabled:
            identity = ANONYMOUS
        else:
            try:
                identity = self.keys.check(presented_key(headers))
            except Unauthorized:
                self.failed_keys.take(client_address(headers, address))
                raise
        self.limits.take(identity, cost)
        return identity

    def serving(
        self, identity: str, headers: Headers, version: str | None = None
    ) -> tuple[LoadedModel, ShadowScorer | None]:
        """The model that answers this caller, and a shadow candidate to score beside it.

        In a canary, the candidate answers the clients its share hashes to (X-Client-Id when
        sent, else the API key's identity); a request naming a version (the Open Inference
        Protocol's path) gets that one when it is loaded here.
        """
        client = headers.get(CLIENT_HEADER)
        if client is not None and len(client) > MAX_CLIENT_ID:
            raise BadRequest(f"{CLIENT_HEADER} is longer than {MAX_CLIENT_ID} characters")
        return self.loader.state.serving(client or identity, version)

    def named(self, name: str, version: str | None) -> LoadedModel:
        """The loaded model an Open Inference Protocol path names: the served version, or a
        rollout's candidate by its version (the one infer answers with on that path); else 404."""
        return select(self.loader.state.named(version), name, version)

    def readiness(self) -> str | None:
        """Return why the instance cannot serve yet, or None when it can."""
        reason = self._own_readiness()
        if reason is None and self.workers and not self.workers.all_ready():
            return "another worker process of this instance is still loading"
        return reason

    def model_state(self) -> tuple[dict[str, str] | None, bool]:
        """Return the served model's identity (None before one is loaded) and readiness."""
        model = self.loader.state.model
        identity = (
            {
                "model.name": model.name,
                "model.version": model.version,
                "model.sha256": model.sha256[:12],
                "model.runtime": model.runtime,
                # Two revisions serving at once (a rollout) are told apart on any scrape.
                **({"cloud_run.revision": self.config.revision} if self.config.revision else {}),
            }
            if model
            else None
        )
        return identity, self._own_readiness() is None  # this worker: pages merge

    def _own_readiness(self) -> str | None:
        served = self.loader.state
        if not served.ready:
            return served.reason
        if self.config.auth_enabled and not self.keys.loaded:
            return "API keys are not loaded yet"
        return None

    def _model_runner(self) -> Run:
        """The model call requests make: stoppable by the time limit, micro-batched if on."""
        deadlines = self.deadlines

        def run_in_time(estimator: Any, X: Any, probabilities: bool) -> Any:
            with deadlines.interruptible():  # a slow model may be stopped here, and only here
                return run_model(estimator, X, probabilities)

        if not self.config.micro_batching:
            return run_in_time
        batcher = MicroBatcher(
            run_in_time,
            self.config.batch_max_rows,
            self.config.batch_max_wait_ms / 1000,
            self.telemetry.batched,
        )
        return batcher.run
