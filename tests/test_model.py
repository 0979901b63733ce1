"""Model loading: checked, summarised, and safe with untrusted files."""

import io
import pickle
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.errors import ModelError
from engine.model import gemm_to_matmul, load_model
from sample_models.catalog import SAMPLES
from tests.builders import gemm_model


def test_summary_of_the_digits_sample():
    summary = load_model(SAMPLES["digits_cnn"].model_path).summary
    assert [s.describe() for s in summary.inputs] == ["image: float32[?, 1, 8, 8]"]
    assert [s.describe() for s in summary.outputs] == ["logits: float32[?, 10]"]
    assert summary.opset == 17
    assert summary.bytes == SAMPLES["digits_cnn"].model_path.stat().st_size
    assert [(layer.op_type, layer.weight_shape) for layer in summary.layers] == [
        ("Conv", (16, 1, 3, 3)),
        ("Conv", (32, 16, 3, 3)),
        ("Gemm", (64, 512)),
        ("Gemm", (10, 64)),
    ]
    assert summary.params == sum(int(np.prod(t.dims)) for t in load_model(SAMPLES["digits_cnn"].model_path).proto.graph.initializer)


def test_transformer_matmuls_with_constant_weights_are_quantizable():
    layers = load_model(SAMPLES["tiny_transformer"].model_path).summary.layers
    assert sum(layer.op_type == "MatMul" for layer in layers) >= 8


def test_bytes_and_path_give_the_same_summary():
    path = SAMPLES["breast_cancer_mlp"].model_path
    assert load_model(path.read_bytes()).summary == load_model(path).summary


@pytest.mark.parametrize(
    "data, message",
    [
        (b"certainly not protobuf \xff\xfe", "is not an ONNX model"),
    ],
)
def test_garbage_bytes_are_rejected(data, message):
    with pytest.raises(ModelError, match=message):
        load_model(data, name="upload.onnx")


def test_an_empty_file_is_said_to_be_empty(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelError) as raised:
        load_model(tmp_path / "empty.onnx")
    assert str(raised.value) == "empty.onnx is an empty file (0 bytes), not an ONNX model"


def _torch_zip() -> bytes:
    """The layout torch.save writes (a zip with a pickle inside), built without torch."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model/data.pkl", pickle.dumps({"weight": [1.0]}))
        archive.writestr("model/data/0", b"\0" * 16)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [_torch_zip(), pickle.dumps({"weight": [1.0]}, protocol=2), pickle.dumps({"weight": [1.0]}, protocol=5)],
    ids=["zip", "pickle-2", "pickle-5"],
)
def test_a_pytorch_file_is_named_as_such_and_never_unpickled(data, monkeypatch):
    monkeypatch.setattr(pickle, "loads", lambda *args, **kwargs: pytest.fail("a PyTorch file was unpickled"))
    with pytest.raises(ModelError) as raised:
        load_model(data, name="model.pt")
    message = str(raised.value)
    assert message.startswith("model.pt is a PyTorch file, not an ONNX model")
    assert "torch.onnx.export" in message and "quantscope from-torch" in message
    assert "\n" not in message


def test_a_zip_without_a_pickle_is_not_taken_for_pytorch():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("images/cat.png", b"png")
    with pytest.raises(ModelError, match="is not an ONNX model"):
        load_model(buffer.getvalue(), name="images.zip")


def test_a_model_failing_the_checker_is_rejected():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["missing"], ["y"])],
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    data = helper.make_model(graph).SerializeToString()
    with pytest.raises(ModelError, match="fails the ONNX checker"):
        load_model(data)


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="no model file"):
        load_model(tmp_path / "nope.onnx")


def _with_external_weight(location: str) -> onnx.ModelProto:
    model = gemm_model()
    tensor = next(t for t in model.graph.initializer if t.name == "W")
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    return model


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_outside_the_model_directory_is_refused(tmp_path, location):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 96)
    path = model_dir / "m.onnx"
    path.write_bytes(_with_external_weight(location).SerializeToString())
    with pytest.raises(ModelError, match="escapes the model's directory"):
        load_model(path)


def test_external_data_inside_the_model_directory_is_loaded(tmp_path):
    model = gemm_model()
    expected = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "W"))
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    loaded = load_model(tmp_path / "m.onnx")
    weight = next(t for t in loaded.proto.graph.initializer if t.name == "W")
    np.testing.assert_array_equal(numpy_helper.to_array(weight), expected)
    assert loaded.summary.bytes == (tmp_path / "m.onnx").stat().st_size + (tmp_path / "weights.bin").stat().st_size


def test_external_data_missing_file_and_uploads_with_external_data(tmp_path):
    path = tmp_path / "m.onnx"
    data = _with_external_weight("weights.bin").SerializeToString()
    path.write_bytes(data)
    with pytest.raises(ModelError, match="is missing"):
        load_model(path)
    with pytest.raises(ModelError, match="cannot carry"):
        load_model(data)


def test_unnamed_nodes_get_stable_names():
    model = gemm_model()
    for node in model.graph.node:
        node.name = ""
    loaded = load_model(model.SerializeToString())
    assert [n.name for n in loaded.proto.graph.node] == ["Gemm_0", "Relu_1", "MatMul_2"]
    assert [layer.name for layer in loaded.summary.layers] == ["Gemm_0", "MatMul_2"]


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("transB, alpha, beta", [(0, 1.0, 1.0), (1, 1.0, 1.0), (1, 0.5, 2.0)])
def test_gemm_to_matmul_keeps_outputs_and_names(transB, alpha, beta):
    model = gemm_model(transB=transB, alpha=alpha, beta=beta)
    rewritten = gemm_to_matmul(model)
    onnx.checker.check_model(rewritten)
    assert [n.op_type for n in rewritten.graph.node] == ["MatMul", "Add", "Relu", "MatMul"]
    assert rewritten.graph.node[0].name == "fc"
    x = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=1e-5, atol=1e-5)
