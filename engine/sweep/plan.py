"""Which rows a sweep scores and which calibrate its static recipes, decided once for every recipe.

Rows that calibrate a recipe must not also score it, and every recipe (fp32 included) must be scored on the
same rows so that comparisons stay paired. So:

- with a separate calibration file, static recipes calibrate on it and every validation row is scored;
- without one, the first rows of the validation set calibrate (as many as the sweep's recipes ask for,
  128 by default) and are held out of scoring for every recipe; a set too small to lose that many keeps
  at least half of its rows for scoring, and the row says so;
- a sweep in which no recipe calibrates scores every row.

Extra evaluation sets (the user's, and synthetic shifts of the scored rows: engine.shifts) are scored whole,
beside the validation set; they never calibrate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from engine import results
from engine.data import Dataset
from engine.errors import DataError
from engine.realise.calibration import calibration_key
from engine.recipe import Recipe
from engine.shifts import Shift

MIN_SCORED_SHARE = 0.5  # of the validation set, when its own rows calibrate


def calibration_rows_asked(recipes: Iterable[Recipe]) -> int:
    """The most calibration rows any of the recipes asks for; 0 when none calibrates."""
    return max((recipe.activations.calibration_samples for recipe in recipes if calibration_key(recipe)), default=0)


def held_out_rows(validation_rows: int, asked: int) -> int:
    """How many leading validation rows calibrate (and are not scored) when no calibration file is given."""
    return min(asked, int(validation_rows * (1 - MIN_SCORED_SHARE)))


@dataclass(frozen=True)
class DataPlan:
    scored: Dataset  # the rows every recipe is scored on: the validation set's last ones
    validation_rows: int
    calibration: Dataset | None  # what static recipes calibrate on; None when no recipe calibrates
    calibration_source: str | None  # in words: a file name, or "rows 1..128 of the validation set"
    note: str | None = None  # said when the validation set was too small to hold out what was asked
    extras: dict[str, Dataset] = field(default_factory=dict)  # extra evaluation sets by name, in the given order

    def columns(self, recipe: Recipe) -> dict:
        """The row's record of what scored it and, for a recipe that calibrates, what calibrated it."""
        calibrates = calibration_key(recipe) is not None
        first_scored = self.validation_rows - len(self.scored) + 1
        return results.scoring_columns(first_scored, self.validation_rows,
                                       self.calibration_source if calibrates else None,
                                       self.note if calibrates else None)


def plan_identity(validation_rows: int, asked: int, calibration_fingerprint: str | None,
                  extras: Sequence[tuple[str, str]] = ()) -> str:
    """What a plan's scored rows, calibration and extra sets depend on, without loading the data: for the result
    cache. `extras`: (name, fingerprint) of each extra set, a shift's fingerprint being its name."""
    if asked == 0:
        scoring = "every row scored"
    elif calibration_fingerprint is not None:
        scoring = f"every row scored; calibrated on data {calibration_fingerprint}"
    else:
        held = held_out_rows(validation_rows, asked)
        scoring = f"rows {held + 1}..{validation_rows} scored; rows 1..{held} calibrate"
    return scoring + "".join(f"; also {name} ({fingerprint})" for name, fingerprint in extras)


def plan_data(validation: Dataset, asked: int, calibration_file: Dataset | None = None,
              extra_sets: dict[str, Dataset] | None = None, shifts: Sequence[Shift] = ()) -> DataPlan:
    """The plan for a sweep whose recipes ask for `asked` calibration rows (calibration_rows_asked), with extra
    evaluation sets by name and synthetic shifts of the scored rows."""
    if asked == 0:
        plan = DataPlan(validation, len(validation), None, None)
    elif calibration_file is not None:
        plan = DataPlan(validation, len(validation), calibration_file, calibration_file.source)
    else:
        held = held_out_rows(len(validation), asked)
        note = None if held == asked else (
            f"the validation set has {len(validation)} rows: {held} rows, not the {asked} asked for, were held out "
            f"to calibrate, so that at least {MIN_SCORED_SHARE:.0%} of them are scored")
        plan = DataPlan(validation.rows(slice(held, None)), len(validation), validation.rows(slice(0, held)),
                        f"rows 1..{held} of the validation set", note)
    extras = dict(extra_sets or {})
    for shift in shifts:
        check_set_name(shift.name, extras)
        extras[shift.name] = shift.apply(plan.scored)
    return replace(plan, extras=extras)


SET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_:.+-]{0,63}$")


def check_set_name(name: str, taken: Iterable[str] = ()) -> str:
    """An extra set's name: short, plain characters, and not one already used in the sweep."""
    if not SET_NAME.match(name):
        raise DataError(f"an extra evaluation set's name is 1-64 letters, digits and _ : . + -; got {name!r}")
    if name in taken:
        raise DataError(f"two extra evaluation sets are called {name!r}")
    return name
