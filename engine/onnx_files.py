"""An ONNX model on disk: one .onnx file, or one .onnx file and the external-data file(s) it names beside it.

Protobuf cannot serialize a message past 2 GiB, so a model whose weights would take more is written with its large
weights in a file beside it (`<name>.onnx.data`); `external_data_threshold` says where that begins (lowered through
QUANTSCOPE_EXTERNAL_DATA_ABOVE, e.g. for a test on a small model). Either way `save_model` writes tensor by tensor,
so writing a model takes about two of its largest tensors in memory, not two copies of the model, and never
changes the proto it is given (onnx.save with external data would empty its tensors).

The files of a model are `model_files(path)`: its .onnx file and the external files its tensors name, in its own
directory. `files_bytes` is what they weigh together; `copy_model` copies them, keeping their names (the
locations inside the .onnx file are relative to it); `packed` zips them, so the model loads from wherever the zip is
unpacked.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import onnx
from onnx import numpy_helper

from engine.tensors import tensor_bytes

THRESHOLD_VARIABLE = "QUANTSCOPE_EXTERNAL_DATA_ABOVE"
# protobuf's ceiling (2 GiB) less room for what a quantizer adds (scales, zero points, casts)
DEFAULT_THRESHOLD = 2**31 - 2**26
EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay in the .onnx file, as onnx's own converter keeps them
DATA_SUFFIX = ".data"
GRAPH_FIELD, INITIALIZER_FIELD = 7, 5  # ModelProto.graph, GraphProto.initializer
LENGTH_DELIMITED = 2


def external_data_threshold() -> int:
    """Models estimated above this many bytes are written with external data."""
    value = os.environ.get(THRESHOLD_VARIABLE, "").strip()
    return int(value) if value else DEFAULT_THRESHOLD


def estimated_bytes(proto: onnx.ModelProto) -> int:
    """About what the model serializes to: its main graph's initializers plus the rest (counted without copying
    the weights)."""
    weights = sum(tensor_bytes(tensor) for tensor in proto.graph.initializer)
    return weights + len(skeleton(proto).SerializeToString())


def needs_external_data(proto: onnx.ModelProto) -> bool:
    return estimated_bytes(proto) > external_data_threshold()


def save_model(proto: onnx.ModelProto, path: Path, external: bool | None = None) -> list[Path]:
    """Write the model at `path`, with its large weights in `<path>.data` when `external` (default: when it
    needs_external_data); the files written."""
    path = Path(path)
    external = needs_external_data(proto) if external is None else external
    data_path = path.with_name(path.name + DATA_SUFFIX)
    without_weights = skeleton(proto)
    with open(path, "wb") as out, (open(data_path, "wb") if external else nullcontext()) as data:
        if external:
            for tensor in proto.graph.initializer:
                without_weights.graph.initializer.append(_written_out(tensor, data, data_path.name)
                                                         if _goes_out(tensor) else tensor)
            out.write(without_weights.SerializeToString())
        else:
            _write_inline(out, without_weights, proto.graph.initializer)
    return [path, data_path] if external else [path]


def skeleton(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model without its main graph's initializers, built without copying them."""
    skeleton = onnx.ModelProto()
    _copy_fields(proto, skeleton, skip="graph")
    _copy_fields(proto.graph, skeleton.graph, skip="initializer")
    return skeleton


def _copy_fields(source, target, skip: str) -> None:
    """Copy every field of the protobuf message `source` into `target` but the one named `skip`."""
    for descriptor, value in source.ListFields():
        if descriptor.name == skip:
            continue
        if descriptor.is_repeated:
            getattr(target, descriptor.name).extend(value)
        elif descriptor.type == descriptor.TYPE_MESSAGE:
            getattr(target, descriptor.name).CopyFrom(value)
        else:
            setattr(target, descriptor.name, value)


def _goes_out(tensor: onnx.TensorProto) -> bool:
    return (tensor.data_location != onnx.TensorProto.EXTERNAL and tensor.data_type != onnx.TensorProto.STRING
            and tensor_bytes(tensor) >= EXTERNAL_MIN_BYTES)


def _written_out(tensor: onnx.TensorProto, data, location: str) -> onnx.TensorProto:
    """Append the tensor's bytes to the open data file; the tensor that points there instead."""
    raw = tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()
    offset = data.tell()
    data.write(raw)
    pointer = onnx.TensorProto(name=tensor.name, dims=tensor.dims, data_type=tensor.data_type,
                               data_location=onnx.TensorProto.EXTERNAL, doc_string=tensor.doc_string)
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
        pointer.external_data.add(key=key, value=value)
    return pointer


def _write_inline(out, skeleton: onnx.ModelProto, initializers) -> None:
    """One .onnx file, the initializers serialized one at a time: protobuf reads the fields of a message in any
    order, so the graph's initializers may follow its other fields, and the graph the model's."""
    graph = skeleton.graph.SerializeToString()
    sizes = [tensor.ByteSize() for tensor in initializers]
    graph_bytes = len(graph) + sum(len(_tag(INITIALIZER_FIELD)) + len(_varint(size)) + size for size in sizes)
    skeleton.ClearField("graph")
    out.write(skeleton.SerializeToString())
    out.write(_tag(GRAPH_FIELD) + _varint(graph_bytes) + graph)
    for tensor, size in zip(initializers, sizes):
        out.write(_tag(INITIALIZER_FIELD) + _varint(size))
        out.write(tensor.SerializeToString())


def _tag(field: int) -> bytes:
    return _varint(field << 3 | LENGTH_DELIMITED)


def _varint(value: int) -> bytes:
    encoded = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        encoded.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(encoded)


# -- a model's files ---------------------------------------------------------------------------------------------


def all_tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor the model holds: initializers (sparse ones too) and node attributes, in subgraphs and functions.

    Any of them can point at an external file, not only the main graph's initializers.
    """

    def in_sparse(sparse: onnx.SparseTensorProto) -> Iterator[onnx.TensorProto]:
        yield sparse.values
        yield sparse.indices

    def in_graph(graph: onnx.GraphProto | onnx.FunctionProto) -> Iterator[onnx.TensorProto]:
        if isinstance(graph, onnx.GraphProto):
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield from in_sparse(sparse)
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                if attribute.HasField("sparse_tensor"):
                    yield from in_sparse(attribute.sparse_tensor)
                for sparse in attribute.sparse_tensors:
                    yield from in_sparse(sparse)
                if attribute.HasField("g"):
                    yield from in_graph(attribute.g)
                for subgraph in attribute.graphs:
                    yield from in_graph(subgraph)

    yield from in_graph(proto.graph)
    for function in proto.functions:
        yield from in_graph(function)


def external_locations(proto: onnx.ModelProto) -> set[str]:
    """The external file locations the model's tensors name."""
    return {
        next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        for tensor in all_tensors(proto) if tensor.data_location == onnx.TensorProto.EXTERNAL
    }


def model_files(path: Path) -> list[Path]:
    """The .onnx file and the external-data files its tensors name, relative to its directory. For our own files:
    an untrusted model's locations are checked by engine.model.load_model. Ours keep external data, when they have
    some, in `<name>.data` (save_model and onnxruntime's tools both name it so): a file without one beside it is not
    parsed, which would read every weight it holds."""
    path = Path(path)
    if not path.with_name(path.name + DATA_SUFFIX).exists():
        return [path]
    return [path, *(path.parent / location for location in sorted(external_locations(
        onnx.load(path, load_external_data=False))))]


def has_external_data(path: Path) -> bool:
    return len(model_files(path)) > 1


def files_bytes(path: Path) -> int:
    """What the model weighs on disk: its .onnx file and its external-data files."""
    return sum(file.stat().st_size for file in model_files(path))


def copy_model(source: Path, directory: Path, name: str | None = None) -> Path:
    """Copy the model's files into `directory`, the .onnx file as `name` (default: its own) and its data file as
    `<name>.data`, the locations inside the .onnx file renamed to match; the copy's .onnx path."""
    main, *data = model_files(source)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / (name or main.name)
    if not data:
        shutil.copyfile(main, target)
        return target
    renamed = {file.relative_to(main.parent).as_posix(): target.name + DATA_SUFFIX if file.name == main.name +
               DATA_SUFFIX else file.relative_to(main.parent).as_posix() for file in data}
    pointers = onnx.load(main, load_external_data=False)  # small: the weights are in the data files
    for tensor in all_tensors(pointers):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = renamed[entry.value]
    onnx.save(pointers, target)
    for old, new in renamed.items():
        (directory / new).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(main.parent / old, directory / new)
    return target


def packed(path: Path) -> bytes:
    """A zip (stored: weights hardly compress) of the model's files, which loads from wherever it is unpacked."""
    main = Path(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for file in model_files(main):
            archive.write(file, file.relative_to(main.parent).as_posix())
    return buffer.getvalue()
