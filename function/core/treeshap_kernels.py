"""The numba kernels of function/core/treeshap.py: imported, and compiled, on the first
explanation.

`_tree_shap` is shap's `tree_shap_recursive` (shap/cext/tree_shap.h, with no conditioning) with
its recursion made an explicit stack: each call's path lives in the path buffers from its
`start`, which is its parent's start + its parent's depth + 1, as shap places them; a call's
children only write after its path, so the sibling waiting on the stack still finds it whole.

`nodes` is (left, right, feature, threshold, missing_left, leaf, categorical, bitset, value,
cover) and `categories` (left_categories, known_categories, known_row): treeshap.Trees's arrays.
"""
# mypy: allow-untyped-defs
# (numba compiles from the values it is given; annotations would only repeat treeshap.Trees)

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit
def _goes_left(x, node, nodes, categories):
    """scikit-learn's _predict_one_from_raw_data at one node (its Cython, read for 1.9)."""
    _, _, feature, threshold, missing_left, _, categorical, bitset, _, _ = nodes
    left_categories, known_categories, known_row = categories
    v = x[feature[node]]
    if math.isnan(v):
        return missing_left[node]
    if categorical[node]:
        # Negative is a gap. A code is below max_bins (255), and the estimator's own encoder
        # gives only its known codes or a gap, so none at 256 or above is seen here.
        if v < 0 or v >= 256:
            return missing_left[node]
        code = int(v)  # scikit-learn casts to uint8: the integer part
        word, bit = code // 32, code % 32
        if (left_categories[bitset[node], word] >> bit) & 1:
            return True
        if (known_categories[known_row[feature[node]], word] >> bit) & 1:
            return False
        return missing_left[node]  # a category unseen in training goes as a gap
    return v <= threshold[node]


@njit
def _extend(path, weight, start, depth, zero_fraction, one_fraction, feature):
    """EXTEND: add a feature's split to the path, growing every subset's weight."""
    features, zero, one = path
    features[start + depth] = feature
    zero[start + depth] = zero_fraction
    one[start + depth] = one_fraction
    weight[start + depth] = 1.0 if depth == 0 else 0.0
    for i in range(depth - 1, -1, -1):
        weight[start + i + 1] += one_fraction * weight[start + i] * (i + 1) / (depth + 1)
        weight[start + i] = zero_fraction * weight[start + i] * (depth - i) / (depth + 1)


@njit
def _unwind(path, weight, start, depth, index):
    """UNWIND: take the split at `index` out of the path (EXTEND undone)."""
    features, zero, one = path
    one_fraction = one[start + index]
    zero_fraction = zero[start + index]
    next_one = weight[start + depth]
    for i in range(depth - 1, -1, -1):
        if one_fraction != 0:
            tmp = weight[start + i]
            weight[start + i] = next_one * (depth + 1) / ((i + 1) * one_fraction)
            next_one = tmp - weight[start + i] * zero_fraction * (depth - i) / (depth + 1)
        else:
            weight[start + i] = weight[start + i] * (depth + 1) / (zero_fraction * (depth - i))
    for i in range(index, depth):
        features[start + i] = features[start + i + 1]
        zero[start + i] = zero[start + i + 1]
        one[start + i] = one[start + i + 1]


@njit
def _unwound_sum(path, weight, start, depth, index):
    """The total weight of the path with the split at `index` unwound (not changing it)."""
    _, zero, one = path
    one_fraction = one[start + index]
    zero_fraction = zero[start + index]
    next_one = weight[start + depth]
    total = 0.0
    if one_fraction != 0:
        for i in range(depth - 1, -1, -1):
            tmp = next_one / ((i + 1) * one_fraction)
            total += tmp
            next_one = weight[start + i] - tmp * zero_fraction * (depth - i)
    else:
        for i in range(depth - 1, -1, -1):
            total += weight[start + i] / (zero_fraction * (depth - i))
    return total * (depth + 1)


@njit
def _tree_shap(x, root, output, nodes, categories, path, weight, calls, fractions, phi):
    """Add one tree's Shapley values for row x into phi (columns, outputs). `path` and `weight`
    hold the paths; `calls` (node, depth, parent's start, feature) and `fractions` (zero, one)
    the calls waiting."""
    left, right, feature, _, _, leaf, _, _, value, cover = nodes
    features, zero, one = path
    # The root's call: shap's tree_shap_recursive(root, depth 0, its path, 1, 1, feature -1).
    top = 0
    calls[0, 0], calls[0, 1], calls[0, 2], calls[0, 3] = root, 0, 0, -1
    fractions[0, 0], fractions[0, 1] = 1.0, 1.0
    while top >= 0:
        node, depth, parent, split = calls[top, 0], calls[top, 1], calls[top, 2], calls[top, 3]
        zero_fraction, one_fraction = fractions[top, 0], fractions[top, 1]
        top -= 1
        start = parent + depth + 1  # this call's path, after its parent's
        for i in range(depth + 1):
            features[start + i] = features[parent + i]
            zero[start + i] = zero[parent + i]
            one[start + i] = one[parent + i]
            weight[start + i] = weight[parent + i]
        _extend(path, weight, start, depth, zero_fraction, one_fraction, split)
        if leaf[node]:
            for i in range(1, depth + 1):
                w = _unwound_sum(path, weight, start, depth, i)
                phi[features[start + i], output] += (
                    w * (one[start + i] - zero[start + i]) * value[node]
                )
            continue
        if _goes_left(x, node, nodes, categories):
            hot, cold = left[node], right[node]
        else:
            hot, cold = right[node], left[node]
        incoming_zero = 1.0
        incoming_one = 1.0
        here = feature[node]
        index = 0
        while index <= depth and features[start + index] != here:
            index += 1
        if index != depth + 1:  # split on before: undo that split, to redo it here
            incoming_zero = zero[start + index]
            incoming_one = one[start + index]
            _unwind(path, weight, start, depth, index)
            depth -= 1
        # The cold child waits below the hot one, so the hot one is walked first, as in shap.
        top += 1
        calls[top, 0], calls[top, 1], calls[top, 2], calls[top, 3] = cold, depth + 1, start, here
        fractions[top, 0] = cover[cold] / cover[node] * incoming_zero
        fractions[top, 1] = 0.0
        top += 1
        calls[top, 0], calls[top, 1], calls[top, 2], calls[top, 3] = hot, depth + 1, start, here
        fractions[top, 0] = cover[hot] / cover[node] * incoming_zero
        fractions[top, 1] = incoming_one


@njit
def shap_values(X, nodes, categories, roots, outputs, max_depth, phi):
    """Every row's Shapley values, summed over the trees into phi (rows, columns, outputs)."""
    size = (max_depth + 2) * (max_depth + 3) // 2 + 1  # shap's, and the root's parent's slot
    path = (np.empty(size, np.int64), np.empty(size), np.empty(size))
    weight = np.empty(size)
    calls = np.empty((2 * (max_depth + 2), 4), np.int64)  # at most two waiting per level
    fractions = np.empty((2 * (max_depth + 2), 2))
    for r in range(X.shape[0]):
        for t in range(roots.shape[0]):
            _tree_shap(
                X[r], roots[t], outputs[t], nodes, categories, path, weight, calls, fractions,
                phi[r],
            )  # fmt: skip


@njit
def predict(X, nodes, categories, roots, outputs, out):
    """Every row's raw output: each tree's leaf added to out (rows, outputs)."""
    left, right, _, _, _, leaf, _, _, value, _ = nodes
    for r in range(X.shape[0]):
        for t in range(roots.shape[0]):
            node = roots[t]
            while not leaf[node]:
                node = left[node] if _goes_left(X[r], node, nodes, categories) else right[node]
            out[r, outputs[t]] += value[node]
