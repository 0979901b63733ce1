"""Model and dataset summaries as small tables a person can read.

Both summaries arrive as the plain dicts the workspace stores: `ModelSummary.to_dict()` and `Dataset.summary()`.
"""

from __future__ import annotations

import pandas as pd

from engine.text import size_text


def _shape_text(shape: list) -> str:
    """'? x 1 x 8 x 8': '?' marks a size the model leaves open, such as the batch."""
    return " x ".join(str(dim) if isinstance(dim, int) else "?" for dim in shape)


def layers_table(model_summary: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "Layer": layer["name"],
                "Kind": layer["op_type"],
                "Weight shape": _shape_text(layer["weight_shape"]),
                "Weight size": size_text(layer["weight_bytes"]),
            }
            for layer in model_summary["layers"]
        ],
        columns=["Layer", "Kind", "Weight shape", "Weight size"],
    )


def tensors_table(model_summary: dict, role: str) -> pd.DataFrame:
    """The model's "inputs" or "outputs": name, shape and number type."""
    title = role.capitalize()[:-1]  # "inputs" -> "Input"
    return pd.DataFrame(
        [
            {title: spec["name"], "Shape": _shape_text(spec["shape"]), "Number type": spec["dtype"]}
            for spec in model_summary[role]
        ],
        columns=[title, "Shape", "Number type"],
    )


def model_facts(model_summary: dict) -> dict[str, str]:
    """The headline numbers, label -> value."""
    return {
        "File size": size_text(model_summary["bytes"]),
        "Learned numbers": f"{model_summary['params']:,}",
        "Shrinkable layers": str(len(model_summary["layers"])),
        "ONNX opset": str(model_summary["opset"]),
    }


def label_counts(dataset_summary: dict) -> pd.DataFrame | None:
    """Examples per class, or None when the labels are not classes (regression targets, or no labels)."""
    labels = dataset_summary["labels"]
    if labels["kind"] != "classes":
        return None
    return pd.DataFrame({"Answer": [str(name) for name in labels["counts"]], "Examples": list(labels["counts"].values())})


def labels_sentence(dataset_summary: dict) -> str:
    labels = dataset_summary["labels"]
    if labels["kind"] == "none":
        return "No right answers (labels) given: recipes are scored by how closely they follow the original model."
    if labels["kind"] == "regression":
        return f"Numeric targets from {labels['min']:.4g} to {labels['max']:.4g} (mean {labels['mean']:.4g})."
    return f"{len(labels['counts'])} different answers (classes)."


def slice_counts(dataset_summary: dict) -> pd.DataFrame | None:
    slices = dataset_summary["slices"]
    if not slices:
        return None
    return pd.DataFrame({"Group": [str(name) for name in slices], "Examples": list(slices.values())})
