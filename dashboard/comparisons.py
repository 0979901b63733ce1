"""A sweep's results in words: the recommendation sentence, and one recipe next to the original.

The table, its selectors and the recommendation rules are engine.results'; nothing here touches Streamlit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from engine.formatting import change_text, metric_text, ratio_text, speed_text
from engine.metrics import METRICS
from engine.recipe import Recipe
from engine.results import (
    CALIBRATION_NOTE, CALIBRATION_SOURCE, DESCRIPTION, FIDELITY_MASK, FLOAT_LAYERS, LATENCY, METRIC_NAME, NAME,
    PER_SLICE, RAM, RAM_PROTOCOL, RECIPE, ROWS_SCORED, SCORED_ROWS, SINGLE_EXAMPLE, SIZE_BYTES, SIZE_IS_ESTIMATE,
    SIZE_RATIO, THREADS, Goal, latency_precision, latency_vs_fp32, metric_name, recommend,
)
from engine.text import size_text


def tolerance_phrase(metric: str, tolerance: float) -> str:
    """'within 1% of the original top-1 accuracy', or for error metrics 'with at most 1% more mean absolute error'."""
    info = METRICS[metric]
    percent = f"{tolerance * 100:g}%"
    if info.higher_is_better:
        return f"within {percent} of the original {info.label.lower()}"
    return f"with at most {percent} more {info.label.lower()} than the original"


def recommendation_text(table: pd.DataFrame, tolerance: float, goal: Goal) -> str:
    """One sentence, e.g. 'Smallest model within 1% of the original top-1 accuracy: W4 ... — 0.25x the size, 3.1x faster.'"""
    phrase = tolerance_phrase(metric_name(table), tolerance)
    found = recommend(table, tolerance, goal)
    if found is None:
        return (
            f"{goal.word} model {phrase}: no quantized recipe qualifies and is {goal.comparative} than the original;"
            " try a larger tolerance."
        )
    row, reference = found.row, found.reference
    gains = [f"{ratio_text(row[SIZE_BYTES] / reference[SIZE_BYTES])} the size"]
    speed = _speed(row, reference)
    if speed:
        gains.append(speed)
    return f"{goal.word} model {phrase}: {row[NAME]} ({row[DESCRIPTION]}) — {', '.join(gains)}; {change_text(row)}."


# --- one recipe against the original -----------------------------------------------------------------------------


def metric_comparison(row: pd.Series, reference: pd.Series | None) -> pd.DataFrame:
    """Every score this recipe has, next to the original model's, in plain words."""
    records = []
    for name, info in METRICS.items():
        value = row.get(name)
        if value is None or _is_nan(value):
            continue
        original = None if reference is None else reference.get(name)
        records.append(
            {
                "Score": info.label,
                "This recipe": metric_text(name, value),
                "Original model": "-" if original is None else metric_text(name, original),
                "Better when": "higher" if info.higher_is_better else "lower",
                "What it means": info.help,
            }
        )
    return pd.DataFrame(records)


def slice_comparison(row: pd.Series, reference: pd.Series | None) -> pd.DataFrame:
    """The primary metric per slice of the data, this recipe next to the original; empty without slices."""
    per_slice = row.get(PER_SLICE)
    if not isinstance(per_slice, dict) or not per_slice:
        return pd.DataFrame()
    name = row[METRIC_NAME]
    original = reference.get(PER_SLICE) if reference is not None else None
    original = original if isinstance(original, dict) else {}
    return pd.DataFrame(
        [
            {
                "Group": slice_name,
                "Examples": int(scores.get("rows", 0)),
                f"{METRICS[name].label} (this recipe)": metric_text(name, scores.get(name)),
                f"{METRICS[name].label} (original)": metric_text(name, original.get(slice_name, {}).get(name)),
            }
            for slice_name, scores in per_slice.items()
        ]
    )


@dataclass(frozen=True)
class Headline:
    """The few figures the detail card leads with."""

    size: str
    size_ratio: str
    latency: str
    speed: str
    ram: str


def headline(row: pd.Series, reference: pd.Series | None) -> Headline:
    estimate = " (estimated)" if row.get(SIZE_IS_ESTIMATE) else ""
    latency, ram = row.get(LATENCY), row.get(RAM)
    timed = latency is not None and not _is_nan(latency)
    speed = _speed(row, reference) if timed else None
    return Headline(
        size=size_text(row[SIZE_BYTES]) + estimate,
        size_ratio=ratio_text(row[SIZE_RATIO]),
        latency=f"{latency:.3g} ms" if timed else "not timed",
        speed=speed or "-",
        ram=size_text(ram) if ram is not None and not _is_nan(ram) else "not measured",
    )


def _speed(row: pd.Series, reference: pd.Series | None) -> str | None:
    """'3.1x faster' than the original, from the ratio timed beside it where the row has one."""
    ratio = latency_vs_fp32(row, reference)
    return None if ratio is None else speed_text(1.0, ratio)


def vs_fp32_text(row: pd.Series, names=SINGLE_EXAMPLE) -> str | None:
    """'0.42x fp32 (95%: 0.40-0.44)': the latency over the original's timed in the same blocks; None without."""
    ratio, low, high = row.get(names.vs_fp32), row.get(names.vs_fp32_ci_low), row.get(names.vs_fp32_ci_high)
    if ratio is None or _is_nan(ratio):
        return None
    interval = "" if low is None or _is_nan(low) else f" (95%: {low:.2f}-{high:.2f})"
    return f"{ratio:.2f}x fp32{interval}"


def how_measured(row: pd.Series) -> list[str]:
    """What a row's figures rest on, in plain sentences: the examples scored, what calibrated it, which output
    positions fidelity counted, how precise its time is, and how its memory was measured."""
    notes = [f"Scored on {row[ROWS_SCORED]:,} examples ({row[SCORED_ROWS]})."]
    if isinstance(row.get(CALIBRATION_SOURCE), str):
        notes.append(f"Calibrated on {row[CALIBRATION_SOURCE]}." + (
            f" {row[CALIBRATION_NOTE][0].upper()}{row[CALIBRATION_NOTE][1:]}." if isinstance(row.get(CALIBRATION_NOTE), str)
            else ""))
    if isinstance(row.get(FIDELITY_MASK), str):
        notes.append(f"Agreement with the original counts: {row[FIDELITY_MASK]}.")
    precision = latency_precision(row)
    if precision is not None:
        capped = " (the time limit came first)" if bool(row.get(SINGLE_EXAMPLE.capped)) else ""
        runs, blocks = int(row[SINGLE_EXAMPLE.runs]), row.get(SINGLE_EXAMPLE.blocks)
        # rows timed before blocks have none
        median = f"the median of {int(blocks)} fresh sessions' medians ({runs} runs)" if pd.notna(blocks) \
            else f"median of {runs} runs"
        notes.append(f"Time per example: {median} with {int(row[THREADS])} thread(s), within ±{precision:.1%} with "
                     f"95% confidence{capped}.")
    relative = vs_fp32_text(row)
    if relative is not None and not Recipe.from_json(row[RECIPE]).is_reference:
        notes.append(f"Time per example against the original, both timed in the same sessions' blocks so the "
                     f"machine's drift cancels: {relative}.")
    if isinstance(row.get(RAM_PROTOCOL), str):
        notes.append(f"Memory: {row[RAM_PROTOCOL]}.")
    return notes


def full_precision_layers(row: pd.Series) -> list[str] | None:
    """The quantizable layers this recipe left at full precision; None for the original model, which keeps them all
    (listing every one of them would say nothing)."""
    if Recipe.from_json(row[RECIPE]).is_reference:
        return None
    return list(row[FLOAT_LAYERS])


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)
