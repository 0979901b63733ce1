"""Turn (model, recipe) into an artifact: an ONNX file a user can download and onnxruntime can run.

`quantize` is the one verb. It asks each realiser in REALISERS, in order, whether it can build the
recipe natively with onnxruntime's quantization tools; the simulated realiser, last, accepts anything
and builds an fp32 model whose weights (and activations) went through quantize-dequantize. A native
realiser that finds its artifact does not honour a node override says so (OverrideNotHonoured), and
the next realiser that supports the recipe builds it instead: an override is never dropped quietly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from engine.data import Dataset
from engine.errors import RecipeError
from engine.model import LoadedModel
from engine.onnx_files import files_bytes
from engine.recipe import Mode, Recipe
from engine.realise.base import OverrideNotHonoured, Realiser, kept_fp32
from engine.realise.calibration import CalibrationSet
from engine.realise.native import Float16, Float32, MatMulNBits, OrtDynamic, OrtStaticQDQ
from engine.realise.simulated import Simulated
from engine.text import listed, quoted

REALISERS: tuple[Realiser, ...] = (Float32(), Float16(), OrtStaticQDQ(), OrtDynamic(), MatMulNBits(), Simulated())


@dataclass(frozen=True)
class Artifact:
    path: Path  # its .onnx file; a model past 2 GB keeps its weights in files beside it (engine.onnx_files)
    recipe: Recipe
    realiser: str  # which tool built it, in words
    simulated: bool
    size_bytes: int  # file bytes; for a simulated artifact, the packed-integer estimate
    size_is_estimate: bool
    float_layers: tuple[str, ...] = field(default=())  # quantizable layers left in fp32 by the realiser


def choose_realiser(model: LoadedModel, recipe: Recipe) -> Realiser:
    """The realiser `quantize` tries first."""
    return next(r for r in REALISERS if r.supports(model, recipe))


def check_override_names(model: LoadedModel, recipe: Recipe) -> None:
    """Overrides name nodes of this model, and nodes that have something to keep float or widen."""
    nodes = {node.name: node for node in model.proto.graph.node}
    unknown = [name for name in recipe.overrides if name not in nodes]
    if unknown:
        raise RecipeError(f"overrides name nodes the model does not have: {listed(unknown)}")
    weight_layers = {layer.name for layer in model.summary.layers}
    for name, override in recipe.overrides.items():
        if override.weights is not None and name not in weight_layers:
            raise RecipeError(f"node {quoted(name)} ({nodes[name].op_type}) has no weight to quantize, "
                              "so its override cannot set weights")
        if name not in weight_layers and not model.activations_of(nodes[name]):
            raise RecipeError(f"node {quoted(name)} ({nodes[name].op_type}) reads and writes no float tensors: "
                              "there is nothing to keep float or to quantize at other bits")


def quantize(
    model: LoadedModel, recipe: Recipe, out_path: Path, calibration: Dataset | CalibrationSet | None = None
) -> Artifact:
    """Build the artifact for `recipe` at `out_path`. Static recipes need calibration data; pass one
    CalibrationSet to many calls and recipes that calibrate alike compute their activation ranges once."""
    if recipe.mode is Mode.STATIC and calibration is None:
        raise RecipeError("static quantization needs calibration data")
    if isinstance(calibration, Dataset):
        calibration = CalibrationSet(calibration)
    check_override_names(model, recipe)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    kept_layers = set(kept_fp32(recipe)) & {layer.name for layer in model.summary.layers}
    for realiser in (r for r in REALISERS if r.supports(model, recipe)):
        try:
            estimate = realiser.realise(model, recipe, calibration, out_path)
            # the layers' types and shapes are enough: no external data
            artifact_proto = onnx.load(out_path, load_external_data=False)
            float_layers = tuple(realiser.float_layers(model, recipe, artifact_proto))
            if quantized_anyway := sorted(kept_layers - set(float_layers)):
                raise OverrideNotHonoured(f"{listed(quantized_anyway)} kept fp32 but quantized")
            break
        except OverrideNotHonoured:
            continue  # the simulated realiser, last, supports everything and honours every override
    file_bytes = files_bytes(out_path)  # with its external-data files, when it has some
    return Artifact(
        path=out_path,
        recipe=recipe,
        realiser=realiser.name,
        simulated=realiser.simulated,
        size_bytes=estimate if estimate is not None else file_bytes,
        size_is_estimate=estimate is not None,
        float_layers=float_layers,
    )
