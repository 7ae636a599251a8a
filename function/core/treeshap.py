"""modelrun's own path-dependent TreeSHAP, for a HistGradientBoosting with native categorical
features: shap 0.49.1 reads their splits as numeric thresholds (its TreeExplainer never reads
the bitsets), so its values for such a model are not the model's.

The algorithm is Lundberg et al. 2018, "Consistent Individualized Feature Attribution for Tree
Ensembles", Algorithm 2 (EXTEND and UNWIND over the unique features of the path; the hot child is
the one the row goes to, the cold one the other, weighted by the nodes' training sample counts),
written as shap's `tree_shap_recursive` writes it, so that on numeric splits the numbers are
shap's. It walks scikit-learn's own predictor nodes (`_predictors`), and decides each node as
scikit-learn's `_predict_from_raw_data` does: a gap goes where `missing_go_to_left` says; a
category goes left when in the node's bitset, right when a known category, and else (unknown, or
negative) as a gap. The rows are first encoded by the estimator's own `_preprocessor` (which puts
the categorical columns first), and the attributions are given back to the columns it received.

The node layout is scikit-learn's; `Trees.of` refuses a version whose layout was not read here.
numba compiles the walk on the first explanation (imported then, as shap is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# scikit-learn's PREDICTOR_RECORD_DTYPE and the versions whose predictors were read for this.
NODE_FIELDS = (
    "value", "count", "feature_idx", "num_threshold", "missing_go_to_left", "left", "right",
    "gain", "depth", "is_leaf", "bin_threshold", "is_categorical", "bitset_idx",
)  # fmt: skip
VERIFIED_SKLEARN = ("1.9",)


class Unsupported(ValueError):
    """This estimator's trees cannot be read here; the message says why."""


@dataclass(frozen=True)
class Trees:
    """A HistGradientBoosting's trees as flat arrays (every tree's nodes one after another), with
    what the walk needs to decide a categorical split, and each output's base value."""

    left: np.ndarray  # int64, a node's children as indices into the flat arrays
    right: np.ndarray
    feature: np.ndarray  # int64, in the estimator's own (encoded) column order
    threshold: np.ndarray  # float64
    missing_left: np.ndarray  # bool
    leaf: np.ndarray  # bool
    categorical: np.ndarray  # bool
    bitset: np.ndarray  # int64, the node's row in `left_categories`
    value: np.ndarray  # float64: a leaf's value; elsewhere the mean of its leaves by counts
    cover: np.ndarray  # float64, the training rows that reached the node
    roots: np.ndarray  # int64, each tree's first node
    outputs: np.ndarray  # int64, the output (class column) each tree adds to
    left_categories: np.ndarray  # uint32 (splits, 8): the categories each split sends left
    known_categories: np.ndarray  # uint32 (categorical features, 8)
    known_row: np.ndarray  # int64, a column's row in known_categories
    baseline: np.ndarray  # float64 (outputs,): the estimator's _baseline_prediction
    expected_value: np.ndarray  # float64 (outputs,): the base value of every explanation
    depth: int
    estimator: Any
    columns: np.ndarray  # int64: the column of the estimator's input each encoded column is

    @classmethod
    def of(cls, estimator: Any) -> Trees:
        """Read a fitted HistGradientBoosting's trees; Unsupported for a layout not read here."""
        import sklearn

        version = ".".join(sklearn.__version__.split(".")[:2])
        if version not in VERIFIED_SKLEARN:
            raise Unsupported(
                f"modelrun's TreeSHAP reads scikit-learn {', '.join(VERIFIED_SKLEARN)}'s "
                f"HistGradientBoosting trees, and this is scikit-learn {sklearn.__version__}"
            )
        link = type(estimator._loss.link).__name__
        if not hasattr(estimator, "classes_") and link != "IdentityLink":
            raise Unsupported(
                f"a regressor whose loss is {estimator.loss!r} predicts through a {link}, so "
                "its prediction is not the sum of its trees (squared_error, absolute_error "
                "and quantile are)"
            )
        predictors = [tree for iteration in estimator._predictors for tree in iteration]
        for tree in predictors:
            if tree.nodes.dtype.names != NODE_FIELDS:
                raise Unsupported(
                    f"a HistGradientBoosting tree's nodes hold {tree.nodes.dtype.names}, not the "
                    "layout modelrun's TreeSHAP reads"
                )
        columns = _encoded_columns(estimator)
        per_iteration = len(estimator._predictors[0])
        known, known_row = estimator._bin_mapper.make_known_categories_bitsets()
        parts: dict[str, list[np.ndarray]] = {}
        left_categories, roots, offset, splits = [], [], 0, 0
        for tree in predictors:
            nodes = tree.nodes
            inner, index = ~nodes["is_leaf"].astype(bool), np.arange(len(nodes))
            # _expectations reads children before parents; the walk divides by a node's count.
            if np.any(inner & ((nodes["left"] <= index) | (nodes["right"] <= index))):
                raise Unsupported("a tree's children come before their parent")
            if np.any(inner & (nodes["count"] == 0)):
                raise Unsupported("a tree has a split that no training row reached")
            roots.append(offset)
            for name, field, dtype in (
                ("left", "left", np.int64), ("right", "right", np.int64),
                ("feature", "feature_idx", np.int64), ("threshold", "num_threshold", np.float64),
                ("missing_left", "missing_go_to_left", bool), ("leaf", "is_leaf", bool),
                ("categorical", "is_categorical", bool), ("bitset", "bitset_idx", np.int64),
                ("value", "value", np.float64), ("cover", "count", np.float64),
            ):  # fmt: skip
                column = nodes[field].astype(dtype)
                if name in ("left", "right"):
                    column = column + offset
                elif name == "bitset":
                    column = column + splits
                parts.setdefault(name, []).append(column)
            left_categories.append(np.asarray(tree.raw_left_cat_bitsets, dtype=np.uint32))
            offset += len(nodes)
            splits += len(tree.raw_left_cat_bitsets)
        flat = {name: np.concatenate(arrays) for name, arrays in parts.items()}
        flat["value"] = _expectations(flat["left"], flat["right"], flat["leaf"], flat["value"],
                                      flat["cover"])  # fmt: skip
        roots_array = np.array(roots, dtype=np.int64)
        outputs = np.arange(len(predictors), dtype=np.int64) % per_iteration
        baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).ravel()
        expected = baseline.copy()
        np.add.at(expected, outputs, flat["value"][roots_array])
        return cls(
            **flat,
            roots=roots_array,
            outputs=outputs,
            left_categories=(
                np.concatenate(left_categories) if splits else np.zeros((1, 8), dtype=np.uint32)
            ),
            known_categories=(
                np.ascontiguousarray(known, dtype=np.uint32)
                if len(known)
                else np.zeros((1, 8), dtype=np.uint32)
            ),
            known_row=np.asarray(known_row, dtype=np.int64),
            baseline=baseline,
            expected_value=expected,
            depth=int(max(int(t.nodes["depth"].max()) for t in predictors)),
            estimator=estimator,
            columns=columns,
        )

    def _encoded(self, Z: Any) -> np.ndarray:
        """The rows as the trees read them: through the estimator's own encoder, if it has one
        (given the rows as the estimator is: objects, a DataFrame, as it was fitted on)."""
        pre = self.estimator._preprocessor
        encoded = Z if pre is None else pre.transform(Z)
        return np.ascontiguousarray(encoded, dtype=np.float64)

    def _arrays(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """The arrays as the kernels take them: the nodes', and the categories'."""
        nodes = (
            self.left, self.right, self.feature, self.threshold, self.missing_left, self.leaf,
            self.categorical, self.bitset, self.value, self.cover,
        )  # fmt: skip
        return nodes, (self.left_categories, self.known_categories, self.known_row)

    def shap_values(self, Z: Any, **_: Any) -> np.ndarray:
        """Each row's Shapley values, (rows, the estimator's input columns, outputs)."""
        X = self._encoded(Z)
        phi = np.zeros((len(X), X.shape[1], len(self.baseline)))
        _kernels().shap_values(X, *self._arrays(), self.roots, self.outputs, self.depth, phi)
        out = np.zeros_like(phi)
        out[:, self.columns] = phi  # back to the columns the estimator was given
        return out

    def predict(self, Z: Any) -> np.ndarray:
        """The raw output the trees give, (rows, outputs): the baseline and each row's leaves."""
        return self.predict_encoded(self._encoded(Z))

    def predict_encoded(self, X: np.ndarray) -> np.ndarray:
        """predict, for rows already through the estimator's encoder (float64, C order)."""
        out = np.tile(self.baseline, (len(X), 1))
        _kernels().predict(X, *self._arrays(), self.roots, self.outputs, out)
        return out


def _encoded_columns(estimator: Any) -> np.ndarray:
    """For each column the trees split on, the input column of the estimator it encodes: its
    _preprocessor puts the categorical columns first, then the others, each in input order."""
    categorical = getattr(estimator, "is_categorical_", None)
    pre = getattr(estimator, "_preprocessor", None)
    if categorical is None or pre is None:
        if categorical is not None or pre is not None:
            raise Unsupported("a HistGradientBoosting with categories but no encoder of its own")
        return np.arange(estimator.n_features_in_, dtype=np.int64)
    categorical = np.asarray(categorical, dtype=bool)
    order = np.concatenate([np.flatnonzero(categorical), np.flatnonzero(~categorical)])
    encoder = pre.output_indices_["encoder"]
    remapped = np.asarray(estimator._is_categorical_remapped, dtype=bool)
    if (encoder.start, encoder.stop) != (0, categorical.sum()) or remapped.tolist() != sorted(
        remapped.tolist(), reverse=True
    ):
        raise Unsupported("a HistGradientBoosting whose encoder does not put categories first")
    return order.astype(np.int64)


def _expectations(
    left: np.ndarray, right: np.ndarray, leaf: np.ndarray, value: np.ndarray, cover: np.ndarray
) -> np.ndarray:
    """Each internal node's value as the mean of its children's by their counts, as shap's
    compute_expectations sets it (children come after their parent, so backwards)."""
    value = value.copy()
    for i in np.flatnonzero(~leaf)[::-1]:
        a, b = left[i], right[i]
        weight = cover[a] + cover[b]
        value[i] = 0.0 if weight == 0 else (cover[a] * value[a] + cover[b] * value[b]) / weight
    return value


_compiled: Any = None


def _kernels() -> Any:
    """The numba kernels, compiled once, when the first explainer is built (seconds: outside
    any request's time limit, as shap's import is)."""
    global _compiled
    if _compiled is None:
        from function.core import treeshap_kernels

        # Both kernels compiled now, for the types Trees always holds: a one-leaf tree, one row.
        i, f, b = np.zeros(1, np.int64), np.zeros(1), np.ones(1, bool)
        nodes = (i, i, i, f, b, b, b, i, f, f)
        categories = (np.zeros((1, 8), np.uint32), np.zeros((1, 8), np.uint32), i)
        X = np.zeros((1, 1))
        treeshap_kernels.shap_values(X, nodes, categories, i, i, 0, np.zeros((1, 1, 1)))
        treeshap_kernels.predict(X, nodes, categories, i, i, np.zeros((1, 1)))
        _compiled = treeshap_kernels
    return _compiled
