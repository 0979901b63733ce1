"""Shifted data: does a quantized model degrade more off the clean validation set than on it?

A user can bring extra evaluation sets (`--also NAME=FILE`). Without one, a synthetic shift of the scored
validation rows stands in, named by its kind and level (`--shift noise:0.1`):

    noise:L       float inputs plus Gaussian noise of L times each input's own standard deviation
    scale:L       float inputs times (1 + L): tables whose units drift
    brightness:L  image inputs (4-D float) plus L times their value range
    contrast:L    image inputs pushed away from their mean by (1 + L)
    dropout:L     token inputs (2-D integers beside a 0/1 attention mask): each real token dropped (id 0, mask 0)
                  with probability L

Labels and slices are kept, so the task metric is comparable; every shift is seeded, so a sweep that is run
again sees the same shifted rows. A kind that does not apply to the model's inputs is refused with a message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from engine.data import Dataset
from engine.errors import DataError

SEED = 20261201
_SPEC = re.compile(r"^(?P<kind>[a-z]+):(?P<level>[0-9]*\.?[0-9]+)$")
MAX_LEVEL = 10.0


def _float_inputs(dataset: Dataset) -> list[str]:
    return [name for name, values in dataset.inputs.items() if values.dtype.kind == "f"]


def _image_inputs(dataset: Dataset) -> list[str]:
    return [name for name in _float_inputs(dataset) if dataset.inputs[name].ndim == 4]


def _noise(dataset: Dataset, level: float, generator: np.random.Generator) -> dict[str, np.ndarray]:
    return {name: dataset.inputs[name] + generator.normal(0, level * dataset.inputs[name].std(),
                                                         dataset.inputs[name].shape).astype(dataset.inputs[name].dtype)
            for name in _float_inputs(dataset)}


def _scale(dataset: Dataset, level: float, generator: np.random.Generator) -> dict[str, np.ndarray]:
    return {name: (dataset.inputs[name] * (1 + level)).astype(dataset.inputs[name].dtype)
            for name in _float_inputs(dataset)}


def _brightness(dataset: Dataset, level: float, generator: np.random.Generator) -> dict[str, np.ndarray]:
    return {name: (values + level * (values.max() - values.min())).astype(values.dtype)
            for name, values in ((name, dataset.inputs[name]) for name in _image_inputs(dataset))}


def _contrast(dataset: Dataset, level: float, generator: np.random.Generator) -> dict[str, np.ndarray]:
    return {name: ((values - values.mean()) * (1 + level) + values.mean()).astype(values.dtype)
            for name, values in ((name, dataset.inputs[name]) for name in _image_inputs(dataset))}


def _mask_input(dataset: Dataset) -> str | None:
    for name, values in dataset.inputs.items():
        if values.ndim == 2 and values.dtype.kind in "biu" and np.isin(values, (0, 1)).all() and "mask" in name.lower():
            return name
    return None


def _dropout(dataset: Dataset, level: float, generator: np.random.Generator) -> dict[str, np.ndarray]:
    mask_name = _mask_input(dataset)
    if mask_name is None:
        return {}
    mask = dataset.inputs[mask_name]
    dropped = (mask == 1) & (generator.random(mask.shape) < level)
    dropped[:, 0] = False  # keep every sequence's first token (e.g. [CLS]) so no sequence is left empty
    shifted = {mask_name: np.where(dropped, 0, mask).astype(mask.dtype)}
    for name, values in dataset.inputs.items():
        if name != mask_name and values.shape == mask.shape and values.dtype.kind in "iu":
            shifted[name] = np.where(dropped, 0, values).astype(values.dtype)
    return shifted


_KINDS: dict[str, tuple[Callable[[Dataset, float, np.random.Generator], dict[str, np.ndarray]], str]] = {
    "noise": (_noise, "float inputs"),
    "scale": (_scale, "float inputs"),
    "brightness": (_brightness, "image inputs (4-D float)"),
    "contrast": (_contrast, "image inputs (4-D float)"),
    "dropout": (_dropout, "token inputs beside an attention mask"),
}


@dataclass(frozen=True)
class Shift:
    kind: str
    level: float

    @classmethod
    def parse(cls, text: str) -> Shift:
        """'noise:0.1' -> Shift("noise", 0.1); a clear DataError for anything else."""
        match = _SPEC.match(text.strip())
        if not match or match["kind"] not in _KINDS:
            raise DataError(f"a shift is KIND:LEVEL with KIND one of {', '.join(_KINDS)}, e.g. noise:0.1; got {text!r}")
        level = float(match["level"])
        if not 0 < level <= MAX_LEVEL:
            raise DataError(f"a shift's level must be above 0 and at most {MAX_LEVEL:g}; got {text!r}")
        return cls(match["kind"], level)

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.level:g}"

    def apply(self, dataset: Dataset) -> Dataset:
        """The dataset with this shift applied to the inputs it concerns; DataError if it concerns none."""
        shift, concerns = _KINDS[self.kind]
        shifted = shift(dataset, self.level, np.random.default_rng([SEED, sorted(_KINDS).index(self.kind)]))
        if not shifted:
            raise DataError(f"the shift {self.name} changes {concerns}, and this model has none")
        return replace(dataset, inputs={**dataset.inputs, **shifted}, source=f"{dataset.source}, shifted {self.name}")
