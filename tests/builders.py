"""Small ONNX graphs built in memory for tests."""

from __future__ import annotations

import numpy as np
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
