"""Measured mixed precision: keep the few nodes a recipe breaks precise, squeeze the rest, and measure every point.

Map of this package:

    ladder.py   from the sensitivity table's rows to an ordered list of per-node moves (an override each), from
                the uniform recipe with the fewest weight bits towards the original model
    budgets.py  what a point must meet (--max-drop, --max-size-ratio, --max-latency-ms), the noise rule, and which
                point is chosen
    search.py   the curve: points of the ladder built by the realisers and measured as sweep rows (accuracy
                control bisects to the fewest moves that meet the drop)
    files.py    curve.json, curve.csv and chosen.json

The search reads the sensitivity table (engine.sensitivity) through its rows only. The curve's rows are
engine.results rows with the MIXED_* columns saying which point of which curve each is.
"""

from engine.mixed.budgets import Budget, MaxDrop, MaxLatency, MaxSizeRatio
from engine.mixed.files import CHOSEN_FILE, CURVE_STEM, export_points, read_table, write_curve
from engine.mixed.ladder import Ladder, Move, curve_candidates, ladder_from_table, point_nodes
from engine.mixed.search import Curve, budget_verdict, check_table, mixed_curve

__all__ = [
    "CHOSEN_FILE", "CURVE_STEM", "Budget", "Curve", "Ladder", "MaxDrop", "MaxLatency", "MaxSizeRatio", "Move",
    "budget_verdict", "check_table", "curve_candidates", "export_points", "ladder_from_table", "mixed_curve",
    "point_nodes", "read_table", "write_curve",
]
