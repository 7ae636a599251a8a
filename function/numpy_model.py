"""Serve a verified compiled pipeline (model.numpy.json) with numpy alone, shaped like an
estimator for the core.

training/numpy_export.py writes the file from a fitted scikit-learn pipeline: its column steps
(one-hot and ordinal encoders, imputers, scalers, a ColumnTransformer) as their fitted values,
and its final HistGradientBoosting trees as arrays. Each step here does the arithmetic
scikit-learn's does, in the same order and in float64, so answers are identical, not close; the
export is written only where that was checked (metadata "numpy"). Nothing here imports
scikit-learn or pandas: a cold start skips both, and a row skips the DataFrame and the per-call
validation that cost milliseconds.

A big input (a batch file's block) walks the trees in scikit-learn's own compiled predictor
instead, when the installed scikit-learn is the version the file was verified with (its
private API); the numpy walk answers the same, more slowly for many rows.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

FORMAT = 1
COMPILED_WALK_ROWS = 256  # from this many rows, scikit-learn's own tree walk (when it matches)

Column = np.ndarray  # float64 for numbers, objects for categories
Step = Callable[[list[Column]], list[Column]]


class NumpyModel:
    """predict / predict_proba / predict_both / classes_ / n_features_in_ over a compiled
    pipeline."""

    def __init__(self, spec: dict[str, Any], metadata: dict[str, Any]) -> None:
        if spec.get("format") != FORMAT:
            raise ValueError(f"format {spec.get('format')!r}, this service reads {FORMAT}")
        self.sklearn_version = str(spec["sklearn"])
        self.inputs = [_input(f) for f in metadata["features"]]
        self.transforms = [_step(s) for s in spec["steps"]]
        self.trees = Trees(spec["trees"], self.sklearn_version)
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
        """Labels and probabilities from one walk of the trees (scikit-learn walks twice, and
        derives both from the same raw scores)."""
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
    scikit-learn's order ((baseline + tree 1) + tree 2 ...), per class."""

    def __init__(self, spec: dict[str, Any], sklearn_version: str) -> None:
        self.baseline = np.asarray(spec["baseline"], dtype=np.float64)  # one per class column
        self.per_iteration = len(self.baseline)
        nodes = spec["nodes"]  # per tree, iteration-major: [feature, threshold, nan_left,
        # left, right, is_leaf, value] lists
        self.count = len(nodes)
        width = max(len(tree[0]) for tree in nodes)
        offsets = np.arange(self.count) * width
        feature = np.zeros((self.count, width), dtype=np.intp)
        threshold = np.zeros((self.count, width))
        nan_left = np.zeros((self.count, width), dtype=bool)
        left = np.tile(np.arange(width), (self.count, 1))  # a leaf (and padding) points at itself
        right = left.copy()
        value = np.zeros((self.count, width))
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
        self.nodes, self.sklearn_version = nodes, sklearn_version

    def raw(self, Z: np.ndarray) -> np.ndarray:
        """Raw scores, (rows, classes), Fortran-ordered as scikit-learn's."""
        walk = self.compiled if len(Z) >= COMPILED_WALK_ROWS else None
        leaves = walk(Z) if walk is not None else self.leaf_values(Z).T
        raw = np.empty((len(Z), self.per_iteration), order="F")
        for k in range(self.per_iteration):
            raw[:, k] = self.baseline[k]
            for values in leaves[k :: self.per_iteration]:  # one tree's, in its order
                raw[:, k] += values
        return raw

    @functools.cached_property
    def compiled(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """scikit-learn's compiled walk over these trees, imported on the first big input."""
        return _compiled_walk(self.nodes, self.sklearn_version)

    def leaf_values(self, Z: np.ndarray) -> np.ndarray:
        """Each row's leaf value in each tree, (rows, trees), by walking all trees a level at a
        time: x <= threshold goes left, a missing x where the split sends missing values."""
        rows, width = Z.shape
        flat = Z.ravel()
        base = (np.arange(rows) * width)[:, None]
        node = np.broadcast_to(self.roots, (rows, self.count))
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


def _compiled_walk(
    nodes: list[Any], sklearn_version: str
) -> Callable[[np.ndarray], np.ndarray] | None:
    """scikit-learn's own tree walk over these trees, when the installed version is the one the
    export was verified with (it is private API); None otherwise, or without scikit-learn."""
    try:
        import sklearn

        if sklearn.__version__ != sklearn_version:
            return None
        from sklearn.ensemble._hist_gradient_boosting._predictor import _predict_from_raw_data
        from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
    except ImportError:
        return None
    records = []
    for f, thr, nl, lft, rgt, leaf, val in nodes:
        record = np.zeros(len(f), dtype=PREDICTOR_RECORD_DTYPE)
        record["feature_idx"], record["num_threshold"], record["missing_go_to_left"] = f, thr, nl
        record["left"], record["right"], record["is_leaf"], record["value"] = lft, rgt, leaf, val
        records.append(record)
    no_bitsets = np.zeros((0, 8), dtype=np.uint32)
    no_map = np.zeros(0, dtype=np.uint32)

    def walk(Z: np.ndarray) -> np.ndarray:
        out = np.empty((len(records), len(Z)))  # a tree's values contiguous
        for record, values in zip(records, out, strict=True):
            _predict_from_raw_data(record, Z, no_bitsets, no_bitsets, no_map, 1, values)
        return out

    return walk


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
    C library's, so a few rows skip importing scipy (0.8 s of a cold start). Many rows use scipy
    itself (imported by then for the compiled walk)."""
    if len(x) >= COMPILED_WALK_ROWS:
        from scipy.special import expit

        return np.asarray(expit(x))
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


def _scale(spec: dict[str, Any]) -> Step:
    """StandardScaler: subtract the mean, then divide by the scale, each if fitted so."""
    mean, scale = spec["mean"], spec["scale"]

    def apply(columns: list[Column]) -> list[Column]:
        out = []
        for j, column in enumerate(columns):
            x = _as_float(column).copy()
            if mean is not None:
                x -= mean[j]
            if scale is not None:
                x /= scale[j]
            out.append(x)
        return out

    return apply


def _min_max(spec: dict[str, Any]) -> Step:
    """MinMaxScaler: times scale_, plus min_ (clip refused at export)."""
    scale, low = spec["scale"], spec["min"]

    def apply(columns: list[Column]) -> list[Column]:
        out = []
        for j, column in enumerate(columns):
            x = _as_float(column) * scale[j]
            x += low[j]
            out.append(x)
        return out

    return apply


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
