"""Models made of the fp32 graph and some quantization points, one per cell of the table.

`compose(fp32, points)` bakes the points in: the fp32 graph with each point's replacement standing in for its
tensor, a static graph that onnxruntime optimises like any artifact (fusing the QDQ pairs around an op into an
integer kernel where it can). With every point of an artifact it computes exactly what the artifact computes
(tests/test_sensitivity.py checks it bit for bit), so a cell's model is the artifact with points taken out, or
the fp32 model with points put in.

Why not one switchable graph (Where(switch, quantized, fp32) at every point, as AIMET toggles its quantizers)?
onnxruntime then runs another float program: run-time weights lose its pre-packed and NCHWc kernels, and a Where
between ops stops its GELU, Gemm and QDQ fusions. On tiny_transformer that moved one-point outputs by up to 0.11
in a logit (cosine 6e-6): rounding at one quantizer shifts, and the cell is not the artifact's number any more.
The time a cell costs is in calibrating and quantizing, which engine.sensitivity.compute does once per candidate.

Names: a replaced tensor keeps its name (so graph outputs and consumers stay as they were) and its fp32 value
is renamed `<name>__fp32`; a replaced graph input keeps its name and consumers read `<name>__quantized`.
Everything a replacement brings is prefixed `quantscope/<point>.<replacement>/`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

from engine.model import drop_unused_initializers, opset_version, topological_sort
from engine.sensitivity.points import ACTIVATIONS, Point

FP32_SUFFIX = "__fp32"
QUANTIZED_SUFFIX = "__quantized"
_INT4_IR_VERSION = 10  # the first IR version with 4-bit tensors
_NARROW_TYPES = (TensorProto.INT4, TensorProto.UINT4)
# ONNX's QuantizeLinear and DequantizeLinear take 16- and 4-bit integers from opset 21 on. quantize_static converts
# the whole model to opset 21 for 16-bit activations; the fp32 graph a cell starts from keeps its own opset, and its
# pairs move to the com.microsoft domain instead, as onnxruntime's quantizer does with UseQDQContribOps: the same
# kernels, so a composed model still computes exactly what the artifact computes.
_OPSET21_QDQ_TYPES = (TensorProto.INT16, TensorProto.UINT16, *_NARROW_TYPES)
_OPSET21 = 21
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class Composed:
    proto: onnx.ModelProto
    sources: dict[str, str]  # replaced tensor -> the name of its fp32 value here
    finals: dict[str, str]  # replaced tensor -> the name its consumers read here

    def name(self, tensor: str) -> str:
        """What `tensor` of the fp32 graph is called here: its quantized value where a point replaced it."""
        return self.finals.get(tensor, tensor)

    def observed(self, point: Point) -> tuple[str | None, str]:
        """(fp32 value, quantized value) of the tensor `point`'s output SQNR compares, as named here. The fp32 value
        of a node's output is not in this graph (None): a probe of the fp32 node computes it."""
        if point.kind == ACTIVATIONS:
            return self.sources[point.observed], self.finals[point.observed]
        if point.replaces_node_output:
            return None, self.finals[point.observed]
        return None, self.sources.get(point.observed, point.observed)

    def serialized(self) -> bytes:
        return self.proto.SerializeToString()


def compose(fp32: onnx.ModelProto, points: Sequence[Point], keep: Sequence[str] = ()) -> Composed:
    """The fp32 graph with `points` quantized; `keep` names tensors to leave computable (to fetch them)."""
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    inputs = {v.name for v in graph.input} - set(initializers)
    producers = {name: node for node in graph.node for name in node.output}
    sources: dict[str, str] = {}
    finals: dict[str, str] = {}
    own: dict[str, set[int]] = {}  # replaced graph input -> ids of its replacement's nodes
    added: list[onnx.NodeProto] = []
    contrib_qdq = opset_version(model) < _OPSET21
    for index, point in enumerate(points):
        for part, replacement in enumerate(point.replacements):
            original = replacement.original
            if original in finals:
                raise ValueError(f"two points replace {original!r}")
            prefix = f"quantscope/{index}.{part}/"
            renamed = {name: prefix + name for name in replacement.internal}
            is_input = original in inputs
            source = original if is_input else original + FP32_SUFFIX
            final = original + QUANTIZED_SUFFIX if is_input else original
            renamed[replacement.output] = final
            reads = {**renamed, original: source}
            copies = []
            for node in replacement.nodes:
                copy = onnx.NodeProto()
                copy.CopyFrom(node)
                copy.name = prefix + (node.name or node.output[0])
                copy.input[:] = [reads.get(name, name) for name in node.input]
                copy.output[:] = [renamed.get(name, name) for name in node.output]
                if contrib_qdq and _needs_opset21(node, replacement):
                    copy.domain = _MS_DOMAIN
                copies.append(copy)
            for tensor in replacement.initializers:
                copy = onnx.TensorProto()
                copy.CopyFrom(tensor)
                copy.name = renamed[tensor.name]
                graph.initializer.append(copy)
            if is_input:
                own[original] = {id(copy) for copy in copies}
            elif original in initializers:  # the fp32 value moves aside; the name now means the replacement
                initializers[original].name = source
            else:
                producer = producers[original]
                producer.output[:] = [source if name == original else name for name in producer.output]
            added.extend(copies)
            sources[original], finals[original] = source, final
    for original, nodes in own.items():  # consumers of a replaced graph input read the replacement
        for node in [*graph.node, *added]:
            if id(node) not in nodes:
                node.input[:] = [finals[original] if name == original else name for name in node.input]
    graph.node.extend(added)
    _imports(model, added, points)
    _drop_dead_nodes(model, set(keep))
    topological_sort(model)
    drop_unused_initializers(model)
    return Composed(model, sources, finals)


def _drop_dead_nodes(model: onnx.ModelProto, keep: set[str]) -> None:
    """Remove nodes whose outputs nothing reads (a replaced node's fp32 original), unless their output is kept."""
    graph = model.graph
    while True:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output} | keep
        live = [node for node in graph.node if any(name in read for name in node.output)]
        if len(live) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(live)


def _needs_opset21(node: onnx.NodeProto, replacement) -> bool:
    """A QuantizeLinear or DequantizeLinear of the default domain whose integers (its zero point's type, else a
    dequantized constant's) ONNX supports from opset 21 on only."""
    if node.op_type not in _QDQ_OPS or node.domain not in ("", "ai.onnx"):
        return False
    constants = {t.name: t.data_type for t in replacement.initializers}
    has_zero_point = len(node.input) > 2 and node.input[2]
    integer = constants.get(node.input[2] if has_zero_point else node.input[0])
    return integer in _OPSET21_QDQ_TYPES


def _imports(model: onnx.ModelProto, added: Sequence[onnx.NodeProto], points: Sequence[Point]) -> None:
    """Opsets for the domains the added nodes use (onnxruntime's com.microsoft QDQ and MatMulNBits are version 1),
    and an IR version that has 4-bit tensors when they hold some."""
    domains = {node.domain for node in added}
    present = {o.domain for o in model.opset_import}
    for domain in sorted(domains - present - {"", "ai.onnx"}):
        model.opset_import.append(helper.make_opsetid(domain, 1))
    if any(t.data_type in _NARROW_TYPES for point in points for r in point.replacements for t in r.initializers):
        model.ir_version = max(model.ir_version, _INT4_IR_VERSION)
