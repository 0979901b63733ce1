"""The sensitivity table: which points it covers, what its cells say, how it is stored and run from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnxruntime.quantization import quantize_dynamic
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations, compute_signal_to_quantization_noice_ratio, create_activation_matching,
    modify_model_output_intermediate_tensors,
)

from engine.data import Dataset, load_dataset
from engine.measure import open_session, predict
from engine.model import load_model
from engine.realise import quantize
from engine.realise.calibration import CalibrationSet, DatasetReader
from engine.realise.native import OrtDynamic
from engine.recipe import ActivationSpec, Granularity, Mode, Recipe, WeightSpec
from engine.sensitivity import SensitivityTable, candidates, sensitivity_table
from engine.sensitivity import table as columns
from engine.sensitivity.graphs import compose
from engine.sensitivity.naive import naive_table
from engine.sensitivity.points import ACTIVATIONS, WEIGHTS, extract_points
from engine.sweep.plan import calibration_rows_asked, plan_data
from sample_models.catalog import SAMPLES
from tests.builders import inf_masked_classifier_model, padded_sequences, padded_text_model

W8A8 = Recipe(WeightSpec(8), ActivationSpec(8), Mode.STATIC)
W8A16 = Recipe(WeightSpec(8), ActivationSpec(16), Mode.STATIC)
W4 = Recipe(WeightSpec(4), mode=Mode.WEIGHT_ONLY)
W8_DYNAMIC = Recipe(WeightSpec(8), ActivationSpec(8), Mode.DYNAMIC)
ROWS = 160  # of each sample: half calibrate, half are scored


def _sample(name: str):
    sample = SAMPLES[name]
    model = load_model(sample.model_path)
    return model, load_dataset(sample.data_path, model.summary.inputs).take(ROWS)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    model, data = _sample("digits_cnn")
    workdir = tmp_path_factory.mktemp("cnn")
    return model, data, workdir, sensitivity_table(model, data, [W8A8, W4, W8_DYNAMIC], workdir)


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    model, data = _sample("text_encoder")
    workdir = tmp_path_factory.mktemp("transformer")
    return model, data, workdir, sensitivity_table(model, data, [W8A8], workdir)


def _quantized_tensors(artifact: Path) -> set[str]:
    """The run-time tensors onnxruntime put a QuantizeLinear on, named as in the fp32 graph."""
    proto = onnx.load(artifact)
    constants = {t.name for t in proto.graph.initializer}
    return {node.input[0].removesuffix("_QuantizeLinear_Input") for node in proto.graph.node
            if node.op_type == "QuantizeLinear" and node.input[0] not in constants}


def _rows(table: SensitivityTable, recipe: Recipe, kind: str) -> pd.DataFrame:
    rows = table.rows
    return rows[(rows[columns.CANDIDATE] == recipe.short_name()) & (rows[columns.KIND] == kind)]


def _scored(data) -> Dataset:
    return plan_data(data, calibration_rows_asked([W8A8])).scored


@pytest.mark.parametrize("fixture", ["cnn", "transformer"])
def test_every_weight_layer_and_every_tensor_onnxruntime_quantizes_has_a_measured_row(fixture, request):
    model, _, workdir, table = request.getfixturevalue(fixture)
    weights, activations = _rows(table, W8A8, WEIGHTS), _rows(table, W8A8, ACTIVATIONS)
    assert {layer.name for layer in model.summary.layers} <= set(weights[columns.LAYER])
    artifact = workdir / "artifacts" / f"{W8A8.slug()}.onnx"
    assert set(activations[columns.TENSOR]) == _quantized_tensors(artifact)
    measured = pd.concat([weights, activations])
    assert measured[columns.ERROR].isna().all()
    assert measured[[columns.ONLY_THIS, columns.ALL_BUT_THIS, columns.OUTPUT_SQNR_DB]].notna().all().all()
    assert (measured[columns.METHOD] == "real").all()


def test_the_transformer_table_has_the_attention_points(transformer):
    model, _, _, table = transformer
    activations = _rows(table, W8A8, ACTIVATIONS)
    constants = {t.name for t in model.proto.graph.initializer}
    nodes = {node.name: node for node in model.proto.graph.node}
    products = [layer for layer in activations[activations[columns.OP_TYPE] == "MatMul"][columns.LAYER]
                if not constants & set(nodes[layer].input)]
    assert len(products) == 4, "the activation-by-activation MatMuls of attention (scores, context) are points"
    assert {"Softmax", "Add", "LayerNormalization", "Gather"} <= set(activations[columns.OP_TYPE])


def test_the_masked_attention_scores_are_found_and_explained(transformer, tmp_path):
    """The text encoder adds the float minimum to the scores of padded keys: one W8A8 range then spans 3.4e38 and
    every real score rounds to zero. Alone each costs accuracy, left in float each gives much back (measured on the
    whole validation set, for the interval), and their range statistics say why."""
    model, _, _, table = transformer
    harm = table.by_harm(W8A8.short_name())
    adds = [node for node in model.proto.graph.node if node.name.endswith("/attention/Add")]
    assert len(adds) == 2 and set(harm.head(2)[columns.LAYER]) == {node.name for node in adds}
    sample = SAMPLES["text_encoder"]
    whole = sensitivity_table(model, load_dataset(sample.data_path, model.summary.inputs), [W8A8], tmp_path,
                              only={(ACTIVATIONS, node.name, node.output[0]) for node in adds})
    scores = whole.rows
    assert len(scores) == 2
    assert (scores[columns.MIN] == np.finfo(np.float32).min).all()
    assert (scores[columns.OUTLIER_RATIO] > 1e30).all() and (scores[columns.SCALE] > 1e30).all()
    assert (scores[columns.OUTPUT_SQNR_DB] < 1).all(), "over real query-key pairs, the scores are lost"
    assert (scores[columns.RECOVERY_LOW] > 0).all(), "keeping either in float measurably recovers accuracy"
    assert (scores[columns.ONLY_THIS_DELTA_HIGH] < 0).all(), "quantizing either alone measurably costs accuracy"


def test_scores_masked_with_minus_infinity_are_the_point_that_breaks(tmp_path):
    """A Where writing -inf at padded keys: the calibrated range is infinite, the scale too, and the scores come out
    NaN. The table still measures every cell, and that point says it all: the worst alone, SQNR -inf, the infinite
    values counted."""
    path = tmp_path / "masked.onnx"
    onnx.save(inf_masked_classifier_model(), path)
    model = load_model(path)
    ids, mask = padded_sequences(rows=96)
    data = Dataset({"input_ids": ids, "attention_mask": mask}, None, None, "masked")
    table = sensitivity_table(model, data, [W8A8], tmp_path)
    assert table.rows[columns.ERROR].isna().all()
    worst = table.by_harm(W8A8.short_name()).iloc[0]
    assert (worst[columns.LAYER], worst[columns.KIND]) == ("mask_scores", ACTIVATIONS)
    assert worst[columns.OUTPUT_SQNR_DB] == -np.inf and worst[columns.MIN] == -np.inf
    assert worst[columns.NONFINITE] > 0 and worst[columns.RECOVERY_LOW] > 0


def test_a_layer_the_realiser_leaves_in_float_gets_a_simulated_row_saying_so(cnn):
    model, _, _, table = cnn
    rows = _rows(table, W4, WEIGHTS)
    convs = rows[rows[columns.OP_TYPE] == "Conv"]
    assert set(convs[columns.LAYER]) == {layer.name for layer in model.summary.layers if layer.op_type == "Conv"}
    assert (convs[columns.METHOD] == "simulated").all() and convs[columns.NOTE].str.contains("left in float").all()
    assert (convs[columns.ONLY_THIS_METHOD] == "simulated").all()
    assert (convs[columns.ALL_BUT_THIS_METHOD] == "real").all()
    assert (convs[columns.ALL_BUT_THIS] == convs[columns.ALL_QUANTIZED]).all(), "the artifact leaves them in float"
    assert (rows[rows[columns.OP_TYPE] == "Gemm"][columns.METHOD] == "real").all()
    assert (convs[columns.WEIGHT_SQNR_DB] < 30).all(), "4-bit weights lose more than 8-bit ones"


def test_cells_equal_the_naive_computation(cnn, tmp_path):
    """A weight point, a folded-Relu activation point and the logits' point under static W8A8, and a rewritten node
    under dynamic W8, each computed from scratch (calibrate, quantize, build, new session, whole set)."""
    model, data, _, table = cnn
    chosen = {
        (WEIGHTS, "/features/features.2/Conv", "features.2.weight"),
        (ACTIVATIONS, "/features/features.3/Relu", "/features/features.3/Relu_output_0"),
        (ACTIVATIONS, "/head/head.3/Gemm", "logits"),
        (WEIGHTS, "/head/head.1/Gemm", "head.1.weight"),
    }
    naive = naive_table(model, data, [W8A8, W8_DYNAMIC], tmp_path, only=chosen).rows
    assert len(naive) == 6
    key = [columns.CANDIDATE, columns.KIND, columns.LAYER, columns.TENSOR]
    fast = table.rows.merge(naive[key], on=key)
    figures = [columns.ONLY_THIS, columns.ONLY_THIS_DELTA, columns.ALL_BUT_THIS, columns.RECOVERY,
               columns.OUTPUT_SQNR_DB, columns.WEIGHT_SQNR_DB, columns.MIN, columns.MAX, columns.OUTLIER_RATIO]
    pd.testing.assert_frame_equal(fast.sort_values(key)[key + figures].reset_index(drop=True),
                                  naive.sort_values(key)[key + figures].reset_index(drop=True))


def test_16_bit_activation_cells_are_measured_and_equal_the_naive_computation(cnn, tmp_path):
    """quantize_static converts the model to opset 21 for its uint16 pairs; a cell's model is the opset-17 fp32 graph
    with those pairs in it, which must still build (no InvalidGraph) and give the naive computation's numbers. At 16
    bits a tensor's rounding noise is 256 times smaller: the Relu's SQNR rises by over 40 dB (the logits' hardly:
    scored rows beyond the calibrated range are clipped at any width)."""
    model, data, _, table = cnn
    chosen = {
        (ACTIVATIONS, "/features/features.3/Relu", "/features/features.3/Relu_output_0"),
        (ACTIVATIONS, "/head/head.3/Gemm", "logits"),
        (WEIGHTS, "/head/head.1/Gemm", "head.1.weight"),
    }
    fast = sensitivity_table(model, data, [W8A16], tmp_path / "fast", only=chosen).rows
    naive = naive_table(model, data, [W8A16], tmp_path / "naive", only=chosen).rows
    assert len(fast) == 3 and fast[columns.ERROR].isna().all() and fast[columns.ONLY_THIS].notna().all()
    assert set(fast[fast[columns.KIND] == ACTIVATIONS][columns.BITS]) == {16}
    key = [columns.KIND, columns.LAYER, columns.TENSOR]
    figures = [columns.ONLY_THIS, columns.ALL_BUT_THIS, columns.RECOVERY, columns.OUTPUT_SQNR_DB,
               columns.WEIGHT_SQNR_DB]
    pd.testing.assert_frame_equal(fast.sort_values(key)[key + figures].reset_index(drop=True),
                                  naive.sort_values(key)[key + figures].reset_index(drop=True))
    at_8 = _rows(table, W8A8, ACTIVATIONS).set_index(columns.TENSOR)[columns.OUTPUT_SQNR_DB]
    at_16 = fast[fast[columns.KIND] == ACTIVATIONS].set_index(columns.TENSOR)[columns.OUTPUT_SQNR_DB]
    relu = "/features/features.3/Relu_output_0"
    assert at_16[relu] > at_8[relu] + 40 and at_16["logits"] >= at_8["logits"]


@pytest.mark.parametrize("recipe", [W8A8, W8A16, W8_DYNAMIC, W4], ids=lambda r: r.short_name())
def test_the_points_of_an_artifact_put_back_together_are_that_artifact(cnn, recipe, tmp_path):
    model, data, _, _ = cnn
    artifact = quantize(model, recipe, tmp_path / "artifact.onnx", CalibrationSet(data))
    points = extract_points(model, onnx.load(artifact.path), (recipe.weights.bits, recipe.activations.bits),
                            artifact.simulated)
    assert points.unmapped == []
    rebuilt = predict(open_session(compose(model.proto, points.points).serialized()), data)
    np.testing.assert_array_equal(rebuilt, predict(open_session(artifact.path), data))


@pytest.mark.parametrize("layer", ["embed", "proj"])
def test_one_dynamically_quantized_node_is_what_onnxruntime_builds_when_told_to_skip_the_others(tmp_path, layer):
    """A Gather and a MatMul. (A Gemm would not do: quantize_dynamic rewrites every Gemm into a MatMul and an Add,
    under new names, before it looks at nodes_to_exclude.)"""
    path = tmp_path / "padded.onnx"
    onnx.save(padded_text_model(), path)
    model = load_model(path)
    ids, mask = padded_sequences()
    data = Dataset({"input_ids": ids, "attention_mask": mask}, None, None, "padded")
    artifact = quantize(model, W8_DYNAMIC, tmp_path / "all.onnx")
    point = next(p for p in extract_points(model, onnx.load(artifact.path), (8, 8), False).points if p.layer == layer)
    others = [node.name for node in model.proto.graph.node if node.name != layer]
    quantize_dynamic(path, tmp_path / "one.onnx", op_types_to_quantize=OrtDynamic.OP_TYPES, per_channel=True,
                     nodes_to_exclude=others, extra_options={"WeightSymmetric": True})
    ours = predict(open_session(compose(model.proto, [point]).serialized()), data)
    np.testing.assert_array_equal(ours, predict(open_session(tmp_path / "one.onnx"), data))
    assert not np.array_equal(ours, predict(open_session(path), data))


def test_a_relu_folded_into_its_qdq_pair_has_no_false_low_sqnr(cnn):
    """onnxruntime removes a Relu before a QDQ pair (the pair clips negatives itself), so comparing the tensor the
    pair reads in its artifact (the Conv's output, negatives included) with its output, as qdq_loss_debug's qdq_err
    does, reports a loss the model does not have. The point is the Relu's output, compared with itself quantized."""
    model, data, workdir, table = cnn
    tensor = "/features/features.1/Relu_output_0"
    artifact = workdir / "artifacts" / f"{W8A8.slug()}.onnx"
    assert "Relu" not in {node.op_type for node in onnx.load(artifact).graph.node}
    row = table.rows[(table.rows[columns.TENSOR] == tensor) & (table.rows[columns.CANDIDATE] == W8A8.short_name())]
    assert row[columns.OP_TYPE].item() == "Relu"

    scored = _scored(data)
    relu = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(model.proto)).extract_model(["image"], [tensor])
    values = predict(open_session(relu.SerializeToString()), scored).astype(np.float32)
    grid = table.grid(ACTIVATIONS, row[columns.LAYER].item(), tensor, W8A8.short_name())
    scale, zero_point = np.float32(grid.scale[0]), grid.zero_point[0]
    quantized = np.clip(np.rint(values / scale) + zero_point, grid.qmin, grid.qmax)
    dequantized = ((quantized - zero_point) * scale).astype(np.float64)
    expected = 10 * np.log10(np.sum(values.astype(np.float64) ** 2) / np.sum((values - dequantized) ** 2))
    assert row[columns.OUTPUT_SQNR_DB].item() == pytest.approx(expected, abs=1e-3)

    augmented = workdir / "augmented.onnx"
    modify_model_output_intermediate_tensors(artifact, augmented)
    activations = collect_activations(str(augmented), DatasetReader(scored, 32))
    match = create_activation_matching(activations)[tensor]
    false_sqnr = compute_signal_to_quantization_noice_ratio(match["pre_qdq"], match["post_qdq"])
    assert row[columns.OUTPUT_SQNR_DB].item() > false_sqnr + 10


def test_padding_widens_the_range_but_is_no_signal(tmp_path):
    """The padding token's embedding is 20 times the others. The calibrator sees it, so min and max include it; the
    signal's percentile, histogram and SQNR count real tokens only, and the outlier ratio shows the stretch."""
    path = tmp_path / "padded.onnx"
    onnx.save(padded_text_model(), path)
    model = load_model(path)
    ids, mask = padded_sequences(rows=96)
    data = Dataset({"input_ids": ids, "attention_mask": mask}, None, None, "padded")
    table = sensitivity_table(model, data, [W8A8], tmp_path)
    assert "attention_mask" in table.info["fidelity_mask"]
    embedded = table.rows[table.rows[columns.TENSOR] == "embedded"].iloc[0]
    embeddings = onnx.numpy_helper.to_array(next(t for t in model.proto.graph.initializer if t.name == "E"))
    scored_ids, scored_mask = ids[48:], mask[48:].astype(bool)
    assert embedded[columns.MAX] == embeddings[scored_ids].max() == embeddings[0].max()
    real = np.abs(embeddings[scored_ids[scored_mask]])
    assert embedded[columns.ABS_P999] <= real.max() < embeddings[0].max() / 5
    assert embedded[columns.OUTLIER_RATIO] > 5


def test_the_table_round_trips_through_its_json(cnn, tmp_path):
    _, _, _, table = cnn
    json_path, csv_path = table.write(tmp_path)
    again = SensitivityTable.read(tmp_path)
    pd.testing.assert_frame_equal(again.rows.drop(columns=[columns.GRID]), table.rows.drop(columns=[columns.GRID]),
                                  check_dtype=False)
    assert again.candidates == json.loads(json_path.read_text())["candidates"]
    relu = "/features/features.1/Relu_output_0"
    histogram = again.histogram(ACTIVATIONS, "/features/features.1/Relu", relu)
    assert sum(histogram.counts) + histogram.below + histogram.above == histogram.sampled > 0
    grid = again.grid(ACTIVATIONS, "/features/features.1/Relu", relu, W8A8.short_name())
    assert grid.levels()[0] == 0 and len(grid.levels()) == 256  # uint8, zero point 0 after a Relu
    assert len(pd.read_csv(csv_path)) == len(table.rows)


def test_candidates_come_from_the_flags():
    names = [r.short_name() for r in candidates([8, 4], [Granularity.CHANNEL], [None, 8, "dynamic"])]
    assert names == ["W8 weight-only channel", "W8A8 static channel minmax", "W4 weight-only channel",
                     "W4A8 static channel minmax", "W8A8 dynamic channel"]


CLI = [sys.executable, "-m", "engine.cli", "sensitivity"]


def test_the_cli_writes_both_files_with_the_contract_columns(tmp_path):
    sample = SAMPLES["digits_cnn"]
    result = subprocess.run([*CLI, sample.model_path, sample.data_path, "--out", tmp_path / "out", "--bits", "8",
                             "--activations", "8,none", "--calibration-data", sample.data_path, "--threads", "1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    csv = pd.read_csv(tmp_path / "out" / columns.CSV_FILE)
    assert list(csv.columns[:len(columns.CONTRACT_COLUMNS)]) == list(columns.CONTRACT_COLUMNS)
    assert set(csv[columns.CANDIDATE]) == {"W8A8 static channel minmax", "W8 weight-only channel"}
    written = json.loads((tmp_path / "out" / columns.JSON_FILE).read_text())
    rows = written["rows"]
    assert len(rows) == len(csv) and set(columns.CONTRACT_COLUMNS) <= set(rows[0])
    assert written["info"]["rows_scored"] == 540 and written["info"]["calibration_source"] == "digits_cnn.npz"
    assert "table:" in result.stdout and "cell" in result.stderr  # the progress bar is on stderr


@pytest.mark.parametrize("arguments, message", [
    (["--bits", "16"], "integer weight widths of 2-8 bits"),
    (["--activations", "12"], "activation bits must be none, 8 or 16"),
])
def test_bad_flags_are_one_line_and_exit_code_2(tmp_path, arguments, message):
    sample = SAMPLES["digits_cnn"]
    result = subprocess.run([*CLI, sample.model_path, sample.data_path, "--out", tmp_path, *arguments],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
