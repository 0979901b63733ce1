"""Realisation: each recipe goes to the right onnxruntime tool, or to simulation, and the artifact runs."""

import hashlib

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import QuantType

from engine.data import Dataset, load_dataset
from engine.errors import RecipeError
from engine.measure import open_session, predict
from engine.model import load_model
from engine.realise import choose_realiser, native, quantize
from engine.realise.calibration import CalibrationSet, mse_range
from engine.realise.qdq_overrides import override_failures, width_overrides
from engine.recipe import ActivationSpec, Calibration, Granularity, LayerOverride, Mode, Recipe, WeightSpec
from engine.sweep import default_grid, measure_recipe, reference_for
from sample_models.catalog import SAMPLES
from engine.masking import apply_mask
from engine.metrics import fidelity
from tests.builders import gemm_model, masked_attention_model, padded_sequences

A8 = ActivationSpec(8)


@pytest.mark.parametrize(
    "recipe, realiser, simulated",
    [
        (Recipe.fp32(), "original model", False),
        (Recipe.fp16(), "onnxruntime float16 conversion", False),
        (Recipe(WeightSpec(8, Granularity.TENSOR), A8, Mode.STATIC), "onnxruntime quantize_static (QDQ)", False),
        (Recipe(WeightSpec(4), ActivationSpec(16), Mode.STATIC), "onnxruntime quantize_static (QDQ)", False),
        (Recipe(WeightSpec(8), A8, Mode.DYNAMIC), "onnxruntime quantize_dynamic", False),
        (Recipe(WeightSpec(4, Granularity.GROUP, 32)), "onnxruntime MatMulNBitsQuantizer", False),
        (Recipe(WeightSpec(4, Granularity.CHANNEL)), "onnxruntime MatMulNBitsQuantizer", False),
        # onnxruntime's quantizer writes no per-channel 8-bit weights: it would return the fp32 model
        (Recipe(WeightSpec(8, Granularity.CHANNEL)), "simulation (quantize-dequantize in fp32)", True),
        # onnxruntime makes per-channel weights symmetric whatever it is asked; u8 weights with s8 activations it refuses
        (Recipe(WeightSpec(8, Granularity.CHANNEL, symmetric=False), A8, Mode.STATIC),
         "simulation (quantize-dequantize in fp32)", True),
        (Recipe(WeightSpec(8, Granularity.TENSOR, symmetric=False), ActivationSpec(8, symmetric=True), Mode.STATIC),
         "simulation (quantize-dequantize in fp32)", True),
        (Recipe(WeightSpec(2, Granularity.GROUP, 16)), "onnxruntime MatMulNBitsQuantizer", False),
        (Recipe(WeightSpec(3, Granularity.CHANNEL)), "simulation (quantize-dequantize in fp32)", True),
        (Recipe(WeightSpec(8, Granularity.TENSOR)), "simulation (quantize-dequantize in fp32)", True),
        (Recipe(WeightSpec(4, Granularity.GROUP, 32), A8, Mode.STATIC), "simulation (quantize-dequantize in fp32)", True),
        (Recipe(WeightSpec(6), A8, Mode.DYNAMIC), "simulation (quantize-dequantize in fp32)", True),
    ],
    ids=lambda value: value.short_name() if isinstance(value, Recipe) else str(value),
)
def test_each_recipe_is_realised_by_the_expected_tool_and_runs(digits, tmp_path, recipe, realiser, simulated):
    model, data = digits
    artifact = quantize(model, recipe, tmp_path / "a.onnx", calibration=data)
    assert (artifact.realiser, artifact.simulated) == (realiser, simulated)
    assert artifact.size_is_estimate == simulated
    if not simulated:
        assert artifact.size_bytes == artifact.path.stat().st_size
    onnx.checker.check_model(onnx.load(artifact.path))
    (tmp_path / "ref.onnx").write_bytes(model.serialized())
    reference = predict(open_session(tmp_path / "ref.onnx"), data)
    output = predict(open_session(artifact.path), data)
    assert output.shape == reference.shape
    agreement = (output.argmax(1) == reference.argmax(1)).mean()
    assert agreement > (0.5 if recipe.weights.bits <= 3 else 0.9), agreement


def test_native_artifacts_really_hold_integer_weights(digits, tmp_path):
    model, data = digits
    static = quantize(model, Recipe(WeightSpec(8), A8, Mode.STATIC), tmp_path / "s.onnx", calibration=data)
    ops = {node.op_type for node in onnx.load(static.path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int4 = quantize(model, Recipe(WeightSpec(4, Granularity.GROUP, 32)), tmp_path / "w4.onnx")
    assert "MatMulNBits" in {node.op_type for node in onnx.load(int4.path).graph.node}
    # MatMulNBits only handles MatMul: the Conv layers are reported as left in fp32
    assert int4.float_layers == ("/features/features.0/Conv", "/features/features.2/Conv")
    assert int4.size_bytes < model.summary.bytes


def test_same_recipe_and_data_give_the_same_bytes(digits, tmp_path):
    model, data = digits
    for recipe in default_grid():
        a = quantize(model, recipe, tmp_path / "a.onnx", calibration=data).path.read_bytes()
        b = quantize(model, recipe, tmp_path / "b.onnx", calibration=data).path.read_bytes()
        assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest(), recipe.short_name()


def test_keep_fp32_override_is_honoured_by_onnxruntime_and_keeps_the_relu_before_it(digits, tmp_path):
    """onnxruntime folds a Relu into the Q/DQ pair of its output; the head reads that output float, so the Relu
    must stay a node rather than go with the pair."""
    model, data = digits
    head = "/head/head.3/Gemm"
    recipe = Recipe(WeightSpec(8), A8, Mode.STATIC, overrides={head: LayerOverride(keep_fp32=True)})
    assert choose_realiser(model, recipe).simulated is False
    calibration = CalibrationSet(data)
    artifact = quantize(model, recipe, tmp_path / "a.onnx", calibration=calibration)
    assert artifact.float_layers == (head,) and not artifact.simulated
    assert "/head/head.2/Relu" in {node.name for node in onnx.load(artifact.path).graph.node}
    uniform = quantize(model, Recipe(WeightSpec(8), A8, Mode.STATIC), tmp_path / "u.onnx", calibration=calibration)
    (tmp_path / "ref.onnx").write_bytes(model.serialized())
    reference = predict(open_session(tmp_path / "ref.onnx"), data)
    errors = [np.mean((predict(open_session(a.path), data) - reference) ** 2) for a in (artifact, uniform)]
    assert errors[0] < errors[1]


def test_static_needs_calibration_and_overrides_need_real_nodes(digits, tmp_path):
    model, _ = digits
    with pytest.raises(RecipeError, match="needs calibration data"):
        quantize(model, Recipe(WeightSpec(8), A8, Mode.STATIC), tmp_path / "a.onnx")
    with pytest.raises(RecipeError, match="^overrides name nodes the model does not have: 'nope'$"):
        quantize(model, Recipe(overrides={"nope": LayerOverride(keep_fp32=True)}), tmp_path / "a.onnx")
    many = {f"missing{i}": LayerOverride(keep_fp32=True) for i in range(8)}
    with pytest.raises(RecipeError, match="'missing4' and 3 more$"):
        quantize(model, Recipe(overrides=many), tmp_path / "a.onnx")


@pytest.mark.parametrize("calibration", list(Calibration))
def test_every_calibration_method_builds_a_working_int8_model(digits, tmp_path, calibration):
    model, data = digits
    recipe = Recipe(WeightSpec(8), ActivationSpec(8, calibration, 64), Mode.STATIC)
    artifact = quantize(model, recipe, tmp_path / "a.onnx", calibration=data)
    assert not artifact.simulated
    accuracy = (predict(open_session(artifact.path), data).argmax(1) == data.labels).mean()
    assert accuracy > 0.95


def test_mse_range_clips_outliers_but_keeps_the_bulk():
    values = np.concatenate([np.random.default_rng(0).normal(size=100_000), [60.0]])
    counts, edges = np.histogram(values, bins=2048, range=(-60, 60))
    low, high = mse_range(counts, edges, bits=4)
    assert -6 < low < -0.5 and 1 < high < 20  # at 4 bits the single outlier at 60 is not worth the resolution
    assert mse_range(counts, edges, bits=8)[1] > high  # more levels afford a wider range
    assert mse_range(np.zeros(4), np.linspace(-1, 1, 5), 8) == (0.0, 0.0)


def test_transformer_weight_only_and_dynamic_quantize_every_matmul(tmp_path):
    model = load_model(SAMPLES["tiny_transformer"].model_path)
    for recipe in (Recipe(WeightSpec(4, Granularity.GROUP, 32)), Recipe(WeightSpec(8), A8, Mode.DYNAMIC)):
        artifact = quantize(model, recipe, tmp_path / "a.onnx")
        assert artifact.float_layers == ()
        assert artifact.size_bytes < 0.6 * model.summary.bytes


def test_transformer_per_channel_int4_weight_only_is_a_valid_model_that_quantizes_every_matmul(tmp_path):
    """The int4 DequantizeLinear needs opset 21: the model is converted (ReduceMean's axes become an input)."""
    model = load_model(SAMPLES["tiny_transformer"].model_path)
    artifact = quantize(model, Recipe(WeightSpec(4, Granularity.CHANNEL)), tmp_path / "a.onnx")
    assert not artifact.simulated and artifact.float_layers == ()
    data = load_dataset(SAMPLES["tiny_transformer"].data_path, model.summary.inputs)
    assert predict(open_session(artifact.path), data).shape[0] == len(data)


def _quantized_weights(path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Quantized initializer -> (its integer type, the shape of its scale)."""
    proto = onnx.load(path)
    initializers = {t.name: t for t in proto.graph.initializer}
    quantized = {}
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers:
            tensor = initializers[node.input[0]]
            quantized[node.input[0].removesuffix("_quantized")] = (
                onnx.TensorProto.DataType.Name(tensor.data_type), tuple(initializers[node.input[1]].dims))
    return quantized


def test_a_layer_override_in_a_per_channel_recipe_stays_per_channel(digits, tmp_path):
    model, data = digits
    head = model.summary.layers[-1]
    recipe = Recipe(WeightSpec(8, Granularity.CHANNEL), A8, Mode.STATIC,
                    overrides={head.name: LayerOverride(weights=WeightSpec(4, Granularity.CHANNEL))})
    weights = _quantized_weights(quantize(model, recipe, tmp_path / "a.onnx", calibration=data).path)
    channels = head.weight_shape[head.channel_axis]
    assert weights[head.weight] == ("INT4", (channels,))
    assert all(weights[layer.weight][0] == "INT8" for layer in model.summary.layers[:-1])


def test_static_int4_quantizes_layer_weights_only_and_leaves_normalisation_parameters_float(tmp_path):
    model = load_model(SAMPLES["tiny_transformer"].model_path)
    data = load_dataset(SAMPLES["tiny_transformer"].data_path, model.summary.inputs)
    recipe = Recipe(WeightSpec(4, Granularity.CHANNEL), A8, Mode.STATIC)
    weights = _quantized_weights(quantize(model, recipe, tmp_path / "a.onnx", calibration=data).path)
    layer_weights = {layer.weight for layer in model.summary.layers}
    assert {name for name, (kind, _) in weights.items() if kind == "INT4"} == layer_weights
    norm_parameters = {name for node in model.copy().graph.node if node.op_type == "LayerNormalization"
                       for name in node.input[1:]}
    assert norm_parameters and not norm_parameters & weights.keys()


def measured_with_fixed_batch(tmp_path, batch: int, rows: int, recipe: Recipe) -> dict:
    """The row of `recipe` on the test Gemm model with its batch fixed at `batch`, over `rows` random examples."""
    proto = gemm_model()
    for value_info in (*proto.graph.input, *proto.graph.output):
        value_info.type.tensor_type.shape.dim[0].dim_value = batch
    model = load_model(proto.SerializeToString())
    x = np.random.default_rng(3).normal(size=(rows, 6)).astype(np.float32)
    data = Dataset(inputs={"x": x}, labels=None, slices=None, source="fixed")
    return measure_recipe(model, data, recipe, tmp_path, reference_for(model, data, tmp_path))


def test_a_fixed_batch_model_is_evaluated_row_by_row_and_timed_at_its_batch(tmp_path):
    row = measured_with_fixed_batch(tmp_path, 1, 10, Recipe(WeightSpec(8), A8, Mode.STATIC))
    assert row["metric_name"] == "top1_agreement" and row["metric"] >= 0.9 and row["cosine"] > 0.99
    assert row["latency_b1_p50_ms"] > 0 and row["latency_batch"] is None and "latency_bN_p50_ms" not in row


def test_a_model_with_a_fixed_batch_of_four_is_timed_as_batch_four_not_as_one_example(tmp_path):
    row = measured_with_fixed_batch(tmp_path, 4, 8, Recipe.fp32())
    assert row["latency_batch"] == 4 and row["latency_bN_p50_ms"] > 0 and "latency_b1_p50_ms" not in row


# -- node overrides: keep any node float, or give it its own activation width ---------------------------------

BLOCK = "/blocks/blocks.0/attention/"
SCORES = BLOCK + "MatMul"  # a MatMul of two activations: query x key, each through Reshape and Transpose
# what the scores MatMul reads, back through the Reshape and Transpose that copy it, to where each was computed
SCORES_INPUTS = [BLOCK + name for name in ("Transpose_output_0", "Reshape_output_0", "query/Add_output_0",
                                           "Transpose_2_output_0", "Reshape_1_output_0", "key/Add_output_0")]
HEAD = "/head/Gemm"  # the last layer: it writes the graph output


@pytest.fixture(scope="module")
def transformer():
    """(model, data, calibration) of the tiny transformer sample: its ranges are computed once for the module."""
    model = load_model(SAMPLES["tiny_transformer"].model_path)
    data = load_dataset(SAMPLES["tiny_transformer"].data_path, model.summary.inputs)
    return model, data, CalibrationSet(data)


def static(overrides=None, bits=8) -> Recipe:
    return Recipe(WeightSpec(8), ActivationSpec(bits), Mode.STATIC, overrides=overrides or {})


def _graph(path):
    proto = onnx.load(path)
    writers = {name: node for node in proto.graph.node for name in node.output}
    readers = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return proto, writers, readers, {t.name: t for t in proto.graph.initializer}


def _width(quantize_node, initializers) -> str:
    return onnx.TensorProto.DataType.Name(initializers[quantize_node.input[2]].data_type)


def _width_read(tensor, writers, initializers) -> str:
    """The integer type of the QuantizeLinear whose DequantizeLinear writes `tensor`."""
    dequantize = writers[tensor]
    assert dequantize.op_type == "DequantizeLinear", tensor
    return _width(writers[dequantize.input[0]], initializers)


@pytest.mark.parametrize("name", [SCORES, BLOCK + "Softmax", "/blocks/blocks.0/Add", HEAD])
def test_keep_fp32_on_any_node_leaves_it_and_every_tensor_it_touches_float(transformer, tmp_path, name):
    model, data, calibration = transformer
    artifact = quantize(model, static({name: LayerOverride(keep_fp32=True)}), tmp_path / "a.onnx", calibration)
    assert artifact.realiser == "onnxruntime quantize_static (QDQ)" and not artifact.simulated
    proto, writers, readers, initializers = _graph(artifact.path)
    original = next(node for node in model.proto.graph.node if node.name == name)
    node = next(node for node in proto.graph.node if node.name == name)
    assert (node.op_type, list(node.input), list(node.output)) == (original.op_type, list(original.input),
                                                                   list(original.output))
    touched = [*node.input, *node.output] + (SCORES_INPUTS if name == SCORES else [])
    assert not [t for t in touched if t in writers and writers[t].op_type == "DequantizeLinear"]
    assert not [t for t in touched for reader in readers.get(t, []) if reader.op_type == "QuantizeLinear"]
    assert sum(n.op_type == "QuantizeLinear" for n in proto.graph.node) > 50  # the rest is still quantized
    assert (HEAD in artifact.float_layers) == (name == HEAD)
    assert np.isfinite(predict(open_session(artifact.path), data)).all()


@pytest.mark.parametrize("recipe_bits, node_bits, node_type, recipe_type",
                         [(8, 16, "UINT16", "UINT8"), (16, 8, "UINT8", "UINT16")])
def test_a_node_with_its_own_activation_width_reads_and_writes_at_it_and_its_neighbours_do_not(
        transformer, tmp_path, recipe_bits, node_bits, node_type, recipe_type):
    model, data, calibration = transformer
    query = BLOCK + "query/MatMul"  # shares its input with the key and value MatMuls
    recipe = static({SCORES: LayerOverride(activation_bits=node_bits), query: LayerOverride(activation_bits=node_bits)},
                    recipe_bits)
    artifact = quantize(model, recipe, tmp_path / "a.onnx", calibration)
    assert not artifact.simulated
    proto, writers, readers, initializers = _graph(artifact.path)
    nodes = {node.name: node for node in proto.graph.node}
    # the scores read both operands at the node's width, rounded there and nowhere before (Reshape, Transpose)
    assert {_width_read(t, writers, initializers) for t in nodes[SCORES].input} == {node_type}
    for tensor in SCORES_INPUTS:
        assert {_width(q, initializers) for q in readers[tensor] if q.op_type == "QuantizeLinear"} == {node_type}
    assert {_width(q, initializers) for q in readers[nodes[SCORES].output[0]]} == {node_type}
    # the normalised input of query, key and value is made at the node's width; key and value get it converted
    assert _width_read(nodes[query].input[0], writers, initializers) == node_type
    for neighbour in ("key/MatMul", "value/MatMul"):
        dequantize = writers[nodes[BLOCK + neighbour].input[0]]
        conversion = writers[dequantize.input[0]]
        assert _width(conversion, initializers) == recipe_type
        assert _width_read(conversion.input[0], writers, initializers) == node_type
    assert _width_read(nodes["/blocks/blocks.1/attention/MatMul"].input[0], writers, initializers) == recipe_type
    assert np.isfinite(predict(open_session(artifact.path), data)).all()


def test_keeping_the_worst_node_float_or_at_16_bits_brings_the_model_closer_to_fp32(transformer, tmp_path):
    """The head is the node whose rounding costs the tiny transformer most under W8A8 static."""
    model, data, calibration = transformer
    reference = predict(open_session(SAMPLES["tiny_transformer"].model_path), data)

    def error(overrides) -> float:
        artifact = quantize(model, static(overrides), tmp_path / "a.onnx", calibration)
        return float(np.mean((predict(open_session(artifact.path), data) - reference) ** 2))

    uniform, wide, kept = error({}), error({HEAD: LayerOverride(activation_bits=16)}), error(
        {HEAD: LayerOverride(keep_fp32=True)})
    assert kept < wide < uniform


def test_keeping_the_mask_add_float_rescues_attention_that_w8a8_static_breaks(tmp_path):
    """The Hugging Face mask (float32 min where padded) added to the scores: no 8 or 16-bit grid spans it."""
    model = load_model(masked_attention_model().SerializeToString())
    ids, mask = padded_sequences(rows=128)
    data = Dataset(inputs={"input_ids": ids, "attention_mask": mask}, labels=None, slices=None, source="padded")
    calibration = CalibrationSet(data)
    (tmp_path / "ref.onnx").write_bytes(model.serialized())
    reference = apply_mask(predict(open_session(tmp_path / "ref.onnx"), data), mask.astype(bool))

    def cosine(overrides) -> float:
        artifact = quantize(model, static(overrides), tmp_path / "a.onnx", calibration)
        assert not artifact.simulated
        output = apply_mask(predict(open_session(artifact.path), data), mask.astype(bool))
        return fidelity(reference, output)["cosine"]

    assert cosine({}) < 0.7
    assert cosine({"mask_add": LayerOverride(activation_bits=16)}) < 0.7
    assert cosine({"mask_add": LayerOverride(keep_fp32=True)}) > 0.99


def test_width_overrides_use_the_ranges_calibrated_at_the_nodes_width_and_convert_for_the_other_readers(
        transformer):
    model, _, _ = transformer
    query, normalised = BLOCK + "query/MatMul", "/blocks/blocks.0/attention_norm/LayerNormalization_output_0"
    quantized = {node.name for node in model.proto.graph.node if node.op_type == "MatMul"}
    overrides = width_overrides(model, {query: 16}, quantized, QuantType.QUInt16, QuantType.QUInt8,
                                ranges_at_width={normalised: (-4.0, 4.0)}, recipe_ranges={normalised: (-3.0, 3.0)})
    assert overrides[normalised] == [{
        "quant_type": QuantType.QUInt16, "rmin": -4.0, "rmax": 4.0,
        "convert": {"quant_type": QuantType.QUInt8, "recv_nodes": {BLOCK + "key/MatMul", BLOCK + "value/MatMul"}},
    }]
    # its output is read by the bias Add only, which this call was told is not quantized: no convert
    assert overrides[BLOCK + "query/MatMul_output_0"] == [{"quant_type": QuantType.QUInt16}]
    assert set(overrides) == {normalised, BLOCK + "query/MatMul_output_0"}


def test_an_artifact_that_does_not_honour_an_override_is_simulated_instead(transformer, tmp_path, monkeypatch):
    model, data, calibration = transformer
    recipe = static({SCORES: LayerOverride(activation_bits=16), HEAD: LayerOverride(keep_fp32=True)})
    uniform = quantize(model, static(), tmp_path / "uniform.onnx", calibration)
    assert override_failures(model, recipe, onnx.load(uniform.path)) == [
        f"node '{SCORES}' reads or writes 8-bit tensors where the recipe asks 16-bit",
        f"node '{HEAD}' reads or writes 8-bit tensors where the recipe asks float",
    ]
    monkeypatch.setattr(native, "width_overrides", lambda *args: {})  # as if onnxruntime ignored the widths
    artifact = quantize(model, recipe, tmp_path / "a.onnx", calibration)
    assert artifact.simulated and artifact.realiser == "simulation (quantize-dequantize in fp32)"


@pytest.mark.parametrize("recipe, realiser", [
    (Recipe(WeightSpec(8), A8, Mode.DYNAMIC), "onnxruntime quantize_dynamic"),
    (Recipe(WeightSpec(4, Granularity.GROUP, 32)), "onnxruntime MatMulNBitsQuantizer"),
])
def test_dynamic_and_weight_only_recipes_keep_any_node_float_natively(transformer, tmp_path, recipe, realiser):
    """The Gemm too: onnxruntime's dynamic quantizer renames every Gemm before it reads nodes_to_exclude."""
    model, data, _ = transformer
    value = BLOCK + "value/MatMul"
    kept = {name: LayerOverride(keep_fp32=True) for name in (value, BLOCK + "Softmax", HEAD)}
    artifact = quantize(model, Recipe(recipe.weights, recipe.activations, recipe.mode, kept), tmp_path / "a.onnx")
    assert (artifact.realiser, artifact.simulated) == (realiser, False)
    assert artifact.float_layers == (value, HEAD)
    nodes = {node.name: node for node in onnx.load(artifact.path).graph.node}
    assert nodes[value].op_type == "MatMul" and nodes[HEAD].op_type == "MatMul"
    assert np.isfinite(predict(open_session(artifact.path), data)).all()


def test_overrides_that_cannot_apply_to_their_node_are_one_line_errors(tmp_path):
    proto = gemm_model()
    proto.graph.node.extend([onnx.helper.make_node("Shape", ["x"], ["x_shape"], name="shape"),
                             onnx.helper.make_node("Add", ["x_shape", "x_shape"], ["doubled"], name="integer_add")])
    proto.graph.output.append(onnx.helper.make_tensor_value_info("doubled", onnx.TensorProto.INT64, [2]))
    model = load_model(proto.SerializeToString())
    with pytest.raises(RecipeError, match="^node 'integer_add' \\(Add\\) reads and writes no float tensors"):
        quantize(model, Recipe(overrides={"integer_add": LayerOverride(keep_fp32=True)}), tmp_path / "a.onnx")
    with pytest.raises(RecipeError, match="^node 'relu' \\(Relu\\) has no weight to quantize"):
        quantize(model, Recipe(overrides={"relu": LayerOverride(weights=WeightSpec(4))}), tmp_path / "a.onnx")
