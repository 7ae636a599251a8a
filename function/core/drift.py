"""Drift: each feature's training distribution, and the live rows counted into the same bins.

Training records a baseline (`baseline.json`, one of the version's files, so its digest is
checked like the model's):

- a number: interior bin edges at its training quantiles (deciles by default), its min and max;
- a category: its most frequent known values (at most MAX_CATEGORIES; the rest are "(other)"),
  and "(unknown)" for a value training never saw; a boolean: false and true;
- every feature: "(missing)", a bin of its own;
- the predictions on the hold-out rows: the share of each class, or a regressor's decile bins.

Each bin carries its share of the training rows. The shares are counted by the same `Watch` the
service counts live rows with, so a bin means the same thing on both sides.

The service counts every scored row of each watched feature into its bin, numbers outside the
training range by side, and the predictions into theirs. Counting is core's; the service exports
the counts and the reference shares on /metrics (function/service/counted.py), and PromQL
computes the Population Stability Index from them (local/prometheus/alerts.yml). Series per
watched feature: its bins plus "(missing)" (a category also "(other)" and "(unknown)"), twice
(rows and reference), plus two out-of-range sides.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from function.core.baseline import BASELINE_FILE, Baseline, Bins
from function.core.schema import Feature, Schema

if TYPE_CHECKING:
    from function.core.model import LoadedModel

log = logging.getLogger("modelrun.drift")
__all__ = ["BASELINE_FILE", "Drift", "Watch", "build_baseline"]
BINS = 10  # deciles
MAX_CATEGORIES = 20  # a category's most frequent values get a bin each; the rest share one
MISSING, UNKNOWN, OTHER = "(missing)", "(unknown)", "(other)"
SIDES = ("below", "above")  # out of the training range
# A request's rows are kept, and counted with others' (one vectorised pass for many requests:
# a single row counted alone costs more than the rest of its request's bookkeeping), at the
# latest when this many are kept, or when metrics are read.
PENDING_ROWS = 8192
PENDING_REQUESTS = 256
VERSIONS_KEPT = 2  # counts kept per process: the version served, and the one before a swap


def number_edges(values: np.ndarray, bins: int = BINS) -> list[float]:
    """Interior bin edges at the values' quantiles; ties collapse (a feature with three values
    has at most three bins), and no bin lies wholly below the minimum."""
    quantiles = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(e) for e in np.unique(quantiles) if e > values.min()]


def number_labels(edges: Sequence[float]) -> list[str]:
    """Each number bin's label: its index (for sorting) and its range."""
    if not edges:
        return ["00 all"]
    labels = [f"00 < {edges[0]:.4g}"]
    labels += [
        f"{i:02d} [{lo:.4g}, {hi:.4g})" for i, (lo, hi) in enumerate(itertools.pairwise(edges), 1)
    ]
    return [*labels, f"{len(edges):02d} >= {edges[-1]:.4g}"]


def bin_labels(
    kind: str, edges: Sequence[float], values: Sequence[str], feature: bool
) -> list[str]:
    """The labels of a record's bins, in the order of its shares: a feature's end with
    "(missing)", a category's values are followed by "(other)" and "(unknown)"."""
    if kind == "number":
        labels = number_labels(edges)
    else:
        labels = [*map(str, values), *((OTHER, UNKNOWN) if feature else ())]
    return [*labels, MISSING] if feature else labels


def _bins(name: str | None, kind: str, values: Any = (), bins: int = BINS) -> Bins:
    """A record's bins, without shares yet: a category's values, or a number's edges at the
    quantiles of its values."""
    if kind == "category":
        labels = bin_labels(kind, (), values, feature=name is not None)
        return Bins(name, kind, tuple(labels), (), values=tuple(values))
    edges = number_edges(values, bins)
    labels = bin_labels(kind, edges, (), feature=name is not None)
    low, high = float(values.min()), float(values.max())
    return Bins(name, kind, tuple(labels), (), edges=tuple(edges), min=low, max=high)


def build_baseline(
    frame: Any, schema: Schema, predictions: Any, classes: Sequence[str], bins: int = BINS
) -> Baseline:
    """The baseline of the rows a pipeline was fitted on (a DataFrame with the schema's columns)
    and of its predictions on the hold-out rows (class names for a classifier, else numbers)."""
    import pandas as pd

    features, columns = [], {}
    for feature in schema.features:
        column = frame[feature.name]
        present = column.dropna()
        # As requests arrive once checked (schema.check_column): categories as text, numbers as
        # float64, a gap None or NaN, whatever the fitting dtype (pandas' NA included).
        if feature.type == "category":
            column = column.astype(str).astype(object).where(column.notna(), None)
        elif feature.type == "boolean":
            column = column.astype(object).where(column.notna(), None)
        else:
            column = column.astype(np.float64)
        columns[feature.name] = column
        if feature.type in ("number", "integer"):
            values = present.to_numpy(dtype=np.float64)
            if not len(values):
                raise ValueError(f"feature {feature.name} has no value to draw a baseline from")
            features.append(_bins(feature.name, "number", values, bins))
        elif feature.type == "boolean":
            features.append(_bins(feature.name, "category", ["false", "true"]))
        else:
            counts = present.astype(str).value_counts(sort=True)
            known = sorted(map(str, counts.index[:MAX_CATEGORIES]))
            features.append(_bins(feature.name, "category", known))
    if classes:
        prediction = _bins(None, "category", list(classes))
    else:
        prediction = _bins(None, "number", np.asarray(predictions, dtype=np.float64), bins)
    unshared = Baseline(bins, len(frame), len(predictions), tuple(features), prediction)
    # The shares, counted as the service will count live rows.
    watch = Watch("baseline", unshared, schema)
    watch.count(pd.DataFrame(columns), list(predictions))
    shared = [
        dataclasses.replace(record, shares=tuple(shares))
        for record, shares in zip(features, watch.feature_shares(), strict=True)
    ]
    prediction = dataclasses.replace(prediction, shares=tuple(watch.prediction_shares()))
    return dataclasses.replace(unshared, features=tuple(shared), prediction=prediction)


@dataclass(frozen=True)
class Slot:
    """One exported series: its family, its labels besides the version, its reference share."""

    family: str  # "rows", "out_of_range" or "prediction"
    labels: tuple[tuple[str, str], ...]
    reference: float | None = None


class Watch:
    """One version's bins for the watched features and the predictions, and the rows counted.

    Every count is one cell of one array: a request adds to it with one `bincount`.
    """

    def __init__(
        self,
        version: str,
        baseline: Baseline,
        schema: Schema,
        watched: frozenset[str] | None = None,
    ) -> None:
        self.version = version
        self.slots: list[Slot] = []
        self._lock = threading.Lock()
        self._ignored = self._slot(Slot("none", ()))  # a number in range: no out-of-range count
        # Numbers, binned a column at a time by their extended edges: the training min, the
        # interior edges, and just above the max. Extended bin k of a number maps to its rows
        # slot and to its out-of-range slot (the ignored one when in range).
        self._numbers: list[tuple[int, str]] = []  # (column in the schema, name)
        self._edges: list[np.ndarray] = []
        self._missing: list[int] = []
        self._row_of: list[np.ndarray] = []
        self._side_of: list[np.ndarray] = []
        # Categories and booleans: (column, name, value -> slot, unknown slot, missing slot).
        self._categories: list[tuple[int, str, dict[Any, int], int, int]] = []
        self._feature_slots: list[list[int]] = []  # per watched feature, in schema order
        records = {r.name: r for r in baseline.features}
        for j, feature in enumerate(schema.features):
            record = records.get(feature.name)
            if record is None or (watched is not None and feature.name not in watched):
                continue
            shares = iter(record.shares)  # none yet while the baseline is built
            if record.kind == "number":
                self._add_number(j, feature.name, record, shares)
            else:
                self._add_category(j, feature, record, shares)
        self._prediction = self._prediction_bins(baseline.prediction)
        self.counts = np.zeros(len(self.slots), dtype=np.int64)
        self._pending: list[tuple[Any, Sequence[Any] | np.ndarray]] = []
        self._pending_rows = 0

    def _add_number(self, column: int, name: str, record: Bins, shares: Iterator[float]) -> None:
        edges = list(record.edges)
        *bins, missing = (self._row(name, label, next(shares, 0.0)) for label in record.labels)
        below, above = (
            self._slot(Slot("out_of_range", (("feature", name), ("side", side)))) for side in SIDES
        )
        extended = [record.min, *edges, float(np.nextafter(record.max, np.inf))]
        self._row_of.append(np.array([bins[0], *bins, bins[-1]], dtype=np.intp))
        self._side_of.append(np.array([below, *[self._ignored] * len(bins), above], np.intp))
        self._numbers.append((column, name))
        self._edges.append(np.array(extended))
        self._missing.append(missing)
        self._feature_slots.append([*bins, missing])

    def _add_category(
        self, column: int, feature: Feature, record: Bins, shares: Iterator[float]
    ) -> None:
        name = feature.name
        *known_slots, other, unknown, missing = (
            self._row(name, label, next(shares, 0.0)) for label in record.labels
        )
        slots = dict(zip(record.values, known_slots, strict=True))
        if feature.type == "boolean":
            known: dict[Any, int] = {False: slots["false"], True: slots["true"]}
        else:  # the known values beyond the most frequent share (other)
            known = {c: slots.get(c, other) for c in feature.categories}
        self._categories.append((column, name, known, unknown, missing))
        self._feature_slots.append([*known_slots, other, unknown, missing])

    def _slot(self, slot: Slot) -> int:
        self.slots.append(slot)
        return len(self.slots) - 1

    def _row(self, feature: str, label: str, share: float) -> int:
        return self._slot(Slot("rows", (("feature", feature), ("bin", label)), float(share)))

    def _prediction_bins(self, record: Bins) -> tuple[Any, list[int]]:
        shares = iter(record.shares)
        slots = [
            self._slot(Slot("prediction", (("bin", label),), float(next(shares, 0.0))))
            for label in record.labels
        ]
        if record.kind == "number":
            return np.array(record.edges, dtype=np.float64), slots
        return dict(zip(record.values, slots, strict=True)), slots

    def observe(self, X: Any, predictions: Sequence[Any] | np.ndarray) -> None:
        """Keep a request's rows (as the pipeline took them: a float matrix, an object matrix or
        a DataFrame, in schema order) and its predictions, to be counted with others'."""
        with self._lock:
            self._pending.append((X, predictions))
            self._pending_rows += len(predictions)
            full = self._pending_rows >= PENDING_ROWS or len(self._pending) >= PENDING_REQUESTS
        if full:
            self.flush()

    def flush(self) -> None:
        """Count the rows kept so far (a scrape does, before it reads the counts)."""
        with self._lock:
            pending, self._pending, self._pending_rows = self._pending, [], 0
        if not pending:
            return
        matrices = [X for X, _ in pending if isinstance(X, np.ndarray)]
        batches: list[Any] = [np.concatenate(matrices)] if matrices else []
        batches += [X for X, _ in pending if not isinstance(X, np.ndarray)]  # DataFrames
        added = np.zeros(len(self.slots), dtype=np.int64)
        for X in batches:
            self._count_numbers(X, added)
            self._count_categories(X, added)
        self._count_predictions([predictions for _, predictions in pending], added)
        with self._lock:
            self.counts += added

    def count(self, X: Any, predictions: Sequence[Any] | np.ndarray) -> None:
        """Count rows and predictions now."""
        self.observe(X, predictions)
        self.flush()

    def _count_numbers(self, X: Any, added: np.ndarray) -> None:
        """Add each number's rows by bin, out-of-range side and missing: per column, one binary
        search and one bincount over the rows, the rest on a dozen bins."""
        if not self._numbers:
            return
        M = _numbers(X, self._numbers)
        for k, edges in enumerate(self._edges):
            column = M[:, k]
            extended = np.bincount(
                np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1
            )
            missing = int(np.count_nonzero(np.isnan(column)))
            extended[-1] -= missing  # a NaN sorts after every edge
            np.add.at(added, self._row_of[k], extended)
            np.add.at(added, self._side_of[k], extended)
            added[self._missing[k]] += missing

    def _count_categories(self, X: Any, added: np.ndarray) -> None:
        for j, name, known, unknown, missing in self._categories:
            column = X[name] if hasattr(X, "columns") else X[:, j]
            cells = np.fromiter(
                (missing if v is None or v != v else known.get(v, unknown) for v in column),
                dtype=np.intp,
                count=len(column),
            )
            added += np.bincount(cells, minlength=len(added))

    def _count_predictions(
        self, answers: list[Sequence[Any] | np.ndarray], added: np.ndarray
    ) -> None:
        """Add several requests' predictions by class, or by bin for a regressor."""
        bins, slots = self._prediction
        if isinstance(bins, dict):
            tally: Counter[Any] = Counter()
            for predictions in answers:
                tally.update(predictions)
            for label, count in tally.items():
                added[bins[str(label)]] += count
            return
        numbers = np.concatenate([np.asarray(p, dtype=np.float64) for p in answers])
        index = np.searchsorted(bins, numbers, side="right")
        np.add.at(added, slots, np.bincount(index, minlength=len(slots)))

    def feature_shares(self) -> list[list[float]]:
        """Each feature's share of the rows counted, bin by bin (the baseline's `shares`)."""
        total = max(int(self.counts[self._feature_slots[0]].sum()), 1) if self._feature_slots else 1
        return [[float(self.counts[s]) / total for s in slots] for slots in self._feature_slots]

    def prediction_shares(self) -> list[float]:
        slots = self._prediction[1]
        total = max(int(self.counts[slots].sum()), 1)
        return [float(self.counts[s]) / total for s in slots]


def _numbers(X: Any, numbers: list[tuple[int, str]]) -> np.ndarray:
    """The numeric columns of the rows as a float matrix (NaN where missing)."""
    columns = [j for j, _ in numbers]
    if isinstance(X, np.ndarray) and X.dtype == np.float64:
        return X if columns == list(range(X.shape[1])) else X[:, columns]
    if hasattr(X, "columns"):
        values = [X[name].to_numpy(dtype=np.float64, na_value=np.nan) for _, name in numbers]
        return np.column_stack(values).reshape(len(X), len(numbers))
    return X[:, columns].astype(np.float64)


class Drift:
    """The process's counts: one Watch per version served lately."""

    def __init__(self, watched: frozenset[str] | None) -> None:
        self.watched = watched  # None: every feature
        self._watches: dict[str, Watch] = {}
        self._lock = threading.Lock()

    def observe(self, model: LoadedModel, X: Any, predictions: Sequence[Any] | np.ndarray) -> None:
        """Count a request's scored rows (nothing for a version without a baseline)."""
        if model.baseline is None:
            return
        watch = self._watches.get(model.version)
        if watch is None:
            watch = self._watch(model)
        watch.observe(X, predictions)

    def _watch(self, model: LoadedModel) -> Watch:
        assert model.baseline is not None
        with self._lock:
            watch = self._watches.get(model.version)
            if watch is None:
                watch = Watch(model.version, model.baseline, model.schema, self.watched)
                absent = sorted((self.watched or set()) - set(model.schema.names))
                if absent:
                    log.warning(
                        "DRIFT_FEATURES names %s, which version %s does not have",
                        ", ".join(absent),
                        model.version,
                    )
                self._watches = {**self._watches, model.version: watch}
                while len(self._watches) > VERSIONS_KEPT:
                    self._watches = dict(list(self._watches.items())[1:])
            return watch

    def watches(self) -> list[Watch]:
        return list(self._watches.values())
