"""Reading a sweep's results table: the reference row, the recommendation, and per-recipe comparisons.

The table is the one `engine.sweep.results_table` builds (one row per recipe); nothing here touches Streamlit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import pandas as pd

from dashboard.formatting import metric_text, ratio_text, speed_text
from engine.metrics import METRICS
from engine.recipe import Recipe
from engine.text import size_text

LATENCY = "latency_b1_p50_ms"  # the latency users compare: one example at a time, median run


def measured_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows that were built and scored: a recipe onnxruntime could not build has an error and no numbers."""
    if "metric" not in table:  # every recipe failed
        return table.iloc[0:0]
    failed = table["error"].notna() if "error" in table else False
    return table[~failed & table["metric"].notna()]


def timed_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Measured rows with a latency: simulated recipes have no real kernel to time."""
    measured = measured_rows(table)
    return measured[measured[LATENCY].notna()]


def failed_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["error"].notna()] if "error" in table else table.iloc[0:0]


def reference_row(table: pd.DataFrame) -> pd.Series | None:
    """The original fp32 model's row, which every other row is compared with; None if the sweep left it out."""
    for _, row in measured_rows(table).iterrows():
        if Recipe.from_json(row["recipe"]).is_reference:
            return row
    return None


def row_for(table: pd.DataFrame, recipe_key: str) -> pd.Series:
    return table[table["recipe_key"] == recipe_key].iloc[0]


def metric_name(table: pd.DataFrame) -> str:
    """The sweep's primary metric, e.g. top1 for classification or mae for regression."""
    return table["metric_name"].iloc[0]


# --- recommendation ----------------------------------------------------------------------------------------------


class Goal(Enum):
    """What a recommendation minimises, and the words its sentence uses."""

    SMALLEST = ("size_bytes", "Smallest", "smaller")
    FASTEST = (LATENCY, "Fastest", "faster")

    def __init__(self, column: str, word: str, comparative: str) -> None:
        self.column = column
        self.word = word
        self.comparative = comparative


@dataclass(frozen=True)
class Recommendation:
    goal: Goal
    row: pd.Series
    reference: pd.Series
    tolerance: float  # relative, e.g. 0.01 for 1%


def within_tolerance(table: pd.DataFrame, reference: pd.Series, tolerance: float) -> pd.Series:
    """Rows whose primary metric is at most `tolerance` (relative) worse than the reference's."""
    name = reference["metric_name"]
    allowed = tolerance * abs(reference["metric"])
    if METRICS[name].higher_is_better:
        return table["metric"] >= reference["metric"] - allowed
    return table["metric"] <= reference["metric"] + allowed


def recommend(table: pd.DataFrame, tolerance: float, goal: Goal) -> Recommendation | None:
    """The quantized recipe best at `goal` among those within tolerance of the original and better than it at `goal`.

    Simulated recipes are left out: their file is an fp32 simulation, nothing a user could deploy.
    None when the sweep has no fp32 reference or no real quantized recipe qualifies.
    """
    reference = reference_row(table)
    if reference is None:
        return None
    candidates = measured_rows(table)
    candidates = candidates[
        ~candidates["simulated"].astype(bool)
        & (candidates["recipe_key"] != reference["recipe_key"])
        & (candidates[goal.column] < reference[goal.column])  # also False where not timed (NaN)
    ]
    candidates = candidates[within_tolerance(candidates, reference, tolerance)]
    if candidates.empty:
        return None
    return Recommendation(goal, candidates.sort_values(goal.column, kind="stable").iloc[0], reference, tolerance)


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
    gains = [f"{ratio_text(row['size_bytes'] / reference['size_bytes'])} the size"]
    speed = speed_text(reference[LATENCY], row[LATENCY])
    if speed:
        gains.append(speed)
    return f"{goal.word} model {phrase}: {row['name']} ({row['description']}) — {', '.join(gains)}."


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
    per_slice = row.get("per_slice")
    if not isinstance(per_slice, dict) or not per_slice:
        return pd.DataFrame()
    name = row["metric_name"]
    original = reference.get("per_slice") if reference is not None else None
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


def headline(row: pd.Series, reference: pd.Series | None) -> Headline:
    estimate = " (estimated)" if row.get("size_is_estimate") else ""
    latency = row.get(LATENCY)
    timed = latency is not None and not _is_nan(latency)
    speed = speed_text(reference[LATENCY], latency) if reference is not None and timed else None
    return Headline(
        size=size_text(row["size_bytes"]) + estimate,
        size_ratio=ratio_text(row["size_ratio"]),
        latency=f"{latency:.3g} ms" if timed else "not timed",
        speed=speed or "-",
    )


def _is_nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)
