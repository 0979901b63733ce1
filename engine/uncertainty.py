"""How sure a row's primary metric is: 95% intervals for the metric and for its paired difference to fp32.

On 360 examples one example is 0.28 accuracy points, so a figure without its interval says more than it
knows. Two intervals per row:

- the metric's: for a rate (top-1 accuracy, top-1 agreement) the Wilson score interval; otherwise a
  percentile bootstrap over the scored examples;
- the difference to fp32 (this recipe's metric minus the original model's): a paired percentile bootstrap,
  the same resampled examples for both models, so it reflects where the two disagree, not how hard the
  examples are. Its interval containing 0 means no measurable difference.

The bootstrap is seeded, so the same run gives the same interval. Each primary metric is written here as
per-example statistics and an aggregate of their sums, which makes a thousand resamples one matrix product.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.metrics import row_cosines

CONFIDENCE = 0.95
RESAMPLES = 1000
SEED = 20261201
_Z = 1.959964  # the standard normal's 97.5th percentile
_CHUNK = 100  # resamples per matrix product, bounding memory at _CHUNK x examples
_CACHED_DRAW_VALUES = 10_000_000  # draws up to this many counts (80 MB) are kept for reuse


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class _Decomposed:
    """A metric as per-example statistics [N, k] of (output, target) and an aggregate of their sums."""

    statistics: Callable[[np.ndarray, np.ndarray], np.ndarray]
    aggregate: Callable[[np.ndarray, int], np.ndarray]  # (sums [..., k], examples) -> metric [...]
    rate: bool  # a share of examples: the Wilson interval applies


def _rows(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float64).reshape(len(array), -1)


def _correct(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return (np.asarray(scores).argmax(axis=1) == np.asarray(labels).reshape(-1))[:, None].astype(np.float64)


def _agreeing(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return (np.asarray(output).argmax(axis=1) == np.asarray(reference).argmax(axis=1))[:, None].astype(np.float64)


def _absolute_errors(output: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out, target = _rows(output), _rows(labels)
    return np.abs(out - target).sum(axis=1, keepdims=True) / out.shape[1]  # the row's share of the mean


def _cosines(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return row_cosines(np.asarray(reference, dtype=np.float64), np.asarray(output, dtype=np.float64))[:, None]


def _mean(sums: np.ndarray, examples: int) -> np.ndarray:
    return sums[..., 0] / examples


# Every metric engine.metrics may make primary (tests/test_uncertainty.py checks the list is complete).
PRIMARY_DECOMPOSITIONS: dict[str, _Decomposed] = {
    "top1": _Decomposed(_correct, _mean, rate=True),
    "mae": _Decomposed(_absolute_errors, _mean, rate=False),
    "top1_agreement": _Decomposed(_agreeing, _mean, rate=True),
    "cosine": _Decomposed(_cosines, _mean, rate=False),
}
_FIDELITY_METRICS = ("top1_agreement", "cosine")  # scored against the fp32 outputs, not the labels


@dataclass(frozen=True)
class Uncertainty:
    metric: Interval
    delta: float  # this recipe's metric minus fp32's, on the same examples
    delta_interval: Interval


def _statistics(metric: str, output: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    target = reference if metric in _FIDELITY_METRICS else labels
    return PRIMARY_DECOMPOSITIONS[metric].statistics(output, target)


def wilson(successes: float, trials: int) -> Interval:
    """The Wilson score interval for a share of `trials`."""
    share = successes / trials
    centre = (share + _Z**2 / (2 * trials)) / (1 + _Z**2 / trials)
    half = _Z * np.sqrt(share * (1 - share) / trials + _Z**2 / (4 * trials**2)) / (1 + _Z**2 / trials)
    return Interval(float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def _resampled_sums(statistics: list[np.ndarray], resamples: int, seed: int) -> list[np.ndarray]:
    """Column sums of each statistics matrix under the same `resamples` bootstrap draws of the examples."""
    examples = len(statistics[0])
    sums = [[] for _ in statistics]
    for counts in _draws(examples, resamples, seed):
        for part, matrix in zip(sums, statistics):
            part.append(counts @ matrix)
    return [np.concatenate(part) for part in sums]


def _draws(examples: int, resamples: int, seed: int) -> tuple[np.ndarray, ...]:
    """The bootstrap's resampling counts, _CHUNK resamples per block. Drawing them costs more than using them, and
    a seeded draw is the same for every metric scored on the same examples, so small ones are kept for reuse
    (a sensitivity table scores hundreds of cells on one set of rows)."""
    if examples * resamples <= _CACHED_DRAW_VALUES:
        return _cached_draws(examples, resamples, seed)
    return tuple(_generate_draws(examples, resamples, seed))


def _generate_draws(examples: int, resamples: int, seed: int):
    generator = np.random.default_rng(seed)
    for start in range(0, resamples, _CHUNK):
        counts = generator.multinomial(examples, np.full(examples, 1 / examples), size=min(_CHUNK, resamples - start))
        yield counts.astype(np.float64)


@functools.lru_cache(maxsize=4)
def _cached_draws(examples: int, resamples: int, seed: int) -> tuple[np.ndarray, ...]:
    draws = tuple(_generate_draws(examples, resamples, seed))
    for block in draws:
        block.setflags(write=False)
    return draws


def _percentiles(values: np.ndarray) -> Interval:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(low), float(high))


def uncertainty(metric: str, reference: np.ndarray, output: np.ndarray, labels: np.ndarray | None,
                resamples: int = RESAMPLES, seed: int = SEED) -> Uncertainty:
    """The 95% intervals of `metric` (the table's primary metric) for `output`, and of its difference to the fp32
    `reference` scored the same way, over the same examples."""
    decomposed = PRIMARY_DECOMPOSITIONS[metric]
    mine = _statistics(metric, output, reference, labels)
    delta, delta_interval, mine_values = _paired(metric, mine, _statistics(metric, reference, reference, labels),
                                                 resamples, seed)
    metric_interval = wilson(mine.sum(), len(mine)) if decomposed.rate else _percentiles(mine_values)
    return Uncertainty(metric_interval, delta, delta_interval)


def difference(metric: str, reference: np.ndarray, baseline: np.ndarray, output: np.ndarray,
               labels: np.ndarray | None, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, Interval]:
    """`metric` of `output` minus that of `baseline`, both scored against the fp32 `reference` (and labels), and its
    paired 95% interval: e.g. how much keeping one tensor in float recovers over quantizing everything."""
    delta, interval, _ = _paired(metric, _statistics(metric, output, reference, labels),
                                 _statistics(metric, baseline, reference, labels), resamples, seed)
    return delta, interval


def _paired(metric: str, mine: np.ndarray, theirs: np.ndarray, resamples: int, seed: int
            ) -> tuple[float, Interval, np.ndarray]:
    """(difference, its interval, the resampled values of `mine`) of two per-example statistics matrices."""
    decomposed = PRIMARY_DECOMPOSITIONS[metric]
    examples = len(mine)
    delta = float(decomposed.aggregate(mine.sum(axis=0), examples)) - \
        float(decomposed.aggregate(theirs.sum(axis=0), examples))
    resampled_mine, resampled_theirs = _resampled_sums([mine, theirs], resamples, seed)
    mine_values = decomposed.aggregate(resampled_mine, examples)
    deltas = mine_values - decomposed.aggregate(resampled_theirs, examples)
    return delta, _percentiles(deltas), mine_values
