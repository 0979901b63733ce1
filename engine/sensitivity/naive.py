"""The sensitivity table the naive way: every cell from scratch.

For each cell: calibrate (a new CalibrationSet, nothing shared), quantize the candidate with the realisers, read
its points, build the cell's model, open a new session, run it over every scored row; nothing a cell computed
(calibration ranges, probes of fp32 nodes, range statistics, cell results) is kept for the next. Only the fp32
reference is computed once, as the sweep's naive loop does. engine.sensitivity.compute does the same work once
per candidate; bench/sensitivity.py times both and tests/test_sensitivity.py holds them to the same numbers.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from engine.data import Dataset
from engine.masking import AUTO
from engine.model import LoadedModel
from engine.realise.calibration import CalibrationSet
from engine.recipe import Recipe
from engine.sensitivity.compute import (
    Candidate, CandidateResult, CellModels, OnlyThis, PointKey, Progress, Scoring, assemble, measure_candidate,
    only_this, prepare_candidate, restrict,
)
from engine.sensitivity.graphs import compose
from engine.sensitivity.points import Point
from engine.sensitivity.table import SensitivityTable
from engine.sweep.plan import DataPlan, calibration_rows_asked, plan_data

class FromScratch(CellModels):
    """Builds each cell's model from a candidate calibrated, quantized and read anew."""

    def __init__(self, model: LoadedModel, plan: DataPlan, workdir: Path):
        self._model, self._plan, self._workdir = model, plan, Path(workdir)
        self.kept_ranges: dict = {}

    def _fresh(self, scoring: Scoring, recipe: Recipe, key: PointKey) -> tuple[Candidate, Point]:
        scoring.probes.clear()
        scoring.ranges.clear()
        scoring.measured.clear()
        calibration = None if self._plan.calibration is None else CalibrationSet(self._plan.calibration)
        candidate = prepare_candidate(self._model, recipe, self._workdir / "from-scratch", calibration)
        point = next(p for p in [*candidate.points, *candidate.stand_ins] if p.key == key)
        return candidate, point

    def only_this(self, scoring: Scoring, candidate: Candidate, point: Point) -> OnlyThis:
        _, fresh = self._fresh(scoring, candidate.recipe, point.key)
        alone = only_this(scoring, fresh)
        self.kept_ranges.update(scoring.ranges)
        return alone

    def all_but_this(self, scoring: Scoring, candidate: Candidate, point: Point):
        fresh_candidate, fresh = self._fresh(scoring, candidate.recipe, point.key)
        others = [p for p in fresh_candidate.points if p is not fresh]
        return scoring.run(compose(scoring.model.proto, others)) if others else scoring.reference.output


def naive_table(
    model: LoadedModel,
    dataset: Dataset,
    recipes: Sequence[Recipe],
    workdir: Path,
    calibration_data: Dataset | None = None,
    mask: str = AUTO,
    threads: int = 1,
    progress: Progress | None = None,
    only: Collection[PointKey] | None = None,
) -> SensitivityTable:
    """engine.sensitivity.sensitivity_table's table, each cell computed from scratch; `only` restricts it to
    those points (Point.key), to check a few cells."""
    plan = plan_data(dataset, calibration_rows_asked(recipes), calibration_data)
    scoring = Scoring.of(model, plan.scored, workdir, mask, threads)
    models = FromScratch(model, plan, workdir)
    measured: list[tuple[Candidate, list[dict]]] = []
    done = 0

    def step(message: str) -> None:
        nonlocal done
        if progress:
            progress(done, 0, message)
        done += 1

    for recipe in recipes:
        calibration = None if plan.calibration is None else CalibrationSet(plan.calibration)
        candidate = prepare_candidate(model, recipe, Path(workdir), calibration)  # which points there are
        rows = [] if candidate.error is not None else measure_candidate(scoring, restrict(candidate, only), step,
                                                                        models)
        measured.append((candidate, rows))
    scoring.ranges.update(models.kept_ranges)
    return assemble(model, plan, scoring, recipes,
                    [CandidateResult.of(scoring, candidate, rows) for candidate, rows in measured])
