"""The route handlers, thin over the prediction core: each group is built with what it uses.

A handler takes the request and the path's arguments, and returns a body (JSON) or a Response;
it raises a typed error (function/core/errors.py) for anything else. app.py wires the groups to
the service's parts, and router.py names the paths.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from flask import Request, Response
from werkzeug.datastructures import Headers

from function.core.drift import Drift
from function.core.errors import InvalidInput, NotReady
from function.core.model import LoadedModel
from function.core.predict import Instances, Prediction, Run, answer, infer, parse_instances
from function.core.store import ModelStore
from function.service import explain, pages
from function.service.auth import presented_key
from function.service.body import read_bytes, read_json
from function.service.deadline import Deadlines
from function.service.explain import Explainers
from function.service.openapi import document
from function.service.protocols import native, v2_binary, v2_metadata, v2_request, v2_response
from function.service.shadow import ShadowScorer
from function.service.telemetry import Telemetry

log = logging.getLogger("modelrun.http")
NOT_READY = "not ready to serve; a caller with an API key is told why"
VERSION_HEADER = "X-Model-Version"  # on every prediction: the version that answered

Handler = Callable[[Request, dict[str, str]], Any]
# The caller's identity from its key, counted against the rate limit (a request costs `cost`).
Authorize = Callable[[Headers, str | None, int], str]
# The model that answers this caller (a canary's candidate, a version the path names), and a
# shadow candidate to score beside it.
Serving = Callable[[str, Headers, str | None], tuple[LoadedModel, ShadowScorer | None]]


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int
    max_instances: int  # rows per request


def json_response(body: Any, status: int) -> Response:
    # orjson: a 10,000-row answer encodes in about a tenth of json.dumps's time. Answers are
    # checked finite before they get here (orjson would write NaN as null).
    return Response(orjson.dumps(body), status, mimetype="application/json")


def answered(body: Any, model: LoadedModel) -> Response:
    """A prediction's answer, saying which version gave it (a canary has two)."""
    response = json_response(body, 200)
    response.headers[VERSION_HEADER] = model.version
    return response


@dataclass(frozen=True)
class Scorer:
    """Runs the answering model, timed and counted by version; hands the rows and the answer to
    a shadow candidate (it cannot change the answer), and counts the drift bins."""

    run_model: Run
    telemetry: Telemetry
    drift: Drift

    def score(
        self, model: LoadedModel, shadow: ShadowScorer | None, instances: Instances
    ) -> Prediction:
        started = time.perf_counter()
        try:
            prediction = infer(model, instances, self.run_model)
        except InvalidInput:  # a row this model refuses: the client's to fix, not the version's
            raise
        except BaseException:
            self.telemetry.scored(model.version, "answer", 0.0, ok=False)
            raise
        self.telemetry.scored(model.version, "answer", time.perf_counter() - started, ok=True)
        if shadow is not None:
            shadow.submit(instances.X, prediction)
        self._count(model, instances, prediction.labels)
        return prediction

    def _count(self, model: LoadedModel, instances: Instances, labels: list[Any]) -> None:
        """Count the answered rows: predictions by class, and the drift bins of rows and
        answers."""
        self.telemetry.predicted(model.version, labels, model.metadata["task"] == "classification")
        try:
            self.drift.observe(model, instances.X, labels)
        except Exception:  # counting never costs the client its answer; the failure is counted
            log.exception("drift counting failed for version %s", model.version)
            self.telemetry.error("drift_count")


@dataclass(frozen=True)
class Predictions:
    """POST /predict, Vertex AI's predict route, and the Open Inference Protocol's infer."""

    authorize: Authorize
    serving: Serving
    scorer: Scorer
    deadlines: Deadlines
    limits: Limits

    def predict(self, request: Request, args: dict[str, str]) -> Response:
        model, shadow, instances = self._instances(request)
        prediction = self.scorer.score(model, shadow, instances)
        return answered(answer(model, prediction), model)

    def vertex_predict(self, request: Request, args: dict[str, str]) -> Response:
        model, shadow, instances = self._instances(request)
        prediction = self.scorer.score(model, shadow, instances)
        return answered(native.vertex_answer(prediction), model)

    def v2_infer(self, request: Request, args: dict[str, str]) -> Response:
        identity = self.authorize(request.headers, request.remote_addr, 1)
        served, shadow = self.serving(identity, request.headers, args.get("version"))
        model = v2_metadata.select(served, args["name"], args.get("version"))
        limit, most = self.limits.max_instances, self.limits.max_request_bytes
        header_length = request.headers.get(v2_binary.BINARY_HEADER)
        if header_length is None:
            body = read_json(request, most, type_required=False)
        else:  # tensors as raw bytes after a JSON part (tritonclient's default)
            data = read_bytes(request, most)
            body = v2_binary.binary_request(data, header_length, model.schema, limit)
        with self.deadlines.interruptible():
            instances, outputs, request_id = v2_request.parse_request(body, model, limit)
        prediction = self.scorer.score(model, shadow, instances)
        return answered(v2_response.response(model, prediction, outputs, request_id), model)

    def _instances(self, request: Request) -> tuple[LoadedModel, ShadowScorer | None, Instances]:
        identity = self.authorize(request.headers, request.remote_addr, 1)
        model, shadow = self.serving(identity, request.headers, None)
        body = read_json(request, self.limits.max_request_bytes)
        with self.deadlines.interruptible():
            instances = parse_instances(body, model.schema, self.limits.max_instances)
        return model, shadow, instances


@dataclass(frozen=True)
class Explanations:
    """POST /explain: the prediction split into a base value and one attribution per input
    feature (function/service/explain.py), counted as EXPLAIN_COST predictions against the rate
    limit."""

    authorize: Authorize
    serving: Serving
    deadlines: Deadlines
    limits: Limits
    explainers: Explainers
    store: ModelStore
    allow_pickle: bool

    def explain(self, request: Request, args: dict[str, str]) -> Response:
        identity = self.authorize(request.headers, request.remote_addr, explain.EXPLAIN_COST)
        model, _ = self.serving(identity, request.headers, None)
        body, wanted = explain.parse_parameters(read_json(request, self.limits.max_request_bytes))
        with self.deadlines.interruptible():
            instances = parse_instances(body, model.pipeline_schema, self.limits.max_instances)
        # Built outside the time limit's reach: an import stopped half-way would stay broken.
        explainer = self.explainers.get(model, self.store, self.allow_pickle)
        with self.deadlines.interruptible():
            explanation = explainer.explain(instances, wanted)
        return answered(explain.answer(model, explainer, explanation), model)


@dataclass(frozen=True)
class Readiness:
    """Whether the instance can serve. Only a caller with a valid key learns why not, or which
    model is served: probes send no key, and the reason names the store. A wrong key is refused
    as on any keyed route (and throttled)."""

    auth_enabled: bool
    authorize: Authorize
    reason: Callable[[], str | None]  # why the instance cannot serve yet; None when it can
    require_model: Callable[[], LoadedModel]

    def check(self, request: Request) -> LoadedModel | None:
        """Raise 503 unless the instance can serve; return the model to a keyed caller."""
        keyed = not self.auth_enabled or presented_key(request.headers) is not None
        if keyed:
            self.authorize(request.headers, request.remote_addr, 1)
        reason = self.reason()
        if reason:
            raise NotReady(reason if keyed else NOT_READY)
        model = self.require_model()
        return model if keyed else None

    def health(self, request: Request, args: dict[str, str]) -> Any:
        return {"status": "ok"}

    def ready(self, request: Request, args: dict[str, str]) -> Any:
        model = self.check(request)
        named = {"model": {"name": model.name, "version": model.version}} if model else {}
        return {"status": "ready", **named}

    def vertex_health(self, request: Request, args: dict[str, str]) -> Any:
        self.check(request)  # Vertex sends traffic only once this answers 200
        return {"status": "ready"}

    def v2_live(self, request: Request, args: dict[str, str]) -> Any:
        return {"live": True}

    def v2_ready(self, request: Request, args: dict[str, str]) -> Any:
        self.check(request)
        return {"ready": True}


@dataclass(frozen=True)
class Descriptions:
    """What is served: /model, its report files, the OpenAPI document, and the Open Inference
    Protocol's server and model metadata."""

    authorize: Authorize
    require_model: Callable[[], LoadedModel]
    current: Callable[[], LoadedModel | None]  # the served model, None before the first load
    named: Callable[[str, str | None], LoadedModel]  # the model an OIP path names, else 404
    rollout: Callable[[], dict[str, Any] | None]  # the rollout this instance takes part in
    report_file: Callable[[LoadedModel, str], bytes]
    readiness: Readiness
    limits: Limits

    def model(self, request: Request, args: dict[str, str]) -> Any:
        self.authorize(request.headers, request.remote_addr, 1)
        model = self.require_model()
        features = [f.describe() for f in model.schema.features]
        limits = {
            "max_instances_per_request": self.limits.max_instances,
            "max_request_bytes": self.limits.max_request_bytes,
        }
        served = {
            "runtime": model.runtime,
            "promotion": model.promotion,
            "rollout": self.rollout(),
            "limits": limits,
        }
        return {**model.metadata, "features": features, **served}

    def model_file(self, request: Request, args: dict[str, str]) -> Response:
        self.authorize(request.headers, request.remote_addr, 1)
        model = self.require_model()
        name = args["name"]
        data = self.report_file(model, name)
        kind = pages.TYPES.get(Path(name).suffix, "application/octet-stream")
        response = Response(data, content_type=kind)
        if name.endswith(".html"):  # saved, never rendered on this origin
            response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    def openapi(self, request: Request, args: dict[str, str]) -> Any:
        return document(self.current(), self.limits.max_instances)

    def v2_server(self, request: Request, args: dict[str, str]) -> Any:
        self.authorize(request.headers, request.remote_addr, 1)
        return v2_metadata.SERVER

    def v2_model(self, request: Request, args: dict[str, str]) -> Any:
        self.authorize(request.headers, request.remote_addr, 1)
        return v2_metadata.model_metadata(self.named(args["name"], args.get("version")))

    def v2_model_ready(self, request: Request, args: dict[str, str]) -> Any:
        self.authorize(request.headers, request.remote_addr, 1)  # it confirms names, versions
        self.readiness.check(request)
        model = self.named(args["name"], args.get("version"))
        return {"name": model.name, "ready": True}


@dataclass(frozen=True)
class Metrics:
    """GET /metrics: the instance's page (every worker's, merged), keyed unless public."""

    public: bool
    authorize: Authorize
    page: Callable[[], bytes]
    content_type: str

    def metrics(self, request: Request, args: dict[str, str]) -> Response:
        if not self.public:
            self.authorize(request.headers, request.remote_addr, 1)
        return Response(self.page(), content_type=self.content_type)


def page(request: Request, args: dict[str, str]) -> Any:
    return pages.page(request)


def asset(request: Request, args: dict[str, str]) -> Any:
    return pages.asset(request, args["name"])
