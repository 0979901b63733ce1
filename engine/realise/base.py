"""What every realiser is, and helpers they share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from engine.model import LoadedModel
from engine.realise.calibration import CalibrationSet
from engine.recipe import Recipe


class OverrideNotHonoured(Exception):
    """A native realiser's artifact does not do what one of the recipe's node overrides asks (onnxruntime
    quantized a tensor the recipe keeps float, or at another width). `quantize` then asks the next realiser."""


class Realiser:
    """Builds artifacts for the recipes it `supports`. Subclasses set `name` and implement two methods."""

    name: str
    simulated = False

    def supports(self, model: LoadedModel, recipe: Recipe) -> bool:
        raise NotImplementedError

    def realise(self, model: LoadedModel, recipe: Recipe, calibration: CalibrationSet | None, out: Path) -> int | None:
        """Write the artifact to `out`; return an estimated size in bytes when the file's own size is not it.
        Raise OverrideNotHonoured when the artifact turns out not to be what the recipe asks."""
        raise NotImplementedError

    def float_layers(self, model: LoadedModel, recipe: Recipe, artifact: onnx.ModelProto) -> list[str]:
        """Quantizable layers left in fp32: those whose node still reads an fp32 weight in the artifact."""
        float_weights = {
            t.name: int(np.prod(t.dims))
            for t in artifact.graph.initializer
            if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 2
        }
        nodes = {node.name: node for node in artifact.graph.node}
        return [
            layer.name
            for layer in model.summary.layers
            if (node := nodes.get(layer.name)) is not None
            and any(float_weights.get(name) == int(np.prod(layer.weight_shape)) for name in node.input)
        ]


def kept_fp32(recipe: Recipe) -> list[str]:
    return [name for name, override in recipe.overrides.items() if override.keep_fp32]


def only_keep_fp32_overrides(recipe: Recipe) -> bool:
    return all(override.keep_fp32 for override in recipe.overrides.values())


def own_activation_bits(recipe: Recipe) -> dict[str, int]:
    """Nodes whose activations have their own width: node name -> bits."""
    return {name: o.activation_bits for name, o in recipe.overrides.items() if o.activation_bits is not None}
