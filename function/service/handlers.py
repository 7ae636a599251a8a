"""The route handlers, thin over the prediction core: each group is built with what it uses.

A handler takes the request's exchange (router.Exchange) and the path's arguments, and returns a
body (JSON) or a Response; it raises a typed error (function/core/errors.py) for anything else.
The prediction handlers note on the exchange what the request's payload record is made of (who
asked, the version, the parsed rows, the answer); responses.after_response queues it. app.py
wires the groups to the service's parts, and router.py names the paths.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from flask import Request, Response
from werkzeug.datastructures import Headers

from function.core import explain
from function.core.drift import Drift
from function.core.errors import Conflict, InvalidInput, NotReady
from function.core.explain import Explainers
from function.core.model import LoadedModel
from function.core.predict import Instances, Prediction, Run, answer, infer, parse_instances
from function.core.store import ModelStore
from function.service import feedback, pages, request_ids
from function.service.auth import presented_key
from function.service.body import read_bytes, read_json
from function.service.deadline import Deadlines
from function.service.openapi import document
from function.service.payloads import Answered, Payloads, client_of
from function.service.protocols import native, v2_binary, v2_metadata, v2_request, v2_response
from function.service.served import Served
from function.service.shadow import Recorder, ShadowScorer
from function.service.telemetry import Telemetry

if TYPE_CHECKING:  # router.py imports this module; the exchange is only named here
    from function.service.router import Exchange

log = logging.getLogger("modelrun.http")
NOT_READY = "not ready to serve; a caller with an API key is told why"
VERSION_HEADER = "X-Model-Version"  # on every prediction: the version that answered

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


def authorized(authorize: Authorize, exchange: Exchange, cost: int = 1) -> str:
    """The caller's identity (as Authorize), noted as the client of the request's payload record."""
    request = exchange.request
    identity = authorize(request.headers, request.remote_addr, cost)
    exchange.client = client_of(identity)
    return identity


def answered(body: Any, model: LoadedModel) -> Response:
    """A prediction's answer, saying which version gave it (a canary has two)."""
    response = json_response(body, 200)
    response.headers[VERSION_HEADER] = model.version
    return response


@dataclass(frozen=True)
class Scorer:
    """Runs the answering model, timed and counted by version; hands the rows and the answer to
    a shadow candidate (it cannot change the answer), and counts the drift bins and the
    answers' confidence (the live accuracy estimate: function/service/confidence.py)."""

    run_model: Run
    telemetry: Telemetry
    drift: Drift
    payloads: Payloads  # a sampled request's shadow answer is recorded too

    def score(
        self,
        exchange: Exchange,
        model: LoadedModel,
        shadow: ShadowScorer | None,
        instances: Instances,
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
        exchange.prediction = prediction
        if prediction.probabilities is not None:
            self.telemetry.confident(model.version, "answer", prediction.probabilities)
        if shadow is not None:
            sampled = self.payloads.sampled(exchange.request_id)
            record = self._shadow_record(exchange) if sampled else None
            shadow.submit(instances.X, prediction, record)
        self._count(model, instances, prediction.labels)
        return prediction

    def _shadow_record(self, exchange: Exchange) -> Recorder:
        """The payload record of a shadow candidate's answer to this request (its own thread's)."""
        submit, arrived = self.payloads.submit, exchange.arrived
        request_id, client, X = exchange.request_id or "", exchange.client, exchange.X
        path = exchange.request.path  # read now: the request is gone when the shadow answers
        match = exchange.match
        protocol = (match.route.records if match else None) or "native"

        def record(candidate: LoadedModel, prediction: Prediction | None, seconds: float) -> None:
            submit(
                Answered(
                    request_id=request_id,
                    time=arrived,
                    model=candidate,
                    role="shadow",
                    protocol=protocol,
                    route=path,
                    status=200 if prediction else 500,
                    outcome="ok" if prediction else "model-error",
                    latency_ms=seconds * 1000,
                    client=client,
                    X=X,
                    prediction=prediction,
                )
            )

        return record

    def _count(self, model: LoadedModel, instances: Instances, labels: list[Any]) -> None:
        """Count the answered rows: predictions by class, and the drift bins of rows and
        answers."""
        self.telemetry.predicted(model.version, labels, model.metadata.classifier)
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

    def predict(self, exchange: Exchange, args: dict[str, str]) -> Response:
        model, shadow, instances = self._instances(exchange)
        prediction = self.scorer.score(exchange, model, shadow, instances)
        return answered(answer(model, prediction), model)

    def vertex_predict(self, exchange: Exchange, args: dict[str, str]) -> Response:
        model, shadow, instances = self._instances(exchange)
        prediction = self.scorer.score(exchange, model, shadow, instances)
        return answered(native.vertex_answer(prediction), model)

    def v2_infer(self, exchange: Exchange, args: dict[str, str]) -> Response:
        request = exchange.request
        identity = authorized(self.authorize, exchange)
        served, shadow = self.serving(identity, request.headers, args.get("version"))
        model = exchange.model = v2_metadata.select(served, args["name"], args.get("version"))
        limit, most = self.limits.max_instances, self.limits.max_request_bytes
        header_length = request.headers.get(v2_binary.BINARY_HEADER)
        if header_length is None:
            body = read_json(request, most, type_required=False)
        else:  # tensors as raw bytes after a JSON part (tritonclient's default)
            data = read_bytes(request, most)
            body = v2_binary.binary_request(data, header_length, model.schema, limit)
        with self.deadlines.interruptible():
            instances, outputs, request_id = v2_request.parse_request(body, model, limit)
        exchange.X = instances.X
        # v2's own id names the request when the client sent no X-Request-Id and it can be one;
        # the body echoes it as sent either way.
        own = isinstance(request_id, str) and request_ids.valid(request_id)
        if own and request_ids.HEADER not in request.headers:
            exchange.request_id = request_id
        prediction = self.scorer.score(exchange, model, shadow, instances)
        return answered(v2_response.response(model, prediction, outputs, request_id), model)

    def _instances(self, exchange: Exchange) -> tuple[LoadedModel, ShadowScorer | None, Instances]:
        request = exchange.request
        identity = authorized(self.authorize, exchange)
        model, shadow = self.serving(identity, request.headers, None)
        exchange.model = model
        body = read_json(request, self.limits.max_request_bytes)
        with self.deadlines.interruptible():
            instances = parse_instances(body, model.schema, self.limits.max_instances)
        exchange.X = instances.X
        return model, shadow, instances


@dataclass(frozen=True)
class Explanations:
    """POST /explain: the prediction split into a base value and one attribution per input
    feature (function/core/explain.py), counted as EXPLAIN_COST predictions against the rate
    limit."""

    authorize: Authorize
    serving: Serving
    deadlines: Deadlines
    limits: Limits
    explainers: Explainers
    store: ModelStore
    allow_pickle: bool

    def explain(self, exchange: Exchange, args: dict[str, str]) -> Response:
        request = exchange.request
        identity = authorized(self.authorize, exchange, explain.EXPLAIN_COST)
        model, _ = self.serving(identity, request.headers, None)
        exchange.model = model
        body, wanted = explain.parse_parameters(read_json(request, self.limits.max_request_bytes))
        with self.deadlines.interruptible():
            instances = parse_instances(body, model.pipeline_schema, self.limits.max_instances)
        exchange.X = instances.X
        # Built outside the time limit's reach: an import stopped half-way would stay broken.
        explainer = self.explainers.get(model, self.store, self.allow_pickle)
        with self.deadlines.interruptible():
            explanation = explainer.explain(instances, wanted)
        return answered(explain.answer(model, explainer, explanation), model)


@dataclass(frozen=True)
class Feedback:
    """POST /feedback: labels for earlier answers (function/service/feedback.py), each one
    recorded, whatever the sample rate, while records are on. Feedback is rare and each label is
    worth more than any one answer; sampling it again would lose labels whose answers were
    recorded."""

    authorize: Authorize
    require_model: Callable[[], LoadedModel]
    payloads: Payloads
    limits: Limits

    def feedback(self, exchange: Exchange, args: dict[str, str]) -> Response:
        authorized(self.authorize, exchange)
        model = self.require_model()
        if not self.payloads.on:
            raise Conflict(
                "payload records are off (PAYLOAD_SAMPLE_RATE=0): feedback would not be kept"
            )
        body = read_json(exchange.request, self.limits.max_request_bytes)
        records = feedback.parse(body, model, exchange.client, self.limits.max_instances)
        for record in records:
            self.payloads.submit(record)
        return json_response({"accepted": len(records)}, 202)


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

    def health(self, exchange: Exchange, args: dict[str, str]) -> Any:
        return {"status": "ok"}

    def ready(self, exchange: Exchange, args: dict[str, str]) -> Any:
        model = self.check(exchange.request)
        named = {"model": {"name": model.name, "version": model.version}} if model else {}
        return {"status": "ready", **named}

    def vertex_health(self, exchange: Exchange, args: dict[str, str]) -> Any:
        self.check(exchange.request)  # Vertex sends traffic only once this answers 200
        return {"status": "ready"}

    def v2_live(self, exchange: Exchange, args: dict[str, str]) -> Any:
        return {"live": True}

    def v2_ready(self, exchange: Exchange, args: dict[str, str]) -> Any:
        self.check(exchange.request)
        return {"ready": True}


@dataclass(frozen=True)
class Descriptions:
    """What is served: /model, its report files, the OpenAPI document, and the Open Inference
    Protocol's server and model metadata."""

    authorize: Authorize
    require_model: Callable[[], LoadedModel]
    served: Callable[[], Served]  # what this process serves now, one snapshot
    current: Callable[[], LoadedModel | None]  # the served model, None before the first load
    named: Callable[[str, str | None], LoadedModel]  # the model an OIP path names, else 404
    report_file: Callable[[LoadedModel, str], bytes]
    readiness: Readiness
    limits: Limits

    def model(self, exchange: Exchange, args: dict[str, str]) -> Any:
        authorized(self.authorize, exchange)
        served = self.served()  # once: the model and the rollout shown are one instant's
        model = served.require_model()
        features = [f.describe() for f in model.schema.features]
        limits = {
            "max_instances_per_request": self.limits.max_instances,
            "max_request_bytes": self.limits.max_request_bytes,
        }
        shown = {
            "runtime": model.runtime,
            "promotion": model.promotion.to_json() if model.promotion else None,
            "rollout": served.rollout(),
            "limits": limits,
        }
        return {**model.metadata.to_json(), "features": features, **shown}

    def model_file(self, exchange: Exchange, args: dict[str, str]) -> Response:
        authorized(self.authorize, exchange)
        model = self.require_model()
        name = args["name"]
        data = self.report_file(model, name)
        kind = pages.TYPES.get(Path(name).suffix, "application/octet-stream")
        response = Response(data, content_type=kind)
        if name.endswith(".html"):  # saved, never rendered on this origin
            response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    def openapi(self, exchange: Exchange, args: dict[str, str]) -> Any:
        return document(self.current(), self.limits.max_instances)

    def v2_server(self, exchange: Exchange, args: dict[str, str]) -> Any:
        authorized(self.authorize, exchange)
        return v2_metadata.SERVER

    def v2_model(self, exchange: Exchange, args: dict[str, str]) -> Any:
        authorized(self.authorize, exchange)
        return v2_metadata.model_metadata(self.named(args["name"], args.get("version")))

    def v2_model_ready(self, exchange: Exchange, args: dict[str, str]) -> Any:
        authorized(self.authorize, exchange)  # it confirms names, versions
        self.readiness.check(exchange.request)
        model = self.named(args["name"], args.get("version"))
        return {"name": model.name, "ready": True}


@dataclass(frozen=True)
class Metrics:
    """GET /metrics: the instance's page (every worker's, merged), keyed unless public."""

    public: bool
    authorize: Authorize
    page: Callable[[], bytes]
    content_type: str

    def metrics(self, exchange: Exchange, args: dict[str, str]) -> Response:
        if not self.public:
            authorized(self.authorize, exchange)
        return Response(self.page(), content_type=self.content_type)


def page(exchange: Exchange, args: dict[str, str]) -> Any:
    return pages.page(exchange.request)


def asset(exchange: Exchange, args: dict[str, str]) -> Any:
    return pages.asset(exchange.request, args["name"])
