"""The sortable results table: the sweep's rows under plain-word column titles, each with its help sentence."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import help_text
from engine.formatting import RATE_METRICS
from engine import results
from engine.metrics import METRICS
from engine.text import MB, size_unit

RAM_TITLE, RAM_BATCH_TITLE = "RAM, 1 example (MB)", "RAM, batch (MB)"
VS_ORIGINAL_TITLE, VS_ORIGINAL_INTERVAL_TITLE = "Time vs original", "Time vs original, 95%"


def _interval_text(low, high) -> str | None:
    return None if pd.isna(low) or pd.isna(high) else f"{low:.2f}-{high:.2f}x"


def _size_title(table: pd.DataFrame) -> str:
    return f"Size ({size_unit(table[results.SIZE_BYTES].max())[0]})"


def _batch_title(table: pd.DataFrame) -> str:
    batches = table[results.LATENCY_BATCH].dropna()
    return f"Batch of {int(batches.iloc[0])} (ms)" if not batches.empty else "Batch (ms)"


def _metrics_in(table: pd.DataFrame) -> list[str]:
    return [name for name in METRICS if name in table and table[name].notna().any()]


def results_view(table: pd.DataFrame) -> pd.DataFrame:
    """One row per recipe, numbers kept numeric so every column sorts correctly."""
    _, unit = size_unit(table[results.SIZE_BYTES].max())
    view = pd.DataFrame({"Recipe": table[results.NAME], "What it does": table[results.DESCRIPTION]})
    for name in _metrics_in(table):
        view[METRICS[name].label] = table[name]
    view[_size_title(table)] = table[results.SIZE_BYTES] / unit
    view["Size vs original"] = table[results.SIZE_RATIO]
    view["1 example (ms)"] = table[results.SINGLE_EXAMPLE.p50]
    view[VS_ORIGINAL_TITLE] = table[results.SINGLE_EXAMPLE.vs_fp32]
    view[VS_ORIGINAL_INTERVAL_TITLE] = [_interval_text(low, high) for low, high in zip(
        table[results.SINGLE_EXAMPLE.vs_fp32_ci_low], table[results.SINGLE_EXAMPLE.vs_fp32_ci_high])]
    view["Slowest 5% (ms)"] = table[results.SINGLE_EXAMPLE.p95]
    view[_batch_title(table)] = table[results.BATCH_N.p50]
    view[RAM_TITLE] = table[results.SINGLE_EXAMPLE.ram] / MB
    view[RAM_BATCH_TITLE] = table[results.BATCH_N.ram] / MB
    view["Simulated"] = table[results.SIMULATED].fillna(False).astype(bool)
    view["Best trade-off"] = table[list(results.PARETO_FRONTS)].fillna(False).astype(bool).any(axis=1)
    if results.ERROR in table:
        view["Problem"] = table[results.ERROR]
    return view


def results_columns(table: pd.DataFrame) -> dict:
    """`st.dataframe` column settings: number formats and one help sentence per column."""
    columns = {
        "Recipe": st.column_config.TextColumn(help=help_text.COLUMN_RECIPE),
        "What it does": st.column_config.TextColumn(help=help_text.COLUMN_DESCRIPTION, width="medium"),
        _size_title(table): st.column_config.NumberColumn(format="%.1f", help=help_text.COLUMN_SIZE),
        "Size vs original": st.column_config.NumberColumn(format="%.2fx", help=help_text.COLUMN_SIZE_RATIO),
        "1 example (ms)": st.column_config.NumberColumn(format="%.4f", help=help_text.COLUMN_LATENCY),
        VS_ORIGINAL_TITLE: st.column_config.NumberColumn(format="%.2fx", help=help_text.COLUMN_LATENCY_VS_FP32),
        VS_ORIGINAL_INTERVAL_TITLE: st.column_config.TextColumn(help=help_text.COLUMN_LATENCY_VS_FP32_INTERVAL),
        "Slowest 5% (ms)": st.column_config.NumberColumn(format="%.4f", help=help_text.COLUMN_LATENCY_P95),
        _batch_title(table): st.column_config.NumberColumn(format="%.3f", help=help_text.COLUMN_BATCH),
        RAM_TITLE: st.column_config.NumberColumn(format="%.1f", help=help_text.COLUMN_RAM),
        RAM_BATCH_TITLE: st.column_config.NumberColumn(format="%.1f", help=help_text.COLUMN_RAM_BATCH),
        "Simulated": st.column_config.CheckboxColumn(help=help_text.COLUMN_SIMULATED),
        "Best trade-off": st.column_config.CheckboxColumn(help=help_text.COLUMN_BEST),
    }
    for name in _metrics_in(table):
        columns[METRICS[name].label] = st.column_config.NumberColumn(
            format="percent" if name in RATE_METRICS else "%.4g", help=METRICS[name].help
        )
    return columns


CLEAN_DATA = "Your data"


def _loss_points(change: float, metric: str) -> float:
    """A change against the original as a loss, in points for rates (percentage points), else in the metric's units."""
    return results.loss(change, metric) * (100 if metric in RATE_METRICS else 1)


def shifted_view(table: pd.DataFrame) -> pd.DataFrame:
    """One row per measured quantized recipe: its loss against the original on the scored validation rows and on
    each extra set side by side, and the sets where it degrades much more than on clean data."""
    names = results.extra_set_names(table)
    records = []
    for _, row in results.measured_rows(table).iterrows():
        if results.is_reference(row):
            continue
        record = {"Recipe": row[results.NAME], CLEAN_DATA: _loss_points(row[results.DELTA], row[results.METRIC_NAME])}
        sets = row[results.EXTRA_SETS]
        for name in names:
            figures = sets.get(name) if isinstance(sets, dict) else None
            record[name] = None if figures is None else _loss_points(figures[results.DELTA], figures[results.METRIC_NAME])
        record["Much worse on"] = ", ".join(name for name in names if isinstance(sets, dict) and name in sets
                                            and results.degrades_under_shift(row, name))
        records.append(record)
    return pd.DataFrame(records, columns=["Recipe", CLEAN_DATA, *names, "Much worse on"])


def shifted_columns(table: pd.DataFrame) -> dict:
    unit = "points" if results.metric_name(table) in RATE_METRICS else METRICS[results.metric_name(table)].label
    loss = st.column_config.NumberColumn(format="%.2f", help=help_text.COLUMN_SHIFT_LOSS.format(unit=unit))
    return {CLEAN_DATA: loss, **{name: loss for name in results.extra_set_names(table)},
            "Much worse on": st.column_config.TextColumn(help=help_text.COLUMN_MUCH_WORSE)}
