"""What explains a point's loss: its values' range, outliers and histogram, and its SQNR against fp32.

Two sets of positions count. `min`, `max` and `nonfinite` are over every value: what the calibrator saw, and so
what set the quantization range. Everything else (the 99.9th percentile, the histogram, the SQNR) is over the
signal: with an attention mask, real tokens only (engine.masking), and in a tensor with two sequence axes
(attention scores, [batch, heads, query, key]) real query-key pairs only, so that the float minimum a Hugging Face
export adds at padded keys is no signal. An axis is a sequence axis when its length is the mask's (axis 0 being
the batch). The outlier ratio, the largest value over the signal's 99.9th percentile, then shows a range stretched
by padding or fill values as well as one stretched by outliers.

The percentile and the histogram come from a deterministic sample of at most SAMPLE_VALUES signal values (every
k-th value of every batch): exact min, max and counts, a 99.9th percentile to within sampling error.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from engine.metrics import sqnr_db_from_energies

SAMPLE_VALUES = 1 << 18
HISTOGRAM_BINS = 64
OUTLIER_PERCENTILE = 99.9  # outlier ratio = max |x| / this percentile of the signal's |x|
WINDOW_PERCENTILES = (0.1, 99.9)  # the histogram spans these (and zero); values outside are counted below/above


def signal_positions(shape: tuple[int, ...], mask: np.ndarray | None) -> np.ndarray | None:
    """Booleans broadcastable to `shape`, True where a value is signal; None when every position is."""
    if mask is None or len(shape) < 2 or shape[0] != mask.shape[0]:
        return None
    batch, sequence = mask.shape
    real = mask.astype(bool)
    positions = None
    for axis in range(1, len(shape)):
        if shape[axis] != sequence:
            continue
        view = [1] * len(shape)
        view[0], view[axis] = batch, sequence
        along = real.reshape(view)
        positions = along if positions is None else positions & along
    return positions


def real_values(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The flat signal values of a tensor (signal_positions)."""
    positions = signal_positions(values.shape, mask)
    if positions is None:
        return values.ravel()
    return values[np.broadcast_to(positions, values.shape)]


class Sqnr:
    """10 log10(sum ref^2 / sum (ref - quantized)^2), accumulated batch by batch over finite reference values."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0

    def add(self, reference: np.ndarray, quantized: np.ndarray) -> None:
        reference, quantized = reference.astype(np.float64), quantized.astype(np.float64)
        finite = np.isfinite(reference)
        errors = (reference[finite] - quantized[finite]) ** 2
        self.signal += float(np.sum(reference[finite] ** 2))
        # a finite value that came out NaN or infinite (an infinite scale times zero) is lost entirely
        self.noise += float(np.sum(np.where(np.isfinite(errors), errors, np.inf)))

    @property
    def db(self) -> float:
        return sqnr_db_from_energies(self.signal, self.noise)


def sqnr_db(reference: np.ndarray, quantized: np.ndarray) -> float:
    sqnr = Sqnr()
    sqnr.add(reference, quantized)
    return sqnr.db


@dataclass(frozen=True)
class Histogram:
    """Counts of the sampled finite values in HISTOGRAM_BINS equal bins between `edges[0]` and `edges[-1]`."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    below: int  # sampled values under the first edge
    above: int  # over the last
    sampled: int  # finite values sampled in all

    def to_dict(self) -> dict:
        return {**asdict(self), "edges": list(self.edges), "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, data: dict) -> Histogram:
        return cls(tuple(data["edges"]), tuple(data["counts"]), data["below"], data["above"], data["sampled"])


@dataclass(frozen=True)
class RangeStats:
    min: float
    max: float
    abs_p999: float  # the 99.9th percentile of the signal's |x|
    outlier_ratio: float  # largest finite |x| / abs_p999: how far the range reaches beyond nearly all the signal
    nonfinite: int  # infinite or NaN values
    values: int  # values counted (finite or not)
    histogram: Histogram

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "histogram"}, "histogram": self.histogram.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> RangeStats:
        return cls(**{**data, "histogram": Histogram.from_dict(data["histogram"])})


class RangeCollector:
    """Accumulates RangeStats over batches of one tensor's values across `rows` examples."""

    def __init__(self, rows: int) -> None:
        self._rows = rows
        self._stride: int | None = None
        self._low, self._high = math.inf, -math.inf
        self._largest = 0.0  # the largest finite |value|
        self._nonfinite = 0
        self._count = 0
        self._sample: list[np.ndarray] = []

    def add(self, values: np.ndarray, signal: np.ndarray, batch_rows: int) -> None:
        """Every value of a batch (`values`), and its signal values (real_values)."""
        values, signal = values.ravel(), signal.ravel()
        if self._stride is None:  # fixed from the first batch, so the sample is the same on every run
            expected = signal.size / max(batch_rows, 1) * self._rows
            self._stride = max(1, math.ceil(expected / SAMPLE_VALUES))
        self._count += values.size
        finite = values[np.isfinite(values)]
        self._nonfinite += values.size - finite.size
        numbers = values[~np.isnan(values)]
        if numbers.size:
            self._low, self._high = min(self._low, float(numbers.min())), max(self._high, float(numbers.max()))
        if finite.size:
            self._largest = max(self._largest, float(np.max(np.abs(finite))))
        kept = signal[np.isfinite(signal)]
        if kept.size:
            self._sample.append(kept[:: self._stride].astype(np.float64))

    def result(self) -> RangeStats:
        sample = np.concatenate(self._sample) if self._sample else np.zeros(0)
        if sample.size:
            abs_p999 = float(np.percentile(np.abs(sample), OUTLIER_PERCENTILE))
            low, high = np.percentile(sample, WINDOW_PERCENTILES)
        else:
            abs_p999, low, high = 0.0, 0.0, 0.0
        low, high = min(float(low), 0.0), max(float(high), 0.0)
        if high == low:
            high = low + 1.0  # an all-zero tensor still gets a window to draw
        counts, edges = np.histogram(sample, bins=HISTOGRAM_BINS, range=(low, high))
        histogram = Histogram(tuple(float(e) for e in edges), tuple(int(c) for c in counts),
                              int(np.sum(sample < low)), int(np.sum(sample > high)), int(sample.size))
        if abs_p999 > 0:
            ratio = self._largest / abs_p999
        else:
            ratio = math.inf if self._largest > 0 else 1.0
        low_value = self._low if self._count else math.nan
        high_value = self._high if self._count else math.nan
        return RangeStats(low_value, high_value, abs_p999, ratio, self._nonfinite, self._count, histogram)


def range_stats(values: np.ndarray) -> RangeStats:
    """RangeStats of one array (a weight): every value is signal."""
    collector = RangeCollector(1)
    collector.add(values, values, 1)
    return collector.result()
