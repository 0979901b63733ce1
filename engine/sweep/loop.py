"""A sweep in this process: many recipes on one (model, dataset), one row after another.

The job system (engine.jobs) runs the same steps in parallel workers; this loop is the plain reference
it is checked and benchmarked against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from engine.data import Dataset
from engine.errors import QuantscopeError
from engine.masking import AUTO
from engine.measure import ADAPTIVE, LatencyProtocol
from engine.model import LoadedModel
from engine.realise.calibration import CalibrationSet
from engine.shifts import Shift
from engine.recipe import Recipe
from engine.results import results_table
from engine.sweep.plan import calibration_rows_asked, plan_data
from engine.sweep.rows import DEFAULT_LATENCY_BATCH, measure_recipe, reference_for

Progress = Callable[[int, int, str], None]  # (done, total, message)


def sweep(
    model: LoadedModel,
    dataset: Dataset,
    recipes: Sequence[Recipe],
    out_dir: Path,
    threads: int = 1,
    batch: int | None = DEFAULT_LATENCY_BATCH,
    progress: Progress | None = None,
    calibration_data: Dataset | None = None,
    mask: str = AUTO,
    extra_sets: dict[str, Dataset] | None = None,
    shifts: Sequence[Shift] = (),
    timed: bool = True,
    protocol: LatencyProtocol = ADAPTIVE,
) -> pd.DataFrame:
    """Measure every recipe, one after another; the table of engine.results, Pareto fronts flagged.

    Static recipes calibrate on `calibration_data`, else on validation rows held out of scoring for every
    recipe (engine.sweep.plan). Recipes that calibrate alike share their activation ranges, computed once.
    `mask` chooses which output positions fidelity counts (engine.masking). Every row is also scored on each of
    `extra_sets` and on each synthetic shift of the scored rows (engine.shifts). Artifacts are timed by `protocol`;
    with `timed` False nothing is timed (the CI gate times its own way: engine.export.gate)."""
    out_dir = Path(out_dir)
    plan = plan_data(dataset, calibration_rows_asked(recipes), calibration_data, extra_sets, shifts)
    reference = reference_for(model, plan.scored, out_dir, mask, plan.extras)
    calibration = None if plan.calibration is None else CalibrationSet(plan.calibration)
    rows = []
    for done, recipe in enumerate(recipes):
        if progress:
            progress(done, len(recipes), recipe.short_name())
        try:
            row = measure_recipe(model, plan.scored, recipe, out_dir, reference, threads, batch, calibration,
                                 protocol, plan.extras, timed)
            rows.append({**row, **plan.columns(recipe)})
        except QuantscopeError:
            raise
        except Exception as error:  # one recipe onnxruntime cannot build must not sink the others
            rows.append(reference.failed_row(recipe, error))
    if progress:
        progress(len(recipes), len(recipes), "done")
    return results_table(rows)
