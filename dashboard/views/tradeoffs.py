"""Trade-offs: a finished sweep's recipes on charts and in a table, a recommendation, and one recipe in detail.

Map: pick a sweep (or a mixed-precision search) -> a mixed-precision curve of the same model and data drawn over the
sweep -> recommendation (with its tolerance slider) -> charts (a click on a dot picks a recipe) -> every recipe in a
sortable table -> the picked recipe's detail card.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, comparisons, help_text, jobs_view, pickers, state, tables
from engine import results
from engine.results import Goal

DEFAULT_TOLERANCE_PERCENT = 1.0
NO_CURVE = "none"  # the curve picker's option for the sweep alone (job ids are hexadecimal)

ws = state.workspace()
owner = state.owner()


def show_failures(table: pd.DataFrame) -> None:
    for _, failed in results.failed_rows(table).iterrows():
        st.error(f"{failed[results.NAME]} could not be built: {failed[results.ERROR]}")


def with_curve(job, table: pd.DataFrame) -> pd.DataFrame:
    """The sweep's rows with the points of a mixed-precision search of its model and data (the newest, unless the
    session picked another or none); a search's own rows as they are."""
    if job.kind == jobs_view.MIXED:
        st.caption(jobs_view.curve_summary(job))
        return table
    curves = {curve.id: curve for curve in jobs_view.curves_beside(jobs_view.visible_jobs(ws, owner, jobs_view.MIXED),
                                                                    job)}
    if not curves:
        return table
    curve_id = state.pick("Mixed-precision curve", [*curves, NO_CURVE], state.CHOSEN_CURVE,
                          help=help_text.CURVE_PICKER, format_func=lambda curve_id: help_text.NO_CURVE
                          if curve_id == NO_CURVE else jobs_view.curve_label(curves[curve_id]))
    if curve_id == NO_CURVE:
        return table
    st.caption(jobs_view.curve_summary(curves[curve_id]))
    return results.with_curve(table, ws.results(curve_id))


def recommendation(table: pd.DataFrame, reference: pd.Series | None) -> None:
    percent = st.slider("Accepted loss (%)", 0.0, 10.0, DEFAULT_TOLERANCE_PERCENT, step=0.5, help=help_text.TOLERANCE)
    if reference is None:
        st.info(help_text.NO_RECOMMENDATION_WITHOUT_REFERENCE)
        return
    st.success(comparisons.recommendation_text(table, percent / 100, Goal.SMALLEST), icon=":material/compress:")
    st.info(comparisons.recommendation_text(table, percent / 100, Goal.FASTEST), icon=":material/speed:")


def select_from_chart(chart_key: str) -> None:
    """A click on a dot picks that recipe (its key travels in customdata[0])."""
    points = st.session_state[chart_key].selection.points
    if points:
        state.choose(state.CHOSEN_RECIPE, points[0]["customdata"][0])


CHART_CAPTIONS = {"Size": help_text.SIZE_CHART, "Time": help_text.LATENCY_CHART, "RAM": help_text.RAM_CHART}


def chart_section(table: pd.DataFrame) -> None:
    """Two trade-off charts side by side, each with its own cost on the x axis (size and time to begin with)."""
    axes = charts.axis_choices(table)
    size_column, latency_column = st.columns(2, gap="large")
    for column, chart_key, first_choice in ((size_column, "size_chart", "Size"), (latency_column, "latency_chart", "Time")):
        with column:
            choice = st.radio("Against", list(axes), index=list(axes).index(first_choice), horizontal=True,
                              key=f"{chart_key}_axis", help=help_text.CHART_AXIS)
            st.plotly_chart(
                charts.cost_figure(table, axes[choice]),
                key=chart_key,
                on_select=lambda chart_key=chart_key: select_from_chart(chart_key),
                selection_mode="points",
                width="stretch",
            )
            st.caption(CHART_CAPTIONS[choice])
    fixed_batches = results.timed_rows(table)[results.LATENCY_BATCH].dropna()
    if results.single_example_rows(table).empty and not fixed_batches.empty:
        with latency_column:
            st.info(help_text.FIXED_BATCH_LATENCY.format(batch=int(fixed_batches.iloc[0])))
    with st.expander("All three at once (3-D)"):
        st.plotly_chart(charts.three_d_figure(table), key="chart_3d", width="stretch")
        st.caption(help_text.CHART_3D)


def detail_card(row: pd.Series, reference: pd.Series | None) -> None:
    st.markdown(f"**{row[results.NAME]}**: {row[results.DESCRIPTION]}")
    if row[results.SIMULATED]:
        st.warning(help_text.SIMULATED_DETAIL, icon=":material/science:")
    figures = comparisons.headline(row, reference)
    size_metric, ratio_metric, latency_metric, speed_metric, ram_metric = st.columns(5)
    size_metric.metric("File size", figures.size)
    ratio_metric.metric("Size vs original", figures.size_ratio)
    latency_metric.metric("Time per example", figures.latency)
    speed_metric.metric("Speed vs original", figures.speed)
    ram_metric.metric("RAM (peak)", figures.ram, help=help_text.COLUMN_RAM)

    st.markdown("**Scores, next to the original model**")
    if reference is not None:
        st.caption(f"Change in {row[results.METRIC_NAME]} against the original: {comparisons.change_text(row)}.",
                   help=help_text.CHANGE_INTERVAL)
    st.table(comparisons.metric_comparison(row, reference).set_index("Score"))  # a table, not a grid: long text wraps
    st.caption(" ".join(comparisons.how_measured(row)), help=help_text.HOW_MEASURED)
    slices_column, layers_column = st.columns(2, gap="large")
    slices = comparisons.slice_comparison(row, reference)
    if not slices.empty:
        slices_column.markdown("**Per group of examples**", help=help_text.PER_SLICE)
        slices_column.table(slices.set_index("Group"))
    layers_column.markdown("**Layers kept at full precision**", help=help_text.FLOAT_LAYERS)
    layers = comparisons.full_precision_layers(row)
    if layers is None:
        layers_column.markdown(help_text.ALL_LAYERS_KEPT)
    else:
        layers_column.markdown("\n".join(f"- `{name}`" for name in layers) or "none")


st.title("Trade-offs")
job = pickers.pick_finished_job(ws, owner)
table = with_curve(job, pickers.measured_sweep(job, ws, on_nothing_measured=show_failures))
reference = results.reference_row(table)

recommendation(table, reference)
chart_section(table)

st.subheader("Every recipe")
st.dataframe(tables.results_view(table), column_config=tables.results_columns(table), hide_index=True, width="stretch")
st.caption(help_text.RESULTS_TABLE)
show_failures(table)

if results.extra_set_names(table):
    st.subheader("On other data")
    shifted = tables.shifted_view(table)
    st.dataframe(shifted, column_config=tables.shifted_columns(table), hide_index=True, width="stretch")
    st.caption(help_text.SHIFTED_DATA)
    for _, flagged in shifted[shifted["Much worse on"] != ""].iterrows():
        st.warning(help_text.DEGRADES_UNDER_SHIFT.format(recipe=flagged["Recipe"], sets=flagged["Much worse on"]),
                   icon=":material/trending_down:")

st.subheader("One recipe in detail")
detail_card(pickers.pick_recipe(table), reference)
st.caption(help_text.NEXT_EXPORT)
