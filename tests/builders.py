"""Small ONNX graphs built in memory for tests."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
import onnx
from onnx import TensorProto, helper, numpy_helper


def gemm_model(transB: int = 1, alpha: float = 1.0, beta: float = 1.0, seed: int = 0) -> onnx.ModelProto:
    """x[batch, 6] -> Gemm(W, b) -> Relu -> MatMul(V): a tiny graph with both weight layouts."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(4, 6) if transB else (6, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="fc", transB=transB, alpha=alpha, beta=beta),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "V"], ["y"], name="proj"),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b"),
            numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "V"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def padded_text_model(vocabulary: int = 50, hidden: int = 32, seed: int = 0) -> onnx.ModelProto:
    """input_ids and attention_mask [batch, sequence] -> per-token hidden states [batch, sequence, hidden].

    Like a Hugging Face export, it computes something at padded positions too (the mask only shifts them),
    and the padding token's embedding is large, so padded outputs are big numbers nobody reads."""
    rng = np.random.default_rng(seed)
    embedding = rng.normal(size=(vocabulary, hidden)).astype(np.float32)
    embedding[0] *= 20  # token 0 pads
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "input_ids"], ["embedded"], name="embed"),
            helper.make_node("Cast", ["attention_mask"], ["mask_float"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask_float", "last_axis"], ["mask_column"]),
            helper.make_node("Mul", ["mask_column", "shift"], ["shifted"]),
            helper.make_node("Add", ["embedded", "shifted"], ["mixed"]),
            helper.make_node("MatMul", ["mixed", "W"], ["hidden"], name="proj"),
        ],
        "padded_text",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "sequence", hidden])],
        [
            numpy_helper.from_array(embedding, "E"),
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_axis"),
            numpy_helper.from_array(rng.normal(size=hidden).astype(np.float32), "shift"),
            numpy_helper.from_array(rng.normal(size=(hidden, hidden)).astype(np.float32), "W"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def padded_sequences(rows: int = 64, sequence: int = 16, vocabulary: int = 50, seed: int = 1):
    """(input_ids, attention_mask): sentences of 2..sequence/2 real tokens, padded with token 0 to `sequence`."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, sequence // 2 + 1, rows)
    mask = (np.arange(sequence)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(1, vocabulary, (rows, sequence)), 0).astype(np.int64)
    return ids, mask


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def gray_png(value: int = 0, size: int = 8) -> bytes:
    """A size x size PNG of one gray level."""
    return png_bytes(np.full((size, size), value))


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def mlp_model(width: int, depth: int = 2, features: int = 8, classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """x[batch, features] -> `depth` MatMul+Relu layers of `width` -> MatMul to `classes` logits: a plain graph
    whose size the caller picks (about 4 * width**2 * (depth - 1) bytes)."""
    rng = np.random.default_rng(seed)
    sizes = [features, *[width] * depth, classes]
    nodes, initializers, current = [], [], "x"
    for index, (rows, columns) in enumerate(zip(sizes, sizes[1:])):
        weight = f"W{index}"
        initializers.append(numpy_helper.from_array(
            (rng.normal(size=(rows, columns)) / np.sqrt(rows)).astype(np.float32), weight))
        nodes.append(helper.make_node("MatMul", [current, weight], [f"h{index}"], name=f"fc{index}"))
        current = f"h{index}"
        if index < depth:
            nodes.append(helper.make_node("Relu", [current], [f"r{index}"], name=f"relu{index}"))
            current = f"r{index}"
    nodes[-1].output[0] = "logits"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
                              initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def model_folder_zip(proto: onnx.ModelProto, folder: str = "model", data_file: str = "model.onnx.data",
                     extra: dict[str, bytes] | None = None) -> bytes:
    """A zip of a model folder as a user packs one: folder/model.onnx with its weights in folder/`data_file`
    (external data), plus any `extra` members as given."""
    saved = onnx.ModelProto()
    saved.CopyFrom(proto)  # saving as external data empties the tensors of the proto it saves
    with tempfile.TemporaryDirectory() as scratch:
        onnx.save(saved, Path(scratch) / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                  location=data_file, size_threshold=0)
        members = {f"{folder}/model.onnx": (Path(scratch) / "model.onnx").read_bytes(),
                   f"{folder}/{data_file}": (Path(scratch) / data_file).read_bytes()}
    return zip_bytes({**members, **(extra or {})}, zipfile.ZIP_DEFLATED)
