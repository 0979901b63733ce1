"""report.html: one exported recipe's figures as a page that needs nothing but itself.

Plotly's JavaScript is embedded once (include_plotlyjs=True), so the page opens offline and fetches nothing:
where the recipe sits on the front of the metric against size (and latency), the metrics next to fp32, the
per-slice table, the size and the latency with the method that measured it. Chart ids are fixed, so the same
bundle always renders to the same bytes.
"""

from __future__ import annotations

import html
import json

import pandas as pd
import plotly.graph_objects as go

from engine import results
from engine.formatting import RATE_METRICS, metric_axis_title, metric_text, ratio_text, speed_text
from engine.metrics import METRICS
from engine.provenance import describe_machine
from engine.text import size_text, size_unit

THIS_COLOR = "#d95f02"
FRONT_COLOR = "#1f77b4"
OTHER_COLOR = "#9ab"
SIMULATED_COLOR = "#d62728"
CHART_HEIGHT = 420
CHART_CONFIG = {"displaylogo": False, "responsive": True}

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } .sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; } td, th { border: 1px solid #ccc; padding: 4px 10px; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.warning { background: #fff3cd; border: 1px solid #e0c060; padding: 0.8em 1em; border-radius: 4px; }
.figures { display: flex; gap: 1em; flex-wrap: wrap; } .figure { border: 1px solid #ddd; border-radius: 4px;
padding: 0.6em 1em; flex: 1 1 0; } .figure b { display: block; font-size: 1.4em; }
code, pre { background: #f6f6f6; } pre { padding: 0.6em; overflow-x: auto; } .hash { font-family: monospace; }
"""


def _scale(metric: str) -> int:
    return 100 if metric in RATE_METRICS else 1


def _front_figure(table: pd.DataFrame, figures: dict, cost: str, flag: str, title: str, unit: int = 1) -> go.Figure:
    """The metric against one cost for every measured recipe: the front as a line, this recipe as a star."""
    metric = figures["metric"]["name"]
    rows = results.measured_rows(table)
    rows = rows[rows[cost].notna()]
    key = figures["recipe"]["key"]
    figure = go.Figure()
    front = rows[rows[flag].astype(bool)].sort_values(cost)
    figure.add_trace(go.Scatter(x=(front[cost] / unit).tolist(), y=(front[results.METRIC] * _scale(metric)).tolist(),
                                mode="lines", name="Pareto front", line=dict(color=FRONT_COLOR, dash="dot"),
                                hoverinfo="skip"))
    groups = (
        ("on the front", rows[flag].astype(bool) & ~rows[results.SIMULATED].astype(bool), FRONT_COLOR, "circle"),
        ("beaten by another recipe", ~rows[flag].astype(bool) & ~rows[results.SIMULATED].astype(bool), OTHER_COLOR,
         "circle"),
        ("simulated (no real kernel)", rows[results.SIMULATED].astype(bool), SIMULATED_COLOR, "x"),
    )
    original = rows.apply(results.is_reference, axis=1).astype(bool) if not rows.empty else rows[flag]
    for name, mask, color, symbol in groups:
        part = rows[mask & ~original & (rows[results.RECIPE_KEY] != key)]
        if not part.empty:
            figure.add_trace(_points(part, cost, unit, metric, name, dict(size=10, color=color, symbol=symbol)))
    reference = rows[original & (rows[results.RECIPE_KEY] != key)]
    if not reference.empty:
        figure.add_trace(_points(reference, cost, unit, metric, "fp32 (the original)",
                                 dict(size=13, color="#333", symbol="diamond")))
    this = rows[rows[results.RECIPE_KEY] == key]
    figure.add_trace(_points(this, cost, unit, metric, f"this recipe: {figures['recipe']['name']}",
                             dict(size=20, color=THIS_COLOR, symbol="star", line=dict(width=1, color="#333"))))
    figure.update_layout(height=CHART_HEIGHT, margin=dict(l=10, r=10, t=40, b=10), xaxis_title=title,
                         yaxis_title=metric_axis_title(metric),
                         legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    if metric in RATE_METRICS:
        figure.update_yaxes(ticksuffix="%")
    return figure


def _points(rows: pd.DataFrame, cost: str, unit: int, metric: str, name: str, marker: dict) -> go.Scatter:
    return go.Scatter(x=(rows[cost] / unit).tolist(), y=(rows[results.METRIC] * _scale(metric)).tolist(),
                      mode="markers", name=name, marker=marker, text=rows[results.NAME].tolist(),
                      hovertemplate="<b>%{text}</b><br>%{y:.4g} at %{x:.4g}<extra></extra>")


def _slice_figure(figures: dict) -> go.Figure:
    """The primary metric's change against fp32 on each slice, in the units the tables use (points for rates)."""
    metric = figures["metric"]
    slices = {name: entry for name, entry in metric["per_slice"].items()
              if isinstance(entry["value"], float | int) and isinstance(entry["fp32"], float | int)}
    scale = _scale(metric["name"])
    changes = [(entry["value"] - entry["fp32"]) * scale for entry in slices.values()]
    figure = go.Figure(go.Bar(x=list(slices), y=changes, marker_color=THIS_COLOR,
                              text=[f"{change:+.2f}" for change in changes], textposition="outside",
                              hovertemplate="%{x}: %{y:+.3g}<extra></extra>"))
    unit = "points" if metric["name"] in RATE_METRICS else "change"
    figure.update_layout(height=CHART_HEIGHT - 80, margin=dict(l=10, r=10, t=20, b=10),
                         yaxis_title=f"{metric['label']} against fp32 ({unit})")
    figure.add_hline(y=0, line_color="#333", line_width=1)
    return figure


def _charts(figures: dict, table: pd.DataFrame) -> list[tuple[str, go.Figure]]:
    label, unit = size_unit(table[results.SIZE_BYTES].max())
    charts = [("Where this recipe sits: metric against file size",
               _front_figure(table, figures, results.SIZE_BYTES, results.PARETO_SIZE, f"File size ({label})", unit))]
    if figures["latency"].get("batch_1") and results.single_example_rows(table)[results.LATENCY].notna().any():
        charts.append(("Metric against time per example (median, batch of 1)",
                       _front_figure(table, figures, results.LATENCY, results.PARETO_LATENCY, "Time per example (ms)")))
    if figures["metric"]["per_slice"]:
        charts.append((f"{figures['metric']['label']} per slice of the data, against fp32", _slice_figure(figures)))
    return charts


def _table(header: list[str], rows: list[list], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if index >= numeric_from else ''}>{html.escape(str(cell))}</td>"
                         for index, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _score_text(name: str, value) -> str:
    """A score as it reads; bundle.json writes an infinite SQNR (identical outputs) as "inf"."""
    if isinstance(value, str):
        return "identical outputs (infinite)" if value == "inf" else value
    return metric_text(name, value)


def _scores_table(figures: dict) -> str:
    scores, original = figures["metric"]["all"], figures["metric"]["all_fp32"]
    rows = [[METRICS[name].label, _score_text(name, value), _score_text(name, original.get(name)),
             "higher" if METRICS[name].higher_is_better else "lower"] for name, value in scores.items()]
    return _table(["Score", "This recipe", "fp32", "Better when"], rows)


def _slices_table(figures: dict) -> str:
    metric = figures["metric"]
    rows = [[name, figures_["rows"], metric_text(metric["name"], figures_["value"]),
             metric_text(metric["name"], figures_["fp32"])] for name, figures_ in metric["per_slice"].items()]
    return _table(["Slice", "Examples", f"{metric['label']} (this recipe)", f"{metric['label']} (fp32)"], rows)


def _latency_section(figures: dict) -> str:
    latency = figures["latency"]
    if "not_timed_because" in latency:
        return f"<p>Not timed: {html.escape(latency['not_timed_because'])}.</p>"
    rows = []
    for key, label in (("batch_1", "1 example"), ("batch_n", "batch")):
        timing, original = latency.get(key), (latency.get("fp32") or {}).get(key)
        if timing is None:
            continue
        size = f"{timing['batch']} examples" if key == "batch_n" else label
        interval = (f"{timing['ci_low_ms']:.4g} to {timing['ci_high_ms']:.4g}" if timing["ci_low_ms"] is not None
                    else "too few runs")
        rows.append([size, f"{timing['p50_ms']:.4g}", f"{timing['p95_ms']:.4g}", timing["runs"], interval,
                     "yes" if timing["capped"] else "no",
                     f"{original['p50_ms']:.4g}" if original else "-",
                     (speed_text(original["p50_ms"], timing["p50_ms"]) or "-") if original else "-"])
    machine = latency.get("machine")
    where = describe_machine(machine) if machine else "not recorded (measured before quantscope recorded machines)"
    return (f"<p>onnxruntime on the CPU, {latency['threads']} intra-op thread(s): {html.escape(latency['method'])}. "
            f"Timed on {html.escape(where)}.</p>"
            + _table(["Timed", "p50 ms", "p95 ms", "Runs", "Median's 95% interval (ms)", "Time cap hit", "fp32 p50 ms",
                      "Against fp32"], rows))


def _provenance(figures: dict) -> str:
    data = figures["data"]
    calibration = [("calibration", data["calibration"])] if data["calibration"] else []
    files = [("validation", data["validation"]), *calibration, *data["extra_sets"].items()]
    rows = [[role, entry["file"], entry["rows"], entry["sha256"]] for role, entry in files]
    versions = figures.get("versions") or {}
    scoring = figures["scoring"]
    notes = [f"Scored on {scoring['rows_scored']} examples ({scoring['scored_rows']})."]
    if scoring["calibration_source"]:
        notes.append(f"Calibrated on {scoring['calibration_source']}.")
    if figures["fidelity"].get("counts"):
        notes.append(f"Agreement with fp32 counts: {figures['fidelity']['counts']}.")
    if data["shifts"]:
        notes.append(f"Also scored on synthetic shifts: {', '.join(data['shifts'])}.")
    if figures["measured"]["job_id"]:
        notes.append(f"Measured by sweep job {figures['measured']['job_id']}.")
    software = ", ".join(f"{name} {version}" for name, version in versions.items() if name != "engine_source")
    software = f"{software} (engine source {versions['engine_source']})" if versions else "not recorded"
    return ("".join(f"<p>{html.escape(note)}</p>" for note in notes)
            + f"<p>Measured with {html.escape(software)}.</p>"
            + _table(["Data", "File", "Rows", "sha256"], rows, numeric_from=2))


def _headline(figures: dict) -> str:
    metric, model, latency = figures["metric"], figures["model"], figures["latency"]
    estimate = " (estimated)" if model["size_is_estimate"] else ""
    cards = [
        (metric["label"], metric_text(metric["name"], metric["value"]),
         f"fp32 {metric_text(metric['name'], metric['fp32'])}; {metric['change']}"),
        ("File size", size_text(model["size_bytes"]) + estimate, f"{ratio_text(model['size_ratio'])} the original"),
    ]
    single, original = latency.get("batch_1"), (latency.get("fp32") or {}).get("batch_1")
    if single:
        cards.append(("Time per example", f"{single['p50_ms']:.3g} ms",
                      (speed_text(original["p50_ms"], single["p50_ms"]) or "") + " than fp32" if original else ""))
    return '<div class="figures">' + "".join(
        f'<div class="figure">{html.escape(title)}<b>{html.escape(value)}</b>{html.escape(note)}</div>'
        for title, value, note in cards
    ) + "</div>"


def _not_deployable(figures: dict) -> str:
    model = figures["model"]
    if model["deployable"]:
        return ""
    nearest = model["nearest_real_recipe"]
    instead = (f"The nearest real recipe on the front is <b>{html.escape(nearest['name'])}</b> "
               f"({html.escape(nearest['description'])}): export that one to ship a model."
               if nearest and nearest.get("name") else html.escape(nearest["why"]) if nearest else "")
    return (f'<p class="warning"><b>Not deployable.</b> This recipe is {html.escape(model["not_deployable_because"])}. '
            f"{instead}</p>")


def render_report(figures: dict, table: pd.DataFrame) -> str:
    """The report for a bundle's figures (bundle.json's) and the results table the row came from."""
    charts = _charts(figures, table)
    chart_html = "".join(
        f"<h3>{html.escape(title)}</h3>"
        + figure.to_html(full_html=False, include_plotlyjs=(index == 0), div_id=f"chart-{index}", config=CHART_CONFIG)
        for index, (title, figure) in enumerate(charts)
    )
    recipe, model = figures["recipe"], figures["model"]
    sections = [
        f"<h1>{html.escape(recipe['name'])}: {html.escape(figures['base_model']['name'])}</h1>",
        f'<p class="sub">{html.escape(recipe["description"])}; built by {html.escape(model["realiser"])}</p>',
        _not_deployable(figures),
        _headline(figures),
        chart_html,
        "<h2>Scores next to fp32</h2>", _scores_table(figures),
        *(["<h2>Per slice</h2>", _slices_table(figures)] if figures["metric"]["per_slice"] else []),
        "<h2>Size</h2>",
        f"<p>{html.escape(model['file'])}: {model['file_bytes']:,} bytes, sha256 "
        f"<span class=hash>{model['sha256']}</span>. "
        + (f"The size compared is an estimate of packed integers: {model['size_bytes']:,} bytes. "
           if model["size_is_estimate"] else "")
        + f"The original is {figures['base_model']['size_bytes']:,} bytes. "
        + f"Layers left in full precision: {html.escape(', '.join(model['float_layers']) or 'none')}.</p>",
        "<h2>Latency</h2>", _latency_section(figures),
        "<h2>What the figures rest on</h2>", _provenance(figures),
        "<h2>Recipe</h2>", f"<pre>{html.escape(json.dumps(recipe['settings'], indent=2))}</pre>",
    ]
    title = html.escape(f"{recipe['name']}: {figures['base_model']['name']}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")

