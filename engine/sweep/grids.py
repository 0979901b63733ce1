"""Which recipes a sweep measures: the default grid, a grid from choices, and the goal presets.

Every preset and the default grid start with the original fp32 model, because every other row is compared
with it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from engine.recipe import ActivationSpec, Calibration, Granularity, Mode, Recipe, WeightSpec, calibration_applies

_A8 = ActivationSpec(bits=8)


def default_grid() -> list[Recipe]:
    """fp32, fp16, W8A8 static per-tensor and per-channel, W8 dynamic, W4A8 per-channel,
    W4 weight-only in blocks of 32 and 128, and simulated W3 and W2 per-channel."""
    return [
        Recipe.fp32(),
        Recipe.fp16(),
        Recipe(WeightSpec(8, Granularity.TENSOR), _A8, Mode.STATIC),
        Recipe(WeightSpec(8, Granularity.CHANNEL), _A8, Mode.STATIC),
        Recipe(WeightSpec(8, Granularity.CHANNEL), _A8, Mode.DYNAMIC),
        Recipe(WeightSpec(4, Granularity.CHANNEL), _A8, Mode.STATIC),
        Recipe(WeightSpec(4, Granularity.GROUP, group_size=32), mode=Mode.WEIGHT_ONLY),
        Recipe(WeightSpec(4, Granularity.GROUP, group_size=128), mode=Mode.WEIGHT_ONLY),
        Recipe(WeightSpec(3, Granularity.CHANNEL), mode=Mode.WEIGHT_ONLY),
        Recipe(WeightSpec(2, Granularity.CHANNEL), mode=Mode.WEIGHT_ONLY),
    ]


def grid(
    weight_bits: Iterable[int],
    granularities: Iterable[Granularity | str],
    activation_bits: Iterable[int | None],
    calibrations: Iterable[Calibration | str] = (Calibration.MINMAX,),
    group_size: int = 128,
    include_reference: bool = True,
) -> list[Recipe]:
    """Every consistent combination: no activation bits -> weight-only, otherwise static. A calibration
    that does not apply to an activation width (entropy at 16 bits) is left out of that width."""
    recipes = [Recipe.fp32()] if include_reference else []
    for bits, granularity, act_bits, calibration in itertools.product(
        weight_bits, granularities, activation_bits, calibrations
    ):
        if bits in (16, 32):
            recipe = Recipe(WeightSpec(bits))
        elif act_bits is None:
            recipe = Recipe(WeightSpec(bits, granularity, group_size), mode=Mode.WEIGHT_ONLY)
        elif calibration_applies(act_bits, calibration):
            recipe = Recipe(WeightSpec(bits, granularity, group_size), ActivationSpec(act_bits, calibration), Mode.STATIC)
        else:
            continue
        if recipe not in recipes:
            recipes.append(recipe)
    return recipes


@dataclass(frozen=True)
class Preset:
    """A goal in plain words and the recipes that serve it; `name` is what `quantscope sweep --preset` takes."""

    name: str
    title: str
    explanation: str  # one sentence for someone who has never heard of quantization
    recipes: tuple[Recipe, ...]


_W8A8_CHANNEL = Recipe(WeightSpec(8, Granularity.CHANNEL), _A8, Mode.STATIC)

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "smallest",
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
            "fastest",
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
            "balanced",
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
            "everything",
            "Everything",
            "The full standard set of ten recipes, from gentle to extreme, to see the whole picture.",
            tuple(default_grid()),
        ),
    )
}
