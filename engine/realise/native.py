"""Realisers that build artifacts with onnxruntime's own quantization tools: real kernels, real sizes."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path

import onnx
from onnx import version_converter
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
from onnxruntime.transformers.float16 import convert_float_to_float16

from engine.model import LoadedModel, gemm_to_matmul, topological_sort
from engine.onnx_files import save_model
from engine.realise.base import (
    OverrideNotHonoured, Realiser, kept_fp32, only_keep_fp32_overrides, own_activation_bits,
)
from engine.realise.calibration import save_for_quantize_static
from engine.realise.qdq_overrides import (
    FOLDABLE_OPS, TensorOverrides, override_failures, strip_qdq, touched_tensors, width_overrides,
)
from engine.recipe import Granularity, Mode, Recipe

# (bits, symmetric) -> onnxruntime's integer type
WEIGHT_TYPES = {
    (8, True): QuantType.QInt8,
    (8, False): QuantType.QUInt8,
    (4, True): QuantType.QInt4,
    (4, False): QuantType.QUInt4,
}
ACTIVATION_TYPES = {
    (8, True): QuantType.QInt8,
    (8, False): QuantType.QUInt8,
    (16, True): QuantType.QInt16,
    (16, False): QuantType.QUInt16,
}


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantizers print and log progress; a sweep's output should be our table only."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def nonfinite_range_warnings_silenced():
    """Without numpy's RuntimeWarnings from onnxruntime's scale and zero-point arithmetic (quant_utils), which an
    infinite or NaN activation range (a -inf attention mask) sets off: for callers that report those ranges
    themselves (the sensitivity table counts a point's non-finite values). Every other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(invalid value|overflow|divide by zero) encountered",
                                category=RuntimeWarning, module=r"onnxruntime\.quantization\.quant_utils")
        yield


class Float32(Realiser):
    name = "original model"

    def supports(self, model: LoadedModel, recipe: Recipe) -> bool:
        return recipe.is_reference

    def realise(self, model, recipe, calibration, out):
        model.save(out)
        return None


class Float16(Realiser):
    name = "onnxruntime float16 conversion"

    def supports(self, model: LoadedModel, recipe: Recipe) -> bool:
        return recipe.weights.bits == 16

    def realise(self, model, recipe, calibration, out):
        # Inputs and outputs stay fp32 so the artifact is a drop-in replacement for the original.
        converted = convert_float_to_float16(model.copy(), keep_io_types=True, disable_shape_infer=False)
        topological_sort(converted)  # the converter appends its input casts after their consumers
        save_model(converted, out, model.needs_external_data)
        return None


class OrtStaticQDQ(Realiser):
    """onnxruntime quantize_static, QDQ format: 8/4-bit weights, 8/16-bit calibrated activations.

    Node overrides: keep_fp32 and activation_bits as engine.realise.qdq_overrides explains; other weight bits
    through TensorQuantOverrides on the layer's weight."""

    name = "onnxruntime quantize_static (QDQ)"
    # Every op onnxruntime can quantize, but normalisations: their scale and shift are no layer's weights,
    # and onnxruntime would store them at the recipe's weight bits (a LayerNorm scale in int4 under W4).
    OP_TYPES = sorted((set(QLinearOpsRegistry) | set(QDQRegistry))
                      - {"LayerNormalization", "InstanceNormalization", "BatchNormalization", "GroupNormalization"})

    def supports(self, model: LoadedModel, recipe: Recipe) -> bool:
        weights = recipe.weights
        if recipe.mode is not Mode.STATIC or weights.granularity is Granularity.GROUP:
            return False
        if (weights.bits, weights.symmetric) not in WEIGHT_TYPES:
            return False
        if weights.granularity is Granularity.CHANNEL and not weights.symmetric:
            return False  # onnxruntime makes every per-channel weight symmetric, whatever it is asked
        if (weights.bits, weights.symmetric, recipe.activations.bits, recipe.activations.symmetric) == (8, False, 8, True):
            return False  # u8 weights with s8 activations: onnxruntime refuses the combination
        return all(
            o.weights is None
            or (o.weights.bits in (4, 8) and o.weights.granularity is weights.granularity
                and o.weights.symmetric == weights.symmetric)
            for o in recipe.overrides.values()
        )

    def realise(self, model, recipe, calibration, out):
        act = recipe.activations
        per_channel = recipe.weights.granularity is Granularity.CHANNEL
        kept = kept_fp32(recipe)
        float_tensors = touched_tensors(model, kept)
        # onnxruntime folds a Relu or Clip into the Q/DQ pair of its output; taking that pair off would drop the
        # activation itself, so one whose output stays float is left out of quantization too
        excluded = kept + [node.name for node in model.proto.graph.node
                           if node.op_type in FOLDABLE_OPS and float_tensors.intersection(node.output)]
        recipe_ranges = calibration.ranges(model, recipe)
        overrides = self._weight_overrides(model, recipe, per_channel)
        if widths := own_activation_bits(recipe):
            (bits,) = set(widths.values())  # an override cannot repeat the recipe's width, so one width is left
            quantized = {node.name for node in model.proto.graph.node if node.op_type in self.OP_TYPES} - set(excluded)
            overrides |= width_overrides(model, widths, quantized, ACTIVATION_TYPES[(bits, act.symmetric)],
                                         ACTIVATION_TYPES[(act.bits, act.symmetric)],
                                         calibration.ranges(model, recipe, bits), recipe_ranges)
        with tempfile.TemporaryDirectory(prefix="quantscope-qdq-") as scratch:
            ranges_file = Path(scratch) / "ranges.json"
            save_for_quantize_static(recipe_ranges, ranges_file)
            with _quiet():
                quantize_static(
                    model.file,
                    out,
                    calibration_data_reader=None,
                    calibration_cache_path=ranges_file,
                    calibrate_method=CalibrationMethod.MinMax,  # the cache's format, whatever method found the ranges
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=self.OP_TYPES,
                    per_channel=per_channel,
                    activation_type=ACTIVATION_TYPES[(act.bits, act.symmetric)],
                    weight_type=WEIGHT_TYPES[(recipe.weights.bits, recipe.weights.symmetric)],
                    nodes_to_exclude=excluded,
                    use_external_data_format=model.needs_external_data,
                    extra_options={
                        "ActivationSymmetric": act.symmetric,
                        "WeightSymmetric": recipe.weights.symmetric,
                        "TensorQuantOverrides": overrides,
                    },
                )
        if kept or widths:
            artifact = onnx.load(out)
            if kept:
                strip_qdq(artifact, float_tensors)
                save_model(artifact, out, model.needs_external_data)
            if failures := override_failures(model, recipe, artifact):
                raise OverrideNotHonoured(failures[0])
        return None

    @staticmethod
    def _weight_overrides(model: LoadedModel, recipe: Recipe, per_channel: bool) -> TensorOverrides:
        """TensorQuantOverrides for the layers with their own weight bits, keyed by weight initializer."""
        layers = {layer.name: layer for layer in model.summary.layers}
        overrides = {}
        for name, override in recipe.overrides.items():
            if override.weights is not None:
                layer_override = {"quant_type": WEIGHT_TYPES[(override.weights.bits, override.weights.symmetric)]}
                if per_channel:  # without an axis onnxruntime takes the override to be per-tensor
                    layer_override["axis"] = layers[name].channel_axis
                overrides[layers[name].weight] = [layer_override]
        return overrides


def _has_gemm(model: LoadedModel) -> bool:
    return any(node.op_type == "Gemm" for node in model.proto.graph.node)


class OrtDynamic(Realiser):
    """onnxruntime quantize_dynamic: int8 weights, activations quantized per batch at run time.

    It targets MatMul-heavy models; Conv stays fp32 because onnxruntime's CPU ConvInteger kernel has no
    int8-weight variant. Those layers are listed as left in fp32. Gemm is rewritten to MatMul first, as
    onnxruntime would, but keeping the node's name.
    """

    name = "onnxruntime quantize_dynamic"
    OP_TYPES = ["MatMul", "Gemm", "Gather", "Attention", "LSTM"]

    def supports(self, model: LoadedModel, recipe: Recipe) -> bool:
        return (
            recipe.mode is Mode.DYNAMIC
            and recipe.weights.bits == 8
            and recipe.weights.granularity is not Granularity.GROUP
            and only_keep_fp32_overrides(recipe)
        )

    def realise(self, model, recipe, calibration, out):
        with _quiet():
            quantize_dynamic(
                # onnxruntime rewrites each Gemm as a MatMul named "<gemm>_MatMul" before it looks at
                # nodes_to_exclude, so a kept-float Gemm would be quantized; this rewrite keeps the name
                gemm_to_matmul(model.copy()) if _has_gemm(model) else model.file,
                out,
                op_types_to_quantize=self.OP_TYPES,
                per_channel=recipe.weights.granularity is Granularity.CHANNEL,
                weight_type=WEIGHT_TYPES[(8, recipe.weights.symmetric)],
                nodes_to_exclude=kept_fp32(recipe),
                use_external_data_format=model.needs_external_data,
                extra_options={"WeightSymmetric": recipe.weights.symmetric},
            )
        return None


class MatMulNBits(Realiser):
    """onnxruntime's MatMulNBitsQuantizer: 2/4/8-bit block-wise weights for MatMul (Gemm is rewritten first).

    Group granularity becomes MatMulNBits with that block size; 4-bit channel granularity becomes a per-channel
    DequantizeLinear (QDQ) in front of the MatMul. Conv stays fp32: the quantizer only handles MatMul.
    """

    name = "onnxruntime MatMulNBitsQuantizer"
    BITS = (2, 4, 8)
    QDQ_INT4_OPSET = 21

    def supports(self, model: LoadedModel, recipe: Recipe) -> bool:
        return (
            recipe.mode is Mode.WEIGHT_ONLY
            and recipe.weights.bits in self.BITS
            and recipe.weights.granularity is not Granularity.TENSOR
            # per channel it writes QDQ, which it does for 4 bits only (8 bits would leave every MatMul fp32)
            and (recipe.weights.granularity is Granularity.GROUP or recipe.weights.bits == 4)
            and only_keep_fp32_overrides(recipe)
        )

    def realise(self, model, recipe, calibration, out):
        per_channel = recipe.weights.granularity is Granularity.CHANNEL
        proto = gemm_to_matmul(model.copy())
        if per_channel and model.summary.opset < self.QDQ_INT4_OPSET:
            # Its int4 DequantizeLinear needs opset 21; convert the whole model first, as merely restamping
            # the opset (what the quantizer does) leaves older ops' attributes invalid, e.g. ReduceMean's axes.
            proto = version_converter.convert_version(proto, self.QDQ_INT4_OPSET)
        quantizer = MatMulNBitsQuantizer(
            proto,
            bits=recipe.weights.bits,
            block_size=recipe.weights.group_size,
            is_symmetric=recipe.weights.symmetric,
            nodes_to_exclude=kept_fp32(recipe),
            quant_format=QuantFormat.QDQ if per_channel else QuantFormat.QOperator,
            op_types_to_quantize=("MatMul",),
            channel_wised_quantize=per_channel,
        )
        with _quiet():
            quantizer.process()
        quantizer.model.save_model_to_file(str(out), use_external_data_format=model.needs_external_data)
        return None
