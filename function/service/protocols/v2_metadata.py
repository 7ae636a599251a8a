"""The Open Inference Protocol v2's descriptions: the server, the model and its tensors, an
example request, and which model a path names."""

from __future__ import annotations

from typing import Any

from function.core.errors import NotFound
from function.core.model import LoadedModel
from function.core.schema import Schema
from function.service.protocols.v2_tensors import (
    INPUT,
    LABELS,
    PROBABILITIES,
    column_datatypes,
    label_datatype,
)

SERVER = {"name": "modelrun", "version": "1.0.0", "extensions": ["binary_tensor_data"]}


def select(model: LoadedModel, name: str, version: str | None) -> LoadedModel:
    """Return the served model if the path names it; 404 for any other name or version."""
    if name != model.name:
        raise NotFound(f"no model named {name!r}; this server serves {model.name!r}")
    if version is not None and version != model.version:
        raise NotFound(f"model {name!r} has no version {version!r}; it serves {model.version!r}")
    return model


def model_metadata(model: LoadedModel) -> dict[str, Any]:
    """Inputs and outputs, with -1 for the batch dimension. An all-numeric model lists its
    [rows, features] tensor; any other, one tensor per feature with its type and categories."""
    outputs: list[dict[str, Any]] = [
        {"name": LABELS, "datatype": label_datatype(model), "shape": [-1]}
    ]
    if model.has_probabilities:
        classes = model.metadata.class_names
        outputs.append(
            {
                "name": PROBABILITIES,
                "datatype": "FP64",
                "shape": [-1, len(classes)],
                # Column k is the probability of classes[k] (the model's classes_ order).
                "parameters": {"classes": classes},
            }
        )
    schema = model.schema
    inputs: list[dict[str, Any]]
    if schema.numeric:
        inputs = [{"name": INPUT, "datatype": "FP64", "shape": [-1, len(schema.features)]}]
    else:
        inputs = [
            {
                "name": f.name,
                "datatype": column_datatypes(f)[0],
                "shape": [-1],
                "parameters": {
                    k: v for k, v in f.describe().items() if k not in ("name", "type", "dtype")
                },
            }
            for f in schema.features
        ]
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "sklearn",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {"feature_names": model.feature_names},
    }


def example_inputs(schema: Schema, rows: list[list[Any]]) -> list[dict[str, Any]]:
    """Rows as a request's inputs: one [rows, features] tensor for an all-numeric model, else
    one tensor per feature."""
    if schema.numeric:
        flat = [v for row in rows for v in row]
        return [{"name": INPUT, "shape": [len(rows), len(schema.features)], "datatype": "FP64",
                 "data": flat}]  # fmt: skip
    return [
        {
            "name": f.name,
            "shape": [len(rows)],
            "datatype": column_datatypes(f)[0],
            "data": [row[j] for row in rows],
        }
        for j, f in enumerate(schema.features)
    ]
