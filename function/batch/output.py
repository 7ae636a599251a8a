"""What a task writes: its answers as CSV, and its refused rows as JSON Lines.

An answer row is the input row's identifier (the id column's value, or its line number), the
prediction, and for a classifier one probability per class, in the order of the header:

    line,prediction,probability_setosa,probability_versicolor,probability_virginica
    2,setosa,0.97...,0.02...,1.4e-05

Numbers are written by orjson (the shortest text that reads back as the same float, as the API's
JSON answers are), a block at a time: formatting is most of a batch's time once the model is fast.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from function.core.errors import InvalidInput
from function.core.predict import Prediction

# A text cell a spreadsheet would run as a formula (OWASP, "CSV Injection"): written after a
# single quote, which the spreadsheet shows as text. A number ("-5", "+1.5e3") stays a number.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"\A[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\Z")


def result_header(id_name: str, classes: list[str], probabilities: bool) -> bytes:
    names = [id_name, "prediction"] + (
        [f"probability_{c}" for c in classes] if probabilities else []
    )
    return ",".join(map(csv_text, names)).encode() + b"\n"


def result_lines(ids: list[Any], prediction: Prediction) -> bytes:
    """The CSV lines of one block's answers."""
    if not ids:
        return b""
    columns = [_ids(ids), _labels(prediction)]
    if prediction.probabilities is not None:
        matrix = orjson.dumps(prediction.probabilities, option=orjson.OPT_SERIALIZE_NUMPY)
        columns.append(matrix[2:-2].split(b"],["))
    return b"\n".join(map(b",".join, zip(*columns, strict=True))) + b"\n"


def error_lines(
    id_name: str, uri: str, failed: list[tuple[int, Any, InvalidInput]], offsets: list[int]
) -> bytes:
    """One JSON object per refused row: its identifier, where it is (the file, and the byte
    offset of its line: exact even when the id column could not be read), the field at fault
    and the API's message."""
    return b"".join(
        orjson.dumps(
            {id_name: i, "file": uri, "offset": offsets[k], "field": e.field, "detail": e.detail},
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for k, i, e in failed
    )


def _ids(ids: list[Any]) -> list[bytes]:
    kinds = set(map(type, ids))
    if kinds <= {int}:  # line numbers
        return list(map(b"%d".__mod__, ids))
    if kinds <= {str}:
        text = "\n".join(ids)
        plain = not any(c in text for c in ',"\r') and text.count("\n") == len(ids) - 1
        if plain and not any(i.startswith(FORMULA_START) for i in ids):
            return text.encode().split(b"\n")
    return [csv_text(i).encode() for i in ids]


def _labels(prediction: Prediction) -> list[bytes]:
    labels = prediction.labels
    if labels and isinstance(labels[0], float) and not prediction.classes:  # a regressor
        return orjson.dumps(labels)[1:-1].split(b",")
    texts = {label: csv_text(label).encode() for label in set(labels)}
    return [texts[label] for label in labels]


def csv_text(value: Any) -> str:
    """A value as one CSV field (quoted when it holds a separator, a quote or a line break); a
    text that a spreadsheet would take for a formula is neutralised."""
    text = "" if value is None else str(value)
    if isinstance(value, str) and text.startswith(FORMULA_START) and not NUMBER.match(text):
        text = "'" + text
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text
