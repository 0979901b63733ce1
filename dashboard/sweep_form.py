"""The Advanced grid's choices and defaults, and turning them into recipes with the engine's `grid`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.recipe import INTEGER_WEIGHT_BITS, Calibration, Granularity, Recipe
from engine.sweep import grid

WEIGHT_BIT_CHOICES = (*sorted(INTEGER_WEIGHT_BITS, reverse=True), 16)
GROUP_SIZE_CHOICES = (16, 32, 64, 128, 256)
ACTIVATION_CHOICES = (None, 8, 16)  # None: weights only, activations stay float
MAX_THREADS = os.cpu_count() or 1


@dataclass(frozen=True)
class GridChoice:
    """What the Advanced form holds."""

    weight_bits: tuple[int, ...] = (8, 4)
    granularities: tuple[Granularity, ...] = (Granularity.CHANNEL,)
    group_size: int = 128
    activation_bits: tuple[int | None, ...] = (None, 8)
    calibrations: tuple[Calibration, ...] = (Calibration.MINMAX,)

    def recipes(self) -> list[Recipe]:
        """The original model plus every consistent combination; an empty choice gives just the original."""
        return grid(self.weight_bits, self.granularities, self.activation_bits, self.calibrations, self.group_size)


def activation_label(bits: int | None) -> str:
    return "none (weight-only)" if bits is None else f"{bits}-bit"


def weight_label(bits: int) -> str:
    return "16 (half precision)" if bits == 16 else str(bits)
