"""Each feature's type as the artifact records it, and the checks a request's values pass.

A model's metadata lists its features with a type: number, integer, boolean or category (with its
known values). A feature is nullable when the pipeline fills a missing value in itself (checked when
the model was trained or packaged), and a category says whether the pipeline accepts a value it has
not seen. Artifacts written before schemas existed have numbers only.

Values are checked a column at a time and turned into what the pipeline was fitted on: a float64
matrix, or a pandas DataFrame with the training columns' dtypes when the pipeline selects columns
by name (pandas is imported only for such a model).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from function.core.errors import IntegrityError, InvalidInput

TYPES = ("number", "integer", "boolean", "category")
UNKNOWN = ("refuse", "accept")  # what a category does with a value training never saw
CATEGORIES_FROM = ("model", "data")
# Larger magnitudes overflow float64 arithmetic inside ordinary models (scaling, dot products).
MAX_ABS_VALUE = 1e300
# The same bound for a JSON integer, exactly: 10**300 + 1 rounds to the float 1e300, so bulk
# checks send a value of exactly 1e300 to the value-by-value check, which compares integers whole.
MAX_ABS_INTEGER = 10**300
SHOWN_CATEGORIES = 20  # an error lists at most this many allowed values

Field = Callable[[int], str | None]  # where value i of a column came from in the request


@dataclass(frozen=True)
class Feature:
    """One input column: its type, whether it may be missing, its known categories."""

    name: str
    type: str = "number"
    nullable: bool = False
    categories: tuple[str, ...] = ()
    unknown: str = "refuse"
    dtype: str = "float64"  # the column's pandas dtype when the pipeline was fitted
    missing: str = ""  # when nullable: "imputed" by the pipeline, or "native" to its estimator
    # A category's values: read from the fitted encoders ("model"), or, where none could be
    # traced to the column, the values in the data given at training or packaging ("data").
    categories_from: str = "data"

    def describe(self) -> dict[str, Any]:
        """The feature as metadata.json records it."""
        record: dict[str, Any] = {"name": self.name, "type": self.type, "nullable": self.nullable}
        if self.nullable:
            record["missing"] = self.missing
        if self.type == "category":
            record.update(
                categories=list(self.categories),
                categories_from=self.categories_from,
                unknown=self.unknown,
            )
        record["dtype"] = self.dtype
        return record

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of one value (OpenAPI 3.1)."""
        kinds = {"number": "number", "integer": "integer", "boolean": "boolean"}
        schema: dict[str, Any] = {"type": kinds.get(self.type, "string")}
        if self.type in ("number", "integer"):  # finite, and within what models compute with
            schema.update(minimum=-MAX_ABS_VALUE, maximum=MAX_ABS_VALUE)
        if self.type == "category" and self.unknown == "refuse":
            schema["enum"] = list(self.categories)
        elif self.type == "category":
            schema["examples"] = list(self.categories[:SHOWN_CATEGORIES])
        if self.nullable:
            schema["type"] = [schema["type"], "null"]
            if "enum" in schema:
                schema["enum"] = [*schema["enum"], None]
        return schema


@dataclass(frozen=True)
class Schema:
    """The model's features in order, and whether its pipeline takes a DataFrame."""

    features: tuple[Feature, ...]
    frame: bool = False

    @classmethod
    def of_numbers(cls, names: list[str]) -> Schema:
        """The schema of an artifact that has none: numbers, never missing, as a matrix."""
        return cls(tuple(Feature(name) for name in names))

    # Derived once per schema (a model's lifetime), not once per request.
    @functools.cached_property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @functools.cached_property
    def numeric(self) -> bool:
        """Every feature is a number: rows parse straight to a float64 matrix (NaN where a
        feature may be missing and is)."""
        return all(f.type in ("number", "integer") for f in self.features)

    @functools.cached_property
    def integer_columns(self) -> list[int]:
        return [j for j, f in enumerate(self.features) if f.type == "integer"]

    @functools.cached_property
    def may_be_missing(self) -> set[str]:
        """The names of the features that may be null or absent."""
        return {f.name for f in self.features if f.nullable}

    def feature(self, name: str) -> Feature | None:
        return next((f for f in self.features if f.name == name), None)

    def from_matrix(self, X: np.ndarray) -> Any:
        """A checked numeric matrix as the pipeline takes it."""
        if not self.frame:
            return X
        return self.from_columns([X[:, j] for j in range(X.shape[1])])

    def check_columns(
        self, columns: Sequence[list[Any] | np.ndarray], field: Callable[[int, int], str | None]
    ) -> Any:
        """Check each column's values against its feature; return what the pipeline takes."""
        checked = [
            check_column(feature, values, functools.partial(_at, field, j))
            for j, (feature, values) in enumerate(zip(self.features, columns, strict=True))
        ]
        if self.frame:
            return self.from_columns(checked)
        if all(c.dtype == np.float64 for c in checked):
            return np.column_stack(checked)
        X = np.empty((len(checked[0]), len(checked)), dtype=object)
        for j, column in enumerate(checked):
            X[:, j] = column
        return X

    def from_columns(self, columns: list[np.ndarray]) -> Any:
        """Checked columns as a DataFrame with the dtypes the pipeline was fitted on."""
        import pandas as pd

        data = {}
        for feature, column in zip(self.features, columns, strict=True):
            if feature.dtype == "category":  # a value it does not list is a gap, as in pandas
                known = pd.Index(feature.categories)
                column = pd.Categorical(
                    np.where(known.get_indexer(column) >= 0, column, np.array(None)),
                    categories=known,
                )
            elif feature.dtype.startswith("int") and not np.isnan(column.astype(float)).any():
                column = column.astype(feature.dtype)  # whole numbers, none missing
            data[feature.name] = column
        return pd.DataFrame(data, copy=False)


def _at(field: Callable[[int, int], str | None], j: int, i: int) -> str | None:
    return field(i, j)


def from_metadata(metadata: dict[str, Any], where: str) -> Schema:
    """The schema metadata records (numbers only when it records none); IntegrityError naming
    what is wrong."""
    names = metadata["feature_names"]
    described = metadata.get("features")
    frame = metadata.get("input", "array")
    if frame not in ("array", "frame"):
        raise IntegrityError(f"{where}: input must be 'array' or 'frame', got {frame!r}")
    if described is None:
        return Schema(Schema.of_numbers(names).features, frame == "frame")
    if (
        not isinstance(described, list)
        or [d.get("name") if isinstance(d, dict) else None for d in described] != names
    ):
        raise IntegrityError(f"{where}: features must describe feature_names, in order")
    return Schema(tuple(_feature(d, f"{where}: features.{d['name']}") for d in described),
                  frame == "frame")  # fmt: skip


def _feature(record: dict[str, Any], where: str) -> Feature:
    kind = record.get("type")
    if kind not in TYPES:
        raise IntegrityError(f"{where}: type must be one of {', '.join(TYPES)}, got {kind!r}")
    categories = record.get("categories", [])
    unknown = record.get("unknown", "refuse")
    if kind == "category" and not (
        isinstance(categories, list) and categories and all(isinstance(c, str) for c in categories)
    ):
        raise IntegrityError(f"{where}: categories must be a non-empty list of strings")
    if unknown not in UNKNOWN:
        raise IntegrityError(f"{where}: unknown must be one of {', '.join(UNKNOWN)}")
    categories_from = record.get("categories_from", "data")  # older artifacts: from the data
    if categories_from not in CATEGORIES_FROM:
        raise IntegrityError(
            f"{where}: categories_from must be one of {', '.join(CATEGORIES_FROM)}"
        )
    return Feature(
        record["name"],
        kind,
        bool(record.get("nullable", False)),
        tuple(categories),
        unknown,
        str(record.get("dtype", "float64")),
        str(record.get("missing", "")),
        categories_from,
    )


def check_column(feature: Feature, values: list[Any] | np.ndarray, field: Field) -> np.ndarray:
    """Check one feature's values (field(i) names value i in errors); return them as an array:
    float64 for numbers (NaN where missing), bool for booleans, objects for the rest.

    `values` are JSON values (None: missing), as a list or an object array; or, for a number, a
    float64 array read from a file (NaN: missing; function/batch), checked in bulk and value by
    value only where one fails."""
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        missing = np.isnan(values)
        present = values[~missing]
        whole = feature.type == "number" or (present == np.floor(present)).all()
        if (feature.nullable or not missing.any()) and whole and _in_range(present):
            return values
        values = [None if m else v for m, v in zip(missing.tolist(), values.tolist(), strict=True)]
    kinds = set(map(type, values))
    if feature.type in ("number", "integer"):
        if kinds <= {int, float}:
            try:
                with np.errstate(all="ignore"):
                    column = np.array(values, dtype=np.float64)
            except OverflowError:
                pass
            else:
                whole = feature.type == "number" or (column == np.floor(column)).all()
                if _in_range(column) and whole:
                    return column
        return np.array([_value(feature, v, field(i)) for i, v in enumerate(values)], np.float64)
    if feature.type == "boolean" and kinds <= {bool}:
        return np.array(values, dtype=bool)
    if feature.type == "category" and kinds <= {str}:
        allowed = set(feature.categories)
        if feature.unknown == "accept" or allowed.issuperset(values):
            return np.array(values, dtype=object)
    return np.array([_value(feature, v, field(i)) for i, v in enumerate(values)], dtype=object)


def _in_range(column: np.ndarray) -> bool:
    return bool(np.isfinite(column).all() and np.abs(column).max(initial=0) < MAX_ABS_VALUE)


def _value(feature: Feature, value: Any, field: str | None) -> Any:
    """One value checked against its feature, or InvalidInput naming the field and the rule."""
    name = feature.name
    if value is None:
        if feature.nullable:
            return math.nan
        raise InvalidInput(
            f"{name} may not be null: this model's pipeline does not fill in a missing {name}",
            field=field,
        )
    if feature.type == "integer" and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        raise InvalidInput(f"expected an integer for {name}, got {show(value)}", field=field)
    if feature.type in ("number", "integer"):
        number = check_number(value, field, name)
        if feature.type == "integer" and number != math.floor(number):
            raise InvalidInput(f"expected an integer for {name}, got {show(value)}", field=field)
        return number
    if feature.type == "boolean":
        if not isinstance(value, bool):
            raise InvalidInput(f"expected true or false for {name}, got {show(value)}", field=field)
        return value
    if not isinstance(value, str):
        raise InvalidInput(
            f"expected a string (a category) for {name}, got {show(value)}", field=field
        )
    if feature.unknown == "refuse" and value not in feature.categories:
        shown = ", ".join(feature.categories[:SHOWN_CATEGORIES])
        more = len(feature.categories) - SHOWN_CATEGORIES
        raise InvalidInput(
            f"unknown category {show(value)} for {name}; allowed: {shown}"
            + (f" and {more} more (see /model)" if more > 0 else ""),
            field=field,
        )
    return value


def number_or_missing(feature: Feature, value: Any, field: str | None, name_it: bool) -> float:
    """A numeric feature's value (NaN for a null where it may be missing); `name_it`: say the
    feature's name in the message (for a positional field)."""
    if value is None and feature.nullable:
        return math.nan
    if value is None:
        return _value(feature, value, field)  # the refusal that says why
    return check_number(value, field, feature.name if name_it else None)


def check_number(value: Any, field: str | None, feature: str | None = None) -> float:
    """Return value as a float within range; `feature` is named in the message when given."""
    named = f" for {feature}" if feature else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"expected a finite number{named}, got {show(value)}", field=field)
    try:
        number = float(value)
    except OverflowError as e:
        raise InvalidInput(f"the number{named} is too large", field=field) from e
    if not math.isfinite(number):
        raise InvalidInput(f"expected a finite number{named}, got {show(value)}", field=field)
    if abs(number) > MAX_ABS_VALUE or (type(value) is int and abs(value) > MAX_ABS_INTEGER):
        raise InvalidInput(
            f"the number{named} is out of range (at most {MAX_ABS_VALUE:g} in magnitude)",
            field=field,
        )
    return number


def kind(value: Any) -> str:
    """A JSON value's kind in words."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return kinds.get(type(value), "a number")


def show(value: Any) -> str:
    """A value as an error message quotes it: short, and never a whole object."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (dict, list)) or value is None or isinstance(value, bool):
        return kind(value)
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."
