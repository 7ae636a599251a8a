"""A block of lines as rows: parsed (CSV or JSON Lines), checked with the API's own checks, scored.

A bad row does not stop the others. Each block is first checked whole; when a check refuses it,
the block is halved until each refused row is found alone, with the same field-precise message
the API gives (`schema.check_columns`, `predict.infer`), and the remaining rows go on together.
A clean block, the common case, costs one check and one model call.

What a file's text means, the same in both formats and both parsing paths:
- an empty CSV cell, or a JSON null or absent key, is a missing value (refused unless the feature
  may be missing); a CSV header names every feature; columns or keys that are not features are
  ignored and a CSV's are listed (the id column is copied);
- a CSV number is read as a number, anything else there is refused as the API refuses a string;
  a boolean is `true` or `false` (any case); a category is the cell's text;
- a row is one line: a CSV field holding a newline is not supported.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from function.core.errors import InvalidInput
from function.core.model import LoadedModel
from function.core.predict import Instances, Prediction, check_length, infer, not_a_row
from function.core.schema import Feature, Schema

END = "\x1fend"  # a column after the last: a CSV line with too few fields leaves it empty
BOOLEANS = {"true": True, "false": False}
# How pandas' C parser reads a number in the fast path (a cell it cannot read sends the block to
# the slow path); every other type is read as text and turned into values below.
PANDAS_TYPES = {"number": "float64", "integer": "float64"}


@dataclass
class Rows:
    """A block's rows: identifiers, values by feature, and the rows that failed to parse."""

    ids: list[Any]
    columns: list[list[Any] | np.ndarray]
    errors: dict[int, InvalidInput] = field(default_factory=dict)


@dataclass
class Scored:
    """A block's answers for the rows that passed, and for each row that did not, its place in
    the block, its identifier and why."""

    ids: list[Any]
    prediction: Prediction | None
    errors: list[tuple[int, Any, InvalidInput]]


class CsvFormat:
    """CSV with a header line; pandas' C parser for clean blocks, the csv module for the rest."""

    def __init__(self, header: bytes, schema: Schema, id_column: str | None, where: str) -> None:
        names = next(csv.reader([header.decode("utf-8-sig", errors="replace")]), [])
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise InvalidInput(f"{where}: the header repeats the columns {duplicated}")
        # Every feature needs its column, even one that may be missing (its gaps are empty
        # cells): a misspelt header would otherwise score every row as if that feature were
        # missing, without a word.
        absent = [f.name for f in schema.features if f.name not in names]
        if absent or (id_column and id_column not in names):
            missing = absent + ([id_column] if id_column and id_column not in names else [])
            others = [n for n in names if n not in schema.names and n != id_column]
            raise InvalidInput(
                f"{where}: the header has no column {', '.join(missing)} (every feature needs its "
                "column; a missing value is an empty cell); columns that are not features: "
                f"{', '.join(others) or 'none'}"
            )
        self.names, self.schema, self.id_column = names, schema, id_column
        # Columns that are neither a feature nor the id: ignored, and said once (task.py).
        self.ignored = [n for n in names if n not in schema.names and n != id_column]
        self.positions = [names.index(f.name) if f.name in names else None for f in schema.features]

    def parse(self, lines: list[bytes], ids: list[Any]) -> Rows:
        """The lines' rows; `ids` are theirs unless an id column gives its own."""
        try:
            return self._parse_fast(lines, ids)
        except (ValueError, UnicodeDecodeError):  # a value pandas will not read: one by one
            return self._parse_slow(lines, ids)

    def _parse_fast(self, lines: list[bytes], ids: list[Any]) -> Rows:
        import pandas as pd

        present = self._present()
        types = {n: PANDAS_TYPES.get(f.type, "object") for f, n in present}
        used = {*types, *([self.id_column] if self.id_column else []), END}
        frame = pd.read_csv(
            io.BytesIO(b",\x1f\n".join(lines) + b",\x1f\n"),
            header=None,
            names=[*self.names, END],
            usecols=list(used),
            dtype={n: types.get(n, "object") for n in used},
            keep_default_na=False,
            na_values={n: [""] for n, t in types.items() if t != "object"},
            encoding="utf-8",
            engine="c",
        )
        if len(frame) != len(lines) or not (frame[END] == "\x1f").all():
            raise ValueError("a line with another number of fields")
        columns: list[list[Any] | np.ndarray] = []
        for feature, position in zip(self.schema.features, self.positions, strict=True):
            if position is None:
                columns.append([None] * len(lines))
            elif feature.type in ("number", "integer"):
                columns.append(frame[feature.name].to_numpy(np.float64))
            else:
                columns.append(_text_column(feature, frame[feature.name]))
        if self.id_column and (frame[self.id_column] == "").any():
            raise ValueError("an empty id: the slow path names the row")
        return Rows(frame[self.id_column].tolist() if self.id_column else ids, columns)

    def _parse_slow(self, lines: list[bytes], ids: list[Any]) -> Rows:
        width = len(self.names)
        id_at = self.names.index(self.id_column) if self.id_column else None
        rows, errors = [], {}
        for i, line in enumerate(lines):
            try:
                values = next(csv.reader([line.decode("utf-8")]))
                if len(values) != width:
                    raise InvalidInput(f"expected {width} values (the header's), got {len(values)}")
            except UnicodeDecodeError:
                errors[i], values = InvalidInput("the line is not UTF-8 text"), [""] * width
            except (InvalidInput, csv.Error) as e:
                errors[i] = e if isinstance(e, InvalidInput) else InvalidInput(f"not CSV: {e}")
                values = [""] * width
            rows.append(values)
            if id_at is not None and i not in errors and not values[id_at]:
                errors[i] = InvalidInput(no_id(self.id_column), field=self.id_column)
        if id_at is not None:
            ids = [row[id_at] for row in rows]
        columns: list[list[Any] | np.ndarray] = [
            [None] * len(rows)
            if position is None
            else [_text_value(feature, row[position]) for row in rows]
            for feature, position in zip(self.schema.features, self.positions, strict=True)
        ]
        return Rows(ids, columns, errors)

    def _present(self) -> list[tuple[Feature, str]]:
        return [
            (f, f.name)
            for f, p in zip(self.schema.features, self.positions, strict=True)
            if p is not None
        ]


class JsonLinesFormat:
    """One JSON value per line: an object by feature name, or a list in feature order (the
    `instances` rows of the API and of Vertex AI's batch prediction)."""

    def __init__(self, schema: Schema, id_column: str | None) -> None:
        self.schema, self.id_column = schema, id_column

    def parse(self, lines: list[bytes], ids: list[Any]) -> Rows:
        """The lines' rows; `ids` are theirs unless an id key gives its own."""
        names, width = self.schema.names, len(self.schema.names)
        columns: list[list[Any]] = [[] for _ in names]
        known: list[Any] = []
        errors = {}
        for i, (line, default) in enumerate(zip(lines, ids, strict=True)):
            row: Any = None
            try:
                row = orjson.loads(line)
                if isinstance(row, list):
                    check_length(row, "", names)
                elif not isinstance(row, dict):
                    not_a_row(row, "")
            except orjson.JSONDecodeError as e:
                errors[i] = InvalidInput(f"not valid JSON: {e}")
            except InvalidInput as e:
                errors[i] = e
            if i in errors:
                row = [None] * width
            if not self.id_column:
                known.append(default)
            else:  # a line that is not an object has no id: None
                known.append(row.get(self.id_column) if isinstance(row, dict) else None)
                if known[-1] is None and i not in errors:
                    errors[i] = InvalidInput(no_id(self.id_column), field=self.id_column)
            values = row if isinstance(row, list) else [row.get(n) for n in names]
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        return Rows(known, list(columns), errors)


def score(model: LoadedModel, rows: Rows) -> Scored:
    """Check the rows and score those that pass; each that fails gets the API's message."""
    schema = model.schema
    errors = dict(rows.errors)

    every = len(rows.ids)

    def check(indices: list[int]) -> Any:
        columns = (
            rows.columns if len(indices) == every else [_take(c, indices) for c in rows.columns]
        )
        return schema.check_columns(columns, lambda i, j: schema.names[j])

    good = [i for i in range(every) if i not in errors] if errors else list(range(every))
    good, X = _isolate(good, check, errors)
    prediction = None
    if good:

        def predict(positions: list[int]) -> Prediction:
            part = X if len(positions) == len(good) else _rows_of(X, positions)
            return infer(model, Instances(part))

        refused: dict[int, InvalidInput] = {}
        kept, prediction = _isolate(list(range(len(good))), predict, refused)
        errors.update({good[p]: e for p, e in refused.items()})
        good = [good[p] for p in kept]
    failed = [(i, rows.ids[i], errors[i]) for i in sorted(errors)]
    return Scored([rows.ids[i] for i in good], prediction, failed)


def _isolate(
    indices: list[int], attempt: Callable[[list[int]], Any], errors: dict[int, InvalidInput]
) -> tuple[list[int], Any]:
    """The indices `attempt` accepts and its result for them, recording why each other one was
    refused. A clean block costs one attempt; a refused one is halved until each bad index is
    alone, so a few bad rows cost a few small attempts, then one for the rest."""
    if not indices:
        return [], None
    try:
        return indices, attempt(indices)
    except InvalidInput as e:
        accepted = _accepted(indices, attempt, errors, e)
    return accepted, attempt(accepted) if accepted else None


def _accepted(
    indices: list[int],
    attempt: Callable[[list[int]], Any],
    errors: dict[int, InvalidInput],
    refused: InvalidInput | None = None,
) -> list[int]:
    """The indices `attempt` accepts, found by halving (`refused`: it refused them all already)."""
    if refused is None:
        try:
            attempt(indices)
            return indices
        except InvalidInput as e:
            refused = e
    if len(indices) == 1:
        errors[indices[0]] = refused
        return []
    middle = len(indices) // 2
    first = _accepted(indices[:middle], attempt, errors)
    return first + _accepted(indices[middle:], attempt, errors)


def _take(column: list[Any] | np.ndarray, indices: list[int]) -> list[Any] | np.ndarray:
    if isinstance(column, np.ndarray):
        return column[indices]
    return [column[i] for i in indices]


def _rows_of(X: Any, positions: list[int]) -> Any:
    return X.iloc[positions] if hasattr(X, "iloc") else X[positions]


def no_id(id_column: str | None) -> str:
    return f"the row has no {id_column}: with --id-column every row needs one"


def _text_column(feature: Feature, texts: Any) -> np.ndarray:
    """A column of CSV cells (a pandas Series of text) as _text_value turns each cell, at once."""
    column = texts.to_numpy(object).copy()
    if feature.type == "boolean":
        lowered = texts.str.lower()
        known = lowered.isin(BOOLEANS).to_numpy()
        column[known] = lowered[known].map(BOOLEANS).to_numpy(object)
    column[(texts == "").to_numpy()] = None
    return column


def _text_value(feature: Feature, text: str) -> Any:
    """A CSV cell as the JSON value it stands for (None: missing)."""
    if text == "":
        return None
    if feature.type == "boolean":
        return BOOLEANS.get(text.lower(), text)
    if feature.type in ("number", "integer"):
        try:
            return float(text)
        except ValueError:
            return text  # refused by the API's check, which quotes it
    return text
