"""The dashboard's plain functions (no Streamlit, no browser) on tables from real sweeps of small models."""

from __future__ import annotations

import secrets

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from dashboard import charts, comparisons, help_text, jobs_view, pickers, state, summaries, tables
from dashboard.samples import SAMPLE_OWNER
from dashboard.sweep_form import GridChoice
from engine.cli import CLI_OWNER
from engine.data import load_dataset
from engine.measure import PEAK_MEMORY_PROTOCOL
from engine.metrics import METRICS
from engine.model import load_model
from engine import results
from engine.recipe import Recipe
from engine.results import Goal
from engine.sweep import PRESETS, default_grid, sweep
from engine.workspace import JobInfo, JobState, ModelRecord
from sample_models.catalog import SAMPLES

DIGITS = SAMPLES["digits_cnn"]


@pytest.fixture(scope="module")
def digits_table(tmp_path_factory) -> pd.DataFrame:
    """The standard grid on the digits sample: real, simulated (W3, W2) and timed rows, with slices."""
    model = load_model(DIGITS.model_path)
    dataset = load_dataset(DIGITS.data_path, model.summary.inputs)
    return sweep(model, dataset, default_grid(), tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def regression_table(tmp_path_factory) -> pd.DataFrame:
    """A one-layer linear regression model, so the primary metric (MAE) is lower-is-better."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(16, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="linear")],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(weight, "w")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder = tmp_path_factory.mktemp("regression")
    onnx.save(proto, folder / "linear.onnx")
    x = rng.normal(size=(200, 16)).astype(np.float32)
    np.savez(folder / "linear.npz", x=x, labels=(x @ weight)[:, 0] + rng.normal(scale=0.1, size=200))
    model = load_model(folder / "linear.onnx")
    dataset = load_dataset(folder / "linear.npz", model.summary.inputs)
    recipes = [Recipe.fp32(), Recipe.fp16(), *PRESETS["fastest"].recipes[1:]]
    return sweep(model, dataset, recipes, folder / "out")


# --- presets and the Advanced grid -------------------------------------------------------------------------------


def test_every_preset_starts_with_the_original_and_explains_itself():
    assert [preset.title for preset in PRESETS.values()] == ["Smallest", "Fastest", "Balanced", "Everything"]
    assert list(PRESETS) == ["smallest", "fastest", "balanced", "everything"]  # what `sweep --preset` takes
    for preset in PRESETS.values():
        assert preset.recipes[0] == Recipe.fp32()
        assert preset.explanation.endswith(".") and len(preset.explanation) < 120
        assert len({recipe.key() for recipe in preset.recipes}) == len(preset.recipes)


def test_advanced_grid_defaults_give_the_original_plus_each_combination():
    names = [recipe.short_name() for recipe in GridChoice().recipes()]
    assert names == [
        "fp32",
        "W8 weight-only channel",
        "W8A8 static channel minmax",
        "W4 weight-only channel",
        "W4A8 static channel minmax",
    ]


# --- recommendation ----------------------------------------------------------------------------------------------


def test_smallest_recommendation_is_the_smallest_real_recipe_within_tolerance(digits_table):
    reference = results.reference_row(digits_table)
    found = results.recommend(digits_table, 0.01, Goal.SMALLEST)
    qualifying = digits_table[
        ~digits_table["simulated"]
        & (digits_table["metric"] >= reference["metric"] * 0.99)
        & (digits_table["name"] != "fp32")
    ]
    assert found.row["recipe_key"] == qualifying.sort_values("size_bytes").iloc[0]["recipe_key"]
    text = comparisons.recommendation_text(digits_table, 0.01, Goal.SMALLEST)
    assert text.startswith(f"Smallest model within 1% of the original top-1 accuracy: {found.row['name']}")
    assert f"{found.row['size_bytes'] / reference['size_bytes']:.2f}x the size" in text


def test_simulated_recipes_are_never_recommended(digits_table):
    # W2/W3 are simulated and the smallest of all; even a 100% tolerance must not pick them.
    found = results.recommend(digits_table, 1.0, Goal.SMALLEST)
    assert not found.row["simulated"]


def test_fastest_recommendation_has_the_lowest_latency_within_tolerance(digits_table):
    found = results.recommend(digits_table, 0.05, Goal.FASTEST)
    timed = results.single_example_rows(digits_table)
    allowed = timed[results.within_tolerance(timed, results.reference_row(digits_table), 0.05)]
    allowed = allowed[allowed["name"] != "fp32"]
    if found is None:  # on this tiny model no quantized recipe may beat fp32's time
        assert (allowed[results.LATENCY] >= results.reference_row(digits_table)[results.LATENCY]).all()
    else:
        assert found.row[results.LATENCY] == allowed[results.LATENCY].min()


def test_lower_is_better_tolerance_is_a_relative_increase(regression_table):
    assert regression_table["metric_name"].iloc[0] == "mae"
    reference = results.reference_row(regression_table)
    mask = results.within_tolerance(regression_table, reference, 0.05)
    assert mask.equals(regression_table["metric"] <= reference["metric"] * 1.05)
    text = comparisons.recommendation_text(regression_table, 0.05, Goal.SMALLEST)
    assert "with at most 5% more mean absolute error than the original" in text


def test_no_qualifying_recipe_says_so(digits_table):
    only_reference = digits_table[digits_table["name"] == "fp32"]
    assert results.recommend(only_reference, 0.01, Goal.SMALLEST) is None
    assert "no quantized recipe qualifies and is smaller than the original" in comparisons.recommendation_text(
        only_reference, 0.01, Goal.SMALLEST
    )


# --- charts ------------------------------------------------------------------------------------------------------


def _markers(figure) -> list[str]:
    """Recipe keys of every marker, trace by trace: each row must appear exactly once."""
    return [point[0] for trace in figure.data if "markers" in trace.mode for point in trace.customdata]


def test_size_chart_has_one_marker_per_measured_row(digits_table):
    figure = charts.size_figure(digits_table)
    assert sorted(_markers(figure)) == sorted(digits_table["recipe_key"])


def test_size_chart_front_line_joins_the_front_in_size_order(digits_table):
    line = next(trace for trace in charts.size_figure(digits_table).data if trace.mode == "lines")
    assert line.name == help_text.FRONT_LEGEND
    assert len(line.x) == digits_table["pareto_size"].sum()
    assert list(line.x) == sorted(line.x)


def test_simulated_rows_have_their_own_symbol_and_one_legend_entry(digits_table):
    figure = charts.size_figure(digits_table)
    simulated = [trace for trace in figure.data if trace.name == help_text.SIMULATED_LEGEND]
    assert {trace.marker.symbol for trace in simulated} == {charts.SIMULATED_SYMBOL}
    assert sum(trace.showlegend is not False for trace in simulated) == 1
    expected = digits_table.loc[digits_table["simulated"], "recipe_key"]
    assert sorted(point[0] for trace in simulated for point in trace.customdata) == sorted(expected)


def test_mixed_precision_points_have_their_own_marker_and_legend_entry_beside_the_uniform_recipes(digits_table):
    # Two real rows as the points of a curve from W8A8 static: its base (no node moved) and one point with 2 moved.
    base, point = (digits_table["name"] == name for name in ("W8A8 static channel minmax", "W8A8 static tensor minmax"))
    curve = digits_table.assign(**{results.MIXED_BASE: None, results.MIXED_CHANGED: None})
    curve.loc[base | point, results.MIXED_BASE] = "W8A8 static channel minmax"
    curve.loc[base, results.MIXED_CHANGED], curve.loc[point, results.MIXED_CHANGED] = 0, 2
    for figure in (charts.size_figure(curve), charts.latency_figure(curve)):
        (mixed,) = [trace for trace in figure.data if trace.name == help_text.MIXED_LEGEND]
        assert mixed.marker.symbol == charts.MIXED_SYMBOL and mixed.showlegend
        assert [p[0] for p in mixed.customdata] == curve.loc[point, "recipe_key"].tolist()
    assert sorted(_markers(charts.size_figure(curve))) == sorted(curve["recipe_key"])  # each row once, in one trace


def test_dominated_points_are_faded(digits_table):
    figure = charts.size_figure(digits_table)
    dominated = next(trace for trace in figure.data if trace.name == help_text.DOMINATED_LEGEND)
    assert dominated.marker.opacity == charts.FADED
    keys = {point[0] for point in dominated.customdata}
    assert not digits_table[digits_table["recipe_key"].isin(keys)]["pareto_size"].any()


def test_latency_chart_shows_timed_rows_with_upward_p95_whiskers(digits_table):
    figure = charts.latency_figure(digits_table)
    timed = results.single_example_rows(digits_table)
    assert sorted(_markers(figure)) == sorted(timed["recipe_key"])
    assert help_text.SIMULATED_LEGEND not in [trace.name for trace in figure.data]
    for trace in figure.data:
        if trace.mode == "markers":
            rows = timed.set_index("recipe_key").loc[[point[0] for point in trace.customdata]]
            assert trace.error_x.symmetric is False
            assert np.allclose(trace.error_x.array, rows["latency_b1_p95_ms"] - rows["latency_b1_p50_ms"])
            assert set(trace.error_x.arrayminus) == {0}


def test_ram_chart_shows_the_timed_rows_against_their_peak_memory_and_front(digits_table):
    axis = charts.axis_choices(digits_table)["RAM"]
    figure = charts.cost_figure(digits_table, axis)
    timed = results.single_example_rows(digits_table)
    assert sorted(_markers(figure)) == sorted(timed["recipe_key"])  # simulated rows have no RAM
    assert figure.layout.xaxis.title.text.startswith("RAM (MB")
    line = next(trace for trace in figure.data if trace.mode == "lines")
    front = timed[timed[results.PARETO_RAM]].sort_values(results.RAM)
    assert np.allclose(line.x, front[results.RAM] / 1e6)


def test_3d_chart_has_one_marker_per_timed_row(digits_table):
    figure = charts.three_d_figure(digits_table)
    assert sorted(_markers(figure)) == sorted(results.single_example_rows(digits_table)["recipe_key"])


def test_a_rate_axis_never_runs_past_100_percent_or_below_0(digits_table):
    assert digits_table["name"].iloc[0] == "fp32"  # timed, so on both charts
    perfect = digits_table.assign(metric=np.linspace(1.0, 0.9, len(digits_table)))  # fp32 scores 100%
    for figure in (charts.size_figure(perfect), charts.latency_figure(perfect)):
        low, high = figure.layout.yaxis.range
        assert high == 100 and 0 < low < 100
    assert charts.three_d_figure(perfect).layout.scene.zaxis.range[1] == 100
    hopeless = digits_table.assign(metric=np.linspace(0.0, 0.1, len(digits_table)))
    assert charts.size_figure(hopeless).layout.yaxis.range[0] == 0


def test_an_error_metric_axis_is_padded_on_both_sides(regression_table):
    low, high = charts.size_figure(regression_table).layout.yaxis.range
    assert low < regression_table["metric"].min() and high > regression_table["metric"].max()


def test_hover_shows_the_recipe_in_words(digits_table):
    figure = charts.size_figure(digits_table)
    trace = next(trace for trace in figure.data if trace.mode == "markers")
    assert "%{customdata[2]}" in trace.hovertemplate
    descriptions = set(digits_table["description"])
    assert all(point[2] in descriptions for point in trace.customdata)


# --- detail card and table -------------------------------------------------------------------------------------


def test_metric_comparison_lists_each_score_next_to_the_original(digits_table):
    row = digits_table[digits_table["name"] == "W4 weight-only group32"].iloc[0]
    comparison = comparisons.metric_comparison(row, results.reference_row(digits_table))
    assert comparison["Score"].iloc[0] == METRICS["top1"].label
    assert comparison["Original model"].iloc[0] == f"{results.reference_row(digits_table)['top1']:.2%}"


def test_slice_comparison_has_one_row_per_slice(digits_table):
    row = digits_table.iloc[5]
    slices = comparisons.slice_comparison(row, results.reference_row(digits_table))
    assert sorted(slices["Group"]) == sorted(row["per_slice"])
    # 128 of the 540 rows calibrate the static recipes, so every recipe is scored on the other 412
    assert slices["Examples"].sum() == row[results.ROWS_SCORED] == 540 - 128


def test_results_view_keeps_one_sortable_row_per_recipe(digits_table):
    view = tables.results_view(digits_table)
    assert len(view) == len(digits_table)
    assert view["Top-1 accuracy"].dtype.kind == "f"
    assert set(tables.results_columns(digits_table)) >= set(view.columns) - {"Problem"}


def test_the_original_model_keeps_all_its_layers_at_full_precision(digits_table):
    reference = results.reference_row(digits_table)
    assert comparisons.full_precision_layers(reference) is None
    quantized = digits_table[digits_table["name"] == "W4 weight-only group32"].iloc[0]
    assert comparisons.full_precision_layers(quantized) == list(quantized["float_layers"])


def test_model_summary_tables_come_from_the_stored_summary():
    summary = load_model(DIGITS.model_path).summary.to_dict()
    assert list(summaries.layers_table(summary)["Layer"]) == [layer["name"] for layer in summary["layers"]]
    assert summaries.tensors_table(summary, "inputs").iloc[0].to_dict() == {
        "Input": "image",
        "Shape": "? x 1 x 8 x 8",
        "Number type": "float32",
    }


# --- uncertainty in words and on charts -------------------------------------------------------------------------


def test_a_change_inside_its_interval_is_called_no_measurable_change(digits_table):
    row = digits_table.iloc[1].copy()
    row[results.DELTA], row[results.DELTA_CI_LOW], row[results.DELTA_CI_HIGH] = -0.0028, -0.0083, 0.0028
    assert comparisons.change_text(row) == "no measurable change (-0.28 points, 95% interval -0.83 to +0.28)"
    row[results.DELTA], row[results.DELTA_CI_LOW], row[results.DELTA_CI_HIGH] = -0.0194, -0.03, -0.01
    assert comparisons.change_text(row) == "measurably worse (-1.94 points, 95% interval -3.00 to -1.00)"


def test_every_marker_has_error_bars_spanning_its_metric_interval(digits_table):
    figure = charts.size_figure(digits_table)
    for trace in figure.data:
        if trace.mode != "markers":
            continue
        rows = digits_table.set_index(results.RECIPE_KEY).loc[[point[0] for point in trace.customdata]]
        assert trace.error_y.array == pytest.approx(list((rows[results.METRIC_CI_HIGH] - rows[results.METRIC]) * 100))
        assert trace.error_y.arrayminus == pytest.approx(list((rows[results.METRIC] - rows[results.METRIC_CI_LOW]) * 100))


# --- names in pickers, workspace links ---------------------------------------------------------------------------


def _job(job_id: str, created: float, owner: str = "someone") -> JobInfo:
    return JobInfo(id=job_id, kind="sweep", state=JobState.DONE, done=4, total=4, message="", error=None, owner=owner,
                   model_id="m", dataset_id="d", created=created, started=created, finished=created + 5)


def test_sweeps_of_the_same_minute_have_different_labels():
    names = ({"m": "wide_cnn.onnx"}, {"d": "wide_val.npz"})
    first, second = _job("a", 1_800_000_000.0), _job("b", 1_800_000_007.0)
    assert jobs_view.job_label(first, *names) != jobs_view.job_label(second, *names)
    assert jobs_view.job_label(first, *names).startswith("wide_cnn.onnx on wide_val.npz, 4 recipes, ")


def test_labels_that_read_alike_are_numbered():
    assert state.unique_labels(["a", "b", "a", "a"]) == ["a", "b", "a (2)", "a (3)"]


def test_samples_read_as_samples_next_to_a_look_alike_upload():
    def record(name: str, owner: str, shared: bool) -> ModelRecord:
        return ModelRecord(id=name, name=name, owner=owner, shared=shared, bytes=1, summary={}, created=0.0)

    assert pickers.library_label(record("wide_cnn", SAMPLE_OWNER, True), "me") == "wide_cnn (sample)"
    assert pickers.library_label(record("wide_cnn.onnx", "me", False), "me") == "wide_cnn.onnx (yours, private)"
    assert pickers.library_label(record("resnet.onnx", "me", True), "me") == "resnet.onnx (yours, shared)"
    assert pickers.library_label(record("resnet.onnx", "you", True), "me") == "resnet.onnx (shared library)"


def test_a_workspace_token_is_long_random_url_safe_text_and_nothing_else():
    assert state.is_workspace_token(secrets.token_urlsafe(state.TOKEN_BYTES))
    assert state.is_workspace_token("A" * 22)
    for hostile in (SAMPLE_OWNER, CLI_OWNER, "", "short", "../../../etc/passwd", "a" * 21, "a" * 65,
                    "x' OR '1'='1' --xxxxxxxx", "a/b" * 10, "é" * 30, None, ["a" * 30]):
        assert not state.is_workspace_token(hostile), hostile


def test_a_pasted_link_or_bare_token_opens_that_workspace():
    token = secrets.token_urlsafe(state.TOKEN_BYTES)
    assert state.token_from_link(f"http://127.0.0.1:8501/sweep?workspace={token}") == token
    assert state.token_from_link(f"  http://localhost:8501/?embed=true&workspace={token}\n") == token
    assert state.token_from_link(token) == token
    assert state.token_from_link("http://127.0.0.1:8501/sweep") is None
    assert state.token_from_link("http://127.0.0.1:8501/?workspace=samples") is None
    assert state.token_from_link("hello") is None


def test_a_recipe_degrades_under_shift_only_when_it_loses_measurably_and_much_more_than_on_clean_data():
    def row(clean_delta: float, set_delta: float, set_high: float) -> dict:
        return {results.METRIC_NAME: "top1", results.DELTA: clean_delta, results.EXTRA_SETS: {"noisy": {
            results.METRIC_NAME: "top1", results.METRIC: 0.8 + set_delta, results.DELTA: set_delta,
            results.DELTA_CI_LOW: set_delta - 0.01, results.DELTA_CI_HIGH: set_high}}}

    assert results.degrades_under_shift(row(-0.01, -0.05, -0.03), "noisy")  # 5 points against 1: much worse
    assert not results.degrades_under_shift(row(-0.01, -0.05, 0.01), "noisy")  # inside the noise
    assert not results.degrades_under_shift(row(-0.03, -0.05, -0.03), "noisy")  # not twice the clean loss
    assert not results.degrades_under_shift(row(0.0, -0.006, -0.002), "noisy")  # under the one-point margin


def test_a_row_says_what_its_figures_rest_on(digits_table):
    static = digits_table.set_index(results.NAME).loc["W8A8 static channel minmax"]
    notes = comparisons.how_measured(static)
    assert notes[0] == "Scored on 412 examples (rows 129..540 of the validation set)."
    assert notes[1] == "Calibrated on rows 1..128 of the validation set."
    assert notes[2] == "Agreement with the original counts: every position counts (no attention-mask-like input)."
    blocks, runs = int(static[results.SINGLE_EXAMPLE.blocks]), int(static[results.SINGLE_EXAMPLE.runs])
    assert blocks >= 3 and notes[3].startswith(
        f"Time per example: the median of {blocks} fresh sessions' medians ({runs} runs) with 1 thread(s), within ±")
    names = results.SINGLE_EXAMPLE
    ratio, low, high = static[names.vs_fp32], static[names.vs_fp32_ci_low], static[names.vs_fp32_ci_high]
    assert low <= ratio <= high and notes[4].startswith("Time per example against the original, both timed in the same")
    assert notes[4].endswith(f"{ratio:.2f}x fp32 (95%: {low:.2f}-{high:.2f}).")
    assert notes[5] == f"Memory: {PEAK_MEMORY_PROTOCOL}." and "fresh process" in notes[5]
    assert comparisons.headline(static, None).ram.endswith(" MB")
    fp32 = digits_table.set_index(results.NAME).loc["fp32"]
    assert not any(note.startswith("Time per example against") for note in comparisons.how_measured(fp32))
