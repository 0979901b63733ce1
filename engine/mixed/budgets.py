"""What a mixed-precision point must meet, and which of the points that meet it is chosen.

Three budgets, one per CLI flag:

- MaxDrop (--max-drop D): the primary metric at most D worse than fp32's, in the metric's own units (0.01 is one
  accuracy point). A point meets it when its measured drop on the scored rows is at most D: a point whose drop is
  above the budget is never returned. (Counting a drop the paired interval cannot tell from none as met would let
  drops of 2.5 points through on 272 rows; requiring the whole interval within D would accept only points next to
  fp32.) Of the points that meet it the cheapest is chosen (smallest artifact, then fastest): accuracy control
  stops at the first point that meets the drop and bisects back to the fewest moves that do, never reverting more
  for a better figure. The verdict says whether the drop's 95% interval, too, is within D.
- MaxSizeRatio (--max-size-ratio R): artifact bytes at most R times the fp32 model's. Bytes have no noise.
- MaxLatency (--max-latency-ms T): the median batch-1 latency at most T ms (a timed row; its 95% interval, over
  fresh sessions, says how precise: engine.measure).

The noise rule: for the size and latency budgets the point with the best metric among those that meet it is the
target, but a point only counts as better than another when their paired difference's 95% interval excludes 0
(engine.uncertainty.difference, the same examples resampled for both): among the points the best one is not
measurably better than, the smallest (size budget) or the fastest (latency budget) is chosen. The ladder the
search walks is ordered by the same rule (engine.mixed.ladder: harms inside the noise count as none).

Only real points are chosen (a simulated artifact is an fp32 simulation, nothing to deploy), never fp32 itself.
When none meets the budget, `closest` names the one that comes nearest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from engine import results
from engine.errors import RecipeError
from engine.metrics import METRICS
from engine.uncertainty import Interval

# (row a, row b) -> the paired 95% interval of a's primary metric minus b's, on the same scored rows
Difference = Callable[[pd.Series, pd.Series], Interval]


def drop(row) -> float:
    """How much worse than fp32 the row's primary metric is, in its own units (negative: better)."""
    return results.loss(row[results.DELTA], row[results.METRIC_NAME])


@dataclass(frozen=True)
class Budget:
    limit: float
    flag = ""  # the CLI flag that sets it
    larger_is_better = False  # True: the search looks for the point with the most moves that still meets it

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int | float) or self.limit != self.limit or self.limit < self.smallest:
            raise RecipeError(f"{self.flag} must be a number of at least {self.smallest:g}; got {self.limit!r}")

    smallest = 0.0

    def meets(self, row) -> bool:
        raise NotImplementedError

    def met_by_real(self, row) -> bool:
        """Whether a measured, real (not simulated) row meets the budget: what the search stops and bisects on."""
        return not pd.isna(row.get(results.METRIC)) and not row[results.SIMULATED] and self.meets(row)

    def shortfall(self, row) -> float:
        """How far the row is from meeting the budget (0 when it does): what `closest` minimises."""
        raise NotImplementedError

    def figure(self, row) -> str:
        """The row's figure this budget is about, in words."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.flag} {self.limit:g}"

    def choose(self, rows: pd.DataFrame, difference: Difference) -> pd.Series | None:
        """The row that meets the budget best, among the real quantized rows; None when none meets it."""
        meeting = [row for _, row in eligible(rows).iterrows() if self.meets(row)]
        return self._best(meeting, difference) if meeting else None

    def _best(self, meeting: list[pd.Series], difference: Difference) -> pd.Series:
        sign = 1 if METRICS[meeting[0][results.METRIC_NAME]].higher_is_better else -1
        best = max(meeting, key=lambda row: sign * row[results.METRIC])
        as_good = [row for row in meeting if row is best or difference(best, row).contains(0.0)]
        return min(as_good, key=self._cost)

    def _cost(self, row) -> tuple:
        return row[results.SIZE_BYTES], _latency(row)

    def closest(self, rows: pd.DataFrame) -> pd.Series | None:
        """The row nearest to meeting the budget: a real one when there is any."""
        candidates = eligible(rows)
        if candidates.empty:
            candidates = quantized(rows)
        if candidates.empty:
            return None
        return min((row for _, row in candidates.iterrows()), key=lambda row: (self.shortfall(row), self._cost(row)))


class MaxDrop(Budget):
    flag = "--max-drop"

    def meets(self, row) -> bool:
        return drop(row) <= self.limit

    def shortfall(self, row) -> float:
        return max(drop(row) - self.limit, 0.0)

    def figure(self, row) -> str:
        worst = drop({**row, results.DELTA: _worse_end(row)})
        sure = "within the budget beyond the noise" if worst <= self.limit else f"the 95% interval reaches {worst:.3g}"
        return f"drop {drop(row) + 0.0:+.4g} from fp32 ({sure})"  # + 0.0: no "-0"

    def _best(self, meeting, difference):
        return min(meeting, key=self._cost)  # every point that meets the drop is good enough: the cheapest


class MaxSizeRatio(Budget):
    flag = "--max-size-ratio"
    larger_is_better = True
    smallest = 1e-6

    def meets(self, row) -> bool:
        return row[results.SIZE_RATIO] <= self.limit

    def shortfall(self, row) -> float:
        return max(row[results.SIZE_RATIO] - self.limit, 0.0)

    def figure(self, row) -> str:
        return f"{row[results.SIZE_RATIO]:.3g} x fp32 ({row[results.SIZE_BYTES]:,} bytes)"


class MaxLatency(Budget):
    flag = "--max-latency-ms"
    larger_is_better = True
    smallest = 1e-6

    def meets(self, row) -> bool:
        return _latency(row) <= self.limit

    def shortfall(self, row) -> float:
        return max(_latency(row) - self.limit, 0.0)

    def figure(self, row) -> str:
        latency = _latency(row)
        return "not timed" if latency == float("inf") else f"{latency:.3g} ms at batch 1"

    def _cost(self, row) -> tuple:
        return _latency(row), row[results.SIZE_BYTES]


def _worse_end(row) -> float:
    """The end of the change's 95% interval that is worse for the metric."""
    higher_is_better = METRICS[row[results.METRIC_NAME]].higher_is_better
    return row[results.DELTA_CI_LOW] if higher_is_better else row[results.DELTA_CI_HIGH]


def _latency(row) -> float:
    value = row.get(results.LATENCY)
    return float("inf") if value is None or pd.isna(value) else float(value)


def quantized(rows: pd.DataFrame) -> pd.DataFrame:
    """Measured rows other than the fp32 reference."""
    measured = results.measured_rows(rows)
    return measured[[not results.is_reference(row) for _, row in measured.iterrows()]]


def eligible(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows a budget may choose: measured, real (not simulated) and not the fp32 reference."""
    candidates = quantized(rows)
    return candidates[~candidates[results.SIMULATED].astype(bool)]
