"""The operator presets: a goal in plain words, and the recipes that serve it.

Every preset starts with the original fp32 model, because every other row is compared with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.recipe import ActivationSpec, Granularity, Mode, Recipe, WeightSpec
from engine.sweep import default_grid


@dataclass(frozen=True)
class Preset:
    name: str
    explanation: str  # one sentence for someone who has never heard of quantization
    recipes: tuple[Recipe, ...]


_A8 = ActivationSpec(bits=8)
_W8A8_CHANNEL = Recipe(WeightSpec(8, Granularity.CHANNEL), _A8, Mode.STATIC)

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "Smallest",
            "Shrinks the file the most, with 8-bit and 4-bit numbers; answers may get slightly worse.",
            (
                Recipe.fp32(),
                _W8A8_CHANNEL,
                Recipe(WeightSpec(4, Granularity.CHANNEL), _A8, Mode.STATIC),
                Recipe(WeightSpec(4, Granularity.GROUP, group_size=32), mode=Mode.WEIGHT_ONLY),
            ),
        ),
        Preset(
            "Fastest",
            "Uses 8-bit whole-number arithmetic, which ordinary processors run fastest.",
            (
                Recipe.fp32(),
                Recipe(WeightSpec(8, Granularity.TENSOR), _A8, Mode.STATIC),
                _W8A8_CHANNEL,
                Recipe(WeightSpec(8, Granularity.CHANNEL), _A8, Mode.DYNAMIC),
            ),
        ),
        Preset(
            "Balanced",
            "Gentle shrinking (16-bit and 8-bit) that usually keeps answers almost exactly the same.",
            (
                Recipe.fp32(),
                Recipe.fp16(),
                Recipe(WeightSpec(8, Granularity.CHANNEL), _A8, Mode.DYNAMIC),
                _W8A8_CHANNEL,
            ),
        ),
        Preset(
            "Everything",
            "The full standard set of ten recipes, from gentle to extreme, to see the whole picture.",
            tuple(default_grid()),
        ),
    )
}
