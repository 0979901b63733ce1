"""One test per defence in docs/security.md that no older test covers; each fails if its defence is removed.

The older tests that cover the other defences are listed by name in docs/security.md. Loaders are reached only
through engine's public names; limits are passed as the loaders' own parameters where they take one.
"""

from __future__ import annotations

import io
import pickle
import sqlite3
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import engine.model
from engine import DataError, ModelError, QuantscopeError, load_dataset, load_model
from engine.jobs import Workspace  # the one place this file names where Workspace lives
from engine.tensors import TensorSpec
from sample_models.catalog import SAMPLES
from tests.builders import gemm_model

MLP = SAMPLES["breast_cancer_mlp"]
DIGITS = SAMPLES["digits_cnn"]
IMAGE_INPUT = (TensorSpec("image", ("batch", 1, 8, 8), "float32"),)  # the digits CNN's input
FOUR_FEATURES = (TensorSpec("x", (None, 4), "float32"),)
ONE_FEATURE = (TensorSpec("x", (None, 1), "float32"),)
DEFAULT_MAX_MODEL_BYTES = 2 * 1024**3  # as docs/security.md states it
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


def assert_one_line(error: pytest.ExceptionInfo) -> None:
    message = str(error.value)
    assert message.strip() and "\n" not in message and len(message) < 300, message


# --- builders of hostile files -----------------------------------------------------------------------------------


def png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares a width x height grayscale canvas."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def png(value: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def zip_lying_about_size(name: str, content: bytes, declared: int) -> bytes:
    """A one-member deflated zip whose local and central headers both declare `declared` unpacked bytes."""
    data = bytearray(zip_of({name: content}, zipfile.ZIP_DEFLATED))
    struct.pack_into("<I", data, data.find(b"PK\x03\x04") + 22, declared)
    struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, declared)
    return bytes(data)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


def parquet(frame: pd.DataFrame, **options) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, **options)
    return buffer.getvalue()


def external_tensor(name: str, location: str, length: int = 4) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[length])
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    return tensor


def model_with_external_data_in(place: str, location: str) -> onnx.ModelProto:
    """y = x + c, with four floats in the external file `location` held by a Constant node, a subgraph's
    initializer, a Constant node's sparse value, or an (unused) sparse initializer."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), "c_indices")
    initializers, sparse_initializers = [], []
    if place == "constant node":
        make_c = helper.make_node("Constant", [], ["c"], name="const", value=external_tensor("c_value", location))
    elif place == "sparse constant":
        sparse = helper.make_sparse_tensor(external_tensor("c_value", location), indices, [4])
        make_c = helper.make_node("Constant", [], ["c"], name="const", sparse_value=sparse)
    elif place == "subgraph":
        then_branch = helper.make_graph([helper.make_node("Identity", ["w"], ["t"])], "then", [],
                                        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])],
                                        [external_tensor("w", location)])
        else_branch = helper.make_graph([helper.make_node("Identity", ["zeros"], ["e"])], "else", [],
                                        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [4])],
                                        [numpy_helper.from_array(np.zeros(4, np.float32), "zeros")])
        make_c = helper.make_node("If", ["condition"], ["c"], name="if", then_branch=then_branch,
                                  else_branch=else_branch)
        initializers = [numpy_helper.from_array(np.array(True), "condition")]
    elif place == "sparse initializer":
        sparse_initializers = [helper.make_sparse_tensor(external_tensor("s", location), indices, [4])]
        make_c = helper.make_node("Constant", [], ["c"], name="const", value=numpy_helper.from_array(np.zeros(4, np.float32)))
    else:
        raise ValueError(place)
    add = helper.make_node("Add", ["x", "c"], ["y"], name="add")
    graph = helper.make_graph([make_c, add], "g", [x], [y], initializers, sparse_initializer=sparse_initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def every_tensor_is_inline(proto: onnx.ModelProto) -> bool:
    text = str(proto)  # the text format names every data_location that is not the default
    return "EXTERNAL" not in text


# --- ONNX models --------------------------------------------------------------------------------------------------


class ReadTooEarly(BaseException):
    """Raised (and never caught by a loader's `except Exception`) when a file is read before its size is checked."""


def test_a_model_file_over_the_size_bound_is_refused_before_it_is_read(tmp_path, monkeypatch):
    huge = tmp_path / "huge.onnx"
    with open(huge, "wb") as file:
        file.truncate(DEFAULT_MAX_MODEL_BYTES + 1)  # sparse: no disk space used
    monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(ReadTooEarly(self)))
    with pytest.raises(ModelError, match=rf"huge\.onnx is {DEFAULT_MAX_MODEL_BYTES + 1} bytes; "
                                         rf"the limit is {DEFAULT_MAX_MODEL_BYTES} bytes") as error:
        load_model(huge)
    assert_one_line(error)


def test_uploaded_model_bytes_over_the_size_bound_are_refused_before_parsing(monkeypatch):
    # 2 GiB of bytes is too much for a test: lower the bound (a constant with no parameter) to the sample's size.
    data = MLP.model_path.read_bytes()
    monkeypatch.setattr(engine.model, "MAX_MODEL_BYTES", len(data) - 1)
    monkeypatch.setattr(onnx, "load_from_string", lambda *args: pytest.fail("the oversized upload was parsed"))
    with pytest.raises(ModelError, match=rf"upload\.onnx is {len(data)} bytes; the limit is {len(data) - 1} bytes"):
        load_model(data, name="upload.onnx")


def test_external_data_through_a_symlink_out_of_the_model_directory_is_refused(tmp_path):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    (model_dir / "weights.bin").symlink_to(tmp_path / "secret.bin")
    model = model_with_external_data_in("constant node", "weights.bin")
    model.graph.initializer.append(external_tensor("unused", "weights.bin"))
    path = model_dir / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match=r"external data location 'weights\.bin' escapes the model's directory"):
        load_model(path)


PLACES = ["constant node", "sparse constant", "subgraph", "sparse initializer"]


@pytest.mark.parametrize("place", PLACES)
def test_an_upload_cannot_carry_external_data_anywhere_in_the_model(place, tmp_path, monkeypatch):
    # The checker looks external files up relative to the working directory: put one there, so only the
    # upload rule can refuse the model.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.bin").write_bytes(np.ones(4, np.float32).tobytes())
    data = model_with_external_data_in(place, "weights.bin").SerializeToString()
    with pytest.raises(ModelError, match=r"upload\.onnx refers to external data files, which an upload cannot carry"):
        load_model(data, name="upload.onnx")


@pytest.mark.parametrize("place", PLACES)
def test_external_data_anywhere_in_the_model_must_stay_in_its_directory(place, tmp_path):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    path = model_dir / "m.onnx"
    path.write_bytes(model_with_external_data_in(place, "../secret.bin").SerializeToString())
    with pytest.raises(ModelError, match=r"external data location '\.\./secret\.bin' escapes the model's directory"):
        load_model(path)


@pytest.mark.parametrize("place", PLACES)
def test_external_data_anywhere_in_the_model_is_read_from_its_directory_and_inlined(place, tmp_path):
    (tmp_path / "weights.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    path = tmp_path / "m.onnx"
    path.write_bytes(model_with_external_data_in(place, "weights.bin").SerializeToString())
    loaded = load_model(path)
    assert every_tensor_is_inline(loaded.proto)  # a stored blob needs nothing beside it
    assert loaded.summary.bytes == path.stat().st_size + 16


@pytest.mark.parametrize("kind", ["sequence", "optional", "sequence output"])
def test_graph_inputs_and_outputs_must_be_tensors(kind):
    tensor = helper.make_tensor_type_proto(TensorProto.FLOAT, [4])
    wrapped = {"sequence": helper.make_sequence_type_proto, "optional": helper.make_optional_type_proto}
    if kind == "sequence output":
        node = helper.make_node("SequenceConstruct", ["x"], ["y"])
        inputs = [helper.make_value_info("x", tensor)]
        outputs = [helper.make_value_info("y", helper.make_sequence_type_proto(tensor))]
    else:
        node = helper.make_node("Identity", ["x"], ["y"])
        inputs = [helper.make_value_info("x", wrapped[kind](tensor))]
        outputs = [helper.make_value_info("y", wrapped[kind](tensor))]
    model = helper.make_model(helper.make_graph([node], "g", inputs, outputs), opset_imports=[helper.make_opsetid("", 18)])
    name = "y" if kind == "sequence output" else "x"
    role = "output" if kind == "sequence output" else "input"
    with pytest.raises(ModelError, match=rf"m\.onnx: {role} '{name}' is a {kind.split()[0]}, not a tensor") as error:
        load_model(model.SerializeToString(), name="m.onnx")
    assert_one_line(error)
