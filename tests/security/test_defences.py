"""One test per defence in docs/security.md that no older test covers; each fails if its defence is removed.

The older tests that cover the other defences are listed by name in docs/security.md. Loaders are reached only
through engine's public names; limits are passed as the loaders' own parameters where they take one.
"""

from __future__ import annotations

import io
import pickle
import re
import struct
import tomllib
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

import engine.model
from engine import DataError, ModelError, load_dataset, load_model
from engine.workspace import Workspace
from engine.tensors import TensorSpec
from sample_models.catalog import SAMPLES
from tests.builders import gray_png, zip_bytes

PROJECT_ROOT = Path(__file__).resolve().parents[2]
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






def zip_lying_about_size(name: str, content: bytes, declared: int) -> bytes:
    """A one-member deflated zip whose local and central headers both declare `declared` unpacked bytes."""
    data = bytearray(zip_bytes({name: content}, zipfile.ZIP_DEFLATED))
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
    return "data_location: EXTERNAL" not in str(proto)  # the text format names every non-default location


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
    path = model_dir / "m.onnx"
    path.write_bytes(model_with_external_data_in("constant node", "weights.bin").SerializeToString())
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
    with pytest.raises(ModelError, match=r"upload\.onnx refers to external data files, which a single-file upload "
                                         r"cannot carry: upload the model's folder as one zip"):
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


# --- data files ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "cats/../../notes.txt", "/etc/cron.d/job", "C:/evil", "..\\x"])
def test_zip_member_paths_are_vetted_even_when_they_are_not_images(name):
    # The older test uses image names; a member the loader would skip must be refused just the same.
    with pytest.raises(DataError, match=r"images\.zip has an unsafe member path .* refusing the archive") as error:
        load_dataset(zip_bytes({"cats/a.png": gray_png(), name: b"not an image"}), IMAGE_INPUT, filename="images.zip")
    assert_one_line(error)


def test_a_tiny_png_declaring_a_huge_canvas_is_refused_before_decoding():
    # 8000 x 8000 is over the project's limit but under Pillow's own bomb check (89 million pixels).
    bomb = zip_bytes({"cats/a.png": png_declaring(8000, 8000)})
    assert len(bomb) < 1000
    with pytest.raises(DataError, match=rf"image 'cats/a\.png' in images\.zip is 8000x8000 pixels, "
                                        rf"over the {DEFAULT_MAX_IMAGE_PIXELS} pixel limit"):
        load_dataset(bomb, IMAGE_INPUT, filename="images.zip")


def peak_bytes_while(action) -> int:
    tracemalloc.start()
    try:
        action()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


INFLATED = 32 * 1024**2  # what a lying member really unpacks to; its headers declare a few hundred bytes


def test_an_image_member_lying_about_its_size_is_inflated_no_further_than_it_declares():
    image = gray_png()
    bomb = zip_lying_about_size("cats/a.png", image + bytes(INFLATED), declared=len(image))
    assert len(bomb) < INFLATED // 500

    def load():
        with pytest.raises(DataError, match=r"image 'cats/a\.png' in images\.zip cannot be decoded"):
            load_dataset(bomb, IMAGE_INPUT, filename="images.zip")

    assert peak_bytes_while(load) < 8 * 1024**2


def test_an_npz_member_lying_about_its_size_is_inflated_no_further_than_it_declares():
    array = npy(np.arange(16, dtype=np.float32).reshape(4, 4))
    # Declared: the array plus 8 KiB, so reading the header stays short of the declared end (and its checksum).
    bomb = zip_lying_about_size("x.npy", array + bytes(INFLATED), declared=len(array) + 8192)
    loaded = []
    peak = peak_bytes_while(lambda: loaded.append(load_dataset(bomb, FOUR_FEATURES, filename="data.npz")))
    assert peak < 8 * 1024**2
    assert loaded[0].inputs["x"].tolist() == np.arange(16).reshape(4, 4).tolist()


def test_parquet_cells_count_against_the_limit_even_when_they_encode_to_a_few_bytes():
    # A million equal values: run-length encoding stores them in a few KiB, and the footer's byte sizes agree;
    # only the cell count (8 bytes a cell once decoded) shows what reading them costs.
    data = parquet(pd.DataFrame({"x": np.zeros(1_000_000, np.float32)}), compression=None)
    footer = pq.ParquetFile(io.BytesIO(data)).metadata
    assert len(data) < 10_000 and footer.row_group(0).total_byte_size < 10_000
    with pytest.raises(DataError, match=r"data\.parquet would unpack to 8\.0 MB, over the 1\.0 MB limit"):
        load_dataset(data, ONE_FEATURE, filename="data.parquet", max_bytes=1024**2)


UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Tripwire:
    """Unpickling one leaves a trace in UNPICKLED."""

    def __reduce__(self):
        return (_record_unpickling, ("tripwire",))


def test_a_parquet_file_carrying_a_pickled_arrow_extension_type_is_read_without_unpickling():
    # pyarrow before 14.0.1 unpickled "arrow.py_extension_type" metadata on read (CVE-2023-47248).
    payload = pickle.dumps(Tripwire())
    field = pa.field("x", pa.binary(), metadata={b"ARROW:extension:name": b"arrow.py_extension_type",
                                                 b"ARROW:extension:metadata": payload})
    buffer = io.BytesIO()
    pq.write_table(pa.table({"x": pa.array([b"a", b"b"])}, schema=pa.schema([field])), buffer)
    UNPICKLED.clear()
    with pytest.raises(DataError, match=r"feature column 'x' in data\.parquet is not numeric"):
        load_dataset(buffer.getvalue(), ONE_FEATURE, filename="data.parquet")
    assert UNPICKLED == []
    pickle.loads(payload)  # the tripwire does fire when unpickled, so the check above means something
    assert UNPICKLED == ["tripwire"]


@pytest.mark.parametrize("filename", ["empty.npz", "empty.csv", "empty.parquet", "empty.pq", "empty.zip"])
def test_an_empty_data_file_is_a_one_line_data_error(filename, tmp_path):
    (tmp_path / filename).write_bytes(b"")
    for source in (tmp_path / filename, b""):
        with pytest.raises(DataError, match=re.escape(filename)) as error:
            load_dataset(source, FOUR_FEATURES if "zip" not in filename else IMAGE_INPUT, filename=filename)
        assert_one_line(error)


def test_an_empty_model_file_is_a_one_line_model_error(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    for source in (tmp_path / "empty.onnx", b""):
        with pytest.raises(ModelError, match=r"empty\.onnx") as error:
            load_model(source, name="empty.onnx")
        assert_one_line(error)


# --- the dashboard -------------------------------------------------------------------------------------------------


def test_the_dashboard_listens_on_loopback_bounds_uploads_and_shows_no_tracebacks():
    # It has no login: anyone who can reach the port can upload and read every shared item.
    config = tomllib.loads((PROJECT_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["maxUploadSize"] == 1024  # MiB: a 1 GB model fits; Streamlit refuses larger requests
    assert config["client"]["showErrorDetails"] == "none"  # an unexpected error's traceback stays on the server
    # `make run` passes --server.address $(HOST), which overrides the file.
    assert re.search(r"^HOST \?= 127\.0\.0\.1$", (PROJECT_ROOT / "Makefile").read_text(), re.MULTILINE)


# --- the workspace ---------------------------------------------------------------------------------------------------


def npz_holding(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


HOSTILE_MODELS = {
    "not ONNX": b"\x08\x01garbage",
    "external data in an upload": model_with_external_data_in("constant node", "weights.bin").SerializeToString(),
    "a sequence input": helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_value_info("x", helper.make_sequence_type_proto(helper.make_tensor_type_proto(1, [4])))],
        [helper.make_value_info("y", helper.make_sequence_type_proto(helper.make_tensor_type_proto(1, [4])))]),
        opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
}
HOSTILE_DATA = {  # each for the digits CNN: image float32[?, 1, 8, 8]
    "zip slip": ("images.zip", zip_bytes({"0/a.png": gray_png(), "../../escape.png": gray_png()})),
    "pixel bomb": ("images.zip", zip_bytes({"0/a.png": png_declaring(8000, 8000)})),
    "zip bomb": ("images.zip", zip_lying_about_size("0/a.png", gray_png(), declared=600 * 1024**2)),  # over 512 MiB
    "pickled object array": ("data.npz", npz_holding(image=np.zeros((1, 1, 8, 8), np.float32),
                                                     labels=np.array([Tripwire()], dtype=object))),
    "NaN pixels": ("data.npz", npz_holding(image=np.full((2, 1, 8, 8), np.nan, np.float32))),
    "CSV for an image model": ("data.csv", b"a,b\n1,2\n"),
}


def workspace_state(workspace: Workspace) -> tuple:
    """Every stored file (the database aside) and every library record, for before-and-after comparisons."""
    files = sorted(str(path.relative_to(workspace.root)) for path in workspace.root.rglob("*")
                   if path.is_file() and not path.name.startswith("quantscope.db"))
    return files, workspace.models(None), workspace.datasets(None)


@pytest.mark.parametrize("upload", HOSTILE_MODELS)
def test_a_hostile_model_upload_leaves_no_blob_and_no_row(upload, tmp_path):
    workspace = Workspace.open(tmp_path / "ws")
    workspace.add_model(DIGITS.model_path.read_bytes(), "digits.onnx", owner="someone")
    before = workspace_state(workspace)
    with pytest.raises(ModelError):
        workspace.add_model(HOSTILE_MODELS[upload], "hostile.onnx", owner="attacker")
    assert workspace_state(workspace) == before


@pytest.mark.parametrize("upload", HOSTILE_DATA)
def test_a_hostile_data_upload_leaves_no_blob_and_no_row(upload, tmp_path):
    workspace = Workspace.open(tmp_path / "ws")
    model = workspace.add_model(DIGITS.model_path.read_bytes(), "digits.onnx", owner="attacker")
    before = workspace_state(workspace)
    filename, data = HOSTILE_DATA[upload]
    UNPICKLED.clear()
    with pytest.raises(DataError):
        workspace.add_dataset(data, filename, model.id, owner="attacker")
    assert workspace_state(workspace) == before
    assert UNPICKLED == []
