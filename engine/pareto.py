"""Pareto fronts over trade-off objectives, e.g. accuracy against model size or latency."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # only the DataFrame's methods are used: no runtime dependency on pandas here
    import pandas as pd


def pareto_front(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Bool mask [n] of the non-dominated rows of points [n, k]; maximize[j] gives objective j's direction.

    A point is dominated when another is at least as good in every objective and strictly better in one, so exact
    duplicates never dominate each other and are all kept. A point with NaN in any objective (e.g. latency not
    measured) is neither on the front nor dominates anything.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != len(maximize):
        raise ValueError(f"points must have shape [n, {len(maximize)}], got {points.shape}")
    # Flip minimised objectives so that larger is better everywhere.
    better = np.where(np.asarray(maximize, dtype=bool), points, -points)
    valid = ~np.isnan(better).any(axis=1)
    # [i, j]: point i is at least as good as point j in every objective / strictly better in some.
    # Comparisons with NaN are False, so a point with NaN is never "at least as good" and dominates nothing.
    at_least_as_good = (better[:, None, :] >= better[None, :, :]).all(axis=2)
    strictly_better = (better[:, None, :] > better[None, :, :]).any(axis=2)
    dominated = (at_least_as_good & strictly_better).any(axis=0)
    return valid & ~dominated


def pareto_flags(table: pd.DataFrame, objectives: dict[str, dict[str, bool]]) -> pd.DataFrame:
    """A copy of table with one boolean column per front, e.g. {"pareto_size": {"top1": True, "size_bytes": False}}
    adds "pareto_size", True where the row is on the top1-vs-size front. Missing values count as NaN."""
    flags = {
        flag: pareto_front(table[list(columns)].to_numpy(dtype=np.float64, na_value=np.nan), list(columns.values()))
        for flag, columns in objectives.items()
    }
    return table.assign(**flags)
