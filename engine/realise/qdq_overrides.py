"""A static recipe's node overrides in onnxruntime's QDQ graphs, and the check that an artifact honours them.

onnxruntime's quantize_static quantizes a tensor when any node next to it is quantized, and then every reader
takes the dequantized copy. So:

- keep_fp32: the node goes in `nodes_to_exclude`, which keeps its own arithmetic float; then `strip_qdq` takes
  the Q/DQ pairs off the activation tensors it reads and writes, which `nodes_to_exclude` leaves wherever a
  neighbour is quantized. Those tensors are float for every node that reads them. onnxruntime has no option
  that leaves one tensor unquantized, hence the pass over its output. A Relu or Clip that writes such a tensor
  is excluded too (FOLDABLE_OPS): onnxruntime folds it into its output's Q/DQ pair, which the pass removes.
- activation_bits: `width_overrides` writes TensorQuantOverrides in onnxruntime's mixed-precision form (the form
  its MixedPrecisionTensorQuantOverridesFixer writes): each tensor the node reads or writes is quantized at the
  node's width where it is made, and a "convert" gives the recipe's own width to the other quantized nodes that
  read it. The fixer itself works per tensor and spreads a width to every neighbour of a tensor; an override
  here is per node.

A tensor that reaches a node through ops onnxruntime quantizes with their input's scale (Reshape, Transpose,
Gather, Split, ...) was rounded where that chain started, so an override covers the whole chain
(`rounding_chain`).

`override_failures` reads an artifact back and lists what it does not honour; a native realiser that finds any
hands the recipe to the next realiser rather than let an override go quietly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import onnx
from onnxruntime.quantization import QuantType
from onnxruntime.quantization.operators.activation import QDQRemovableActivation
from onnxruntime.quantization.operators.direct_q8 import QDQDirect8BitOp
from onnxruntime.quantization.operators.gather import QDQGather
from onnxruntime.quantization.operators.pad import QDQPad
from onnxruntime.quantization.operators.split import QDQSplit
from onnxruntime.quantization.registry import QDQRegistry

from engine.model import LoadedModel
from engine.realise.calibration import Ranges
from engine.recipe import Recipe
from engine.text import quoted

QUANTIZE, DEQUANTIZE = "QuantizeLinear", "DequantizeLinear"
# Ops whose output onnxruntime quantizes with its data input's scale and zero point (quantize_output_same_as_input)
SCALE_SHARING_OPS = frozenset(
    op for op, quantizer in QDQRegistry.items() if issubclass(quantizer, (QDQDirect8BitOp, QDQGather, QDQSplit, QDQPad))
)
# Ops onnxruntime removes when their input is quantized asymmetrically: the output's Q/DQ pair clips as they do
FOLDABLE_OPS = frozenset(op for op, quantizer in QDQRegistry.items() if issubclass(quantizer, QDQRemovableActivation))
INTEGER_BITS = {onnx.TensorProto.INT8: 8, onnx.TensorProto.UINT8: 8, onnx.TensorProto.INT16: 16,
                onnx.TensorProto.UINT16: 16, onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}

TensorOverrides = dict[str, list[dict]]  # onnxruntime's TensorQuantOverrides


def _writers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {name: node for node in graph.node for name in node.output}


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    readers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    return readers


def rounding_chain(model: LoadedModel, tensor: str, writers: dict[str, onnx.NodeProto]) -> list[str]:
    """`tensor`, then the tensors it was copied from through scale-sharing ops, up to the one first rounded."""
    chain = [tensor]
    while (writer := writers.get(chain[-1])) is not None and writer.op_type in SCALE_SHARING_OPS \
            and writer.input[0] in model.float_activations:
        chain.append(writer.input[0])
    return chain


def touched_tensors(model: LoadedModel, node_names: Iterable[str]) -> set[str]:
    """The activation tensors overrides on `node_names` cover: what each node writes, what it reads and the
    scale-sharing chains those came through."""
    writers = _writers(model.proto.graph)
    wanted = set(node_names)
    touched = set()
    for node in (node for node in model.proto.graph.node if node.name in wanted):
        touched.update(name for name in node.output if name in model.float_activations)
        for name in (name for name in node.input if name in model.float_activations):
            touched.update(rounding_chain(model, name, writers))
    return touched


def width_overrides(model: LoadedModel, widths: dict[str, int], quantized_nodes: set[str], own_type: QuantType,
                    recipe_type: QuantType, ranges_at_width: Ranges, recipe_ranges: Ranges) -> TensorOverrides:
    """TensorQuantOverrides that give the nodes in `widths` (all at one width, not the recipe's) `own_type` on
    the tensors they read and write, and `recipe_type` to the other quantized nodes that read those.

    `quantized_nodes`: the nodes quantize_static quantizes (a convert is for them only). `ranges_at_width` and
    `recipe_ranges`: calibrated ranges at the two widths (the histogram calibrations weigh clipping against
    rounding, so theirs differ).
    """
    graph = model.proto.graph
    writers, readers = _writers(graph), _readers(graph)
    nodes = {node.name: node for node in graph.node}
    # tensor -> the nodes that must read it at the override's width: the node itself, and the scale-sharing
    # ops that carry it on to the node
    wide_readers: dict[str, set[str]] = {}
    for name in widths:
        node = nodes[name]
        for tensor in (t for t in node.input if t in model.float_activations):
            chain = rounding_chain(model, tensor, writers)
            wide_readers.setdefault(chain[0], set()).add(name)
            for copied, source in zip(chain, chain[1:]):
                wide_readers.setdefault(source, set()).add(writers[copied].name)
        for tensor in (t for t in node.output if t in model.float_activations):
            wide_readers.setdefault(tensor, set())
    overrides: TensorOverrides = {}
    for tensor, wide in sorted(wide_readers.items()):
        entry: dict = {"quant_type": own_type}
        if tensor in ranges_at_width and ranges_at_width[tensor] != recipe_ranges.get(tensor):
            entry["rmin"], entry["rmax"] = (np.float32(value) for value in ranges_at_width[tensor])
        others = {reader.name for reader in readers.get(tensor, []) if reader.name in quantized_nodes} - wide
        if others:
            entry["convert"] = {"quant_type": recipe_type, "recv_nodes": others}
        overrides[tensor] = [entry]
    return overrides


def strip_qdq(proto: onnx.ModelProto, tensors: Iterable[str]) -> None:
    """Take the Q/DQ nodes onnxruntime put on `tensors` (conversions included) out of `proto`: every node reads
    them float again."""
    graph = proto.graph
    writers, readers = _writers(graph), _readers(graph)
    removed: set[int] = set()
    renames: dict[str, str] = {}
    for tensor in tensors:
        start = tensor
        # A graph output keeps its name on the last DQ; the node that makes it writes a renamed tensor.
        while (dq := writers.get(start)) is not None and dq.op_type == DEQUANTIZE \
                and (q := writers.get(dq.input[0])) is not None and q.op_type == QUANTIZE:
            start = q.input[0]
        if start != tensor:
            renames[start] = tensor
        frontier = [start]
        while frontier:
            for q in (n for n in readers.get(frontier.pop(), []) if n.op_type == QUANTIZE and id(n) not in removed):
                removed.add(id(q))
                for dq in (n for n in readers.get(q.output[0], []) if n.op_type == DEQUANTIZE):
                    removed.add(id(dq))
                    if dq.output[0] != tensor:
                        renames[dq.output[0]] = tensor
                    frontier.append(dq.output[0])  # a conversion quantizes the dequantized copy again
    kept = [node for node in graph.node if id(node) not in removed]
    dropped_inputs = {name for node in graph.node if id(node) in removed for name in node.input[1:]}
    for node in kept:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    del graph.node[:]
    graph.node.extend(kept)
    still_read = {name for node in kept for name in node.input}
    unused = dropped_inputs - still_read  # scales and zero points of the removed pairs (a bias's DQ may share one)
    initializers = [t for t in graph.initializer if t.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    value_info = [v for v in graph.value_info if v.name not in renames]
    del graph.value_info[:]
    graph.value_info.extend(value_info)


def _bits(quantize: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> int:
    """A QuantizeLinear's width, from its zero point's type (without one, ONNX quantizes to uint8)."""
    if len(quantize.input) < 3 or not quantize.input[2]:
        return 8
    return INTEGER_BITS[initializers[quantize.input[2]].data_type]


def _roundings(name: str, writers: dict[str, onnx.NodeProto], initializers: dict[str, onnx.TensorProto]
               ) -> list[int]:
    """The integer widths the values of an artifact's tensor were rounded to since they were computed: its Q/DQ
    pairs, and those before the scale-sharing ops that copied it. A copy that reuses a stored weight's scale
    (a Gather of a quantized table) loses nothing more and is not counted."""
    steps: list[tuple[int, str]] = []  # (bits, scale name)
    weight_scale = None
    while (writer := writers.get(name)) is not None:
        if writer.op_type == DEQUANTIZE:
            q = writers.get(writer.input[0])
            if q is None or q.op_type != QUANTIZE:  # a stored weight: the chain starts at a constant
                weight_scale = writer.input[1]
                break
            steps.append((_bits(q, initializers), q.input[1]))
            name = q.input[0]
        elif writer.op_type in SCALE_SHARING_OPS:
            name = writer.input[0]
        else:
            break
    return [bits for bits, scale in steps if scale != weight_scale]


def override_failures(model: LoadedModel, recipe: Recipe, artifact: onnx.ModelProto) -> list[str]:
    """What `artifact` does not honour of the recipe's keep_fp32 and activation_bits overrides, one line each."""
    graph = artifact.graph
    writers, readers = _writers(graph), _readers(graph)
    initializers = {t.name: t for t in graph.initializer}
    built = {node.name: node for node in graph.node}
    original = {node.name: node for node in model.proto.graph.node}

    def quantized_at(tensor: str, lossless_scales: set[str]) -> set[int]:
        """Widths of the QuantizeLinear nodes that quantize `tensor` where it is made (a graph output's sits
        behind the DequantizeLinear that writes the output's name)."""
        quantizers = [q for q in readers.get(tensor, []) if q.op_type == QUANTIZE]
        if (dq := writers.get(tensor)) is not None and dq.op_type == DEQUANTIZE \
                and (q := writers.get(dq.input[0])) is not None and q.op_type == QUANTIZE:
            quantizers.append(q)
        return {_bits(q, initializers) for q in quantizers if q.input[1] not in lossless_scales}

    failures = []
    for name, override in recipe.overrides.items():
        if not (override.keep_fp32 or override.activation_bits):
            continue
        wanted = set() if override.keep_fp32 else {override.activation_bits}
        source, node = original[name], built.get(name)
        if node is not None:
            reads = [built_name for built_name, name_was in zip(node.input, source.input)
                     if name_was in model.float_activations]
            widths = {bits for tensor in reads for bits in _roundings(tensor, writers, initializers)}
            # An output quantized with the scale of the stored weight it copies (a Gather's table) loses nothing.
            weight_scales = {writer.input[1] for tensor in node.input if (writer := writers.get(tensor)) is not None
                             and writer.op_type == DEQUANTIZE and writer.input[0] in initializers}
            widths |= {bits for tensor in node.output for bits in quantized_at(tensor, weight_scales)}
        else:
            # onnxruntime folds a Relu or Clip into the Q/DQ pair of its output: that pair is the node now
            widths = quantized_at(source.output[0], set()) if source.op_type in FOLDABLE_OPS else set()
            if not widths:
                failures.append(f"node {quoted(name)} is missing from the artifact")
                continue
        if not widths <= wanted:
            got = ", ".join(f"{bits}-bit" for bits in sorted(widths))
            want = "float" if override.keep_fp32 else f"{override.activation_bits}-bit"
            failures.append(f"node {quoted(name)} reads or writes {got} tensors where the recipe asks {want}")
    return failures
