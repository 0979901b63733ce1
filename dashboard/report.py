"""What the Export page hands out for one recipe: the measured artifact, its recipe JSON and a short report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dashboard import help_text
from dashboard.comparisons import (
    change_text, full_precision_layers, headline, how_measured, metric_comparison, slice_comparison,
)
from engine import results
from engine.onnx_files import has_external_data, packed
from engine.recipe import Recipe


@dataclass(frozen=True)
class Download:
    """Everything `st.download_button` needs for one file."""

    label: str
    data: bytes
    file_name: str
    mime: str
    help: str


def _file_stem(model_name: str, row: pd.Series) -> str:
    stem = f"{Path(model_name).stem}-{Recipe.from_json(row[results.RECIPE]).slug()}"
    # Say it in the name too: a simulated file is full precision, whatever its recipe says.
    return f"{stem}-fp32-simulation" if row[results.SIMULATED] else stem


def artifact_download(row: pd.Series, artifact: Path, model_name: str) -> Download:
    """The exact bytes that were measured, not a rebuild: the .onnx file, or for a model past 2 GB a zip of it and
    its external-data files, which loads from wherever it is unpacked."""
    if has_external_data(artifact):
        return Download(
            label="Download model (.zip)",
            data=packed(artifact),
            file_name=f"{_file_stem(model_name, row)}.zip",
            mime="application/zip",
            help=help_text.DOWNLOAD_MODEL_FOLDER,
        )
    return Download(
        label="Download model (.onnx)",
        data=Path(artifact).read_bytes(),
        file_name=f"{_file_stem(model_name, row)}.onnx",
        mime="application/octet-stream",
        help=help_text.DOWNLOAD_MODEL,
    )


def recipe_download(row: pd.Series, model_name: str) -> Download:
    recipe = Recipe.from_json(row[results.RECIPE])
    return Download(
        label="Download recipe (.json)",
        data=json.dumps(recipe.to_dict(), indent=2).encode(),
        file_name=f"{_file_stem(model_name, row)}.recipe.json",
        mime="application/json",
        help=help_text.DOWNLOAD_RECIPE,
    )


def report_download(row: pd.Series, reference: pd.Series | None, model_name: str, dataset_name: str) -> Download:
    return Download(
        label="Download report (.md)",
        data=report_markdown(row, reference, model_name, dataset_name).encode(),
        file_name=f"{_file_stem(model_name, row)}.report.md",
        mime="text/markdown",
        help=help_text.DOWNLOAD_REPORT,
    )


def report_markdown(row: pd.Series, reference: pd.Series | None, model_name: str, dataset_name: str) -> str:
    """A short, self-contained account of one recipe's measured figures, next to the original model's."""
    figures = headline(row, reference)
    lines = [
        f"# {row[results.NAME]}: {model_name}",
        "",
        f"**Recipe:** {row[results.DESCRIPTION]}  ",
        f"**Measured on:** {dataset_name}, with onnxruntime ({row[results.REALISER]})",
        "",
    ]
    if row[results.SIMULATED]:
        lines += [f"> {help_text.SIMULATED_EXPORT}", ""]
    lines += [
        f"- File size: {figures.size}, {figures.size_ratio} the original size",
        *([f"- {row[results.METRIC_NAME]} against the original: {change_text(row)}"] if reference is not None else []),
        f"- Time per example (median, batch of 1): {figures.latency}, {figures.speed}",
        *_latency_details(row),
        f"- Peak memory (loaded, batch of 1): {figures.ram}",
        *[f"- {note}" for note in how_measured(row)],
        f"- Layers kept at full precision: {_full_precision_text(row)}",
        "",
        "## Scores",
        "",
        _markdown_table(metric_comparison(row, reference).drop(columns=["What it means"])),
    ]
    slices = slice_comparison(row, reference)
    if not slices.empty:
        lines += ["", "## Scores per group", "", _markdown_table(slices)]
    lines += ["", "## Recipe", "", "```json", json.dumps(json.loads(row[results.RECIPE]), indent=2), "```", ""]
    return "\n".join(lines)


def _full_precision_text(row: pd.Series) -> str:
    layers = full_precision_layers(row)
    return help_text.ALL_LAYERS_KEPT if layers is None else ", ".join(layers) or "none"


def _latency_details(row: pd.Series) -> list[str]:
    """What was timed: single examples, batches, or both (a model with a fixed batch size allows one)."""
    lines = []
    threads = row.get(results.THREADS)
    if not pd.isna(row.get(results.LATENCY)):
        lines.append(f"- 95% of single-example runs took at most {row[results.SINGLE_EXAMPLE.p95]:.3g} ms, "
                     f"{int(threads)} thread(s)")
    if not pd.isna(row.get(results.LATENCY_BATCH)):
        lines.append(f"- Time per batch of {int(row[results.LATENCY_BATCH])} (median / 95th percentile): "
                     f"{row[results.BATCH_N.p50]:.3g} / {row[results.BATCH_N.p95]:.3g} ms, {int(threads)} thread(s)")
    return lines


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(str(value) for value in record) + " |" for record in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])

