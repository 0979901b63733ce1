"""The Sensitivity page's charts: the heat map of points x candidates, and a point's values with the grid over them.

The heat map is drawn as square markers rather than a plotly Heatmap, because Streamlit's chart selection reports
clicked markers only; each marker's customdata is [kind, layer, tensor], so a click picks that point.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard import help_text
from engine.sensitivity import table as columns
from engine.sensitivity.points import QuantGrid
from engine.sensitivity.statistics import Histogram

CELL_PIXELS = 22  # height of one point's row in the heat map
HEAT_COLORS = "Reds"  # white: no harm; dark red: the most harmful cell
GRID_COLOR = "#d62728"
MOST_LEVELS_DRAWN = 64  # a finer grid is drawn as every n-th level, so the ticks stay readable


def point_label(row: pd.Series | dict) -> str:
    """How a point reads on the heat map's axis: 'node name · activations'."""
    return f"{row[columns.LAYER]} · {row[columns.KIND]}"


def heat_map_figure(rows: pd.DataFrame, order: list[str]) -> go.Figure:
    """One square per (point, candidate), coloured by the drop when only that point is quantized; points in `order`
    (their labels, most harmful first, drawn at the top)."""
    rows = rows.assign(label=[point_label(row) for _, row in rows.iterrows()])
    harm = rows[columns.DROP].clip(lower=0).fillna(0)
    top = float(harm.max()) or 0.01  # no harm anywhere: the scale still reads in the metric's units
    figure = go.Figure(go.Scatter(
        x=rows[columns.CANDIDATE].tolist(),
        y=rows["label"].tolist(),
        mode="markers",
        marker=dict(symbol="square", size=CELL_PIXELS - 2, color=harm.tolist(), colorscale=HEAT_COLORS, cmin=0,
                    cmax=top, line=dict(width=1, color="#999"),
                    colorbar=dict(title=help_text.HEAT_MAP_COLOUR)),
        customdata=rows[[columns.KIND, columns.LAYER, columns.TENSOR, columns.DROP, columns.OUTPUT_SQNR_DB]].values
        .tolist(),
        hovertemplate=("<b>%{y}</b><br>%{x}<br>drop when only this is quantized: %{customdata[3]:.4g}"
                       "<br>output SQNR: %{customdata[4]:.3g} dB<extra></extra>"),
        selected=dict(marker=dict(opacity=1)),
        unselected=dict(marker=dict(opacity=1)),
    ))
    figure.update_yaxes(categoryorder="array", categoryarray=list(reversed(order)), title=None)
    figure.update_xaxes(title=None, side="top")
    figure.update_layout(height=120 + CELL_PIXELS * len(order), margin=dict(l=10, r=10, t=40, b=10),
                         clickmode="event+select", dragmode=False)
    return figure


def values_figure(histogram: Histogram, grid: QuantGrid | None, title: str) -> go.Figure:
    """The point's fp32 values as a histogram, with the quantization grid's levels drawn as ticks under it and its
    ends (the clipping range) as lines: values outside are clipped, and a few far outliers stretch the grid so that
    most values share a handful of levels."""
    edges = np.asarray(histogram.edges)
    centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    figure = go.Figure(go.Bar(x=centres.tolist(), y=list(histogram.counts), width=widths.tolist(),
                              name=help_text.VALUES_LEGEND, marker_color="#1f77b4"))
    if grid is not None:
        levels = grid.levels(grid.widest_channel())
        step = max(1, int(np.ceil(len(levels) / MOST_LEVELS_DRAWN)))
        shown = levels[::step]
        figure.add_trace(go.Scatter(x=shown.tolist(), y=[0] * len(shown), mode="markers", name=help_text.GRID_LEGEND,
                                    marker=dict(symbol="line-ns-open", size=14, color=GRID_COLOR),
                                    hovertemplate="level %{x:.4g}<extra></extra>"))
        for end in (levels[0], levels[-1]):
            figure.add_vline(x=float(end), line=dict(color=GRID_COLOR, dash="dash", width=1))
    figure.update_layout(title=title, height=320, margin=dict(l=10, r=10, t=40, b=10), bargap=0,
                         legend=dict(orientation="h", y=-0.2), yaxis_title="values", xaxis_title=None)
    return figure
