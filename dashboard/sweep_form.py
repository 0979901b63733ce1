"""The Sweep form's choices and defaults: the Advanced grid (turned into recipes with the engine's `grid`) and how
to measure (calibration data, other data to score on, timing)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.jobs.executor import cpu_count
from engine.measure import ADAPTIVE
from engine.recipe import INTEGER_WEIGHT_BITS, Calibration, Granularity, Recipe
from engine.sweep import DEFAULT_LATENCY_BATCH, grid

WEIGHT_BIT_CHOICES = (*sorted(INTEGER_WEIGHT_BITS, reverse=True), 16)
GROUP_SIZE_CHOICES = (16, 32, 64, 128, 256)
ACTIVATION_CHOICES = (None, 8, 16)  # None: weights only, activations stay float
ALL_CORES = cpu_count()
THREAD_CHOICES = (1, ALL_CORES) if ALL_CORES > 1 else (1,)
# Synthetic shifts offered on the form (engine.shifts); a kind that does not fit the model fails the sweep in one line.
SHIFT_CHOICES = ("noise:0.1", "noise:0.3", "scale:0.2", "brightness:0.2", "contrast:0.5", "dropout:0.1")


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


def threads_label(threads: int) -> str:
    return "1 thread (steadiest)" if threads == 1 else f"all {threads} cores"


@dataclass(frozen=True)
class MeasureChoice:
    """How the sweep measures, as the form holds it."""

    calibration_dataset: str | None = None  # None: validation rows held out of scoring
    extra_sets: tuple[tuple[str, str], ...] = ()  # (name, dataset id)
    shifts: tuple[str, ...] = ()
    threads: int = 1
    batch: int | None = DEFAULT_LATENCY_BATCH
    latency_cap: float = ADAPTIVE.cap_seconds  # seconds of timing per recipe and batch size


def set_names(filenames: list[str]) -> list[str]:
    """Names for extra evaluation sets from their file names: the stem in plain characters, numbered when repeated."""
    names: list[str] = []
    for filename in filenames:
        stem = re.sub(r"[^A-Za-z0-9_:.+-]", "_", Path(filename).stem)[:60] or "data"
        name, number = stem, 2
        while name in names:
            name, number = f"{stem}_{number}", number + 1
        names.append(name)
    return names
