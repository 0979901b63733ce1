"""Activation ranges from calibration data, using onnxruntime's calibrators.

Ranges depend on the model, the data and the recipe's `calibration_key` only, so a CalibrationSet
computes each key's once and every recipe sharing it (W8A8 and W4A8 minmax, say) reuses them. They reach
quantize_static as its own calibration cache file, so it runs no calibration pass of its own.

minmax and percentile ranges are onnxruntime's calibrators' own. entropy and mse pick each tensor's range from
the 2048-bin value histograms onnxruntime's entropy calibrator collects:
- entropy is TensorRT's KL-divergence search, the algorithm of onnxruntime's own `get_entropy_threshold`,
  vectorised. Inside quantize_static onnxruntime runs it on 128 bins for 128 levels, where the only
  candidate is the full range: "entropy" there gives exactly the minmax model. At 2048 bins its
  Python loop takes seconds per tensor.
- mse is ours (onnxruntime has none): the range that minimises expected squared error, clipping error
  outside, rounding noise step²/12 inside.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
from onnxruntime.quantization.calibrate import TensorsData, create_calibrator, save_tensors_data

from engine.data import Dataset
from engine.model import LoadedModel
from engine.recipe import Calibration, Mode, Recipe, calibration_applies

# Rows per calibration run. onnxruntime's calibrators run a copy of the model that reports every activation, and
# that copy keeps all of them alive through a run: its memory grows with the rows of a run (about 40 MB a row of 64
# tokens on a 92 MB encoder, bench/sweep_memory.py), so runs are small and each is collected on its own.
CALIBRATION_BATCH = 4
HISTOGRAM_BINS = 2048
MSE_CANDIDATES = 200
ENTROPY_EPSILON = 0.0001  # onnxruntime's smooth_distribution default
ENTROPY_MAX_BINS = 8192  # the KL search is quadratic in bins; wider histograms are merged first
ENTROPY_BLOCK = 32  # candidate windows searched together (at most 32 x 8192 values per array)

# Our calibration choice -> onnxruntime's method; entropy and mse use the entropy calibrator's histograms.
ORT_METHOD = {
    Calibration.MINMAX: CalibrationMethod.MinMax,
    Calibration.PERCENTILE: CalibrationMethod.Percentile,
    Calibration.ENTROPY: CalibrationMethod.Entropy,
    Calibration.MSE: CalibrationMethod.Entropy,
}
HISTOGRAM_METHODS = (Calibration.ENTROPY, Calibration.MSE)  # ranges picked here from collected histograms
PERCENTILE = 99.999

Ranges = dict[str, tuple[float, float]]  # activation tensor -> (low, high)
CalibrationKey = tuple[str, int, int | None]


def calibration_key(recipe: Recipe, bits: int | None = None) -> CalibrationKey | None:
    """What a static recipe's activation ranges at `bits` (the recipe's own width unless a node override asks
    for another) depend on besides the model and the data; None: no ranges.

    The histogram searches weigh clipping against rounding, so their ranges depend on the bits too. Entropy at
    16 bits keeps the full range (see calibration_applies), which is minmax's."""
    act = recipe.activations
    if recipe.mode is not Mode.STATIC or act is None:
        return None
    bits = bits or act.bits
    if not calibration_applies(bits, act.calibration):
        return Calibration.MINMAX.value, act.calibration_samples, None
    return act.calibration.value, act.calibration_samples, bits if act.calibration in HISTOGRAM_METHODS else None


@dataclass
class CalibrationSet:
    """Calibration data, and the ranges already computed from it for each calibration key."""

    dataset: Dataset
    known: dict[CalibrationKey, Ranges] = field(default_factory=dict)

    def ranges(self, model: LoadedModel, recipe: Recipe, bits: int | None = None) -> Ranges:
        """The recipe's activation ranges at `bits`, by default the recipe's own activation width."""
        key = calibration_key(recipe, bits)
        if key is None:
            raise ValueError(f"{recipe.short_name()} has no calibrated activations")
        if key not in self.known:
            method, samples, key_bits = key
            batch_dynamic = all(spec.batch_is_dynamic for spec in model.summary.inputs)
            self.known[key] = activation_ranges(model.file, self.dataset, Calibration(method), samples,
                                                batch_dynamic, key_bits, external_data=model.needs_external_data)
        return self.known[key]


class DatasetReader(CalibrationDataReader):
    """Feeds the first rows of a Dataset to onnxruntime's calibrators, a batch at a time."""

    def __init__(self, dataset: Dataset, batch_size: int):
        self._dataset = dataset
        self._batch_size = batch_size
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = self._dataset.batches(self._batch_size)


def reader_for(dataset: Dataset, samples: int, batch_dynamic: bool) -> DatasetReader:
    return DatasetReader(dataset.take(samples), CALIBRATION_BATCH if batch_dynamic else 1)


def activation_ranges(
    model_path: Path,
    dataset: Dataset,
    method: Calibration,
    samples: int,
    batch_dynamic: bool,
    bits: int | None,
    external_data: bool = False,
) -> Ranges:
    """Range (low, high) of each float activation tensor over `samples` rows of the model at `model_path`;
    `bits` matters to the histogram methods only (`external_data`: the model is past 2 GB, and so is the
    calibrator's augmented copy)."""
    with tempfile.TemporaryDirectory(prefix="quantscope-calib-") as tmp:
        # onnxruntime's histogram collectors print progress to stdout; keep the CLI's output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            calibrator = create_calibrator(
                model_path,
                augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=ORT_METHOD[method],
                use_external_data_format=external_data,
                # percentile of |x| for both tails: what quantize_static's own percentile calibration does
                extra_options={"num_bins": HISTOGRAM_BINS, "percentile": PERCENTILE,
                               "symmetric": method is Calibration.PERCENTILE},
            )
            _collect_run_by_run(calibrator, dataset.take(samples), CALIBRATION_BATCH if batch_dynamic else 1)
            if method in HISTOGRAM_METHODS:
                histograms = calibrator.collector.histogram_dict
                if method is Calibration.MSE:
                    return {name: mse_range(h[0], h[1], bits) for name, h in histograms.items()}
                return {name: entropy_range(*h[:4], bits) for name, h in histograms.items()}
            computed = calibrator.compute_data()
    return {name: _as_range(*computed[name].range_value) for name in computed}


def _collect_run_by_run(calibrator, rows: Dataset, batch: int) -> None:
    """Feed the calibrator one run of `batch` rows per collect_data call. Each call folds what it saw into the
    calibrator's ranges or histograms (onnxruntime's own incremental path) and lets go of the activations; given
    every row at once, the histogram calibrators would hold every activation of every row until the end."""
    for start in range(0, len(rows), batch):
        calibrator.collect_data(DatasetReader(rows.rows(slice(start, start + batch)), batch))


def save_for_quantize_static(ranges: Ranges, path: Path) -> None:
    """Write ranges as onnxruntime's calibration cache, which quantize_static then uses instead of calibrating."""
    data = {name: (np.float32(low), np.float32(high)) for name, (low, high) in ranges.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)


def _as_range(low, high) -> tuple[float, float]:
    """onnxruntime gives 0-d or 1-element arrays depending on the calibrator."""
    return float(np.min(low)), float(np.max(high))


def mse_range(counts: np.ndarray, edges: np.ndarray, bits: int) -> tuple[float, float]:
    """The clipping range [low, high] minimising expected quantization MSE for this histogram."""
    centers = (edges[:-1] + edges[1:]).astype(np.float64) / 2
    weights = counts.astype(np.float64)
    occupied = np.nonzero(weights)[0]
    if occupied.size == 0:
        return 0.0, 0.0
    low, high = min(centers[occupied[0]], 0.0), max(centers[occupied[-1]], 0.0)
    fractions = np.linspace(1.0 / MSE_CANDIDATES, 1.0, MSE_CANDIDATES)[:, None]
    lows, highs = low * fractions, high * fractions
    steps = (highs - lows) / (2**bits - 1)
    clipped = np.clip(centers[None, :], lows, highs)
    inside = (centers[None, :] >= lows) & (centers[None, :] <= highs)
    error = np.where(inside, steps**2 / 12, (centers[None, :] - clipped) ** 2)
    best = int(np.argmin(error @ weights))
    return float(lows[best, 0]), float(highs[best, 0])


def entropy_range(counts: np.ndarray, edges: np.ndarray, lowest: float, highest: float, bits: int
                  ) -> tuple[float, float]:
    """The clipping range whose quantized distribution is closest (KL divergence) to the histogram's.

    The same computation as onnxruntime's HistogramCollector.get_entropy_threshold, step for step
    (including its integer division when spreading merged bins back out), for many candidate windows
    at once. 2^(bits-1) quantized bins: onnxruntime's and TensorRT's 128 at 8 bits; at 16 bits no window
    is narrow enough to be a candidate, so the range is the observed one.
    """
    hist, edges = _coarsened(np.asarray(counts, dtype=np.int64), np.asarray(edges, dtype=np.float64))
    levels = 2 ** (bits - 1)
    zero = hist.size // 2
    if levels // 2 > zero:
        return float(lowest), float(highest)
    half = np.arange(levels // 2, zero + 1)  # candidate windows: zero ± half bins
    start, end = zero - half, np.minimum(zero + half + 1, hist.size)
    # Blocks of neighbouring candidates have similar widths, so little of each block is padding.
    divergence = np.concatenate([
        _window_divergences(hist, start[i:i + ENTROPY_BLOCK], end[i:i + ENTROPY_BLOCK], levels)
        for i in range(0, half.size, ENTROPY_BLOCK)
    ])
    best = int(np.argmin(divergence))
    return max(float(edges[start[best]]), float(lowest)), min(float(edges[end[best]]), float(highest))


def _coarsened(hist: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge neighbouring bins, symmetrically about zero, until at most ENTROPY_MAX_BINS remain.

    onnxruntime's collector widens a histogram whenever a later batch reaches further out, so a tensor
    whose range grows a lot during calibration can hold millions of bins; the search is quadratic in bins.
    """
    factor = -(-hist.size // ENTROPY_MAX_BINS)
    if factor == 1:
        return hist, edges
    pad = (-hist.size) % (2 * factor) // 2  # per side, so that both halves split into whole groups
    step = edges[1] - edges[0]
    hist = np.pad(hist, pad).reshape(-1, factor).sum(axis=1)
    edges = np.concatenate([edges[0] - step * np.arange(pad, 0, -1), edges, edges[-1] + step * np.arange(1, pad + 1)])
    return hist, edges[::factor]


def _window_divergences(hist: np.ndarray, start: np.ndarray, end: np.ndarray, levels: int) -> np.ndarray:
    """KL(p || q) for each candidate window [start, end) of the histogram."""
    width = end - start
    rows = np.arange(width.size)[:, None]
    position = np.arange(width.max())[None, :]
    inside = position < width[:, None]
    sliced = np.where(inside, hist[np.minimum(start[:, None] + position, hist.size - 1)], 0)

    # p: the window, with the mass outside it added to its first and last bins
    totals = np.concatenate([[0], np.cumsum(hist)])
    p = sliced.copy()
    p[:, 0] += totals[start]
    p[rows[:, 0], width - 1] += totals[-1] - totals[end]

    # q: the window merged into `levels` groups of `merged` bins (the remainder joins the last group's
    # mass), each group's mass spread evenly (integer division) over its bins where p is non-zero
    merged = (width // levels)[:, None]
    bounds = np.minimum(np.arange(levels + 1)[None, :] * merged, width[:, None])
    bounds = np.concatenate([bounds, width[:, None]], axis=1)  # the remainder: [levels * merged, width)
    mass = np.diff(np.take_along_axis(_running_sum(sliced), bounds, axis=1), axis=1)
    occupied = np.diff(np.take_along_axis(_running_sum((p != 0) & inside), bounds, axis=1), axis=1)
    mass[:, levels - 1] += mass[:, levels]
    share = np.floor_divide(mass, np.maximum(occupied, 1)) * (occupied != 0)
    group = np.minimum(position // merged, levels)
    q = np.where(inside & (group < levels), np.take_along_axis(share, group, axis=1), 0)
    return _kl_divergence(_smoothed(p, inside), _smoothed(q, inside))


def _running_sum(values: np.ndarray) -> np.ndarray:
    """Cumulative sums along each row, with a leading zero column: sums of [a, b) are differences."""
    return np.concatenate([np.zeros((values.shape[0], 1), dtype=np.int64), np.cumsum(values, axis=1)], axis=1)


def _smoothed(distribution: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """onnxruntime's smooth_distribution per row: zeros become epsilon, taken evenly from the non-zeros.
    A row it would reject (all zeros, or smoothing that leaves a bin <= 0) becomes NaN."""
    zeros = (distribution == 0) & inside
    nonzeros = (distribution != 0) & inside
    n_nonzeros = nonzeros.sum(axis=1, keepdims=True)
    taken = ENTROPY_EPSILON * zeros.sum(axis=1, keepdims=True) / np.maximum(n_nonzeros, 1)
    smoothed = distribution.astype(np.float32) + (
        np.float32(ENTROPY_EPSILON) * zeros.astype(np.float32) - taken.astype(np.float32) * nonzeros.astype(np.float32)
    )
    valid = (n_nonzeros > 0) & (taken < 1.0) & ~np.any(inside & (smoothed <= 0), axis=1, keepdims=True)
    return np.where(valid & inside, smoothed, np.where(valid, 0.0, np.nan))


def _kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) per row of normalised distributions; a NaN row (rejected by smoothing) is infinitely far."""
    p = p / p.sum(axis=1, keepdims=True)
    q = q / q.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    divergence = terms.sum(axis=1)
    return np.where(np.isnan(divergence), np.inf, divergence)
