"""The live-quality join (live_quality.sql), run by BigQuery in the cloud and by DuckDB offline.

The one SQL text is BigQuery's. Offline, sqlglot translates it for DuckDB over a table of the
sink's shape (`timestamp`, `jsonPayload`) made from the local records; one translation is wrong
and corrected here (see `duckdb_sql`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from function.core import records
from function.core.errors import IntegrityError
from training.errors import TrainingError

SQL = files("training").joinpath("live_quality.sql").read_text()
# The table a Log Router sink writes Cloud Run's stdout into (the log's name, dots and slashes
# as underscores); with partitioned tables it has no date suffix.
SINK_TABLE = "run_googleapis_com_stdout"
_DATASET = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]\.[A-Za-z0-9_]{1,1024}$")


@dataclass(frozen=True)
class Joined:
    """One row of the join: an answered row with its label (or, once per version and role, the
    count alone)."""

    version: str
    role: str
    predicted: str | None  # the label or value as text
    truth: str | None  # the same; None: not labelled
    answered: int  # the rows this version answered in that role over the window


@dataclass(frozen=True)
class LocalRecords:
    """The records of a local folder, and how many lines could not be read as one."""

    records: list[records.Record]
    bad_lines: int
    files: int


def read_folder(uri: str) -> LocalRecords:
    """Parse every line of every *.jsonl file under a file:// folder; skip and count the bad."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise TrainingError(f"--records takes a file:// folder, not {uri!r}")
    folder = Path(parsed.path or uri)
    if not folder.is_dir():
        raise TrainingError(f"--records {uri}: no such folder")
    found: list[records.Record] = []
    bad = 0
    paths = sorted(folder.rglob("*.jsonl"))
    for path in paths:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    found.append(records.parse(line, f"{path}:{number}"))
                except IntegrityError:
                    bad += 1
    return LocalRecords(found, bad, len(paths))


def duckdb_sql() -> str:
    """The SQL in DuckDB's dialect. sqlglot writes BigQuery's `WITH OFFSET` (from 0) as DuckDB's
    `WITH ORDINALITY` (from 1) unchanged (sqlglot 30.11 and 30.30, measured): every row index
    would be one too high and no label would meet its answer. Each offset is lowered by one."""
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(SQL.format(payloads="payloads"), read="bigquery")
    for unnest in list(tree.find_all(exp.Unnest)):
        offset = unnest.args.get("offset")
        select = unnest.find_ancestor(exp.Select)
        if offset is None or select is None:
            continue
        for column in list(select.find_all(exp.Column)):
            if column.name == offset.name and not column.table:
                column.replace(
                    exp.paren(exp.Sub(this=column.copy(), expression=exp.Literal.number(1)))
                )
    return tree.sql(dialect="duckdb")


def query_local(found: Iterable[records.Record], model: str, since: datetime) -> list[Joined]:
    """Run the join on DuckDB over the records, in a table of the sink's shape."""
    import duckdb
    import pandas as pd

    # One column each, handed to DuckDB whole: inserting row by row (executemany) took minutes
    # for 100,000 records.
    rows = pd.DataFrame([_sink_row(r) for r in found], columns=_COLUMNS)
    rows["row"] = rows["row"].astype("Int64")  # whole numbers and gaps (not floats and NaN)
    con = duckdb.connect()
    con.register("flat", rows)
    con.execute(
        "CREATE TABLE payloads AS SELECT CAST(timestamp AS TIMESTAMPTZ) AS timestamp, "
        "struct_pack(kind := kind, request_id := request_id, model := model, "
        "version := version, role := role, outcome := outcome, outputs := outputs, "
        '"row" := "row", truth := truth) AS jsonPayload FROM flat'
    )
    result = con.execute(duckdb_sql(), {"model": model, "since": since}).fetchall()
    return [Joined(*row) for row in result]


def query_bigquery(
    dataset: str, model: str, since: datetime, page_rows: int | None = None
) -> list[Joined]:
    """Run the join in BigQuery over the sink's table in PROJECT.DATASET (page_rows: see
    training.bigquery.query)."""
    if not _DATASET.match(dataset):
        raise TrainingError(f"--bigquery {dataset!r} must be PROJECT.DATASET")
    from training import bigquery

    parameters = {
        "model": ("STRING", model),
        "since": ("TIMESTAMP", since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")),
    }
    sql = SQL.format(payloads=f"`{dataset}.{SINK_TABLE}`")
    found = bigquery.query(dataset.split(".")[0], sql, parameters, dataset, page_rows)
    return [
        Joined(r["version"], r["role"], r["predicted"], r["truth"], r["answered"]) for r in found
    ]


_COLUMNS = ["timestamp", "kind", "request_id", "model", "version", "role", "outcome", "outputs",
            "row", "truth"]  # fmt: skip


def _sink_row(record: records.Record) -> tuple[Any, ...]:
    """A record as the sink stores it, flat: its time (the entry's timestamp), then the fields of
    jsonPayload the join reads."""
    if isinstance(record, records.PredictionRecord):
        return (record.time, record.kind, record.request_id, record.model, record.version,
                record.role, record.outcome, record.outputs, None, None)  # fmt: skip
    return (record.time, record.kind, record.request_id, record.model, None, None, None, None,
            record.row, record.truth)  # fmt: skip


def sink_payload(record: records.Record) -> tuple[str, dict[str, Any]]:
    """The record's entry time and its jsonPayload fields that the join reads (None left out)."""
    time, *fields = _sink_row(record)
    payload = dict(zip(_COLUMNS[1:], fields, strict=True))
    return time, {k: v for k, v in payload.items() if v is not None}
