"""Sweeps: many recipes measured on one model and data set, one results row each.

Map of this package:

    grids.py  which recipes: the default grid, a grid from choices, the goal presets
    rows.py   one row: the fp32 reference, then build, score and time one recipe's artifact
    loop.py   the sweep in this process, one recipe after another

The row itself (its columns, the table, the selectors) lives in engine.results.
"""

from engine.sweep.grids import PRESETS, Preset, default_grid, grid
from engine.sweep.loop import sweep
from engine.sweep.rows import DEFAULT_LATENCY_BATCH, Reference, build_and_evaluate, measure_recipe, reference_for, time_artifact

__all__ = [
    "DEFAULT_LATENCY_BATCH", "PRESETS", "Preset", "Reference", "build_and_evaluate", "default_grid", "grid",
    "measure_recipe", "reference_for", "sweep", "time_artifact",
]
