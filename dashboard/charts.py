"""The trade-off charts: one marker per measured recipe, the Pareto front as a line, dominated recipes faded, the
measured mixed-precision points (engine.results.mixed_precision_rows) with a marker of their own.

Each marker's customdata is [recipe_key, name, description, latency p95]: the key lets a click on a dot select
that recipe, the rest feeds the hover box.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

from dashboard import help_text
from engine.formatting import RATE_METRICS, metric_axis_title
from engine.metrics import METRICS
from engine.results import (
    DESCRIPTION, LATENCY, METRIC, METRIC_CI_HIGH, METRIC_CI_LOW, NAME, PARETO_3D, PARETO_LATENCY, PARETO_RAM,
    PARETO_SIZE, RAM, RECIPE_KEY, SIMULATED, SINGLE_EXAMPLE, SIZE_BYTES, measured_rows, metric_name,
    mixed_precision_rows, single_example_rows,
)
from engine.text import size_unit

FADED = 0.3  # opacity of recipes that another recipe beats on both axes
FRONT_COLOR = "#1f77b4"
SIMULATED_COLOR = "#d62728"
SIMULATED_SYMBOL = "x"
MIXED_COLOR = "#2ca02c"
MIXED_SYMBOL = "diamond"
CHART_HEIGHT = 460
# The latency axis ends at this multiple of the slowest median: one noisy run's long whisker must not squeeze
# every dot against the left edge. Whiskers that reach further run off the chart; the hover gives their value.
LATENCY_AXIS_HEADROOM = 2.0
Y_MARGIN = 0.12  # share of the metric's span left free above and below the dots
RATE_AXIS = (0.0, 100.0)  # rates are drawn as percentages


@dataclass(frozen=True)
class Axis:
    """What a chart's x axis shows and which Pareto flag belongs to (metric, that axis)."""

    column: str
    front: str
    title: str
    hover: str  # how the value reads in the hover box
    unit: int = 1  # the column's values are divided by this on the axis (bytes per MB, say)


def size_axis(table: pd.DataFrame) -> Axis:
    label, unit = size_unit(table[SIZE_BYTES].max())
    return Axis(SIZE_BYTES, PARETO_SIZE, f"File size ({label})", f"Size: %{{x:,.1f}} {label}", unit)


LATENCY_AXIS = Axis(
    LATENCY,
    PARETO_LATENCY,
    "Time per example (ms, median, batch of 1)",
    "Time: %{x:.3g} ms (95% of runs within %{customdata[3]:.3g} ms)",
)


def ram_axis(table: pd.DataFrame) -> Axis:
    label, unit = size_unit(table[RAM].max() if table[RAM].notna().any() else 0)
    return Axis(RAM, PARETO_RAM, f"RAM ({label}, peak, loaded and answering one example)",
                f"RAM: %{{x:,.1f}} {label} at its peak", unit)


def axis_choices(table: pd.DataFrame) -> dict[str, Axis]:
    """The costs a trade-off chart can put on its x axis, under the names the page offers them by."""
    return {"Size": size_axis(table), "Time": LATENCY_AXIS, "RAM": ram_axis(table)}


def _customdata(rows: pd.DataFrame) -> list[list]:
    return rows[[RECIPE_KEY, NAME, DESCRIPTION, SINGLE_EXAMPLE.p95]].values.tolist()


def _scale(metric: str) -> int:
    """Rates are drawn as percentages (0-100), so Plotly labels ticks with just as many decimals as they need."""
    return 100 if metric in RATE_METRICS else 1


def _metric_values(rows: pd.DataFrame, metric: str) -> list[float]:
    return (rows[METRIC] * _scale(metric)).tolist()


def _metric_intervals(rows: pd.DataFrame, metric: str) -> dict:
    """Error bars spanning the metric's 95% interval."""
    scale = _scale(metric)
    return dict(
        type="data",
        symmetric=False,
        array=((rows[METRIC_CI_HIGH] - rows[METRIC]) * scale).clip(lower=0).tolist(),
        arrayminus=((rows[METRIC] - rows[METRIC_CI_LOW]) * scale).clip(lower=0).tolist(),
        thickness=1,
        width=3,
    )


def _metric_hover(metric: str, axis_letter: str) -> str:
    value = f"%{{{axis_letter}:.2f}}%" if metric in RATE_METRICS else f"%{{{axis_letter}:.4g}}"
    return f"{METRICS[metric].label}: {value}"


def _hovertemplate(metric: str, x_hover: str) -> str:
    return (f"<b>%{{customdata[1]}}</b><br>%{{customdata[2]}}<br>{_metric_hover(metric, 'y')}<br>{x_hover}"
            "<extra></extra>")


def _latency_whiskers(rows: pd.DataFrame) -> dict:
    """Asymmetric error bars from the median up to the 95th percentile: slow runs only ever add time."""
    return dict(
        type="data",
        symmetric=False,
        array=(rows[SINGLE_EXAMPLE.p95] - rows[LATENCY]).clip(lower=0).tolist(),
        arrayminus=[0] * len(rows),
        thickness=1,
        width=3,
    )


@dataclass(frozen=True)
class MarkerStyle:
    legend: str
    color: str
    symbol: str
    opacity: float


def _marker_style(simulated: bool, on_front: bool) -> MarkerStyle:
    """Simulated recipes get their own colour and symbol; recipes off the front are faded."""
    opacity = 1.0 if on_front else FADED
    if simulated:
        return MarkerStyle(help_text.SIMULATED_LEGEND, SIMULATED_COLOR, SIMULATED_SYMBOL, opacity)
    legend = help_text.ON_FRONT_LEGEND if on_front else help_text.DOMINATED_LEGEND
    return MarkerStyle(legend, FRONT_COLOR, "circle", opacity)


def _markers(rows: pd.DataFrame, axis: Axis, metric: str, style: MarkerStyle, legend: bool) -> go.Scatter:
    return go.Scatter(
        x=(rows[axis.column] / axis.unit).tolist(),
        y=_metric_values(rows, metric),
        mode="markers",
        name=style.legend,
        legendgroup=style.legend,
        showlegend=legend,
        marker=dict(size=11, color=style.color, symbol=style.symbol, opacity=style.opacity),
        cliponaxis=False,  # a dot on an axis's end (100% accuracy) is drawn whole; a zoom still hides those outside
        # A clicked dot grows; the others keep their own look instead of Plotly's default dimming.
        selected=dict(marker=dict(size=17)),
        unselected=dict(marker=dict(opacity=style.opacity)),
        customdata=_customdata(rows),
        hovertemplate=_hovertemplate(metric, axis.hover),
        error_x=_latency_whiskers(rows) if axis.column == LATENCY else None,
        error_y=_metric_intervals(rows, metric),
    )


def trade_off_figure(rows: pd.DataFrame, axis: Axis, metric: str) -> go.Figure:
    """Metric (y) against one cost (x). Each row of `rows` is exactly one marker, in exactly one marker trace."""
    front = rows[rows[axis.front].astype(bool)].sort_values(axis.column)
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=(front[axis.column] / axis.unit).tolist(),
            y=_metric_values(front, metric),
            mode="lines",
            name=help_text.FRONT_LEGEND,
            line=dict(color=FRONT_COLOR, dash="dot", width=2),
            hoverinfo="skip",
        )
    )
    in_legend = set()
    mixed = rows.index.isin(mixed_precision_rows(rows).index)
    for simulated, on_front in ((False, True), (False, False), (True, True), (True, False)):  # legend order
        group = rows[~mixed & (rows[SIMULATED].astype(bool) == simulated) & (rows[axis.front].astype(bool) == on_front)]
        if group.empty:  # an empty trace would still show up in the legend
            continue
        style = _marker_style(simulated, on_front)
        figure.add_trace(_markers(group, axis, metric, style, legend=style.legend not in in_legend))
        in_legend.add(style.legend)
    if mixed.any():  # the measured mixed-precision points, on or off the front, beside the uniform recipes
        style = MarkerStyle(help_text.MIXED_LEGEND, MIXED_COLOR, MIXED_SYMBOL, 1.0)
        figure.add_trace(_markers(rows[mixed], axis, metric, style, legend=True))
    _layout(figure, axis.title, metric, _metric_values(rows, metric))
    if axis.column == LATENCY and not rows.empty:
        figure.update_xaxes(range=[0, LATENCY_AXIS_HEADROOM * rows[LATENCY].max()])
    return figure


def cost_figure(table: pd.DataFrame, axis: Axis) -> go.Figure:
    """Metric against one cost for every measured recipe that has it: size for all (a simulated one's is estimated),
    time and RAM for the timed ones only."""
    rows = measured_rows(table)
    return trade_off_figure(rows[rows[axis.column].notna()], axis, metric_name(table))


def size_figure(table: pd.DataFrame) -> go.Figure:
    """Metric against file size for every measured recipe, simulated ones included (their size is estimated)."""
    return cost_figure(table, size_axis(table))


def latency_figure(table: pd.DataFrame) -> go.Figure:
    """Metric against batch-1 latency for every timed recipe; whiskers reach the 95th percentile."""
    return cost_figure(table, LATENCY_AXIS)


def ram_figure(table: pd.DataFrame) -> go.Figure:
    """Metric against the peak memory of a session answering one example, for every timed recipe."""
    return cost_figure(table, ram_axis(table))


def three_d_figure(table: pd.DataFrame) -> go.Figure:
    """Metric, size and latency at once, for the timed recipes; the 3-D Pareto front in full colour."""
    rows = single_example_rows(table)
    metric = metric_name(table)
    label, unit = size_unit(table[SIZE_BYTES].max())
    on_front = rows[PARETO_3D].astype(bool)
    figure = go.Figure()
    for mask, name, opacity in ((on_front, help_text.ON_FRONT_LEGEND, 1.0),
                                (~on_front, help_text.DOMINATED_LEGEND, FADED)):
        part = rows[mask]
        if part.empty:
            continue
        figure.add_trace(
            go.Scatter3d(
                x=(part[SIZE_BYTES] / unit).tolist(),
                y=part[LATENCY].tolist(),
                z=_metric_values(part, metric),
                mode="markers",
                name=name,
                marker=dict(size=6, color=FRONT_COLOR, opacity=opacity),
                customdata=_customdata(part),
                hovertemplate=(
                    "<b>%{customdata[1]}</b><br>%{customdata[2]}<br>"
                    f"{_metric_hover(metric, 'z')}<br>Size: %{{x:,.1f}} {label}<br>Time: %{{y:.3g}} ms"
                    "<extra></extra>"
                ),
            )
        )
    figure.update_layout(
        height=CHART_HEIGHT + 100,
        margin=dict(l=0, r=0, t=10, b=0),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
        scene_camera=dict(eye=dict(x=1.5, y=1.5, z=0.8)),  # far enough back that every axis title shows
        scene=dict(
            xaxis_title=f"Size ({label})",
            yaxis_title="Time (ms)",
            zaxis=dict(
                title=METRICS[metric].label,
                ticksuffix="%" if metric in RATE_METRICS else "",
                range=_padded_range(_metric_values(rows, metric), metric) if not rows.empty else None,
            ),
        ),
    )
    return figure


def _padded_range(values: list[float], metric: str) -> list[float]:
    """The values' span plus a margin, so the top and bottom dots are not cut by the plot's edge or the legend.

    A rate's axis stops at 0% and 100%, which no value can pass; the markers' cliponaxis=False draws the dots
    there whole."""
    low, high = min(values), max(values)
    margin = Y_MARGIN * (high - low) or Y_MARGIN * max(abs(high), 1e-9)  # all equal: a margin around the one value
    if metric in RATE_METRICS:
        return [max(low - margin, RATE_AXIS[0]), min(high + margin, RATE_AXIS[1])]
    return [low - margin, high + margin]


def _layout(figure: go.Figure, x_title: str, metric: str, y_values: list[float]) -> None:
    figure.update_layout(
        height=CHART_HEIGHT,
        margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        xaxis_title=x_title,
        yaxis_title=metric_axis_title(metric),
        hoverlabel=dict(align="left"),
    )
    if y_values:
        figure.update_yaxes(range=_padded_range(y_values, metric))
    if metric in RATE_METRICS:
        figure.update_yaxes(ticksuffix="%")

