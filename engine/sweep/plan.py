"""Which rows a sweep scores and which calibrate its static recipes, decided once for every recipe.

Rows that calibrate a recipe must not also score it, and every recipe (fp32 included) must be scored on the
same rows so that comparisons stay paired. So:

- with a separate calibration file, static recipes calibrate on it and every validation row is scored;
- without one, the first rows of the validation set calibrate (as many as the sweep's recipes ask for,
  128 by default) and are held out of scoring for every recipe; a set too small to lose that many keeps
  at least half of its rows for scoring, and the row says so;
- a sweep in which no recipe calibrates scores every row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from engine import results
from engine.data import Dataset
from engine.realise.calibration import calibration_key
from engine.recipe import Recipe

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

    def columns(self, recipe: Recipe) -> dict:
        """The row's record of what scored it and, for a recipe that calibrates, what calibrated it."""
        calibrates = calibration_key(recipe) is not None
        first_scored = self.validation_rows - len(self.scored) + 1
        return results.scoring_columns(first_scored, self.validation_rows,
                                       self.calibration_source if calibrates else None,
                                       self.note if calibrates else None)


def plan_identity(validation_rows: int, asked: int, calibration_fingerprint: str | None) -> str:
    """What a plan's scored rows and calibration depend on, without loading the data: for the result cache."""
    if asked == 0:
        return "every row scored"
    if calibration_fingerprint is not None:
        return f"every row scored; calibrated on data {calibration_fingerprint}"
    held = held_out_rows(validation_rows, asked)
    return f"rows {held + 1}..{validation_rows} scored; rows 1..{held} calibrate"


def plan_data(validation: Dataset, asked: int, calibration_file: Dataset | None = None) -> DataPlan:
    """The plan for a sweep whose recipes ask for `asked` calibration rows (calibration_rows_asked)."""
    if asked == 0:
        return DataPlan(validation, len(validation), None, None)
    if calibration_file is not None:
        return DataPlan(validation, len(validation), calibration_file, calibration_file.source)
    held = held_out_rows(len(validation), asked)
    note = None if held == asked else (
        f"the validation set has {len(validation)} rows: {held} rows, not the {asked} asked for, were held out to "
        f"calibrate, so that at least {MIN_SCORED_SHARE:.0%} of them are scored")
    return DataPlan(validation.rows(slice(held, None)), len(validation), validation.rows(slice(0, held)),
                    f"rows 1..{held} of the validation set", note)
