"""Load an untrusted ONNX model, check it, and summarise what can be quantized in it."""

from __future__ import annotations

import heapq
import os
import shutil
import tempfile
import weakref
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from engine.errors import ModelError
from engine.model_zip import check_model_zip, is_zip, unpack_model_zip
from engine.onnx_files import all_tensors, external_locations, needs_external_data, save_model, skeleton
from engine.tensors import TensorSpec, tensor_bytes
from engine.text import first_line, pytorch_refusal, quoted

FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
MAX_MODEL_BYTES = 2 * 1024**3  # protobuf's own ceiling for a single-file model
# A pickle of protocol 2 to 5 starts with the PROTO opcode and its number. An ONNX file cannot start so: its
# first byte is the tag of a low-numbered ModelProto field, never a two-byte tag.
PICKLE_STARTS = frozenset(bytes([0x80, protocol]) for protocol in range(2, 6))


@dataclass(frozen=True)
class Layer:
    """A node whose constant weight can be quantized."""

    name: str
    op_type: str
    weight: str  # initializer name
    weight_shape: tuple[int, ...]
    weight_bytes: int
    channel_axis: int  # the weight's axis that indexes output channels: per-channel scales run along it


@dataclass(frozen=True)
class ModelSummary:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    params: int
    bytes: int
    layers: tuple[Layer, ...]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LoadedModel:
    proto: onnx.ModelProto  # checked, external data loaded, every node named
    summary: ModelSummary
    source: str
    scratch: Path | None = None  # where `file` is written (None: the system's temporary directory)

    def serialized(self) -> bytes:
        return self.proto.SerializeToString()

    def copy(self) -> onnx.ModelProto:
        """A private copy of the graph: onnxruntime's quantizers modify the protos they are given."""
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        return proto

    @cached_property
    def float_activations(self) -> frozenset[str]:
        """Float tensors computed at run time (graph inputs and node outputs, not weights): what activation
        quantization can touch. Types come from shape inference, as onnxruntime's quantizers get theirs."""
        inferred = onnx.shape_inference.infer_shapes(self.proto)
        values = (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)
        weights = {t.name for t in self.proto.graph.initializer}
        return frozenset(value.name for value in values
                         if value.type.tensor_type.elem_type in FLOAT_TYPES and value.name not in weights)

    def activations_of(self, node: onnx.NodeProto) -> list[str]:
        """The float activation tensors `node` reads and writes, inputs first."""
        return [name for name in (*node.input, *node.output) if name in self.float_activations]

    @cached_property
    def needs_external_data(self) -> bool:
        """Whether this model, and every artifact built from it, is written with its weights beside the .onnx file
        (engine.onnx_files: past protobuf's 2 GiB, or a lowered threshold)."""
        return needs_external_data(self.proto)

    def save(self, path: Path) -> list[Path]:
        """Write the model (node names included) at `path`, with external data when it needs it; the files."""
        return save_model(self.proto, path, self.needs_external_data)

    @cached_property
    def file(self) -> Path:
        """The model as checked, written once to a private folder that lives as long as this object: what
        onnxruntime's tools read instead of a copy of the proto (each copy they are handed, they copy again)."""
        folder = tempfile.mkdtemp(prefix="quantscope-model-", dir=self.scratch)
        weakref.finalize(self, shutil.rmtree, folder, True)
        return self.save(Path(folder) / "model.onnx")[0]


def _weight_input(index: int):
    def find(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> str | None:
        if len(node.input) > index and node.input[index] in initializers:
            return node.input[index]
        return None

    return find


# op type -> where its quantizable constant weight sits. A registry, so a new op is one line.
QUANTIZABLE_OPS = {
    "Conv": _weight_input(1),
    "ConvTranspose": _weight_input(1),
    "Gemm": _weight_input(1),
    "MatMul": _weight_input(1),
    "Gather": _weight_input(0),  # an embedding table
}
# op type -> the axis of its weight that indexes output channels, in ONNX's layouts (Gemm: see _channel_axis)
CHANNEL_AXIS = {"Conv": 0, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1, "Gather": 0}


def _channel_axis(node: onnx.NodeProto) -> int:
    if node.op_type == "Gemm":
        trans_b = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return CHANNEL_AXIS[node.op_type]


def load_model(source: str | Path | bytes, *, name: str | None = None, scratch: Path | None = None) -> LoadedModel:
    """Read, check and summarise an ONNX model from a path or the bytes of an upload: an .onnx file, or a zip of a
    model folder (its .onnx file and external-data files, engine.model_zip) unpacked meanwhile under `scratch`, the
    one place a load may write (without it, a zip is refused); LoadedModel.file is written there too.

    External data is read only from files inside the model's own directory; a bare .onnx upload (bytes) cannot
    carry external data at all.
    """
    if not isinstance(source, bytes | bytearray) and not Path(source).is_file():
        raise ModelError(f"no model file at {source}")
    if is_zip(source):
        label = name or (Path(source).name if not isinstance(source, bytes | bytearray) else "uploaded model")
        if scratch is None:
            check_model_zip(source, label)  # a PyTorch file or no model at all is said as such
            raise ModelError(f"{label} is a zip: a zipped model folder is unpacked in a workspace, so add it to one "
                             "(the dashboard, or quantscope sweep)")
        with tempfile.TemporaryDirectory(prefix="quantscope-model-", dir=scratch) as folder:
            return load_model(unpack_model_zip(source, Path(folder), label), name=label, scratch=scratch)
    if isinstance(source, bytes | bytearray):
        label = name or "uploaded model"
        if len(source) > MAX_MODEL_BYTES:
            raise ModelError(f"{label} is {len(source)} bytes; the limit is {MAX_MODEL_BYTES} bytes")
        proto = _parse(bytes(source), label)
        if external_locations(proto):
            raise ModelError(f"{label} refers to external data files, which a single-file upload cannot carry: "
                             "upload the model's folder as one zip")
        size = len(source)
    else:
        path = Path(source)
        label = name or path.name
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelError(f"{label} is {size} bytes; the limit is {MAX_MODEL_BYTES} bytes")
        proto = _parse(path.read_bytes(), label)
        size += _load_external_data(proto, path.parent.resolve(), label)
    _check(proto, label)
    _require_tensor_io(proto, label)
    ensure_node_names(proto)
    return LoadedModel(proto=proto, summary=summarise(proto, size), source=label, scratch=scratch)


def _parse(data: bytes, label: str) -> onnx.ModelProto:
    if not data:  # protobuf reads no bytes as an empty model, which the checker then calls a bad ir_version
        raise ModelError(f"{label} is an empty file (0 bytes), not an ONNX model")
    if _is_pytorch_file(data):
        raise ModelError(pytorch_refusal(label))
    try:
        return onnx.load_from_string(data)
    except Exception as error:  # protobuf raises several types for garbage input
        raise ModelError(f"{label} is not an ONNX model ({type(error).__name__})") from None


def _is_pytorch_file(data: bytes) -> bool:
    """Before PyTorch 1.6, torch.save wrote a bare pickle: only its first bytes are looked at, nothing is unpickled.
    (Its zip, holding a data.pkl, is told apart by engine.model_zip.)"""
    return data[:2] in PICKLE_STARTS


def _external_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [tensor for tensor in all_tensors(proto) if tensor.data_location == onnx.TensorProto.EXTERNAL]


def _load_external_data(proto: onnx.ModelProto, model_dir: Path, label: str) -> int:
    """Load external tensors after checking each location stays inside model_dir; returns their bytes."""
    total = 0
    locations = external_locations(proto)
    if not all(isinstance(location, str) for location in locations):  # protobuf hands undecodable text over as bytes
        raise ModelError(f"{label}: an external data location is not valid UTF-8 text")
    for location in sorted(locations):
        shown = quoted(location)
        try:
            target = (model_dir / location).resolve()
            escapes = os.path.isabs(location) or not target.is_relative_to(model_dir)
            present = not escapes and target.is_file()
        except (OSError, ValueError):  # a NUL byte, or a name longer than the file system allows
            raise ModelError(f"{label}: external data location {shown} is not a usable file name") from None
        if escapes:
            raise ModelError(f"{label}: external data location {shown} escapes the model's directory")
        if not present:
            raise ModelError(f"{label}: external data file {shown} is missing")
        total += target.stat().st_size
    try:
        for tensor in _external_tensors(proto):  # onnx's own model-wide loader skips sparse tensors
            onnx.external_data_helper.load_external_data_for_tensor(tensor, str(model_dir))
    except Exception as error:
        raise ModelError(f"{label}: external data could not be read ({error})") from None
    return total


def _check(proto: onnx.ModelProto, label: str) -> None:
    """The ONNX checker plus strict shape inference; the inferred shapes are not kept, so the model's bytes stay its
    own. Both run on `_without_large_weights(proto)`: given the model itself they would serialize it, copying every
    weight twice, and refuse one past protobuf's 2 GiB."""
    try:
        skeleton = _without_large_weights(proto)  # (reading a text field that is not UTF-8 raises here)
        onnx.checker.check_model(skeleton, full_check=False)
        onnx.shape_inference.infer_shapes(skeleton, check_type=True, strict_mode=True)
    except Exception as error:
        raise ModelError(f"{label} fails the ONNX checker: {first_line(error)}") from None


# A tensor this large is a weight, never a shape or an axis list whose values shape inference reads.
SET_ASIDE_BYTES = 64 * 1024


def _without_large_weights(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model whose main-graph initializers above SET_ASIDE_BYTES are graph inputs of the same type and
    shape instead: all the checker and shape inference need of them. The weights themselves are not copied."""
    checked = skeleton(proto)
    listed = {value.name for value in proto.graph.input}
    for tensor in proto.graph.initializer:
        if tensor_bytes(tensor) <= SET_ASIDE_BYTES:
            checked.graph.initializer.append(tensor)
        elif tensor.name not in listed:
            checked.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    return checked


def graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: graph inputs that are not initializers (older exporters list weights as inputs)."""
    initializer_names = {t.name for t in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in initializer_names]


def _require_tensor_io(proto: onnx.ModelProto, label: str) -> None:
    """Data files feed tensors and metrics read tensors: a sequence, map or optional input or output cannot be fed."""
    for role, values in (("input", graph_inputs(proto)), ("output", proto.graph.output)):
        for value in values:
            kind = value.type.WhichOneof("value")
            if kind != "tensor_type":
                what = kind.removesuffix("_type").replace("_", " ") if kind else "value without a type"
                raise ModelError(f"{label}: {role} '{value.name}' is a {what}, not a tensor; "
                                 "only tensor inputs and outputs are supported")


def opset_version(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def quantizable_layers(proto: onnx.ModelProto) -> list[Layer]:
    initializers = {t.name: t for t in proto.graph.initializer}
    layers = []
    for node in proto.graph.node:
        find_weight = QUANTIZABLE_OPS.get(node.op_type)
        weight = find_weight(node, initializers) if find_weight else None
        if weight is None:
            continue
        tensor = initializers[weight]
        if tensor.data_type not in FLOAT_TYPES:
            continue
        shape = tuple(int(d) for d in tensor.dims)
        layers.append(Layer(node.name, node.op_type, weight, shape, tensor_bytes(tensor), _channel_axis(node)))
    return layers


def summarise(proto: onnx.ModelProto, size_bytes: int) -> ModelSummary:
    params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    return ModelSummary(
        inputs=tuple(TensorSpec.from_value_info(v) for v in graph_inputs(proto)),
        outputs=tuple(TensorSpec.from_value_info(v) for v in proto.graph.output),
        opset=opset_version(proto),
        params=params,
        bytes=size_bytes,
        layers=tuple(quantizable_layers(proto)),
    )


def ensure_node_names(proto: onnx.ModelProto) -> None:
    """Give every unnamed node a stable name: overrides and reports refer to layers by node name."""
    taken = {node.name for node in proto.graph.node if node.name}
    for index, node in enumerate(proto.graph.node):
        if not node.name:
            candidate = f"{node.op_type}_{index}"
            while candidate in taken:
                candidate += "_"
            node.name = candidate
            taken.add(candidate)


def gemm_to_matmul(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite Gemm(A, W, b) with constant W as MatMul(A, W') + Add(b').

    onnxruntime's weight-only quantizer (MatMulNBits) only handles MatMul. The MatMul keeps the Gemm's
    node name so per-layer overrides still apply; alpha, beta and transB are folded into the constants.
    """
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    initializers = {t.name: t for t in model.graph.initializer}
    new_nodes = []
    for node in model.graph.node:
        if not _gemm_is_foldable(node, initializers):
            new_nodes.append(node)
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight = numpy_helper.to_array(initializers[node.input[1]])
        weight = (weight.T if attrs.get("transB", 0) else weight) * attrs.get("alpha", 1.0)
        weight_name = f"{node.name}_matmul_weight"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight, np.float32), weight_name))
        has_bias = len(node.input) > 2 and bool(node.input[2])
        product = f"{node.name}_matmul_out" if has_bias else node.output[0]
        new_nodes.append(onnx.helper.make_node("MatMul", [node.input[0], weight_name], [product], name=node.name))
        if has_bias:
            bias_name, beta = node.input[2], attrs.get("beta", 1.0)
            if beta != 1.0:
                bias = numpy_helper.to_array(initializers[bias_name]) * beta
                bias_name = f"{node.name}_bias_scaled"
                model.graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), bias_name))
            new_nodes.append(onnx.helper.make_node("Add", [product, bias_name], [node.output[0]], name=f"{node.name}_bias"))
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    drop_unused_initializers(model)
    return model


def _gemm_is_foldable(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    """A float Gemm with a constant weight, no transA, and a bias that is constant if beta scales it."""
    if node.op_type != "Gemm" or node.input[1] not in initializers:
        return False
    if initializers[node.input[1]].data_type != onnx.TensorProto.FLOAT:
        return False
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0):
        return False
    has_bias = len(node.input) > 2 and bool(node.input[2])
    return not has_bias or attrs.get("beta", 1.0) == 1.0 or node.input[2] in initializers


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def topological_sort(proto: onnx.ModelProto) -> None:
    """Reorder nodes so producers come before consumers, as ONNX requires (rewrites append nodes at the end).

    Nodes that are already in order keep it: among the nodes whose inputs are ready, the earliest goes first."""
    nodes = list(proto.graph.node)
    available = {i.name for i in proto.graph.input} | {t.name for t in proto.graph.initializer} | {""}
    missing = []
    waiting: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        needed = {name for name in node.input if name not in available}
        missing.append(len(needed))
        for name in needed:
            waiting.setdefault(name, []).append(index)
    ready = [index for index, count in enumerate(missing) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for name in nodes[index].output:
            for consumer in waiting.pop(name, []):
                missing[consumer] -= 1
                if missing[consumer] == 0:
                    heapq.heappush(ready, consumer)
    if len(order) != len(nodes):
        raise ValueError("graph has a cycle or a node input that nothing produces")
    ordered = []
    for index in order:
        copy = onnx.NodeProto()
        copy.CopyFrom(nodes[index])
        ordered.append(copy)
    del proto.graph.node[:]
    proto.graph.node.extend(ordered)
