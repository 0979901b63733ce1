"""The fallback realiser: simulate any recipe in fp32 by quantize-dequantize.

Weights are rounded through `bits`-bit integers in NumPy and stored back as fp32, so the model computes
exactly what integer weights would give. Activations, when the recipe quantizes them, pass through
inserted fake-quant nodes: calibrated scales for static mode, DynamicQuantizeLinear for dynamic mode.
Node overrides: a kept-float node's weights stay fp32 and it reads float; a node with its own activation_bits
reads its input at that width.
The artifact runs anywhere but is no smaller or faster: its size is the packed-integer estimate and it
gets no latency.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from engine.model import LoadedModel, topological_sort
from engine.onnx_files import save_model
from engine.realise.base import Realiser, kept_fp32, own_activation_bits
from engine.realise.fake_quant import integer_range, packed_size, quantize_dequantize
from engine.recipe import Mode, Recipe, WeightSpec


class Simulated(Realiser):
    name = "simulation (quantize-dequantize in fp32)"
    simulated = True

    def supports(self, model: LoadedModel, recipe: Recipe) -> bool:
        return True

    def float_layers(self, model, recipe, artifact):
        kept = set(kept_fp32(recipe))
        return [layer.name for layer in model.summary.layers if layer.name in kept]

    def realise(self, model, recipe, calibration, out):
        proto = model.copy()
        nodes = {node.name: node for node in proto.graph.node}
        kept = set(kept_fp32(recipe))
        quantized = [layer for layer in model.summary.layers if layer.name not in kept]
        estimate = model.summary.bytes
        estimate += _fake_quantize_weights(proto, recipe, quantized)
        # tensor -> the quantized layers that read it (the first input of each; a Gather's is its indices)
        readers: dict[str, set[str]] = defaultdict(set)
        for layer in quantized:
            if layer.op_type != "Gather":
                readers[nodes[layer.name].input[0]].add(layer.name)
        if recipe.mode is Mode.STATIC:
            # As in onnxruntime's QDQ graph, a tensor a kept-float node reads or writes is float for every reader.
            kept_tensors = {tensor for name in kept for tensor in model.activations_of(nodes[name])}
            act, widths = recipe.activations, own_activation_bits(recipe)
            for bits in sorted({act.bits, *widths.values()}):
                at_bits = {tensor: {name for name in names if widths.get(name, act.bits) == bits}
                           for tensor, names in readers.items() if tensor not in kept_tensors}
                known = calibration.ranges(model, recipe, bits)
                _insert_static_fake_quant(proto, {t: known[t] for t, names in at_bits.items() if names and t in known},
                                          at_bits, bits, act.symmetric)
        elif recipe.mode is Mode.DYNAMIC:
            # Activations are quantized for each reader at run time: a kept-float layer reads its input float.
            _insert_dynamic_fake_quant(proto, sorted(readers), set().union(*readers.values()))
        save_model(proto, out, model.needs_external_data)
        return estimate


def _fake_quantize_weights(proto: onnx.ModelProto, recipe: Recipe, layers) -> int:
    """Round each layer's weight in place; return the change in bytes had they been stored packed."""
    initializers = {t.name: t for t in proto.graph.initializer}
    saved = 0
    done: set[str] = set()
    for layer in layers:
        if layer.weight in done:  # a weight shared by two nodes is stored once
            continue
        done.add(layer.weight)
        override = recipe.overrides.get(layer.name)
        spec: WeightSpec = override.weights if override is not None and override.weights else recipe.weights
        tensor = initializers[layer.weight]
        rounded = quantize_dequantize(numpy_helper.to_array(tensor), spec, layer.channel_axis)
        tensor.CopyFrom(numpy_helper.from_array(rounded, tensor.name))
        saved += packed_size(layer.weight_shape, spec, layer.channel_axis).total - layer.weight_bytes
    return saved


def _rewire(proto: onnx.ModelProto, tensor: str, replacement: str, consumers: set[str]) -> None:
    for node in proto.graph.node:
        if node.name in consumers:
            node.input[:] = [replacement if name == tensor else name for name in node.input]


def _insert_static_fake_quant(
    proto: onnx.ModelProto, ranges: dict[str, tuple[float, float]], readers: dict[str, set[str]], bits: int,
    symmetric: bool
) -> None:
    """x -> (clip(round(x / s) + z, qmin, qmax) - z) * s, with s and z from the calibrated range, for the nodes
    in readers[x]."""
    qmin, qmax = integer_range(bits, symmetric)
    for tensor, (low, high) in sorted(ranges.items()):
        if symmetric:
            bound = max(abs(low), abs(high))
            scale, zero_point = bound / qmax, 0.0
        else:
            low, high = min(low, 0.0), max(high, 0.0)
            scale = (high - low) / (qmax - qmin)
            zero_point = float(np.round(qmin - low / scale)) if scale else 0.0
        scale = scale or 1.0
        prefix = f"{tensor}_fakequant{bits}"
        constants = {"scale": scale, "zero_point": zero_point, "qmin": float(qmin), "qmax": float(qmax)}
        for key, value in constants.items():
            proto.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), f"{prefix}_{key}"))
        steps = [
            ("Div", [tensor, f"{prefix}_scale"], "scaled"),
            ("Round", [f"{prefix}_scaled"], "rounded"),
            ("Add", [f"{prefix}_rounded", f"{prefix}_zero_point"], "shifted"),
            ("Clip", [f"{prefix}_shifted", f"{prefix}_qmin", f"{prefix}_qmax"], "clipped"),
            ("Sub", [f"{prefix}_clipped", f"{prefix}_zero_point"], "centred"),
            ("Mul", [f"{prefix}_centred", f"{prefix}_scale"], "out"),
        ]
        for op, inputs, output in steps:
            proto.graph.node.append(helper.make_node(op, inputs, [f"{prefix}_{output}"], name=f"{prefix}_{output}"))
        _rewire(proto, tensor, f"{prefix}_out", readers[tensor])
    topological_sort(proto)


def _insert_dynamic_fake_quant(proto: onnx.ModelProto, tensors: list[str], consumers: set[str]) -> None:
    """x -> DequantizeLinear(DynamicQuantizeLinear(x)): uint8 with a range measured on each batch."""
    for tensor in tensors:
        prefix = f"{tensor}_dynquant"
        outputs = [f"{prefix}_q", f"{prefix}_scale", f"{prefix}_zero_point"]
        proto.graph.node.append(helper.make_node("DynamicQuantizeLinear", [tensor], outputs, name=f"{prefix}_quant"))
        proto.graph.node.append(helper.make_node("DequantizeLinear", outputs, [f"{prefix}_out"], name=f"{prefix}_dequant"))
        _rewire(proto, tensor, f"{prefix}_out", consumers)
    topological_sort(proto)
