"""The export history as a user sees it: one line per bundle made, and how each is named in a picker."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from engine.formatting import metric_text, ratio_text
from engine.text import size_text
from engine.workspace import ExportRecord


def export_label(record: ExportRecord) -> str:
    """E.g. 'digits_cnn.onnx: W8A8 static channel minmax, 2026-12-01 14:02:37'."""
    when = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
    return f"{record.figures['base_model']['name']}: {record.name}, {when}"


def history_table(records: list[ExportRecord]) -> pd.DataFrame:
    """What was shipped: when, which model and recipe, its figures, its fingerprint and where it came from."""
    rows = []
    for record in records:
        figures = record.figures
        metric, model = figures["metric"], figures["model"]
        rows.append({
            "Exported": datetime.fromtimestamp(record.created),
            "Model": figures["base_model"]["name"],
            "Recipe": record.name + ("" if model["deployable"] else " (simulated)"),
            "Score": f"{metric['label']}: {metric_text(metric['name'], metric['value'])}",
            "Size": f"{size_text(model['size_bytes'])} ({ratio_text(model['size_ratio'])})",
            "sha256": record.model_sha256[:12],
            "From": f"sweep {record.job_id}" if record.job_id else "measured for the export",
        })
    return pd.DataFrame(rows)
