"""Measured mixed precision (engine.mixed, `quantscope mixed`): the ladder read off the sensitivity table, points
built and measured for real, the budgets and their one-line verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

from engine import results
from engine.cli import main
from engine.data import Dataset
from engine.errors import RecipeError
from engine.masking import apply_mask, choose_masking
from engine.metrics import fidelity
from engine.mixed import (
    CHOSEN_FILE, MaxDrop, MaxLatency, MaxSizeRatio, curve_candidates, ladder_from_table, mixed_curve,
)
from engine.mixed.budgets import drop
from engine.model import load_model
from engine.realise import quantize
from engine.realise import calibration as calibration_module
from engine.realise.calibration import CalibrationSet, activation_ranges
from engine.realise.native import nonfinite_range_warnings_silenced
from engine.recipe import ActivationSpec, Granularity, LayerOverride, Mode, Recipe, WeightSpec
from engine.sensitivity import SensitivityTable, candidates, sensitivity_table
from engine.sensitivity import table as columns
from engine.sweep.plan import calibration_rows_asked, plan_data
from engine.uncertainty import Interval
from sample_models.catalog import SAMPLES
from tests.builders import inf_masked_classifier_model, masked_attention_model, padded_sequences

W8A8 = Recipe(WeightSpec(8), ActivationSpec(8), Mode.STATIC)
CLI = [sys.executable, "-m", "engine.cli", "mixed"]


@pytest.fixture(scope="module")
def attention(tmp_path_factory):
    """The Hugging Face mask added to attention scores (tests/builders.py): the model, its data as a Dataset and as
    an .npz file, and its sensitivity table for the default candidates (W8A8 and W4A8 static)."""
    folder = tmp_path_factory.mktemp("attention")
    proto = masked_attention_model()
    onnx.save(proto, folder / "model.onnx")
    ids, mask = padded_sequences(rows=128)
    np.savez(folder / "data.npz", input_ids=ids, attention_mask=mask)
    model = load_model(proto.SerializeToString())
    data = Dataset({"input_ids": ids, "attention_mask": mask}, None, None, "padded")
    table = sensitivity_table(model, data, candidates(), folder / "table")
    table.write(folder / "table")
    return model, data, folder, table


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600)


def verdict_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The CLI's own lines on stderr (the progress bar redraws with carriage returns)."""
    return [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("quantscope:")]


def curve(folder: Path, out: str, *flags) -> tuple[subprocess.CompletedProcess, pd.DataFrame]:
    result = run(folder / "model.onnx", folder / "data.npz", "--out", folder / out, "--table", folder / "table",
                 "--no-batch", *flags)
    return result, pd.read_csv(folder / out / "curve.csv")


# -- the ladder ------------------------------------------------------------------------------------------------


def test_the_ladder_keeps_the_mask_float_first_and_climbs_each_layer_in_order(attention):
    model, _, _, table = attention
    ladder = ladder_from_table(model, table, candidates())
    assert ladder.base.short_name() == "W4A8 static channel minmax"
    first, layers = ladder.moves[0], {layer.name for layer in model.summary.layers}
    assert first.override.keep_fp32 and first.node not in layers and first.bytes_added == 0  # an attention node
    assert first.harm_removed > 0.3  # the mask wipes out attention
    for layer in layers:
        steps = [move.override for move in ladder.moves if move.node == layer]
        widths = [32 if override.keep_fp32 else override.weights.bits for override in steps]
        assert widths == sorted(widths) and widths[-1] == 32  # 4 -> (8 ->) float, never back down
    assert ladder.recipe(len(ladder.moves)).overrides == {unit: LayerOverride(keep_fp32=True)
                                                         for unit in {move.node for move in ladder.moves}}


def test_where_the_table_measures_16_bit_activations_a_node_may_move_to_them_for_real(attention, tmp_path):
    """With the base's 16-bit candidate in the table (--activations 8,16), activation nodes get a move that adds no
    byte; the point built with it is the real artifact with that node's pairs at 16 bits."""
    model, data, _, _ = attention
    recipes = curve_candidates([8, 4], "channel", [8, 16], "minmax")
    assert [recipe.short_name() for recipe in recipes] == [
        "W8A8 static channel minmax", "W4A8 static channel minmax", "W4A16 static channel minmax"]
    table = sensitivity_table(model, data, recipes, tmp_path / "table")
    ladder = ladder_from_table(model, table, recipes)
    assert ladder.base.short_name() == "W4A8 static channel minmax"
    wide = [k for k, move in enumerate(ladder.moves) if move.override.activation_bits == 16]
    assert wide and all(ladder.moves[k].bytes_added == 0 for k in wide)
    assert "at 16-bit activations" in ladder.moves[wide[0]].describe()
    assert not any(move.override.activation_bits for move in ladder_from_table(model, table, recipes[:2]).moves)

    # a MatMul's move on the uniform base: a Gather's output keeps its stored table's scale (no 16-bit pair to see),
    # and the moves before it may leave the MatMul's tensors float
    ops = {n.name: n.op_type for n in model.proto.graph.node}
    move = next(ladder.moves[k] for k in wide if ops[ladder.moves[k].node] == "MatMul")
    node, recipe = move.node, replace(ladder.base, overrides={move.node: move.override})
    assert move.override == LayerOverride(activation_bits=16)
    artifact = quantize(model, recipe, tmp_path / "point.onnx", CalibrationSet(data))
    assert not artifact.simulated
    proto = onnx.load(artifact.path)
    zero_points = {t.name: t.data_type for t in proto.graph.initializer}
    written = next(n for n in model.proto.graph.node if n.name == node).output[0]
    widths = {zero_points[n.input[2]] for n in proto.graph.node
              if n.op_type == "QuantizeLinear" and n.input[0] == written}
    assert onnx.TensorProto.UINT16 in widths  # where it is made (an 8-bit copy may follow for 8-bit readers)
    assert {zero_points[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"} == \
        {onnx.TensorProto.UINT8, onnx.TensorProto.UINT16}


def test_a_curve_takes_one_activation_width_or_8_and_16():
    with pytest.raises(RecipeError, match="one activation width, or 8,16"):
        curve_candidates([8], "channel", [None, 8], "minmax")


def test_a_harm_inside_the_noise_orders_nothing(attention):
    """The same large harm puts a layer's move early when its paired interval excludes 0, and among the moves
    ordered by SQNR alone when it does not."""
    model, _, _, table = attention
    harm = [columns.DROP, columns.ONLY_THIS_DELTA_LOW, columns.ONLY_THIS_DELTA_HIGH, columns.RECOVERY,
            columns.RECOVERY_LOW, columns.RECOVERY_HIGH]

    layer = model.summary.layers[-1].name

    def first_move_of_layer(only_low: float, recovery_low: float) -> int:
        rows = table.rows.copy()
        weights = (rows[columns.LAYER] == layer) & (rows[columns.KIND] == "weights")
        rows.loc[weights, harm] = [0.9, -1.8, only_low, 0.9, recovery_low, 1.8]
        ladder = ladder_from_table(model, SensitivityTable(table.info, table.candidates, table.points, rows),
                                   candidates())
        return next(i for i, move in enumerate(ladder.moves) if move.node == layer)

    inside_noise, measurable = first_move_of_layer(0.1, -0.1), first_move_of_layer(-0.1, 0.1)
    assert measurable < inside_noise


# -- points measured for real ---------------------------------------------------------------------------------


def test_the_table_and_the_curve_calibrate_once(attention, tmp_path, monkeypatch):
    """One calibration key (minmax, at 8 and at 16 bits alike): one calibration pass for the table's three
    candidates and every point of the curve."""
    model, data, _, _ = attention
    passes = []

    def counted(*args, **kwargs):
        passes.append(args[3:])
        return activation_ranges(*args, **kwargs)

    monkeypatch.setattr(calibration_module, "activation_ranges", counted)
    recipes = curve_candidates([8, 4], "channel", [8, 16], "minmax")
    found = mixed_curve(model, data, recipes, MaxDrop(0.01), tmp_path / "out", tmp_path / "work", batch=None)
    assert len(found.rows) > 2 and len(passes) == 1


def test_a_minus_infinity_mask_sets_off_no_warning_the_table_already_reports(tmp_path):
    """onnxruntime's scale arithmetic warns on the infinite range of -inf scores: the table counts those values, so
    neither the table nor the curve's points print it, while any other RuntimeWarning still shows."""
    path = tmp_path / "masked.onnx"
    onnx.save(inf_masked_classifier_model(), path)
    model = load_model(path)
    ids, mask = padded_sequences(rows=96)
    data = Dataset({"input_ids": ids, "attention_mask": mask}, None, None, "masked")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = mixed_curve(model, data, [W8A8], MaxDrop(0.01), tmp_path / "out", tmp_path / "work", batch=None)
        with nonfinite_range_warnings_silenced():
            np.float32(1) / np.float32(0)  # numpy's own, from here: still said
    assert (found.table.rows[columns.NONFINITE] > 0).any()
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert [Path(w.filename).name for w in runtime] == [Path(__file__).name]


def test_every_point_is_a_real_artifact_whose_figures_reproduce_in_a_fresh_session(attention):
    model, data, folder, _ = attention
    result, table = curve(folder, "control", "--max-drop", "0.01")
    assert result.returncode == 0, result.stderr
    records = json.loads((folder / "control" / "curve.json").read_text())
    scored = plan_data(data, calibration_rows_asked([W8A8])).scored
    reference = ort.InferenceSession(str(folder / "model.onnx")).run(None, scored.inputs)[0]
    mask = choose_masking(scored, reference).mask(scored)  # padding counts when the output has positions
    assert [row[results.MIXED_BASE] for row in records] == [None] + ["W4A8 static channel minmax"] * (len(records) - 1)
    assert sum(row[results.MIXED_CHANGED] > 0 for row in records[1:]) >= 1
    for row in records:
        artifact = folder / "control" / row[results.ARTIFACT]
        assert artifact.parent == folder / "control" / "artifacts" and not row[results.SIMULATED]
        assert row[results.SIZE_BYTES] == artifact.stat().st_size
        output = ort.InferenceSession(str(artifact)).run(None, scored.inputs)[0]  # a fresh session, none of our code
        figures = fidelity(apply_mask(reference, mask), apply_mask(output, mask))
        assert row[results.METRIC] == pytest.approx(figures[row[results.METRIC_NAME]], abs=1e-6)
        recipe = Recipe.from_json(row[results.RECIPE])
        assert len(recipe.overrides) == (row[results.MIXED_CHANGED] or 0)
        assert row[results.SINGLE_EXAMPLE.p50] > 0 and row[results.LATENCY_PROTOCOL]  # timed, adaptively
        graph = onnx.load(artifact).graph
        writers = {name: node.op_type for node in graph.node for name in node.output}
        readers = {name: node.op_type for node in graph.node for name in node.input if node.op_type == "QuantizeLinear"}
        for node in graph.node:  # a node kept float reads and writes float tensors
            if recipe.overrides.get(node.name) == LayerOverride(keep_fp32=True):
                assert not any(writers.get(name) == "DequantizeLinear" for name in node.input), node.name
                assert not any(name in readers for name in node.output), node.name
    assert len(table) == len(records) and set(table[results.ARTIFACT]) == {r[results.ARTIFACT] for r in records}


def test_accuracy_control_stops_at_the_fewest_moves_that_meet_the_drop(attention, tmp_path):
    model, data, _, table = attention
    budget = MaxDrop(0.01)
    found = mixed_curve(model, data, candidates(), budget, tmp_path / "out", tmp_path / "work", table, batch=None)
    points = results.curve_rows(found.rows).set_index(results.MIXED_MOVES)
    assert drop(points.loc[0]) > 0.3  # the uniform W4A8 start breaks attention
    chosen = found.chosen
    assert chosen is not None and drop(chosen) <= 0.01 and not chosen[results.SIMULATED]
    k = chosen[results.MIXED_MOVES]
    assert k > 0 and not budget.meets(points.loc[k - 1])  # one move fewer was measured and falls short
    assert chosen[results.MIXED_CHANGED] == len(Recipe.from_json(chosen[results.RECIPE]).overrides)
    assert f"{int(chosen[results.MIXED_CHANGED])} of {found.ladder.units} nodes reverted" in found.verdict()
    assert list(results.mixed_precision_rows(found.rows)[results.MIXED_MOVES]) == sorted(points.index[1:])


def test_a_static_w8a8_start_needs_one_node_kept_float(attention, tmp_path):
    model, data, _, _ = attention
    found = mixed_curve(model, data, [W8A8], MaxDrop(0.01), tmp_path / "out", tmp_path / "work", batch=None)
    assert found.chosen[results.MIXED_CHANGED] == 1 and drop(found.chosen) <= 0.01
    assert Recipe.from_json(found.chosen[results.RECIPE]).mode is Mode.STATIC


# -- budgets ----------------------------------------------------------------------------------------------------


def test_a_drop_met_writes_chosen_json_and_exits_0(attention):
    _, _, folder, _ = attention
    result, table = curve(folder, "met", "--max-drop", "0.05")
    assert result.returncode == 0, result.stderr
    chosen = json.loads((folder / "met" / CHOSEN_FILE).read_text())
    assert chosen[results.NAME] in set(table[results.NAME]) and drop(chosen) <= 0.05
    assert f"chosen: {chosen[results.NAME]}" in result.stdout and not verdict_lines(result)


def test_no_point_within_the_budget_exits_1_with_one_line_naming_the_closest(attention):
    _, _, folder, _ = attention
    (folder / "unmet").mkdir()
    (folder / "unmet" / CHOSEN_FILE).write_text("{}")  # from an earlier run: it must not survive
    result, table = curve(folder, "unmet", "--max-latency-ms", "1e-6")
    assert result.returncode == 1
    (line,) = verdict_lines(result)
    fastest = table.loc[table[results.MIXED_BASE].notna(), results.SINGLE_EXAMPLE.p50].idxmin()
    assert "no point of the curve meets --max-latency-ms 1e-06" in line
    assert f"closest: {table.loc[fastest, results.NAME]}:" in line and "ms at batch 1" in line
    assert not (folder / "unmet" / CHOSEN_FILE).exists()


def test_a_drop_of_zero_is_met_only_by_a_point_that_loses_nothing(attention):
    _, _, folder, _ = attention
    result, table = curve(folder, "exact", "--max-drop", "0")
    quantized = table[table[results.MIXED_BASE].notna()]
    drops = [drop(row) for _, row in quantized.iterrows()]
    assert result.returncode == (0 if min(drops) <= 0 else 1), result.stderr
    if result.returncode == 1:
        (line,) = verdict_lines(result)
        assert f"closest: {quantized[results.NAME].iloc[int(np.argmin(drops))]}:" in line


def test_a_size_ratio_chooses_within_it_and_names_the_smallest_when_none_fits(attention):
    _, _, folder, _ = attention
    result, table = curve(folder, "size", "--max-size-ratio", "1")
    assert result.returncode == 0, result.stderr
    chosen = json.loads((folder / "size" / CHOSEN_FILE).read_text())
    assert chosen[results.SIZE_RATIO] <= 1 and chosen[results.SIZE_BYTES] <= table[results.SIZE_BYTES][0]
    fitting = table[(table[results.SIZE_RATIO] <= 1) & table[results.MIXED_BASE].notna()]
    assert len(fitting) >= 2
    dominating = fitting[(fitting[results.SIZE_BYTES] < chosen[results.SIZE_BYTES])
                         & (fitting[results.METRIC] >= chosen[results.METRIC])]
    assert dominating.empty  # nothing that fits is both smaller and at least as good
    result, table = curve(folder, "tiny", "--max-size-ratio", "0.01")
    assert result.returncode == 1
    (line,) = verdict_lines(result)
    smallest = table.loc[table[results.SIZE_BYTES].idxmin(), results.NAME]
    assert f"closest: {smallest}:" in line and "x fp32" in line


def _rows(*rows: dict) -> pd.DataFrame:
    base = {results.METRIC_NAME: "top1", results.SIMULATED: False, results.ERROR: None,
            results.RECIPE: W8A8.to_json()}
    return pd.DataFrame([{**base, **row} for row in rows])


@pytest.mark.parametrize("measurably_better, chosen", [(False, "small"), (True, "large")])
def test_a_point_is_only_better_when_the_paired_interval_says_so(measurably_better, chosen):
    rows = _rows(
        {results.NAME: "small", results.METRIC: 0.90, results.SIZE_BYTES: 100, results.SIZE_RATIO: 0.2},
        {results.NAME: "large", results.METRIC: 0.93, results.SIZE_BYTES: 200, results.SIZE_RATIO: 0.4},
        {results.NAME: "too large", results.METRIC: 0.99, results.SIZE_BYTES: 400, results.SIZE_RATIO: 0.8},
    )

    def difference(a, b) -> Interval:
        return Interval(0.01, 0.05) if measurably_better else Interval(-0.01, 0.05)

    assert MaxSizeRatio(0.5).choose(rows, difference)[results.NAME] == chosen


def test_a_drop_budget_takes_the_smallest_point_that_meets_it_and_never_one_above_it():
    rows = _rows(
        {results.NAME: "above", results.DELTA: -0.011, results.DELTA_CI_LOW: -0.04, results.DELTA_CI_HIGH: 0.01,
         results.METRIC: 0.8, results.SIZE_BYTES: 50, results.SIZE_RATIO: 0.1},
        {results.NAME: "within", results.DELTA: -0.009, results.DELTA_CI_LOW: -0.04, results.DELTA_CI_HIGH: 0.01,
         results.METRIC: 0.8, results.SIZE_BYTES: 60, results.SIZE_RATIO: 0.12},
        {results.NAME: "better", results.DELTA: 0.0, results.DELTA_CI_LOW: 0.0, results.DELTA_CI_HIGH: 0.0,
         results.METRIC: 0.81, results.SIZE_BYTES: 90, results.SIZE_RATIO: 0.18},
    )
    assert MaxDrop(0.01).choose(rows, lambda a, b: Interval(0, 0))[results.NAME] == "within"
    assert MaxDrop(0.005).closest(rows.iloc[:2])[results.NAME] == "within"  # the nearest to the budget
    assert MaxLatency(1.0).choose(rows, lambda a, b: Interval(0, 0)) is None  # untimed rows meet no latency


@pytest.mark.parametrize("arguments, message", [
    (["--max-drop", "-0.1"], "--max-drop must be a number of at least 0"),
    (["--max-size-ratio", "0.5", "--bits", "16"], "integer weight widths of 2-8 bits"),
    (["--max-drop", "0.01", "--activations", "12"], "activation bits must be none, 8 or 16"),
    (["--max-drop", "0.01", "--activations", "16", "--table", "TABLE"], "the sensitivity table has no candidate W8A16"),
    (["--max-drop", "0.01", "--table", "DATA"], "is not a sensitivity table quantscope wrote"),
    (["--max-drop", "0.01", "--table", "OTHER_MODEL"], "the sensitivity table is of another model"),
])
def test_bad_input_is_one_line_and_exit_code_2(attention, arguments, message, capsys, tmp_path):
    _, _, folder, table = attention
    other = SensitivityTable(table.info, table.candidates, table.points,
                             table.rows.assign(**{columns.LAYER: table.rows[columns.LAYER] + "_elsewhere"}))
    other.write(tmp_path)
    files = {"TABLE": folder / "table", "DATA": folder / "data.npz", "OTHER_MODEL": tmp_path}
    arguments = [str(files.get(argument, argument)) for argument in arguments]
    code = main(["mixed", str(folder / "model.onnx"), str(folder / "data.npz"), "--out", str(folder / "bad"),
                 *arguments])
    stderr = capsys.readouterr().err
    assert code == 2 and message in stderr
    assert len(stderr.strip().splitlines()) == 1 and not (folder / "bad").exists()


@pytest.mark.slow
def test_on_the_text_encoder_w8a8_static_keeps_a_few_nodes_float_to_stay_within_one_point(tmp_path):
    """About a minute here: the sensitivity table of the text encoder (111 points) and four measured points."""
    sample = SAMPLES["text_encoder"]
    result = run(sample.model_path, sample.data_path, "--out", tmp_path, "--bits", "8", "--max-drop", "0.01")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "curve.csv")
    uniform = table[table[results.MIXED_MOVES] == 0].iloc[0]
    assert uniform[results.NAME] == "W8A8 static channel minmax" and -uniform[results.DELTA] > 0.15
    chosen = json.loads((tmp_path / CHOSEN_FILE).read_text())
    assert not chosen[results.SIMULATED] and -chosen[results.DELTA] <= 0.01
    recipe = Recipe.from_json(chosen[results.RECIPE])
    assert recipe.mode is Mode.STATIC and recipe.weights.granularity is Granularity.CHANNEL
    assert 0 < chosen[results.MIXED_CHANGED] <= 5 and chosen[results.SIZE_RATIO] < 0.4


def test_the_curve_compares_weight_widths_of_one_recipe_only(attention):
    model, _, _, table = attention
    tensor_w8a8 = Recipe(WeightSpec(8, Granularity.TENSOR), ActivationSpec(8), Mode.STATIC)
    with pytest.raises(RecipeError, match="weight widths of one recipe"):
        ladder_from_table(model, table, [candidates()[1], tensor_w8a8])


def test_rows_of_a_sweep_are_no_curve_points():
    rows = _rows({results.NAME: "W8A8", results.METRIC: 0.9, results.SIZE_BYTES: 1})
    assert results.curve_rows(rows).empty and results.mixed_precision_rows(rows).empty
