"""quantscope's engine: load a model and its validation data, quantize by Recipe, measure the artifact.

    model = load_model("model.onnx")
    data = load_dataset("val.npz", model.summary.inputs)
    artifact = quantize(model, Recipe(WeightSpec(4, "group", 32)), Path("w4.onnx"))
    table = sweep(model, data, default_grid(), Path("out"))
"""

from engine.data import Dataset, load_dataset
from engine.errors import DataError, ModelError, QuantscopeError, RecipeError
from engine.model import LoadedModel, load_model
from engine.realise import Artifact, quantize
from engine.recipe import ActivationSpec, Calibration, Granularity, LayerOverride, Mode, Recipe, WeightSpec
from engine.sweep import default_grid, grid, sweep

__all__ = [
    "ActivationSpec", "Artifact", "Calibration", "DataError", "Dataset", "Granularity", "LayerOverride",
    "LoadedModel", "Mode", "ModelError", "QuantscopeError", "Recipe", "RecipeError", "WeightSpec",
    "default_grid", "grid", "load_dataset", "load_model", "quantize", "sweep",
]
