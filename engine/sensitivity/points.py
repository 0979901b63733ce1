"""Quantization points: what an artifact quantizes, read off the artifact onnxruntime built, one point at a time.

A point is one thing that can be quantized or left in float on its own:

- a **weight** point: a node's constant inputs (a Conv's weight and bias, a Gather's table, an Add's constant),
  replaced by their dequantized values;
- an **activation** point: a tensor onnxruntime put a QuantizeLinear -> DequantizeLinear pair on in static mode
  (inputs and outputs of quantized ops: attention's activation-by-activation MatMuls, Add, Softmax, ...).

The list is never derived from quantization rules of our own: it is what the candidate's artifact holds, matched
back to the fp32 graph the way onnxruntime's `qdq_loss_debug` does (its tensor-name suffixes). Where onnxruntime
folded a Relu or Clip into the pair before it (asymmetric activations), the pair is the Relu's output here: it is
placed after the Relu in the fp32 graph, which computes the same values, and its SQNR compares the Relu's output
with itself quantized rather than the pre-Relu tensor with a clipped one (the false low SQNR a naive comparison
reports).

When the artifact rewrote a whole node instead (dynamic quantization's MatMulInteger, MatMulNBits, a simulated
artifact's fake-quant), the point is that node: its output is replaced by the artifact's nodes computing it.
Layers the candidate's realiser left in float get simulated points from the simulated realiser (labelled so).

Each point carries Replacements: fp32 tensors it stands in for and the nodes and initializers computing the
stand-in, under the artifact's names; engine.sensitivity.graphs composes any set of them into a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization.quant_utils import (
    DEQUANT_OP_NAME, QUANT_INPUT_SUFFIX, QUANT_OP_NAME, TENSOR_NAME_QUANT_SUFFIX,
)

from engine.model import Layer, LoadedModel

WEIGHTS = "weights"
ACTIVATIONS = "activations"
INPUT_OP = "input"  # the op_type of an activation point on a graph input, which no node produces
_SCALE_SUFFIX, _ZERO_POINT_SUFFIX = "_scale", "_zero_point"  # onnxruntime's names beside TENSOR_NAME_QUANT_SUFFIX
_TRANSPOSED = "_Transposed"  # quantize_dynamic's name for a weight it transposed
FOLDABLE = ("DequantizeLinear", "Transpose")  # computed here when their inputs are all constant (see _fold)


@dataclass(frozen=True)
class QuantGrid:
    """The integer grid a point's values are rounded to: value = (q - zero_point) * scale, q in [qmin, qmax].

    Per channel, `scale` and `zero_point` hold one entry per channel along `axis`."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    qmin: int
    qmax: int
    axis: int | None = None

    def levels(self, channel: int = 0) -> np.ndarray:
        """Every representable value of `channel` (the one scale per tensor: channel 0)."""
        q = np.arange(self.qmin, self.qmax + 1, dtype=np.float64)
        return (q - self.zero_point[channel]) * self.scale[channel]

    def widest_channel(self) -> int:
        return int(np.argmax(self.scale))

    def to_dict(self) -> dict:
        return {"scale": list(self.scale), "zero_point": list(self.zero_point), "qmin": self.qmin,
                "qmax": self.qmax, "axis": self.axis}


@dataclass(frozen=True, eq=False)
class Replacement:
    """`original` (an fp32 tensor: initializer, graph input or node output) computed as `output` by `nodes` from
    `initializers` and fp32 tensors. Names are the artifact's; engine.sensitivity.graphs makes them unique."""

    original: str
    output: str
    nodes: tuple[onnx.NodeProto, ...]
    initializers: tuple[onnx.TensorProto, ...]

    @property
    def internal(self) -> set[str]:
        """The names this replacement defines (everything else its nodes read comes from the fp32 graph)."""
        return {t.name for t in self.initializers} | {name for node in self.nodes for name in node.output}


@dataclass(frozen=True, eq=False)
class Point:
    layer: str  # node name: a weight's consumer, an activation's producer (a graph input: its own name)
    kind: str  # WEIGHTS or ACTIVATIONS
    op_type: str  # that node's op type (INPUT_OP for a graph input)
    tensor: str  # the weight initializer or the activation tensor quantized
    params: int  # constant elements quantized (0 for activations)
    bits: int
    simulated: bool  # fake-quant in fp32, not onnxruntime's own quantization
    replacements: tuple[Replacement, ...]
    grid: QuantGrid | None = None  # None where the artifact computes ranges at run time or packs blocks
    observed: str = ""  # the fp32 tensor whose quantized value the point's output SQNR compares
    effective_weight: np.ndarray | None = field(default=None, repr=False)  # the dequantized `tensor`

    @property
    def key(self) -> tuple[str, str, str]:
        """The point's identity across candidates: a row of the table is one point under one candidate."""
        return self.kind, self.layer, self.tensor

    @property
    def replaces_node_output(self) -> bool:
        """Its output SQNR compares the original tensor with its replacement (else a node reading the weight)."""
        return self.observed == self.replacements[0].original


@dataclass(frozen=True)
class Extraction:
    points: list[Point]
    unmapped: list[str]  # what the artifact quantizes that could not be matched back to the fp32 graph, in words


# -- reading a graph -------------------------------------------------------------------------------------------


class _Graph:
    def __init__(self, proto: onnx.ModelProto):
        self.nodes = list(proto.graph.node)
        self.initializers = {t.name: t for t in proto.graph.initializer}
        self.inputs = {v.name for v in proto.graph.input} - set(self.initializers)
        self.producer = {name: node for node in self.nodes for name in node.output if name}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.order = {node.name: index for index, node in enumerate(self.nodes)}

    def values(self) -> set[str]:
        """Tensors computed or fed at run time."""
        return self.inputs | set(self.producer)

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.initializers[name])


def dequantize(quantized: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1,
               block_size: int = 0) -> np.ndarray:
    """DequantizeLinear as onnxruntime computes it: float32((q - zero_point)) * scale, per tensor, per axis or in
    blocks along the axis; bit for bit the values its kernel gives."""
    q = quantized.astype(np.int32)
    zp = np.zeros_like(scale, dtype=np.int32) if zero_point is None else zero_point.astype(np.int32)
    scale = scale.astype(np.float32)
    if scale.size == 1 and not block_size:
        return (q - zp.reshape(())).astype(np.float32) * scale.reshape(())
    axis = axis % q.ndim
    if block_size:
        def expand(values):
            return np.repeat(values, block_size, axis=axis).take(range(q.shape[axis]), axis=axis)

        return (q - expand(zp)).astype(np.float32) * expand(scale)
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q - zp.reshape(shape)).astype(np.float32) * scale.reshape(shape)


def _attribute(node: onnx.NodeProto, name: str, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _dequantize_node(node: onnx.NodeProto, arrays: dict[str, np.ndarray]) -> np.ndarray:
    zero_point = arrays[node.input[2]] if len(node.input) > 2 and node.input[2] else None
    return dequantize(arrays[node.input[0]], arrays[node.input[1]], zero_point, _attribute(node, "axis", 1),
                      _attribute(node, "block_size", 0))


_NARROW_RANGES = {onnx.TensorProto.INT4: (-8, 7), onnx.TensorProto.UINT4: (0, 15)}  # numpy has no int4 iinfo


def _integer_range(tensor: onnx.TensorProto) -> tuple[int, int]:
    if tensor.data_type in _NARROW_RANGES:
        return _NARROW_RANGES[tensor.data_type]
    info = np.iinfo(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
    return int(info.min), int(info.max)


def _grid(graph: _Graph, node: onnx.NodeProto) -> QuantGrid:
    """The grid of a QuantizeLinear or DequantizeLinear node, from its scale and zero point (or, for a weight
    without zero point, its integer input)."""
    scale = graph.array(node.input[1]).astype(np.float64).ravel()
    has_zero_point = len(node.input) > 2 and node.input[2]
    zero_point = graph.array(node.input[2]).astype(np.int64).ravel() if has_zero_point else np.zeros(scale.size, int)
    integer = graph.initializers[node.input[2]] if has_zero_point else graph.initializers[node.input[0]]
    qmin, qmax = _integer_range(integer)
    axis = _attribute(node, "axis", 1) if scale.size > 1 else None
    return QuantGrid(tuple(float(s) for s in scale), tuple(int(z) for z in zero_point), qmin, qmax, axis)


def _bits(grid: QuantGrid) -> int:
    return int(np.log2(grid.qmax - grid.qmin + 1))


# -- extraction ------------------------------------------------------------------------------------------------


def extract_points(model: LoadedModel, artifact: onnx.ModelProto, bits: tuple[int, int | None], simulated: bool,
                   layers: set[str] | None = None) -> Extraction:
    """The points `artifact` quantizes in `model`, in the fp32 graph's order. `bits` is the candidate's (weight,
    activation) bits, for points whose width the artifact does not spell out. With `layers`, only those layers'
    node-level points (used for the simulated stand-ins of layers a realiser left in float)."""
    fp32, built = _Graph(model.proto), _Graph(artifact)
    points: list[Point] = []
    unmapped: list[str] = []
    constants_unmatched: list[onnx.NodeProto] = []
    if layers is None:
        points += _activation_points(fp32, built, simulated, unmapped)
        points += _constant_points(model, fp32, built, simulated, constants_unmatched)
    covered = {name for point in points if point.kind == WEIGHTS for name in _weights_of(point)}
    sliced: set[int] = set()  # artifact nodes some node-level point computes with
    for layer in model.summary.layers:
        if layer.weight in covered or (layers is not None and layer.name not in layers):
            continue
        point = _node_point(layer, fp32, built, bits[0], simulated, unmapped, sliced)
        if point is not None:
            points.append(point)
    unmapped += [f"the dequantized constant {node.input[0]!r}" for node in constants_unmatched
                 if id(node) not in sliced]
    position = {node.name: index for index, node in enumerate(fp32.nodes)}
    points.sort(key=lambda p: (position.get(p.layer, -1), p.kind != WEIGHTS, p.tensor))
    return Extraction(points, unmapped)


def _weights_of(point: Point) -> list[str]:
    return [r.original for r in point.replacements]


def _activation_points(fp32: _Graph, built: _Graph, simulated: bool, unmapped: list[str]) -> list[Point]:
    """One point per QuantizeLinear -> DequantizeLinear pair on a tensor computed at run time."""
    points = []
    seen = set()
    values = fp32.values()
    for quantize in built.nodes:
        if quantize.op_type != QUANT_OP_NAME or quantize.input[0] in built.initializers:
            continue
        name = quantize.input[0]
        original = name.removesuffix(QUANT_INPUT_SUFFIX) if name.endswith(QUANT_INPUT_SUFFIX) else name
        pairs = [n for n in built.consumers.get(quantize.output[0], []) if n.op_type == DEQUANT_OP_NAME]
        if original not in values or len(pairs) != 1 or original in seen:
            unmapped.append(f"the QuantizeLinear on {name!r}")
            continue
        seen.add(original)
        dequantize_node = pairs[0]
        moved = onnx.NodeProto()
        moved.CopyFrom(quantize)
        moved.input[0] = original  # the graph-output case: onnxruntime renamed the producer's output
        constants = {n for n in (*quantize.input[1:], *dequantize_node.input[1:]) if n}
        replacement = Replacement(original, dequantize_node.output[0], (moved, dequantize_node),
                                  tuple(built.initializers[n] for n in sorted(constants)))
        producer = fp32.producer.get(original)
        grid = _grid(built, quantize)
        points.append(Point(
            layer=producer.name if producer is not None else original,
            kind=ACTIVATIONS, op_type=producer.op_type if producer is not None else INPUT_OP, tensor=original,
            params=0, bits=_bits(grid), simulated=simulated, replacements=(replacement,), grid=grid,
            observed=original,
        ))
    return points


def _constant_points(model: LoadedModel, fp32: _Graph, built: _Graph, simulated: bool,
                     unmatched: list[onnx.NodeProto]) -> list[Point]:
    """One point per node whose constant inputs the artifact dequantizes (DequantizeLinear of an initializer);
    DequantizeLinear nodes of constants the fp32 graph lacks (a rewritten node's) go to `unmatched`."""
    layers = {layer.name: layer for layer in model.summary.layers}
    by_node: dict[str, list[tuple[str, onnx.NodeProto]]] = {}
    for dequantize_node in built.nodes:
        if dequantize_node.op_type != DEQUANT_OP_NAME or dequantize_node.input[0] not in built.initializers:
            continue
        original = dequantize_node.input[0].removesuffix(TENSOR_NAME_QUANT_SUFFIX)
        readers = fp32.consumers.get(original, [])
        if original not in fp32.initializers or not readers:
            unmatched.append(dequantize_node)
            continue
        first = min(readers, key=lambda node: fp32.order[node.name])
        by_node.setdefault(first.name, []).append((original, dequantize_node))
    points = []
    nodes = {node.name: node for node in fp32.nodes}
    for name, constants in by_node.items():
        layer = layers.get(name)
        main_name = layer.weight if layer is not None and any(c == layer.weight for c, _ in constants) else \
            max(constants, key=lambda c: int(np.prod(fp32.initializers[c[0]].dims)))[0]
        main = next(node for original, node in constants if original == main_name)
        replacements = []
        for original, dequantize_node in constants:
            inputs = [n for n in dequantize_node.input if n]
            replacements.append(Replacement(original, dequantize_node.output[0], (dequantize_node,),
                                            tuple(built.initializers[n] for n in inputs)))
        grid = _grid(built, main)
        replacements.sort(key=lambda r: r.original != main_name)  # the weight first, then the bias
        points.append(Point(
            layer=name, kind=WEIGHTS, op_type=nodes[name].op_type, tensor=main_name,
            params=sum(int(np.prod(fp32.initializers[c].dims)) for c, _ in constants),
            bits=_bits(grid), simulated=simulated, replacements=tuple(replacements), grid=grid,
            observed=nodes[name].output[0],
            effective_weight=_dequantize_node(main, {n: built.array(n) for n in main.input if n}),
        ))
    return points


def _node_point(layer: Layer, fp32: _Graph, built: _Graph, bits: int, simulated: bool, unmapped: list[str],
                sliced: set[int]) -> Point | None:
    """The layer's node as the artifact computes it, when the artifact rewrote it; None when it left it in float."""
    node = next(n for n in fp32.nodes if n.name == layer.name)
    output = node.output[0]
    producer = built.producer.get(output)
    if producer is None:
        unmapped.append(f"layer {layer.name!r} (its output is not in the artifact)")
        return None
    if _same_node(node, fp32, producer, built):
        return None  # left in float by the artifact
    nodes, initializers = _slice(output, fp32.values(), built)
    if nodes is None:
        unmapped.append(f"layer {layer.name!r} (the artifact computes it from tensors the fp32 graph lacks)")
        return None
    sliced.update(id(node) for node in nodes)
    nodes, initializers = _fold(nodes, initializers)
    replacement = Replacement(output, output, tuple(nodes), tuple(initializers.values()))
    return Point(
        layer=layer.name, kind=WEIGHTS, op_type=layer.op_type, tensor=layer.weight,
        params=int(np.prod(layer.weight_shape)), bits=bits, simulated=simulated, replacements=(replacement,),
        observed=output, effective_weight=_effective_weight(layer, node, nodes, initializers),
    )


def _same_node(node: onnx.NodeProto, fp32: _Graph, other: onnx.NodeProto, built: _Graph) -> bool:
    if (node.name, node.op_type, node.domain, list(node.input), list(node.attribute)) != \
            (other.name, other.op_type, other.domain, list(other.input), list(other.attribute)):
        return False
    return all(np.array_equal(fp32.array(name), built.array(name))
               for name in node.input if name in fp32.initializers and name in built.initializers)


def _slice(output: str, stops: set[str], built: _Graph
           ) -> tuple[list[onnx.NodeProto] | None, dict[str, onnx.TensorProto]]:
    """The artifact's nodes computing `output` back to fp32 tensors (`stops`), in order, with their initializers;
    (None, {}) when some input is neither."""
    chosen: set[int] = set()
    initializers: dict[str, onnx.TensorProto] = {}
    pending = [output]
    while pending:
        name = pending.pop()
        if not name or (name in stops and name != output) or name in initializers:
            continue
        if name in built.initializers:
            initializers[name] = built.initializers[name]
            continue
        producer = built.producer.get(name)
        if producer is None:
            return None, {}
        if id(producer) not in chosen:
            chosen.add(id(producer))
            pending.extend(producer.input)
    return [node for node in built.nodes if id(node) in chosen], initializers


def _fold(nodes: list[onnx.NodeProto], initializers: dict[str, onnx.TensorProto]
          ) -> tuple[list[onnx.NodeProto], dict[str, onnx.TensorProto]]:
    """Compute DequantizeLinear and Transpose of constants: a dequantized weight is a float constant in any opset
    (an int4 DequantizeLinear needs opset 21, which the fp32 graph need not have)."""
    arrays = {name: numpy_helper.to_array(t) for name, t in initializers.items()}
    kept = []
    for node in nodes:
        if node.op_type in FOLDABLE and node.domain in ("", "ai.onnx") and all(n in arrays for n in node.input if n):
            if node.op_type == "Transpose":
                value = np.transpose(arrays[node.input[0]], _attribute(node, "perm", None))
            else:
                value = _dequantize_node(node, arrays)
            arrays[node.output[0]] = value
        else:
            kept.append(node)
    used = {name for node in kept for name in node.input}
    folded = {name: numpy_helper.from_array(np.ascontiguousarray(value), name) for name, value in arrays.items()
              if name in used}
    return kept, folded


def _effective_weight(layer: Layer, node: onnx.NodeProto, nodes: list[onnx.NodeProto],
                      initializers: dict[str, onnx.TensorProto]) -> np.ndarray | None:
    """The dequantized weight a rewritten node computes with, when the artifact holds it in a readable form:
    a float constant in the weight's place (simulated rounding, a folded DequantizeLinear), or onnxruntime's
    `<weight>_quantized`, `_scale`, `_zero_point` (dynamic quantization)."""
    names = {name for n in nodes for name in n.input}
    for infix in ("", _TRANSPOSED):  # quantize_dynamic transposes a Gemm's weight for MatMulInteger
        quantized, scale = f"{layer.weight}{infix}{TENSOR_NAME_QUANT_SUFFIX}", f"{layer.weight}{infix}{_SCALE_SUFFIX}"
        if quantized not in initializers or scale not in initializers:
            continue
        zero_point = initializers.get(f"{layer.weight}{infix}{_ZERO_POINT_SUFFIX}")
        scale_values = numpy_helper.to_array(initializers[scale])
        axis = (1 - layer.channel_axis if infix else layer.channel_axis) if scale_values.size > 1 else 0
        value = dequantize(numpy_helper.to_array(initializers[quantized]), scale_values,
                           None if zero_point is None else numpy_helper.to_array(zero_point), axis)
        return value.T if infix else value
    index = list(node.input).index(layer.weight)
    for candidate in nodes:
        if candidate.op_type == node.op_type and len(candidate.input) > index and candidate.input[index] in names \
                and candidate.input[index] in initializers:
            value = numpy_helper.to_array(initializers[candidate.input[index]])
            if value.shape == layer.weight_shape and value.dtype.kind == "f":
                return value
        if node.op_type == "Gemm" and candidate.op_type == "MatMul" and candidate.input[1] in initializers:
            value = numpy_helper.to_array(initializers[candidate.input[1]])  # engine.model.gemm_to_matmul's layout
            alpha = _attribute(node, "alpha", 1.0)
            if _attribute(node, "transB", 0):
                value = value.T
            if value.shape == layer.weight_shape and value.dtype.kind == "f":
                return value / np.float32(alpha) if alpha != 1.0 else value
    return None
