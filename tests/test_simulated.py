"""The simulated path against a plain NumPy reference of quantize-dequantize (bits 2..8, tensor/channel/group)."""

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from engine.data import Dataset
from engine.model import load_model
from engine.realise import quantize
from engine.realise.fake_quant import packed_size, quantize_dequantize
from engine.recipe import ActivationSpec, Granularity, LayerOverride, Mode, Recipe, WeightSpec
from tests.builders import gemm_model


def reference_qdq_block(block: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    """Textbook affine quantization of one block, written for clarity, not speed."""
    if symmetric:
        qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        scale = np.abs(block).max() / qmax
        zero = 0.0
    else:
        qmin, qmax = 0, 2**bits - 1
        low, high = min(block.min(), 0.0), max(block.max(), 0.0)
        scale = (high - low) / qmax
        zero = np.round(-low / scale) if scale else 0.0
    scale = scale if scale else 1.0
    out = np.empty_like(block)
    for i, value in enumerate(block):
        q = min(max(np.round(value / scale) + zero, qmin), qmax)
        out[i] = (q - zero) * scale
    return out


def reference_qdq(weight: np.ndarray, bits, granularity, group_size, symmetric, axis) -> np.ndarray:
    moved = np.moveaxis(weight.astype(np.float64), axis, 0)
    rows = moved.reshape(moved.shape[0], -1)
    if granularity == "tensor":
        result = reference_qdq_block(rows.ravel(), bits, symmetric).reshape(rows.shape)
    else:
        result = np.empty_like(rows)
        for c, row in enumerate(rows):
            step = row.size if granularity == "channel" else group_size
            for start in range(0, row.size, step):
                result[c, start : start + step] = reference_qdq_block(row[start : start + step], bits, symmetric)
    return np.moveaxis(result.reshape(moved.shape), 0, axis).astype(weight.dtype)


CASES = list(itertools.product(range(2, 9), ["tensor", "channel", "group"], [True, False]))


@pytest.mark.parametrize("bits, granularity, symmetric", CASES)
@pytest.mark.parametrize("shape, axis", [((24, 3, 3, 3), 0), ((40, 12), 1)])
def test_quantize_dequantize_matches_the_numpy_reference(bits, granularity, symmetric, shape, axis):
    weight = np.random.default_rng(bits).normal(size=shape).astype(np.float32)
    spec = WeightSpec(bits, Granularity(granularity), group_size=16, symmetric=symmetric)
    ours = quantize_dequantize(weight, spec, axis)
    expected = reference_qdq(weight, bits, granularity, 16, symmetric, axis)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    # every block holds at most 2**bits distinct levels
    assert len(np.unique(ours)) <= (2**bits) * (1 if granularity == "tensor" else weight.size)


def test_all_zero_weights_stay_zero():
    zeros = np.zeros((4, 8), np.float32)
    for granularity in Granularity:
        spec = WeightSpec(3, granularity, group_size=16, symmetric=False)
        np.testing.assert_array_equal(quantize_dequantize(zeros, spec, 1), zeros)


def test_packed_size_counts_data_scales_and_zero_points():
    # [K=40, N=12] MatMul weight, channel axis 1: 12 channels of 40 elements
    assert packed_size((40, 12), WeightSpec(3, Granularity.CHANNEL), 1).total == 180 + 12 * 4
    assert packed_size((40, 12), WeightSpec(4, Granularity.TENSOR, symmetric=False), 1).total == 240 + 4 + 1
    group = packed_size((40, 12), WeightSpec(2, Granularity.GROUP, group_size=16, symmetric=False), 1)
    assert (group.data, group.scales, group.zero_points) == (120, 36 * 4, 9)


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _fake_quant_activation(x: np.ndarray, low: float, high: float, bits: int) -> np.ndarray:
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / (2**bits - 1)
    zero = np.round(-low / scale)
    return (np.clip(np.round(x / scale) + zero, 0, 2**bits - 1) - zero) * scale


def _dataset(rows: int = 64) -> Dataset:
    x = np.random.default_rng(7).normal(size=(rows, 6)).astype(np.float32)
    return Dataset(inputs={"x": x}, labels=None, slices=None, source="test")


def test_simulated_artifact_computes_the_reference_forward_pass(tmp_path):
    """W5 per-channel weights with 8-bit static activations: not native, so simulated end to end."""
    model = load_model(gemm_model(transB=1).SerializeToString())
    data = _dataset()
    recipe = Recipe(WeightSpec(5, Granularity.CHANNEL, symmetric=True), ActivationSpec(8), Mode.STATIC)
    artifact = quantize(model, recipe, tmp_path / "w5a8.onnx", calibration=data)
    assert artifact.simulated and artifact.size_is_estimate

    original = _weights(model.proto)
    w = reference_qdq(original["W"], 5, "channel", 0, True, axis=0)  # Gemm transB: [out, in]
    v = reference_qdq(original["V"], 5, "channel", 0, True, axis=1)  # MatMul: [in, out]
    stored = _weights(onnx.load(artifact.path))
    np.testing.assert_allclose(stored["W"], w, atol=1e-6)
    np.testing.assert_allclose(stored["V"], v, atol=1e-6)

    x = data.inputs["x"]
    hidden = np.maximum(x @ original["W"].T + original["b"], 0)  # ranges are calibrated on the fp32 model
    xq = _fake_quant_activation(x, x.min(), x.max(), 8)
    rq = _fake_quant_activation(np.maximum(xq @ w.T + original["b"], 0), hidden.min(), hidden.max(), 8)
    expected = rq @ v
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=1e-4, atol=1e-4)


def test_simulated_node_overrides_keep_a_tensor_float_and_give_a_layer_its_own_input_width(tmp_path):
    """Relu kept float: its output reaches proj unrounded. fc at 16 bits: it reads x rounded to 16 bits."""
    model = load_model(gemm_model(transB=1).SerializeToString())
    data = _dataset()
    recipe = Recipe(WeightSpec(5, Granularity.CHANNEL), ActivationSpec(8), Mode.STATIC,
                    overrides={"relu": LayerOverride(keep_fp32=True), "fc": LayerOverride(activation_bits=16)})
    artifact = quantize(model, recipe, tmp_path / "mixed.onnx", calibration=data)
    assert artifact.simulated and artifact.float_layers == ()

    original = _weights(model.proto)
    w = reference_qdq(original["W"], 5, "channel", 0, True, axis=0)
    v = reference_qdq(original["V"], 5, "channel", 0, True, axis=1)
    x = data.inputs["x"]
    expected = np.maximum(_fake_quant_activation(x, x.min(), x.max(), 16) @ w.T + original["b"], 0) @ v
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], expected, rtol=1e-4, atol=1e-4)


def test_simulated_size_estimate_and_overrides(tmp_path):
    model = load_model(gemm_model(transB=0).SerializeToString())
    recipe = Recipe(
        WeightSpec(3, Granularity.CHANNEL),
        overrides={"fc": LayerOverride(keep_fp32=True), "proj": LayerOverride(weights=WeightSpec(6, Granularity.TENSOR))},
    )
    artifact = quantize(model, recipe, tmp_path / "mixed.onnx")
    stored, original = _weights(onnx.load(artifact.path)), _weights(model.proto)
    np.testing.assert_array_equal(stored["W"], original["W"])  # kept fp32
    np.testing.assert_allclose(stored["V"], reference_qdq(original["V"], 6, "tensor", 0, True, 1), atol=1e-6)
    assert artifact.float_layers == ("fc",)
    v_bytes = original["V"].nbytes
    assert artifact.size_bytes == model.summary.bytes - v_bytes + packed_size((4, 3), WeightSpec(6, Granularity.TENSOR), 1).total
