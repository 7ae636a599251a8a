"""Payload records off the request's path: a bounded queue and one writer thread.

    request ──answered()──▶ queue (bounded) ──writer thread──▶ stdout: one JSON line per record
                              │ full: dropped, counted             (Cloud Logging's jsonPayload,
                              ▼                                     label modelrun_record=payload,
              modelrun_payload_dropped_total                        routed by a sink to BigQuery)
                                                             └──▶ PAYLOAD_DIR/DATE/HOST-PID.jsonl

A request only decides whether it is sampled (a hash of its id: a shadow's record and its
answer's are sampled together) and appends what it already holds, its parsed rows and its
answer, to the queue; the writer turns them into records (function/core/records.py), redacts
them and writes them. Nothing on the request's path waits on I/O, and a writer that falls behind
costs the client nothing: past QUEUE_REQUESTS requests or QUEUE_ROWS rows waiting, a record is
dropped and counted. stop() (at exit: SIGTERM to a gunicorn worker ends in a normal exit) writes
what is queued.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from function.core.config import Config
from function.core.model import LoadedModel
from function.core.predict import Prediction
from function.core.records import FeedbackRecord, PredictionRecord, Role, encode, json_text
from function.service.redaction import Redactor

log = logging.getLogger("modelrun.payloads")

QUEUE_REQUESTS = 4096  # requests waiting for the writer, at most
QUEUE_ROWS = 200_000  # rows they hold together, at most (their memory, not their count)
WRITE_EVERY_SECONDS = 0.2  # the writer wakes this often: no wake-up per request
# Cloud Logging takes these out of a line into the entry's labels: a Log Router sink selects
# `labels.modelrun_record="payload"` (infra: the sink's filter).
CLOUD_LABELS = ',"logging.googleapis.com/labels":{"modelrun_record":"payload"}}'


@dataclass(frozen=True)
class Answered:
    """What one request (or a shadow's scoring of it) leaves for its record, as it holds it."""

    request_id: str
    time: float  # epoch seconds, when the request arrived
    model: LoadedModel | None
    role: Role
    protocol: str
    route: str
    status: int
    outcome: str
    latency_ms: float
    client: str
    X: Any  # the parsed rows, None when they did not parse
    prediction: Prediction | None

    @property
    def rows(self) -> int:
        return len(self.X) if self.X is not None else 0


Item = Answered | FeedbackRecord


def client_of(identity: str) -> str:
    """Who asked, as a record shows it: never the key, nor anything that leads back to it.

    The identity is the key's SHA-256 (auth.KeyRing); the record keeps 8 hex digits of a hash of
    that, 32 bits: enough to tell a few clients apart, far too few to test a guessed key against
    (every 32-bit value stands for countless keys)."""
    if identity == "anonymous":
        return identity
    return "key:" + hashlib.sha256(b"modelrun.client:" + identity.encode()).hexdigest()[:8]


def sampled_at(request_id: str, rate: float) -> bool:
    """Whether a request id falls within the sample: the same answer for the same id anywhere."""
    if rate <= 0:
        return False
    if rate >= 1:
        return True
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2**64


class Payloads:
    """The queue, the writer thread, and where it writes."""

    def __init__(
        self,
        config: Config,
        dropped: Callable[[str], None],
        stdout: Callable[[], Any] = lambda: sys.stdout,
    ) -> None:
        self.rate = config.payload_sample_rate
        self.folder = config.payload_dir
        self.redactor = Redactor(config.payload_redact, config.payload_digest_key)
        self._dropped = dropped
        self._stdout = stdout
        self._queue: deque[Item] = deque()
        self._rows = 0
        self._lock = threading.Lock()  # the queue's counts, and one writer at a time
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file_name = f"{socket.gethostname()}-{os.getpid()}.jsonl"

    @property
    def on(self) -> bool:
        return self.rate > 0

    def sampled(self, request_id: str | None) -> bool:
        return request_id is not None and sampled_at(request_id, self.rate)

    def start(self) -> None:
        """Start the writer (once per process, after gunicorn's fork); write the rest at exit."""
        if not self.on or self._thread is not None:
            return
        self._file_name = f"{socket.gethostname()}-{os.getpid()}.jsonl"
        self._thread = threading.Thread(target=self._run, name="payload-writer", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop the writer and write what is queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def submit(self, item: Item) -> None:
        """Queue one record's makings without waiting; drop it (counted) when the queue is full."""
        rows = item.rows if isinstance(item, Answered) else 0
        with self._lock:
            if len(self._queue) >= QUEUE_REQUESTS or self._rows + rows > QUEUE_ROWS:
                full = True
            else:
                full = False
                self._queue.append(item)
                self._rows += rows
        if full:
            self._dropped("queue_full")

    def flush(self) -> int:
        """Write every queued record now; return how many were written."""
        with self._write_lock:
            with self._lock:
                items, self._queue = list(self._queue), deque()
                self._rows = 0
            if not items:
                return 0
            lines = []
            for item in items:
                try:
                    lines.append(encode(self.record(item)))
                except Exception:  # one odd value costs its record, not the others
                    log.exception("a payload record could not be made")
                    self._dropped("unwritable")
            return self._write(lines)

    def record(self, item: Item) -> PredictionRecord | FeedbackRecord:
        """The record for a queued item: rows by feature name (redacted), answers by row."""
        if isinstance(item, FeedbackRecord):
            return item
        model = item.model
        inputs = outputs = None
        if item.X is not None and model is not None:
            inputs = json_text(self.redactor.apply(rows_of(item.X, model.feature_names)))
        if item.prediction is not None and model is not None:
            outputs = json_text(answers_of(item.prediction, model))
        return PredictionRecord(
            request_id=item.request_id,
            time=timestamp(item.time),
            model=model.name if model else "",
            version=model.version if model else None,
            role=item.role,
            protocol=item.protocol,
            route=item.route,
            status=item.status,
            outcome=item.outcome,
            latency_ms=round(item.latency_ms, 3),
            client=item.client,
            inputs=inputs,
            outputs=outputs,
        )

    def _run(self) -> None:
        while not self._stop.wait(WRITE_EVERY_SECONDS):
            try:
                self.flush()
            except Exception:  # the writer outlives any one failure
                log.exception("payload writer failed")

    def _write(self, lines: list[str]) -> int:
        out = self._stdout()
        try:
            out.write("".join(line[:-1] + CLOUD_LABELS + "\n" for line in lines))
            out.flush()
        except (OSError, ValueError):  # a closed stdout: the local folder may still take them
            pass
        if self.folder is None:
            return len(lines)
        day = time.strftime("%Y-%m-%d", time.gmtime())
        path = self.folder / day / self._file_name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))
        except OSError as e:
            log.error("cannot write payload records to %s: %s", path, e)
            for _ in lines:
                self._dropped("write_failed")
            return 0
        return len(lines)


def rows_of(X: Any, names: list[str]) -> list[dict[str, Any]]:
    """Rows as {feature: value}, from a matrix or a DataFrame."""
    if hasattr(X, "to_dict"):  # a DataFrame
        return [{str(k): plain(v) for k, v in row.items()} for row in X.to_dict("records")]
    return [dict(zip(names, row, strict=False)) for row in X.tolist()]


def plain(value: Any) -> Any:
    """A DataFrame's cell as JSON takes it (pandas' missing values as null)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    item = getattr(value, "item", None)
    if item is not None:
        return item()
    return None if _missing(value) else str(value)


def _missing(value: Any) -> bool:
    try:
        return bool(value != value)  # NaN, NaT; pd.NA raises
    except TypeError:
        return True


def answers_of(prediction: Prediction, model: LoadedModel) -> list[dict[str, Any]]:
    """Each row's answer: a label (with its probabilities when computed), or a value."""
    if model.metadata.task != "classification":
        return [{"value": v} for v in prediction.labels]
    if prediction.probabilities is None:
        return [{"label": label} for label in prediction.labels]
    classes = prediction.classes
    return [
        {"label": label, "probabilities": dict(zip(classes, row, strict=True))}
        for label, row in zip(prediction.labels, prediction.probabilities.tolist(), strict=True)
    ]


def timestamp(epoch: float) -> str:
    """RFC 3339 in UTC, to the millisecond."""
    second = int(epoch)
    whole = _seconds.get(second)
    if whole is None:  # one strftime a second, not one a record
        whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _seconds.clear()
        _seconds[second] = whole
    return f"{whole}.{int((epoch - second) * 1000):03d}Z"


_seconds: dict[int, str] = {}


def files(folder: Path) -> list[Path]:
    """The record files under a PAYLOAD_DIR, oldest day first."""
    return sorted(folder.glob("*/*.jsonl"))
