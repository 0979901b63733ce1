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


def masked_attention_model(vocabulary: int = 50, hidden: int = 16, sequence: int = 16, seed: int = 0
                           ) -> onnx.ModelProto:
    """input_ids and attention_mask [batch, sequence] -> one self-attention layer's hidden states.

    The mask is added to the attention scores as Hugging Face exports do: Where(mask, 0, float32 min). An
    activation quantizer that sees that tensor keeps no resolution for the real scores."""
    rng = np.random.default_rng(seed)

    def weight(name: str, shape: tuple[int, ...], scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32), name)

    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "input_ids"], ["x"], name="embed"),
            *(helper.make_node("MatMul", ["x", f"W{part}"], [part], name=part) for part in ("query", "key", "value")),
            helper.make_node("Transpose", ["key"], ["key_t"], perm=[0, 2, 1], name="key_t"),
            helper.make_node("MatMul", ["query", "key_t"], ["scores"], name="scores"),
            helper.make_node("Cast", ["attention_mask"], ["mask_bool"], to=TensorProto.BOOL, name="mask_bool"),
            helper.make_node("Unsqueeze", ["mask_bool", "row_axis"], ["mask_row"], name="mask_row"),
            helper.make_node("Where", ["mask_row", "zero", "float_min"], ["additive_mask"], name="mask_where"),
            helper.make_node("Add", ["scores", "additive_mask"], ["masked"], name="mask_add"),
            helper.make_node("Softmax", ["masked"], ["probs"], axis=-1, name="softmax"),
            helper.make_node("MatMul", ["probs", "value"], ["context"], name="context"),
            helper.make_node("MatMul", ["context", "Wout"], ["hidden"], name="out"),
        ],
        "masked_attention",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", sequence]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", sequence])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", sequence, hidden])],
        [
            weight("E", (vocabulary, hidden), 1.0),
            *(weight(f"W{part}", (hidden, hidden)) for part in ("query", "key", "value", "out")),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "row_axis"),
            numpy_helper.from_array(np.array(0, dtype=np.float32), "zero"),
            numpy_helper.from_array(np.array(np.finfo(np.float32).min, dtype=np.float32), "float_min"),
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


def inf_masked_classifier_model(vocabulary: int = 50, hidden: int = 16, sequence: int = 16, classes: int = 3,
                                 seed: int = 0) -> onnx.ModelProto:
    """input_ids and attention_mask [batch, sequence] -> logits [batch, classes], through one attention head whose
    scores at padded keys are set to -inf by a Where, as some exporters write the mask, then mean pooling."""
    rng = np.random.default_rng(seed)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)

    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "input_ids"], ["x"], name="embed"),
            helper.make_node("MatMul", ["x", "Wq"], ["q"], name="query"),
            helper.make_node("MatMul", ["x", "Wk"], ["k"], name="key"),
            helper.make_node("Transpose", ["k"], ["k_t"], perm=[0, 2, 1], name="key_t"),
            helper.make_node("MatMul", ["q", "k_t"], ["scores"], name="scores"),
            helper.make_node("Cast", ["attention_mask"], ["keep"], to=TensorProto.BOOL, name="keep"),
            helper.make_node("Unsqueeze", ["keep", "one"], ["keep_keys"], name="keep_keys"),
            helper.make_node("Where", ["keep_keys", "scores", "minus_inf"], ["masked"], name="mask_scores"),
            helper.make_node("Softmax", ["masked"], ["weights"], axis=-1, name="softmax"),
            helper.make_node("MatMul", ["weights", "x"], ["context"], name="context"),
            helper.make_node("ReduceMean", ["context"], ["pooled"], axes=[1], keepdims=0, name="pool"),
            helper.make_node("Gemm", ["pooled", "Wc"], ["logits"], transB=1, name="classifier"),
        ],
        "masked_attention",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", sequence]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", sequence])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [weight("E", vocabulary, hidden), weight("Wq", hidden, hidden), weight("Wk", hidden, hidden),
         weight("Wc", classes, hidden), numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
         numpy_helper.from_array(np.array(-np.inf, dtype=np.float32), "minus_inf")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


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


def text_encoder_model(vocabulary: int = 8000, hidden: int = 512, layers: int = 6, heads: int = 8, ffn: int = 2048,
                       max_sequence: int = 64, seed: int = 0) -> onnx.ModelProto:
    """A BERT-like encoder as Hugging Face exports one: input_ids and attention_mask [batch, sequence] ->
    last_hidden_state [batch, sequence, hidden]. Token and position embeddings, then `layers` blocks of masked
    multi-head self-attention and a GELU feed-forward, each with a residual and LayerNormalization. The defaults
    weigh about 92 MB (23 million float32 weights)."""
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []

    def weight(name: str, *shape: int, scale: float | None = None) -> str:
        values = rng.normal(size=shape) * (scale if scale is not None else 1 / np.sqrt(shape[0]))
        initializers.append(numpy_helper.from_array(values.astype(np.float32), name))
        return name

    def constant(name: str, values, dtype=np.float32) -> str:
        initializers.append(numpy_helper.from_array(np.array(values, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attributes) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def layer_norm(x: str, prefix: str) -> str:
        scale, bias = constant(f"{prefix}.gamma", np.ones(hidden)), constant(f"{prefix}.beta", np.zeros(hidden))
        return node("LayerNormalization", [x, scale, bias], f"{prefix}.out", axis=-1, epsilon=1e-5)

    def dense(x: str, prefix: str, rows: int, columns: int) -> str:
        product = node("MatMul", [x, weight(f"{prefix}.weight", rows, columns)], f"{prefix}.matmul")
        return node("Add", [product, constant(f"{prefix}.bias", np.zeros(columns))], f"{prefix}.out")

    head = hidden // heads
    constant("split_heads", [0, 0, heads, head], np.int64)
    constant("merge_heads", [0, 0, hidden], np.int64)
    constant("one", 1.0), constant("half", 0.5), constant("sqrt2", np.sqrt(2.0)), constant("masked", -10000.0)
    constant("attention_scale", 1 / np.sqrt(head)), constant("zero", [0], np.int64), constant("second", [1], np.int64)
    constant("mask_axes", [1, 2], np.int64)
    tokens = node("Gather", [weight("embeddings.tokens", vocabulary, hidden, scale=0.02), "input_ids"], "embedded")
    length = node("Gather", [node("Shape", ["input_ids"], "ids_shape"), "second"], "sequence_length")
    positions = node("Slice", [weight("embeddings.positions", max_sequence, hidden, scale=0.02), "zero", length, "zero"],
                     "positions")
    x = layer_norm(node("Add", [tokens, positions], "embedded_positions"), "embeddings.norm")
    kept = node("Cast", ["attention_mask"], "mask_float", to=TensorProto.FLOAT)
    dropped = node("Sub", ["one", kept], "mask_dropped")
    bias = node("Unsqueeze", [node("Mul", [dropped, "masked"], "mask_bias_flat"), "mask_axes"], "mask_bias")
    for index in range(layers):
        prefix = f"layer{index}"
        q, k, v = (node("Reshape", [dense(x, f"{prefix}.{part}", hidden, hidden), "split_heads"], f"{prefix}.{part}_heads")
                   for part in ("query", "key", "value"))
        q = node("Transpose", [q], f"{prefix}.q", perm=[0, 2, 1, 3])
        k = node("Transpose", [k], f"{prefix}.k", perm=[0, 2, 3, 1])
        v = node("Transpose", [v], f"{prefix}.v", perm=[0, 2, 1, 3])
        scores = node("Mul", [node("MatMul", [q, k], f"{prefix}.qk"), "attention_scale"], f"{prefix}.scaled")
        weights = node("Softmax", [node("Add", [scores, bias], f"{prefix}.masked")], f"{prefix}.probs", axis=-1)
        context = node("Transpose", [node("MatMul", [weights, v], f"{prefix}.context_heads")], f"{prefix}.context_t",
                       perm=[0, 2, 1, 3])
        context = node("Reshape", [context, "merge_heads"], f"{prefix}.context")
        attended = dense(context, f"{prefix}.attention_out", hidden, hidden)
        x = layer_norm(node("Add", [attended, x], f"{prefix}.attention_residual"), f"{prefix}.attention_norm")
        up = dense(x, f"{prefix}.ffn_up", hidden, ffn)
        erf = node("Erf", [node("Div", [up, "sqrt2"], f"{prefix}.gelu_scaled")], f"{prefix}.gelu_erf")
        gelu = node("Mul", [node("Mul", [up, "half"], f"{prefix}.gelu_half"),
                            node("Add", [erf, "one"], f"{prefix}.gelu_shift")], f"{prefix}.gelu")
        down = dense(gelu, f"{prefix}.ffn_down", ffn, hidden)
        x = layer_norm(node("Add", [down, x], f"{prefix}.ffn_residual"), f"{prefix}.ffn_norm")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
    graph = helper.make_graph(
        nodes, "text_encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden])],
        initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
