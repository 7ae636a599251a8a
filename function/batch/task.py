"""One task of a batch job: its share of the input scored into its own output, then the manifest.

Under the output prefix, for task i of n (five digits each):

    part-0000i-of-0000n.csv       its answers (output.py), written whole or not at all
    errors-0000i-of-0000n.jsonl   its refused rows, with the API's messages
    _tasks/0000i-of-0000n.json    its summary, written last: the task is done when it exists
    _manifest.json                the job's, written by the task that finds every summary
    _tmp/                         objects being written (core/storage.py); removed when published,
                                  and the folder too when a task ends and it is empty

Every object is created, never overwritten, and holds the same bytes whenever the same task
scores the same input with the same model: a retried task or a rerun job finds its summary and
stops, or writes what is already there. A summary from another model version or another input
is refused, naming both, so one output never mixes two runs.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import orjson

from function.batch.objects import (
    Writer,
    contains,
    create,
    discard_staged,
    join,
    open_place,
    relative_name,
)
from function.batch.output import error_lines, result_header, result_lines
from function.batch.rows import CsvFormat, JsonLinesFormat, Scored, score
from function.batch.shards import LineReader, Range, lines_before, read_header, task_ranges
from function.core.errors import Conflict, InvalidInput, ModelrunError
from function.core.model import LoadedModel, load_model
from function.core.signing import Trust
from function.core.storage import Item, Storage, read_or_none
from function.core.store import ModelStore

log = logging.getLogger("modelrun.batch")

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
MANIFEST = "_manifest.json"


class TooManyErrors(ModelrunError):
    """More of a task's rows were refused than --max-error-share allows."""

    status, title = 422, "Too Many Bad Rows"


@dataclass(frozen=True)
class Job:
    """What one task is told: the job's settings (the same for every task) and its index."""

    input: str
    output: str
    model_uri: str
    model_version: str = "current"
    model_sha256: str | None = None
    runtime: str = "auto"
    allow_pickle: bool = True
    trust: Trust = field(default_factory=Trust)  # MODEL_PUBLIC_KEY, ALLOW_UNSIGNED_MODELS
    id_column: str | None = None
    task_index: int = 0
    task_count: int = 1
    max_error_share: float = 0.01
    progress_rows: int = 1_000_000
    block_bytes: int = 1 << 20  # measured: 4 MiB blocks hold twice the memory for no speed
    store_timeout: float = 30.0

    @property
    def names(self) -> tuple[str, str, str]:
        """This task's results, errors and summary names."""
        of = f"{self.task_index:05d}-of-{self.task_count:05d}"
        return f"part-{of}.csv", f"errors-{of}.jsonl", f"_tasks/{of}.json"


def run_task(job: Job) -> dict[str, Any]:
    """Score this task's share (or find it done); write the manifest if every task is done.
    Raise TooManyErrors after writing everything when the share of refused rows is too high."""
    source = open_place(job.input, job.store_timeout)
    output = open_place(job.output, job.store_timeout)
    # A later run would read this run's outputs as its input.
    if contains(source.location, output.location):
        raise InvalidInput(f"--output {job.output} is inside --input {job.input}: choose another")
    try:
        return _run_task(job, source, output)
    finally:
        output.tidy()


def _run_task(job: Job, source: Storage, output: Storage) -> dict[str, Any]:
    items, fmt = list_inputs(source)
    model = load_model(
        ModelStore(job.model_uri, timeout=job.store_timeout, trust=job.trust),
        job.model_version,
        job.model_sha256,
        job.allow_pickle,
        job.runtime,
    )
    identity = _identity(job, model, source, items, fmt)
    summary_name = job.names[2]
    done = read_or_none(output, summary_name)
    if done is not None:
        summary = _same_run(orjson.loads(done), identity, join(output.uri, summary_name))
        log.info("task %d/%d was already done", job.task_index, job.task_count)
    else:
        _refuse_another_run(output, identity)
        summary = {**identity, **_score_share(job, model, source, output, items, fmt)}
        with create(output, summary_name) as f:
            f.write(_json(summary))
    write_manifest(output, job.task_count)
    share = summary["errors"] / max(summary["rows"], 1)
    if share > job.max_error_share:
        raise TooManyErrors(
            f"task {job.task_index}: {summary['errors']} of {summary['rows']} rows "
            f"({share:.2%}) were refused, more than --max-error-share {job.max_error_share:.2%}; "
            f"see {join(output.uri, job.names[1])}"
        )
    return summary


def list_inputs(source: Storage) -> tuple[list[Item], str]:
    """The input files (CSV or JSON Lines, one format per job), sorted by name."""
    listed = source.items()
    items = [i for i in listed if i.size and PurePosixPath(i.uri).suffix in FORMATS]
    items = [i for i in items if not PurePosixPath(i.uri).name.startswith(("_", "."))]
    formats = {FORMATS[PurePosixPath(i.uri).suffix] for i in items}
    if not items:
        others = {PurePosixPath(i.uri).suffix for i in listed} - set(FORMATS)
        raise InvalidInput(
            f"{source.uri} holds no .csv, .jsonl or .ndjson file with rows"
            + (f" (found {', '.join(sorted(others))}: export CSV or JSON Lines)" if others else "")
        )
    if len(formats) > 1:
        raise InvalidInput(f"{source.uri} mixes CSV and JSON Lines files: give one format per job")
    return items, formats.pop()


def _score_share(
    job: Job, model: LoadedModel, source: Storage, output: Storage, items: list[Item], fmt: str
) -> dict[str, Any]:
    results_name, errors_name, _ = job.names
    for name in (results_name, errors_name):  # what a killed attempt left half-written
        discard_staged(output, name)
    ranges = task_ranges(items, job.task_index, job.task_count)
    # Line numbers restart in each file: with several, a row is known as FILE:LINE.
    named = len(items) > 1 and not job.id_column
    progress = Progress(job, sum(r.end - r.start for r in ranges))
    id_name = job.id_column or "line"
    classes = [str(c) for c in getattr(model.estimator, "classes_", [])]
    counts = {"rows": 0, "scored": 0, "errors": 0}
    read: list[dict[str, Any]] = []
    with create(output, results_name) as results, create(output, errors_name) as errors:
        results.write(result_header(id_name, classes, model.has_probabilities))
        for piece in ranges:
            reader = LineReader(source, piece, job.block_bytes)
            file_name = relative_name(source.uri, piece.item.uri) if named else None
            for part, offsets in _score_range(job, model, source, reader, fmt, file_name):
                results.write(result_lines(part.ids, part.prediction) if part.prediction else b"")
                errors.write(error_lines(id_name, piece.item.uri, part.errors, offsets))
                counts["scored"] += len(part.ids)
                counts["errors"] += len(part.errors)
                counts["rows"] += len(part.ids) + len(part.errors)
                progress.update(counts["rows"], reader.last - piece.start)
            progress.done_bytes += piece.end - piece.start
            read.append(
                {
                    "uri": piece.item.uri,
                    "start": reader.first,
                    "end": reader.last,
                    "sha256": reader.sha256,
                }
            )
    progress.finish(counts["rows"])
    return {
        **counts,
        "read": read,
        "results": _described(results_name, results, counts["scored"]),
        "errors_file": _described(errors_name, errors, counts["errors"]),
    }


def _score_range(
    job: Job, model: LoadedModel, source: Storage, reader: LineReader, fmt: str, name: str | None
) -> Iterator[tuple[Scored, list[int]]]:
    """Each block of the range's lines, parsed and scored, with each row's byte offset. A row
    is known by its id column's value, else by its line number (prefixed with its file's
    `name` when the input has several)."""
    piece: Range = reader.piece
    parser: CsvFormat | JsonLinesFormat
    if fmt == "csv":
        parser = CsvFormat(
            read_header(source, piece.item), model.schema, job.id_column, piece.item.uri
        )
        if parser.ignored and piece.start == 0:  # said once per file: by its first range
            log.info(
                "%s: columns that are not features, ignored: %s",
                piece.item.uri,
                ", ".join(parser.ignored),
            )
    else:
        parser = JsonLinesFormat(model.schema, job.id_column)
    number = None
    for block in reader.blocks():
        if number is None:  # lines are numbered from 1, as editors show them
            number = 1 if job.id_column else lines_before(source, piece.item, block.offset) + 1
        raw = block.data.split(b"\n")
        if raw[-1] == b"":
            raw.pop()
        header = fmt == "csv" and block.offset == 0
        at: Sequence[int] = range(1 if header else 0, len(raw))  # each row's line in the block
        lines = raw[1:] if header else raw
        if b"\r" in block.data:
            lines = [line.rstrip(b"\r") for line in lines]
        if b"" in lines:  # blank lines are not rows
            kept = [k for k, line in enumerate(lines) if line]
            lines, at = [lines[k] for k in kept], [at[k] for k in kept]
        if lines:
            ids: list[Any] = (
                list(range(number + at.start, number + at.stop))
                if isinstance(at, range)
                else [number + k for k in at]
            )
            if name is not None:
                ids = [f"{name}:{n}" for n in ids]
            scored = score(model, parser.parse(lines, ids))
            yield scored, _line_starts(block.offset, raw, at) if scored.errors else []
        number += len(raw)


def _line_starts(offset: int, lines: list[bytes], at: Sequence[int]) -> list[int]:
    """Where each of the lines `at` starts in the file (to place refused rows)."""
    starts = list(itertools.accumulate((len(line) + 1 for line in lines), initial=offset))
    return [starts[k] for k in at]


def write_manifest(output: Storage, count: int) -> bool:
    """Write the job's manifest once every task's summary exists; say whether it exists."""
    if read_or_none(output, MANIFEST) is not None:
        return True
    suffix = f"-of-{count:05d}.json"
    names = [n for n in output.keys("_tasks/") if n.endswith(suffix)]
    if len(names) < count:
        return False
    # Read at once: the last of ten thousand tasks would otherwise wait for 10,000 GETs in turn.
    with ThreadPoolExecutor(max_workers=16) as pool:
        found = pool.map(lambda name: read_or_none(output, name), sorted(names))
        summaries = [orjson.loads(d or b"{}") for d in found]
    first = summaries[0]
    for other in summaries[1:]:
        _same_run(other, _identity_of(first), join(output.uri, "_tasks/"))
    rows = sum(s["rows"] for s in summaries)
    errors = sum(s["errors"] for s in summaries)
    manifest = {
        **_identity_of(first),
        "rows": rows,
        "scored": sum(s["scored"] for s in summaries),
        "errors": errors,
        "error_share": errors / rows if rows else 0.0,
        "parts": [
            {
                "task": s["task"],
                "read": s["read"],
                "results": s["results"],
                "errors_file": s["errors_file"],
            }
            for s in summaries
        ],
    }
    with create(output, MANIFEST) as f:
        f.write(_json(manifest))
    log.info("the job's manifest is written", extra={"fields": {"rows": rows, "errors": errors}})
    return True


IDENTITY = ("model", "input", "id", "tasks")


def _identity(
    job: Job, model: LoadedModel, source: Storage, items: list[Item], fmt: str
) -> dict[str, Any]:
    """What makes two tasks parts of one run: the model, the input as listed, the task count."""
    return {
        "task": job.task_index,
        "tasks": job.task_count,
        "model": {
            "name": model.name,
            "version": model.version,
            "sha256": model.sha256,
            "runtime": model.runtime,
        },
        "input": {
            "uri": source.uri,
            "format": fmt,
            "files": [{"uri": i.uri, "size": i.size, "version": i.version} for i in items],
        },
        "id": job.id_column or "line",
    }


def _refuse_another_run(output: Storage, identity: dict[str, Any]) -> None:
    """Refuse an output that holds another run's tasks (another model, input, id or task
    count): its parts and ours would mix, a row scored in both."""
    names = output.keys("_tasks/")
    ours = f"-of-{identity['tasks']:05d}.json"
    other = next((n for n in names if not n.endswith(ours)), names[0] if names else None)
    if other is not None:
        summary = orjson.loads(read_or_none(output, other) or b"{}")
        _same_run(summary, identity, join(output.uri, other))


def _identity_of(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in IDENTITY}


def _same_run(summary: dict[str, Any], identity: dict[str, Any], where: str) -> dict[str, Any]:
    """The summary, if it belongs to this run; else Conflict naming what differs."""
    said = {
        "model": lambda: (
            f"model version {summary['model'].get('version')} there, "
            f"{identity['model']['version']} here (pin MODEL_VERSION to finish that run)"
        ),
        "input": lambda: "the input files were listed with other sizes or generations",
        "tasks": lambda: f"{summary.get('tasks')} tasks there, {identity['tasks']} here",
        "id": lambda: f"rows known by {summary.get('id')!r} there, {identity['id']!r} here",
    }
    differs = [k for k in IDENTITY if summary.get(k) != identity[k]]
    if differs:
        raise Conflict(
            f"{where} is from another run: {'; '.join(said[k]() for k in differs)}. Nothing was "
            "overwritten; write to a new --output prefix"
        )
    return summary


def _described(name: str, writer: Writer, rows: int) -> dict[str, Any]:
    return {"name": name, "rows": rows, "bytes": writer.size, "sha256": writer.sha256}


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


class Progress:
    """A log line every `progress_rows` rows: rows, rate, share of the bytes done, ETA."""

    def __init__(self, job: Job, total_bytes: int) -> None:
        self.job, self.total = job, max(total_bytes, 1)
        self.started = time.monotonic()
        self.done_bytes = 0
        self.next_at = job.progress_rows

    def update(self, rows: int, bytes_in_range: int) -> None:
        if rows < self.next_at:
            return
        self.next_at = rows + self.job.progress_rows
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = min((self.done_bytes + bytes_in_range) / self.total, 1.0)
        eta = elapsed * (1 - done) / done if done else None
        rate = rows / elapsed
        log.info(
            "task %d/%d: %d rows, %.0f rows/s, %.0f%% done, ETA %s",
            self.job.task_index,
            self.job.task_count,
            rows,
            rate,
            100 * done,
            "unknown" if eta is None else f"{eta:.0f} s",
            extra={
                "fields": {
                    "task": self.job.task_index,
                    "rows": rows,
                    "rows_per_second": round(rate, 1),
                    "done": round(done, 4),
                    "eta_seconds": None if eta is None else round(eta, 1),
                }
            },
        )

    def finish(self, rows: int) -> None:
        elapsed = time.monotonic() - self.started
        log.info(
            "task %d/%d scored its share: %d rows in %.1f s",
            self.job.task_index,
            self.job.task_count,
            rows,
            elapsed,
            extra={
                "fields": {
                    "task": self.job.task_index,
                    "rows": rows,
                    "seconds": round(elapsed, 3),
                    "rows_per_second": round(rows / max(elapsed, 1e-9), 1),
                }
            },
        )
