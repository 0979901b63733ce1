"""`quantscope from-torch`: the user's own module file, exported to ONNX and checked; every mistake is one line."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from engine.cli import EXIT_BAD_INPUT, main
from engine.model import load_model

NET = """
import torch

from helpers import WIDTH  # a helper beside the file: the user's folder is importable


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, WIDTH, 3)
        self.head = torch.nn.Linear(WIDTH * 2 * 2, 5)
        self.drop = torch.nn.Dropout(0.5)  # eval() must switch it off for the export

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.conv(x))).flatten(1))


def build():
    torch.manual_seed(0)
    return Net()


def not_a_module():
    return "a string"
"""


@pytest.fixture
def net_file(tmp_path) -> Path:
    (tmp_path / "helpers.py").write_text("WIDTH = 4\n")
    path = tmp_path / "net.py"
    path.write_text(NET)
    return path


def from_torch(*args: str) -> int:
    return main(["from-torch", *args])


def test_a_module_file_becomes_a_checked_onnx_model_that_computes_the_same(net_file, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    out = tmp_path / "net.onnx"
    assert from_torch(f"{net_file}:build", "--example-shape", "1,3,4,4", "--out", str(out), "--dynamic-batch") == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: opset 17")

    model = load_model(out)
    assert [spec.describe() for spec in model.summary.inputs] == ["input: float32[?, 3, 4, 4]"]
    assert [layer.op_type for layer in model.summary.layers] == ["Conv", "Gemm"]
    batch = np.random.default_rng(0).normal(size=(3, 3, 4, 4)).astype(np.float32)
    (onnx_output,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": batch})
    sys.path.insert(0, str(net_file.parent))
    try:
        import net  # the same code, built again here

        with torch.no_grad():
            expected = net.build().eval()(torch.from_numpy(batch)).numpy()
    finally:
        sys.path.remove(str(net_file.parent))
        sys.modules.pop("net", None)
        sys.modules.pop("helpers", None)
    np.testing.assert_allclose(onnx_output, expected, rtol=1e-5, atol=1e-5)


def test_without_dynamic_batch_the_example_batch_is_fixed(net_file, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "net.onnx"
    assert from_torch(f"{net_file}:build", "--example-shape", "2,3,4,4", "--out", str(out)) == 0
    assert [spec.describe() for spec in load_model(out).summary.inputs] == ["input: float32[2, 3, 4, 4]"]


@pytest.mark.parametrize(
    "target, shape, message",
    [
        ("{net}:missing", "1,3,4,4", "net.py has no function missing"),
        ("{net}:not_a_module", "1,3,4,4", "not_a_module() returned str, not a torch.nn.Module"),
        ("{net}:build", "1,3,5,5", "torch.onnx.export could not export build(): RuntimeError: "),
        ("{net}:build", "1,0,4,4", "--example-shape needs positive sizes"),
        ("{folder}/model.pt:build", "1,3,4,4", "model.pt is not a Python file (.py)"),
        ("{folder}/absent.py:build", "1,3,4,4", "no Python file at "),
        ("{net}", "1,3,4,4", "should name a Python file and a function in it"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(net_file, tmp_path, capsys, target, shape, message):
    pytest.importorskip("torch")
    target = target.format(net=net_file, folder=tmp_path)
    out = tmp_path / "net.onnx"
    assert from_torch(target, "--example-shape", shape, "--out", str(out)) == EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.startswith("quantscope: error: ") and message in error
    assert error.count("\n") == 1
    assert not out.exists()


def test_user_code_that_raises_is_one_line(tmp_path, capsys):
    pytest.importorskip("torch")
    (tmp_path / "broken.py").write_text("raise ValueError('no weights here')\n")
    assert from_torch(f"{tmp_path / 'broken.py'}:build", "--example-shape", "1,3", "--out", "x.onnx") == EXIT_BAD_INPUT
    assert capsys.readouterr().err == "quantscope: error: running broken.py failed: ValueError: no weights here\n"


def test_without_torch_it_says_how_to_install_it(net_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` meets when torch is not installed
    out = tmp_path / "net.onnx"
    assert from_torch(f"{net_file}:build", "--example-shape", "1,3,4,4", "--out", str(out)) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == "quantscope: error: from-torch needs PyTorch: pip install 'quantscope[torch]'\n"
