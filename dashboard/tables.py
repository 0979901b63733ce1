"""The sortable results table: the sweep's rows under plain-word column titles, each with its help sentence."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import help_text
from dashboard.formatting import RATE_METRICS
from dashboard.results import LATENCY
from engine.metrics import METRICS
from engine.text import size_unit


def _size_title(table: pd.DataFrame) -> str:
    return f"Size ({size_unit(table['size_bytes'].max())[0]})"


def _batch_title(table: pd.DataFrame) -> str:
    batches = table["latency_batch"].dropna()
    return f"Batch of {int(batches.iloc[0])} (ms)" if not batches.empty else "Batch (ms)"


def _metrics_in(table: pd.DataFrame) -> list[str]:
    return [name for name in METRICS if name in table and table[name].notna().any()]


def results_view(table: pd.DataFrame) -> pd.DataFrame:
    """One row per recipe, numbers kept numeric so every column sorts correctly."""
    _, unit = size_unit(table["size_bytes"].max())
    view = pd.DataFrame({"Recipe": table["name"], "What it does": table["description"]})
    for name in _metrics_in(table):
        view[METRICS[name].label] = table[name]
    view[_size_title(table)] = table["size_bytes"] / unit
    view["Size vs original"] = table["size_ratio"]
    view["1 example (ms)"] = table[LATENCY]
    view["Slowest 5% (ms)"] = table["latency_b1_p95_ms"]
    view[_batch_title(table)] = table["latency_bN_p50_ms"]
    view["Simulated"] = table["simulated"].fillna(False).astype(bool)
    view["Best trade-off"] = table[["pareto_size", "pareto_latency", "pareto_3d"]].fillna(False).astype(bool).any(axis=1)
    if "error" in table:
        view["Problem"] = table["error"]
    return view


def results_columns(table: pd.DataFrame) -> dict:
    """`st.dataframe` column settings: number formats and one help sentence per column."""
    columns = {
        "Recipe": st.column_config.TextColumn(help=help_text.COLUMN_RECIPE),
        "What it does": st.column_config.TextColumn(help=help_text.COLUMN_DESCRIPTION, width="medium"),
        _size_title(table): st.column_config.NumberColumn(format="%.1f", help=help_text.COLUMN_SIZE),
        "Size vs original": st.column_config.NumberColumn(format="%.2fx", help=help_text.COLUMN_SIZE_RATIO),
        "1 example (ms)": st.column_config.NumberColumn(format="%.4f", help=help_text.COLUMN_LATENCY),
        "Slowest 5% (ms)": st.column_config.NumberColumn(format="%.4f", help=help_text.COLUMN_LATENCY_P95),
        _batch_title(table): st.column_config.NumberColumn(format="%.3f", help=help_text.COLUMN_BATCH),
        "Simulated": st.column_config.CheckboxColumn(help=help_text.COLUMN_SIMULATED),
        "Best trade-off": st.column_config.CheckboxColumn(help=help_text.COLUMN_BEST),
    }
    for name in _metrics_in(table):
        columns[METRICS[name].label] = st.column_config.NumberColumn(
            format="percent" if name in RATE_METRICS else "%.4g", help=METRICS[name].help
        )
    return columns
