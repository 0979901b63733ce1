"""The measured curve: points of the ladder built by the realisers and measured like sweep rows, and the budget's
choice among them.

Point k is the base recipe with the ladder's first k moves (engine.mixed.ladder). Each point is a Recipe with
node overrides, built, scored and timed by engine.sweep.rows.measure_recipe exactly as a sweep row: on the same
scored rows as the sensitivity table (engine.sweep.plan holds the calibration rows out of scoring), every static
point calibrated from one CalibrationSet, the sensitivity table's own when the search computes the table (activation
ranges depend on the data and the calibration method, not on which nodes are kept float, so they are computed once
for the table and the whole curve).

Which points are measured:

- accuracy control (--max-drop): the uniform base first, then 1, 2, 4, 8, ... moves (and at last every move) until
  a point meets the drop; then bisection between the last point that did not and the first that did, down to the
  fewest moves that meet it: "N of M reverted";
- size and latency budgets: the base, 1, 2, 4, 8, ... moves and every move, then bisection between the point with
  the most moves that meets the budget and the next one measured, which does not.

The original model is measured too: the reference every row is compared with. The chosen point's row says so
(results.MIXED_CHOSEN), as chosen.json does.

A caller that keeps each point as it is measured (the mixed job commits it as a results row, engine.jobs.kinds.mixed)
gives a `Keeper`: it takes every measured row at once, and may hand back a point kept before (a resumed job's row, the
result cache's) instead of measuring it again.

Bisection assumes what the ordering aims at: more moves, a better metric and a larger file. The measured rows are
the truth either way; budgets choose among them (engine.mixed.budgets).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from engine import results
from engine.data import Dataset
from engine.errors import DataError, QuantscopeError
from engine.masking import AUTO, apply_mask
from engine.measure import ADAPTIVE, LatencyProtocol, open_session, predict
from engine.mixed.budgets import Budget, MaxDrop
from engine.mixed.ladder import Ladder, ladder_from_table
from engine.model import LoadedModel
from engine.realise.calibration import CalibrationSet
from engine.realise.native import nonfinite_range_warnings_silenced
from engine.recipe import Recipe
from engine.sensitivity import SensitivityTable, sensitivity_table
from engine.sensitivity import table as sensitivity_columns
from engine.sweep.plan import DataPlan, calibration_rows_asked, plan_data
from engine.sweep.rows import DEFAULT_LATENCY_BATCH, measure_recipe, reference_for
from engine.text import listed
from engine.uncertainty import Interval, difference

Progress = Callable[[int, int, str], None]  # (done, total, message)


class Keeper(Protocol):
    """Where a caller keeps the curve's points as they are measured."""

    def known(self, recipe: Recipe, position: int) -> dict | None:
        """The row of `recipe` kept before (its artifact where the row says), or None: measure it. Position: 0 for
        fp32, k + 1 for the point with k moves."""

    def keep(self, row: dict, position: int) -> dict:
        """Keep a measured row; the row as kept, its artifact path where the file now is."""


@dataclass
class Curve:
    """The measured points (a results table: fp32 first, then by moves applied), the budget and its choice."""

    ladder: Ladder
    budget: Budget
    rows: pd.DataFrame
    chosen: pd.Series | None
    closest: pd.Series | None
    table: SensitivityTable = field(repr=False)

    def verdict(self) -> str:
        return budget_verdict(self.budget, self.chosen, self.closest)


def budget_verdict(budget: Budget, chosen: pd.Series | None, closest: pd.Series | None) -> str:
    """One line: the chosen point, or that none meets the budget and which comes closest."""
    if chosen is not None:
        return f"chosen: {point_text(chosen, budget)}"
    closest_text = "no point was measured" if closest is None else f"closest: {point_text(closest, budget)}"
    return f"no point of the curve meets {budget.describe()}; {closest_text}"


def point_text(row: pd.Series, budget: Budget) -> str:
    changed, units = row.get(results.MIXED_CHANGED), row.get(results.MIXED_UNITS)
    text = f"{row[results.NAME]}: {row[results.METRIC_NAME]} {row[results.METRIC]:.4g}, {budget.figure(row)}"
    if isinstance(budget, MaxDrop):
        text += f", {row[results.SIZE_RATIO]:.3g} x fp32"
    if changed is not None and not pd.isna(changed):
        text += f"; {int(changed)} of {int(units)} nodes reverted from {row[results.MIXED_BASE]}"
    return text + (" (simulated)" if row[results.SIMULATED] else "")


def mixed_curve(
    model: LoadedModel,
    dataset: Dataset,
    recipes: Sequence[Recipe],
    budget: Budget,
    out_dir: Path,
    workdir: Path,
    table: SensitivityTable | None = None,
    calibration_data: Dataset | None = None,
    mask: str = AUTO,
    threads: int = 1,
    batch: int | None = DEFAULT_LATENCY_BATCH,
    progress: Progress | None = None,
    keeper: Keeper | None = None,
    protocol: LatencyProtocol = ADAPTIVE,
) -> Curve:
    """The sensitivity table of `recipes` (computed in `workdir` unless given), its ladder, and the points of the
    ladder the budget needs, measured, their artifacts under out_dir/artifacts (fp32's too: the curve's far end),
    each handed to `keeper` as it is measured. Scratch files go to `workdir`."""
    plan = plan_data(dataset, calibration_rows_asked(recipes), calibration_data)
    calibration = None if plan.calibration is None else CalibrationSet(plan.calibration)
    if table is None:  # calibrating once: the table's ranges are the curve's
        table = sensitivity_table(model, dataset, recipes, workdir, calibration_data, mask, threads, progress,
                                  calibration=calibration)
    else:
        check_table(table, model, recipes, dataset, calibration_data)
    ladder = ladder_from_table(model, table, list(recipes))
    points = Points(model, plan, ladder, Path(out_dir), Path(workdir), calibration, mask, threads, batch, protocol,
                    progress, keeper)
    points.measure_fp32()
    if isinstance(budget, MaxDrop):
        _accuracy_control(points, budget)
    else:
        _curve_then_refine(points, budget)
    rows = points.table()
    chosen = budget.choose(rows, points.difference)
    rows[results.MIXED_CHOSEN] = False if chosen is None else rows[results.RECIPE_KEY] == chosen[results.RECIPE_KEY]
    if chosen is not None:
        chosen = results.row_for(rows, chosen[results.RECIPE_KEY])
    return Curve(ladder, budget, rows, chosen, None if chosen is not None else budget.closest(rows), table)


def check_table(table: SensitivityTable, model: LoadedModel, recipes: Sequence[Recipe], dataset: Dataset,
                calibration_data: Dataset | None = None) -> None:
    """A table given to the search must be of this model and these candidates, scored and calibrated on the
    curve's rows."""
    known = {node.name for node in model.proto.graph.node} | {value.name for value in model.proto.graph.input}
    if unknown := sorted(set(table.rows[sensitivity_columns.LAYER]) - known):
        raise DataError(f"the sensitivity table is of another model: it names {listed(unknown)}, which this one "
                        "does not have")
    plan = plan_data(dataset, calibration_rows_asked(recipes), calibration_data)
    plan_columns = plan.columns(recipes[0])
    names = {candidate["candidate"] for candidate in table.candidates}
    wanted = [recipe.short_name() for recipe in recipes]
    if missing := [name for name in wanted if name not in names]:
        raise DataError(f"the sensitivity table has no candidate {missing[0]}; it has {', '.join(sorted(names))}")
    for column in (results.SCORED_ROWS, results.CALIBRATION_SOURCE):
        if table.info.get(column) != plan_columns[column]:
            raise DataError(f"the sensitivity table's {column} are {table.info.get(column)!r}, the curve's would "
                            f"be {plan_columns[column]!r}: give the data and calibration data the table had")


def doubling(limit: int) -> list[int]:
    """0, 1, 2, 4, 8, ... and `limit` itself (every move: each node at its most precise), each once."""
    ks, k = [0], 1
    while k < limit:
        ks.append(k)
        k *= 2
    return ks + ([limit] if limit > 0 else [])


def _accuracy_control(points: Points, budget: MaxDrop) -> None:
    """Revert the most harmful points until the drop is met, then bisect to the fewest moves that meet it."""
    unmet = None
    for k in doubling(len(points.ladder.moves)):
        if budget.met_by_real(points.measure(k)):
            _bisect(points, budget, unmet, k, towards_fewer=True)
            return
        unmet = k


def _curve_then_refine(points: Points, budget: Budget) -> None:
    """The doubling curve, then bisection between its last point that meets the budget and the next, which does not."""
    ks = doubling(len(points.ladder.moves))
    measured = {k: points.measure(k) for k in ks}
    meeting = [k for k in ks if budget.met_by_real(measured[k])]
    if meeting:
        last = max(meeting)
        above = [k for k in ks if k > last]
        if above:
            _bisect(points, budget, last, above[0], towards_fewer=False)


def _bisect(points: Points, budget: Budget, low: int | None, high: int, towards_fewer: bool) -> None:
    """Between move counts `low` and `high`, one meeting the budget and the other not, measure midpoints until they
    are neighbours. towards_fewer: `high` meets it and the fewest moves that do is wanted; else `low` meets it and
    the most moves that do."""
    if low is None:
        return
    while high - low > 1:
        middle = (low + high) // 2
        meets = budget.met_by_real(points.measure(middle))
        if meets == towards_fewer:
            high = middle
        else:
            low = middle


class Points:
    """Measures points of the ladder once each, like sweep rows, and keeps their rows (and outputs, when asked)."""

    def __init__(self, model: LoadedModel, plan: DataPlan, ladder: Ladder, out_dir: Path, workdir: Path,
                 calibration: CalibrationSet | None, mask: str, threads: int, batch: int | None,
                 protocol: LatencyProtocol, progress: Progress | None, keeper: Keeper | None = None) -> None:
        self.model, self.plan, self.ladder, self.out_dir = model, plan, ladder, out_dir
        self.threads, self.batch, self.protocol, self.progress, self.keeper = threads, batch, protocol, progress, keeper
        self.reference = reference_for(model, plan.scored, workdir, mask)
        self.calibration = calibration  # on plan.calibration; shared with the sensitivity table when it computed one
        self.rows: dict[int | None, dict] = {}  # moves applied -> row; None: the fp32 reference
        self.outputs: dict[str, np.ndarray] = {}  # recipe key -> its artifact's outputs on the scored rows
        self.mask = self.reference.masking.mask(plan.scored)

    def _tell(self, message: str) -> None:
        if self.progress:
            done = len(self.rows)
            self.progress(done, max(done + 1, len(doubling(len(self.ladder.moves))) + 1), message)

    def measure_fp32(self) -> None:
        """The original model's row: the curve's far end, and the latency every point is compared with."""
        self._tell("measuring fp32")
        self.rows[None] = self._known(Recipe.fp32(), {}, 0)

    def measure(self, k: int) -> pd.Series:
        """The row of the point with the first k moves."""
        if k not in self.rows:
            self._tell(f"measuring {k} of {len(self.ladder.moves)} moves")
            curve = {results.MIXED_BASE: self.ladder.base.short_name(), results.MIXED_MOVES: k,
                     results.MIXED_CHANGED: self.ladder.changed(k), results.MIXED_UNITS: self.ladder.units}
            self.rows[k] = self._known(self.ladder.recipe(k), curve, k + 1)
        return pd.Series(self.rows[k])

    def _known(self, recipe: Recipe, curve: dict, position: int) -> dict:
        """The keeper's row of the recipe, else the recipe measured (with the curve's columns) and kept."""
        kept = self.keeper and self.keeper.known(recipe, position)
        if kept:
            return {**kept, **curve}
        row = {**self._measure(recipe), **curve}
        return self.keeper.keep(row, position) if self.keeper else row

    def _measure(self, recipe: Recipe) -> dict:
        try:
            with nonfinite_range_warnings_silenced():  # the curve's sensitivity table counts them
                row = measure_recipe(self.model, self.plan.scored, recipe, self.out_dir, self.reference,
                                     self.threads, self.batch, self.calibration, self.protocol)
        except QuantscopeError:
            raise
        except Exception as error:  # onnxruntime cannot build this point: a failed row, the curve goes on
            row = self.reference.failed_row(recipe, error)
        return {**row, **self.plan.columns(recipe)}

    def table(self) -> pd.DataFrame:
        order = [None, *sorted(k for k in self.rows if k is not None)]
        return results.results_table([self.rows[k] for k in order])

    def output(self, row: pd.Series) -> np.ndarray:
        key = row[results.RECIPE_KEY]
        if key not in self.outputs:
            self.outputs[key] = predict(open_session(row[results.ARTIFACT], self.threads), self.plan.scored)
        return self.outputs[key]

    def difference(self, a: pd.Series, b: pd.Series) -> Interval:
        """The paired 95% interval of a's primary metric minus b's, both scored against fp32 on the scored rows."""
        def masked(values: np.ndarray) -> np.ndarray:
            return apply_mask(values, self.mask)

        _, interval = difference(self.reference.metric, masked(self.reference.output), masked(self.output(b)),
                                 masked(self.output(a)), self.plan.scored.labels)
        return interval

