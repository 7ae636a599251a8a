"""Serve a verified compiled pipeline (model.numpy.json) with numpy alone, shaped like an
estimator for the core.

training/numpy_export.py writes the file from a fitted scikit-learn pipeline: its column steps
(one-hot and ordinal encoders, imputers, scalers, a ColumnTransformer) as their fitted values,
and its final HistGradientBoosting trees as arrays. Each step here does the arithmetic
scikit-learn's does, in the same order and in float64, so answers are identical, not close; the
export is written only where that was checked (metadata "numpy"). Nothing here imports
scikit-learn or pandas: a cold start skips both, and a row skips the DataFrame and the per-call
validation that cost milliseconds. The trees are evaluated by bit vectors (QuickScorer), not by
walking them: a row's 100 trees in about 50 µs, a batch faster than scikit-learn's own walk.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

FORMAT = 1

Column = np.ndarray  # float64 for numbers, objects for categories
Step = Callable[[list[Column]], list[Column]]


class NumpyModel:
    """predict / predict_proba / predict_both / classes_ / n_features_in_ over a compiled
    pipeline."""

    def __init__(self, spec: dict[str, Any], metadata: dict[str, Any]) -> None:
        if spec.get("format") != FORMAT:
            raise ValueError(f"format {spec.get('format')!r}, this service reads {FORMAT}")
        self.inputs = [_input(f) for f in metadata["features"]]
        self.transforms = [_step(s) for s in spec["steps"]]
        self.trees = Trees(spec["trees"])
        self.link = str(spec["link"])
        if self.link not in LINKS:
            raise ValueError(f"unknown link {self.link!r}")
        self.n_features_in_ = len(self.inputs)
        self.classifier = metadata["task"] == "classification"
        if self.classifier:
            self.classes_ = np.asarray(metadata["class_names"])
            # The labels as the estimator holds them (numbers stay numbers).
            self.labels = np.asarray(spec["classes"])

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The rows as the final estimator takes them: a float64 matrix."""
        columns = [convert(X[:, j]) for j, convert in enumerate(self.inputs)]
        for step in self.transforms:
            columns = step(columns)
        return np.ascontiguousarray(np.column_stack([_as_float(c) for c in columns]))

    def raw(self, X: np.ndarray) -> np.ndarray:
        return self.trees.raw(self.transform(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._labels(self.raw(X))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return LINKS[self.link](self.raw(X))

    def predict_both(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and probabilities from one pass over the trees (scikit-learn's predict and
        predict_proba each make one, and derive their answers from the same raw scores)."""
        raw = self.raw(X)
        return self._labels(raw), LINKS[self.link](raw)

    def _labels(self, raw: np.ndarray) -> np.ndarray:
        if not self.classifier:
            return LINKS[self.link](raw.ravel())
        if raw.shape[1] == 1:  # "> 0", as HistGradientBoostingClassifier.predict
            return self.labels[(raw.ravel() > 0).astype(int)]
        return self.labels[np.argmax(raw, axis=1)]


class Trees:
    """A HistGradientBoosting ensemble: baseline + each iteration's tree, summed in
    scikit-learn's order ((baseline + tree 1) + tree 2 ...), per class. Each row's leaf in each
    tree is found by bit vectors (below), or, for an ensemble too large for them, by walking all
    trees a level at a time; both decide each split as scikit-learn does: x <= threshold goes
    left, a missing x goes where the split sends missing values."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.baseline = np.asarray(spec["baseline"], dtype=np.float64)  # one per class column
        self.per_iteration = len(self.baseline)
        # Per tree, iteration-major: [feature, threshold, nan_left, left, right, is_leaf, value].
        nodes = spec["nodes"]
        self.count = len(nodes)
        self.thresholds = _thresholds(nodes)
        self.bits = BitVectors.of(nodes)
        self.walk = None if self.bits is not None else LevelWalk(nodes)

    def raw(self, Z: np.ndarray) -> np.ndarray:
        """Raw scores, (rows, classes), Fortran-ordered as scikit-learn's."""
        finder = self.bits if self.bits is not None else self.walk
        assert finder is not None
        leaves = finder.leaf_values(Z)
        raw = np.empty((len(Z), self.per_iteration), order="F")
        for k in range(self.per_iteration):
            terms = np.empty((len(Z), 1 + self.count // self.per_iteration))
            terms[:, 0] = self.baseline[k]
            terms[:, 1:] = leaves[:, k :: self.per_iteration]  # class k's trees, in their order
            raw[:, k] = np.cumsum(terms, axis=1)[:, -1]  # one add after another, not pairwise
        return raw


class BitVectors:
    """QuickScorer's exit leaves (Lucchese et al., SIGIR 2015), vectorised over rows: number
    each tree's leaves left to right, one bit each. A split a row does not pass (x > threshold,
    or x missing where missing values go right) rules out the leaves of its left subtree; the
    row's leaf is the leftmost one no split rules out, whichever splits are on its path. Per
    feature, the splits sorted by threshold give, for each place a value falls among them, the
    leaves still possible in every tree (a cumulative AND): one binary search and one lookup per
    feature and row, instead of a walk of up to 20 levels."""

    MAX_TABLE_BYTES = 64 << 20  # else the level walk: memory before speed

    def __init__(self, features: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
                 values: np.ndarray, width: int, dtype: Any) -> None:  # fmt: skip
        self.features = features  # feature: (sorted thresholds, leaves by place, if missing)
        self.values = values.ravel()  # (trees, width): leaf values, left to right
        self.offsets = np.arange(len(values)) * width
        self.all = np.array(~dtype(0), dtype=dtype)

    @classmethod
    def of(cls, nodes: list[Any]) -> BitVectors | None:
        """The tables for these trees; None when a tree has more than 64 leaves or the tables
        would take more than MAX_TABLE_BYTES."""
        leaves = [_leaves_in_order(tree) for tree in nodes]
        width = max(len(order) for order in leaves)
        if width > 64:
            return None
        dtype = np.uint32 if width <= 32 else np.uint64
        full = int(np.iinfo(dtype).max)
        splits: dict[int, list[tuple[float, int, int, bool]]] = {}
        values = np.zeros((len(nodes), width))
        for t, (tree, order) in enumerate(zip(nodes, leaves, strict=True)):
            feature, threshold, nan_left, _, _, _, value = tree
            values[t, : len(order)] = [value[node] for node in order]
            for node, (low, high) in _left_leaves(tree, order).items():
                mask = full & ~(((1 << (high - low)) - 1) << low)  # not its left subtree's leaves
                splits.setdefault(feature[node], []).append(
                    (threshold[node], t, mask, bool(nan_left[node]))
                )
        size = sum(len(s) + 2 for s in splits.values()) * len(nodes) * np.dtype(dtype).itemsize
        if size > cls.MAX_TABLE_BYTES:
            return None
        tables = {}
        for feature, found in splits.items():
            found.sort(key=lambda split: split[0])
            thresholds = np.array([split[0] for split in found])
            ruled_out = np.full((len(found), len(nodes)), full, dtype=dtype)
            ruled_out[np.arange(len(found)), [split[1] for split in found]] = [
                split[2] for split in found
            ]
            by_place = np.vstack(
                [np.full((1, len(nodes)), full, dtype=dtype),
                 np.bitwise_and.accumulate(ruled_out, axis=0)]
            )  # fmt: skip
            if_missing = np.full(len(nodes), full, dtype=dtype)
            for _, t, mask, nan_left in found:
                if not nan_left:
                    if_missing[t] &= dtype(mask)
            tables[int(feature)] = (thresholds, by_place, if_missing)
        return cls(tables, values, width, dtype)

    def leaf_values(self, Z: np.ndarray) -> np.ndarray:
        """Each row's leaf value in each tree, (rows, trees)."""
        possible = np.broadcast_to(self.all, (len(Z), len(self.offsets))).copy()
        for feature, (thresholds, by_place, if_missing) in self.features.items():
            x = Z[:, feature]
            # Splits with threshold < x are not passed; "left" counts them, NaN sorts last.
            lookup = by_place[np.searchsorted(thresholds, x, side="left")]
            missing = np.isnan(x)
            if missing.any():
                lookup[missing] = if_missing
            possible &= lookup
        lowest = possible & (~possible + 1)  # the leftmost possible leaf's bit
        leaf = np.frexp(lowest.astype(np.float64))[1] - 1  # its position (exact: a power of 2)
        return np.take(self.values, self.offsets + leaf)


def _thresholds(nodes: list[Any]) -> dict[int, list[float]]:
    """Each feature's split thresholds, sorted (training/numpy_export.py checks values there)."""
    found: dict[int, set[float]] = {}
    for feature, threshold, _, _, _, is_leaf, _ in nodes:
        for f, t, leaf in zip(feature, threshold, is_leaf, strict=True):
            if not leaf:
                found.setdefault(int(f), set()).add(float(t))
    return {f: sorted(ts) for f, ts in found.items()}


def _leaves_in_order(tree: list[Any]) -> list[int]:
    """A tree's leaves, left to right."""
    _, _, _, left, right, is_leaf, _ = tree
    order, todo = [], [0]
    while todo:
        node = todo.pop()
        if is_leaf[node]:
            order.append(node)
        else:
            todo += [right[node], left[node]]  # left first
    return order


def _left_leaves(tree: list[Any], order: list[int]) -> dict[int, tuple[int, int]]:
    """For each split, the positions [low, high) of its left subtree's leaves."""
    _, _, _, left, right, is_leaf, _ = tree
    position = {node: i for i, node in enumerate(order)}
    span: dict[int, tuple[int, int]] = {}

    def leaves_of(node: int) -> tuple[int, int]:
        if is_leaf[node]:
            return position[node], position[node] + 1
        low, _ = leaves_of(left[node])
        _, high = leaves_of(right[node])
        return low, high

    for node in range(len(is_leaf)):
        if not is_leaf[node]:
            span[node] = leaves_of(left[node])
    return span


class LevelWalk:
    """All trees walked a level at a time, for ensembles too large for bit vectors."""

    def __init__(self, nodes: list[Any]) -> None:
        count = len(nodes)
        width = max(len(tree[0]) for tree in nodes)
        offsets = np.arange(count) * width
        feature = np.zeros((count, width), dtype=np.intp)
        threshold = np.zeros((count, width))
        nan_left = np.zeros((count, width), dtype=bool)
        left = np.tile(np.arange(width), (count, 1))  # a leaf (and padding) points at itself
        right = left.copy()
        value = np.zeros((count, width))
        self.depth = 0
        for t, (f, thr, nl, lft, rgt, leaf, val) in enumerate(nodes):
            n = len(f)
            split = ~np.asarray(leaf, dtype=bool)
            feature[t, :n] = f
            threshold[t, :n] = thr
            nan_left[t, :n] = nl
            left[t, :n] = np.where(split, lft, np.arange(n))
            right[t, :n] = np.where(split, rgt, np.arange(n))
            value[t, :n] = val
            self.depth = max(self.depth, _depth(lft, rgt, split))
        # Flat, with global node numbers: one np.take per array per level.
        self.feature = feature.ravel()
        self.threshold = threshold.ravel()
        self.nan_left = nan_left.ravel()
        self.left = (left + offsets[:, None]).ravel()
        self.right = (right + offsets[:, None]).ravel()
        self.value = value.ravel()
        self.roots = offsets

    def leaf_values(self, Z: np.ndarray) -> np.ndarray:
        """Each row's leaf value in each tree, (rows, trees)."""
        rows, width = Z.shape
        flat = Z.ravel()
        base = (np.arange(rows) * width)[:, None]
        node = np.broadcast_to(self.roots, (rows, len(self.roots)))
        for level in range(self.depth):
            x = np.take(flat, base + np.take(self.feature, node))
            go_left = np.where(
                np.isnan(x), np.take(self.nan_left, node), x <= np.take(self.threshold, node)
            )
            step = np.where(go_left, np.take(self.left, node), np.take(self.right, node))
            if level % 4 == 3 and (step == node).all():  # every row at its leaves
                break
            node = step
        return np.take(self.value, node)


def _depth(left: list[int], right: list[int], split: np.ndarray) -> int:
    """The number of splits on the longest path from the root."""
    deepest, todo = 0, [(0, 0)]
    while todo:
        node, depth = todo.pop()
        if split[node]:
            todo += [(left[node], depth + 1), (right[node], depth + 1)]
        else:
            deepest = max(deepest, depth)
    return deepest


# --- the links: raw scores to answers, as scikit-learn's losses compute them ---------------


def _expit_both(raw: np.ndarray) -> np.ndarray:
    """HalfBinomialLoss.predict_proba: expit(raw), and 1 minus it."""
    raw = raw[:, 0]
    proba = np.empty((len(raw), 2))
    proba[:, 1] = _expit(raw)
    proba[:, 0] = 1 - proba[:, 1]
    return proba


def _expit(x: np.ndarray) -> np.ndarray:
    """scipy.special.expit, which scikit-learn calls: 1 / (1 + exp(-x)) with the C library's
    exp. numpy's own exp differs from it in the last bit for about 2 % of values; math.exp is the
    C library's (equal to scipy's on a million values), and spares importing scipy (0.8 s of a
    cold start) for about 1 µs a row."""
    return np.array([_expit_one(v) for v in x.tolist()], dtype=np.float64)


def _expit_one(v: float) -> float:
    try:
        return 1.0 / (1.0 + math.exp(-v))
    except OverflowError:  # exp(-v) beyond float64: scipy's inf, then 1 / inf
        return 0.0


def _softmax(raw: np.ndarray) -> np.ndarray:
    """sklearn.utils.extmath.softmax, step by step."""
    X = np.asarray(raw, copy=True)
    X -= np.reshape(np.max(X, axis=1), (-1, 1))
    np.exp(X, out=X)
    X /= np.reshape(np.sum(X, axis=1), (-1, 1))
    return X


LINKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda raw: raw,
    "log": np.exp,
    "logit": _expit_both,
    "multinomial_logit": _softmax,
}


# --- the columns: the request's checked values as the fitted steps took them ---------------


def _input(feature: dict[str, Any]) -> Callable[[np.ndarray], Column]:
    """Turn one checked column (function/schema.check_column) into what the pipeline saw: a
    number float64 (whole-number columns through their fitted integer dtype, as the DataFrame
    the scikit-learn runtime builds), a boolean 0/1, a category its objects."""
    kind, dtype = feature["type"], str(feature.get("dtype", "float64"))
    if kind == "category":
        return lambda values: np.asarray(values, dtype=object)
    if dtype.startswith("int"):

        def whole(values: np.ndarray) -> Column:
            column = np.asarray(values, dtype=np.float64)
            if np.isnan(column).any():
                return column
            return column.astype(dtype).astype(np.float64)

        return whole
    return lambda values: np.asarray(values, dtype=np.float64)


def _as_float(column: Column) -> Column:
    return column if column.dtype == np.float64 else column.astype(np.float64)


def _step(spec: dict[str, Any]) -> Step:
    return STEPS[spec["kind"]](spec)


def _columns(spec: dict[str, Any]) -> Step:
    """A ColumnTransformer: each part's steps on its columns, the parts' outputs side by side."""
    parts = [([int(j) for j in part["columns"]], [_step(s) for s in part["steps"]])
             for part in spec["parts"]]  # fmt: skip

    def apply(columns: list[Column]) -> list[Column]:
        out: list[Column] = []
        for indices, steps in parts:
            selected = [columns[j] for j in indices]
            for step in steps:
                selected = step(selected)
            out += selected
        return out

    return apply


def _key(value: Any) -> Any:
    """A value as a lookup key: every NaN the same key (None, once a request's null is NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _lookups(categories: list[list[Any]]) -> list[dict[Any, int]]:
    return [{_key(c): i for i, c in enumerate(cats)} for cats in categories]


def _unknown(value: Any, j: int) -> ValueError:
    return ValueError(f"Found unknown categories [{value!r}] in column {j} during transform")


def _one_hot(spec: dict[str, Any]) -> Step:
    """OneHotEncoder: one 0/1 column per known category; an unknown value all zeros ("ignore")
    or refused ("error")."""
    lookups = _lookups(spec["categories"])
    ignore = spec["unknown"] == "ignore"

    def apply(columns: list[Column]) -> list[Column]:
        out = []
        for j, (column, lookup) in enumerate(zip(columns, lookups, strict=True)):
            codes = _codes(column, lookup, j, ignore)
            block = np.zeros((len(column), len(lookup)))
            known = codes >= 0
            block[np.flatnonzero(known), codes[known]] = 1.0
            out += list(block.T)
        return out

    return apply


def _ordinal(spec: dict[str, Any]) -> Step:
    """OrdinalEncoder: a category's position; a missing value encoded_missing_value where the
    categories hold one, an unknown one unknown_value (or refused)."""
    lookups = _lookups(spec["categories"])
    unknown_value, missing_value = spec["unknown_value"], spec["missing_value"]
    ignore = unknown_value is not None

    def apply(columns: list[Column]) -> list[Column]:
        out = []
        for j, (column, lookup) in enumerate(zip(columns, lookups, strict=True)):
            codes = _codes(column, lookup, j, ignore)
            encoded = codes.astype(np.float64)
            encoded[codes < 0] = unknown_value if ignore else np.nan
            if None in lookup:
                encoded[codes == lookup[None]] = missing_value
            out.append(encoded)
        return out

    return apply


def _codes(column: Column, lookup: dict[Any, int], j: int, ignore: bool) -> np.ndarray:
    """Each value's category number (-1 for one the encoder does not know)."""
    values = column.tolist()
    codes = np.fromiter((lookup.get(_key(v), -1) for v in values), dtype=np.intp, count=len(values))
    if not ignore and (codes < 0).any():
        raise _unknown(values[int(np.argmax(codes < 0))], j)
    return codes


def _impute(spec: dict[str, Any]) -> Step:
    """SimpleImputer (missing values NaN): each missing value its column's fitted statistic."""
    statistics = spec["statistics"]

    def apply(columns: list[Column]) -> list[Column]:
        out = []
        for column, statistic in zip(columns, statistics, strict=True):
            if column.dtype == object:
                missing = np.fromiter((_key(v) is None for v in column.tolist()), bool, len(column))
                filled = column.copy()
            else:
                missing = np.isnan(column)
                filled = column.astype(np.float64, copy=True)
            filled[missing] = statistic
            out.append(filled)
        return out

    return apply


def _each_column(one: Callable[[int, Column], Column]) -> Step:
    """A step that maps each of its columns alone: one(its position, its values)."""
    return lambda columns: [one(j, column) for j, column in enumerate(columns)]


def _scale(spec: dict[str, Any]) -> Step:
    """StandardScaler: subtract the mean, then divide by the scale, each if fitted so."""
    mean, scale = spec["mean"], spec["scale"]

    def one(j: int, column: Column) -> Column:
        x = _as_float(column).copy()
        if mean is not None:
            x -= mean[j]
        if scale is not None:
            x /= scale[j]
        return x

    return _each_column(one)


def _min_max(spec: dict[str, Any]) -> Step:
    """MinMaxScaler: times scale_, plus min_ (clip refused at export)."""
    scale, low = spec["scale"], spec["min"]

    def one(j: int, column: Column) -> Column:
        x = _as_float(column) * scale[j]
        x += low[j]
        return x

    return _each_column(one)


STEPS: dict[str, Callable[[dict[str, Any]], Step]] = {
    "columns": _columns,
    "one_hot": _one_hot,
    "ordinal": _ordinal,
    "impute": _impute,
    "scale": _scale,
    "min_max": _min_max,
}


def numpy_model(data: bytes, metadata: dict[str, Any]) -> NumpyModel:
    """The verified compiled pipeline, from its file's bytes."""
    return NumpyModel(json.loads(data), metadata)
