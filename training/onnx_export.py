"""Export a fitted pipeline to ONNX and verify it against the pipeline before it may be served.

The ONNX file is a second, faster way to run the same model (onnxruntime, without importing
scikit-learn). It is written only if its labels equal the pipeline's on the hold-out rows and on
generated rows spanning the training data (and rows with each feature that may be missing left
out), and its probabilities stay within a stated tolerance.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from function.core.artifact import ARGMAX_CLASSIFIERS

# Linear models agree to rounding; trees' leaf values are summed in float32 by onnxruntime.
PROBABILITY_TOLERANCE = {"linear": 1e-9, "tree": 1e-5}
GENERATED_ROWS = 5000
TREE_OPERATORS = {"TreeEnsembleClassifier", "TreeEnsembleRegressor"}


def export(
    pipeline: Any,
    X_train: np.ndarray,
    X_test: np.ndarray,
    seed: int,
    task: str,
    nullable: Sequence[int] = (),
) -> tuple[bytes | None, dict[str, Any]]:
    """Return (model.onnx bytes or None, the record that goes into metadata.json). Columns in
    `nullable` may be missing in a request: rows with each of them missing are verified too."""
    try:
        from skl2onnx import to_onnx

        options = {"zipmap": False} if task == "classification" else None  # probabilities: a tensor
        trees = sklearn_trees(pipeline)
        dtype = np.float32 if trees is not None else np.float64
        model = to_onnx(pipeline, X_train[:1].astype(dtype), options=options)
        if trees is not None:
            make_exact(model, pipeline, trees)
        data = model.SerializeToString()
        rows = np.vstack([X_test, _generated(X_train, seed), *_with_gaps(X_test, nullable)])
        record = verify(data, pipeline, rows, task)
    except Exception as e:  # optional: not every model converts or runs; say why, keep sklearn
        return None, {"exported": False, "verified": False, "reason": _why_not(e)}
    return (data if record["verified"] else None), record


def _why_not(error: Exception) -> str:
    """Why a pipeline was not exported, in words a user can act on (it is served by sklearn)."""
    missing = re.search(r"Could not find an implementation for (\w+)\(\d+\) node", str(error))
    if missing:  # e.g. an imputer in a float64 graph: ai.onnx.ml's Imputer has no double kernel
        return (
            f"not exported because onnxruntime has no implementation of the {missing[1]} "
            "operator for this pipeline's numbers (float64); scikit-learn serves it, exactly"
        )
    runtime = re.search(r"\[ONNXRuntimeError\] : \d+ : \w+ : (.*)", str(error))
    if runtime:  # e.g. a HistGradientBoosting graph whose output types onnxruntime refuses
        return (
            "not exported because onnxruntime cannot run skl2onnx's graph of this pipeline "
            f"({runtime[1][:200]}); scikit-learn serves it, exactly"
        )
    return f"not exported because {type(error).__name__}: {error}"[:300]


def verify(data: bytes, pipeline: Any, rows: np.ndarray, task: str) -> dict[str, Any]:
    """Compare the ONNX model with the pipeline on rows: labels exactly, probabilities closely."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    graph_input = session.get_inputs()[0]
    dtype = np.float32 if graph_input.type == "tensor(float)" else np.float64
    outputs = session.run(None, {graph_input.name: rows.astype(dtype)})
    expected = pipeline.predict(rows)
    labels = np.asarray(outputs[0]).reshape(expected.shape)
    record: dict[str, Any] = {"exported": True, "rows_checked": len(rows)}
    if task == "regression":
        difference = float(np.max(np.abs(labels.astype(np.float64) - expected)))
        scale = float(np.max(np.abs(expected))) or 1.0
        record.update(max_prediction_difference=difference, tolerance=1e-6 * scale)
        record["verified"] = difference <= record["tolerance"]
        return record
    mismatched = int(np.sum(labels.astype(str) != expected.astype(str)))
    if not hasattr(pipeline, "predict_proba"):  # e.g. an SVC without probabilities: labels only
        record.update(labels_mismatched=mismatched, probabilities=False, tolerance=0.0)
        record["verified"] = mismatched == 0
        return record
    kind = "tree" if hasattr(pipeline[-1], "estimators_") else "linear"
    difference = float(np.max(np.abs(outputs[1] - pipeline.predict_proba(rows))))
    record.update(
        labels_mismatched=mismatched,
        probabilities=True,
        max_probability_difference=difference,
        tolerance=PROBABILITY_TOLERANCE[kind],
    )
    record["verified"] = mismatched == 0 and difference <= record["tolerance"]
    return record


def sklearn_trees(pipeline: Any) -> list[Any] | None:
    """The fitted `tree_`s of a pipeline whose estimator is scikit-learn trees (a tree, a forest,
    gradient boosting) fed straight from the input, in the order skl2onnx numbers them; else None.

    scikit-learn casts such an estimator's input to float32 and compares it with float64
    thresholds. A float32 graph whose thresholds are each rounded *down* to a float32 makes every
    comparison identical: for a float32 x, x <= t exactly when x <= the largest float32 <= t.
    """
    steps = [step for _, step in pipeline.steps]
    final = steps[-1]
    if any(type(step).__name__ != "SimpleImputer" for step in steps[:-1]):
        return None  # a scaler before the trees computes in float64 first: keep a float64 graph
    if hasattr(final, "tree_"):
        return [final.tree_]
    estimators = getattr(final, "estimators_", None)
    if estimators is None:
        return None
    flat = np.asarray(estimators, dtype=object).ravel()  # gradient boosting: stages x classes
    if not all(hasattr(estimator, "tree_") for estimator in flat):
        return None
    return [estimator.tree_ for estimator in flat]


def make_exact(model: Any, pipeline: Any, trees: list[Any]) -> None:
    """Make a float32 tree graph decide as scikit-learn does: thresholds rounded down, and a
    forest's votes counted in whole numbers (see below)."""
    (node,) = [n for n in model.graph.node if n.op_type in TREE_OPERATORS]
    attributes = {a.name: a for a in node.attribute}
    _round_thresholds_down(attributes, trees)
    if type(pipeline[-1]).__name__ in ARGMAX_CLASSIFIERS:
        _count_votes(model, node, attributes, trees, pipeline.classes_)


def _round_thresholds_down(attributes: dict[str, Any], trees: list[Any]) -> None:
    """Replace each threshold by the largest float32 <= scikit-learn's own, after checking that
    the graph's node is the scikit-learn node it claims to be."""
    values = []
    for tree_id, node_id, feature, mode, value in zip(
        attributes["nodes_treeids"].ints,
        attributes["nodes_nodeids"].ints,
        attributes["nodes_featureids"].ints,
        attributes["nodes_modes"].strings,
        attributes["nodes_values"].floats,
        strict=True,
    ):
        if mode == b"LEAF":
            values.append(value)
            continue
        tree = trees[tree_id]
        threshold = float(tree.threshold[node_id])
        if mode != b"BRANCH_LEQ" or tree.feature[node_id] != feature:
            raise ValueError(f"tree {tree_id} node {node_id} is not scikit-learn's node")
        lower = np.float32(threshold)
        if float(lower) > threshold:
            lower = np.nextafter(lower, np.float32(-np.inf))
        if not _close(float(lower), value):
            raise ValueError(f"tree {tree_id} node {node_id} has another threshold")
        values.append(float(lower))
    _replace(attributes["nodes_values"].floats, values)


def _count_votes(
    model: Any, node: Any, attributes: dict[str, Any], trees: list[Any], classes: np.ndarray
) -> None:
    """A forest's probability is the mean of its trees' leaf proportions. skl2onnx sums
    proportion / n_trees in float32, in an order of its own, so a tie scikit-learn sees (say 7
    votes against 7) can come out 0.35 against 0.35000002 and pick another label. Summing the
    proportions themselves (whole votes when leaves are pure: exact in float32) keeps ties exact;
    the label is the first class with the most votes, and one division by the number of trees
    gives the probabilities."""
    from onnx import helper, numpy_helper

    n = len(trees)
    leaves = [
        (tree_id, node_id)
        for tree_id, node_id, mode in zip(
            attributes["nodes_treeids"].ints,
            attributes["nodes_nodeids"].ints,
            attributes["nodes_modes"].strings,
            strict=True,
        )
        if mode == b"LEAF"
    ]
    entries = [  # every class of every leaf, so two classes are not skl2onnx's binary shorthand
        (tree_id, node_id, k, float(value[0, k] / value[0].sum()))
        for tree_id, node_id in leaves
        for value in [trees[tree_id].value[node_id]]
        for k in range(len(classes))
    ]
    tree_ids, node_ids, class_ids, weights = zip(*entries, strict=True)
    _replace(attributes["class_treeids"].ints, tree_ids)
    _replace(attributes["class_nodeids"].ints, node_ids)
    _replace(attributes["class_ids"].ints, class_ids)
    _replace(attributes["class_weights"].floats, weights)
    label, probabilities = node.output
    node.output[:] = ["tree_label", "votes"]  # onnxruntime's own label: another rule for 2 classes
    labels = np.asarray(classes)
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array([n], dtype=np.float32), "tree_count"),
        numpy_helper.from_array(labels.astype(object if labels.dtype.kind == "U" else labels.dtype),
                                "class_labels"),
    ])  # fmt: skip
    model.graph.node.extend([
        helper.make_node("Div", ["votes", "tree_count"], [probabilities]),
        # the first of equal counts, as numpy's argmax in scikit-learn's predict
        helper.make_node("ArgMax", ["votes"], ["winner"], axis=1, keepdims=0),
        helper.make_node("Gather", ["class_labels", "winner"], [label]),
    ])  # fmt: skip


def _close(ours: float, theirs: float) -> bool:
    """Whether two float32 values are at most two steps apart."""
    return abs(ours - theirs) <= 2 * abs(float(np.spacing(np.float32(theirs))))


def _replace(field: Any, values: Sequence[float]) -> None:
    """Replace the contents of a repeated protobuf field."""
    del field[:]
    field.extend(values)


def _with_gaps(X: np.ndarray, columns: Sequence[int]) -> list[np.ndarray]:
    """For each column, some of the rows with that column missing."""
    gapped = []
    for j in columns:
        rows = X[:200].copy()
        rows[:, j] = np.nan
        gapped.append(rows)
    return gapped


def _generated(X: np.ndarray, seed: int) -> np.ndarray:
    """Rows drawn uniformly over the training data's range, a little beyond its edges."""
    low, high = np.nanmin(X, axis=0), np.nanmax(X, axis=0)
    with np.errstate(over="ignore"):
        margin = (high - low) * 0.1
    if not (np.isfinite(low - margin).all() and np.isfinite(high + margin).all()):
        return np.empty((0, X.shape[1]))  # data too extreme to span: the hold-out rows only
    rng = np.random.default_rng(seed)
    return rng.uniform(low - margin, high + margin, size=(GENERATED_ROWS, X.shape[1]))
