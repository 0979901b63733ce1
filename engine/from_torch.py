"""`quantscope from-torch`: build a PyTorch module with the user's own code, on their machine, and export it to ONNX.

The user's Python file is run as a program of theirs; a saved model file (.pt, .pth) is never read, since
unpickling one can run any code. torch is an optional extra (`pip install 'quantscope[torch]'`) and is imported
only here, only when the command runs.
"""

from __future__ import annotations

import importlib.util
import io
import sys
import warnings
from pathlib import Path

from engine.errors import ExportError
from engine.model import LoadedModel, load_model
from engine.text import error_line

DEFAULT_OPSET = 17  # the sample models' opset: every realiser handles it
EXAMPLE_DTYPES = ("float32", "float16", "int64", "int32")  # int64/int32: token ids for text models
INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_AXIS = {0: "batch"}


def parse_target(target: str) -> tuple[Path, str]:
    """'models/net.py:build' -> (Path('models/net.py'), 'build')."""
    file, colon, factory = target.rpartition(":")
    if not colon or not file or not factory.isidentifier():
        raise ExportError(f"{target!r} should name a Python file and a function in it, like model.py:build_model")
    path = Path(file)
    if path.suffix != ".py":
        raise ExportError(f"{path.name} is not a Python file (.py); name the code that builds the model, "
                          "not a saved model file")
    if not path.is_file():
        raise ExportError(f"no Python file at {path}")
    return path, factory


def export_from_torch(target: str, example_shape: tuple[int, ...], out: Path, example_dtype: str = "float32",
                      opset: int = DEFAULT_OPSET, dynamic_batch: bool = False) -> LoadedModel:
    """Call FACTORY() from FILE.py, export the module it returns with one example input of `example_shape`, check
    the result as quantscope checks every model, and write it to `out`; returns the loaded model."""
    torch = _import_torch()
    if example_dtype not in EXAMPLE_DTYPES:
        raise ExportError(f"--example-dtype {example_dtype} is not one of {', '.join(EXAMPLE_DTYPES)}")
    if not example_shape or any(size < 1 for size in example_shape):
        raise ExportError(f"--example-shape needs positive sizes, like 1,3,224,224 (got {example_shape})")
    path, factory = parse_target(target)
    module = _build_module(torch, path, factory)
    example = torch.zeros(example_shape, dtype=getattr(torch, example_dtype))
    buffer = io.BytesIO()  # exported to memory, so the weights cannot land in a separate external-data file
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen on purpose
            # The TorchScript exporter (dynamo=False) needs no onnxscript and gives the clean Conv/Gemm/MatMul
            # graphs with module-derived node names that the sample models are built with.
            torch.onnx.export(
                module, (example,), buffer, dynamo=False, opset_version=opset, do_constant_folding=True,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: BATCH_AXIS, OUTPUT_NAME: BATCH_AXIS} if dynamic_batch else None,
            )
    except Exception as error:  # tracing runs the user's forward(), which can raise anything
        raise ExportError(f"torch.onnx.export could not export {factory}(): {error_line(error)}") from None
    model = load_model(buffer.getvalue(), name=out.name)
    out.write_bytes(buffer.getvalue())
    return model


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ExportError("from-torch needs PyTorch: pip install 'quantscope[torch]'") from None
    return torch


def _build_module(torch, path: Path, factory: str):
    """Run the user's file as a module and call FACTORY(); the module it returns, in eval mode."""
    spec = importlib.util.spec_from_file_location(f"quantscope_user_model_{path.stem}", path)
    code = importlib.util.module_from_spec(spec)
    folder = str(path.parent.resolve())
    sys.path.insert(0, folder)  # the user's file may import helpers that sit beside it
    try:
        try:
            spec.loader.exec_module(code)
        except Exception as error:  # the user's code can raise anything: say where and what, in one line
            raise ExportError(f"running {path.name} failed: {error_line(error)}") from None
        build = getattr(code, factory, None)
        if not callable(build):
            raise ExportError(f"{path.name} has no function {factory}")
        try:
            module = build()
        except Exception as error:
            raise ExportError(f"{path.name}:{factory}() failed: {error_line(error)}") from None
    finally:
        sys.path.remove(folder)
    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"{factory}() returned {type(module).__name__}, not a torch.nn.Module")
    return module.eval()
