"""Activation ranges from calibration data, using onnxruntime's calibrators.

minmax, percentile and entropy are onnxruntime's own. mse is ours: onnxruntime has no such calibrator,
so we take the value histograms its entropy calibrator collects and pick, per tensor, the clipping
range that minimises expected squared error (clipping error outside, rounding noise step²/12 inside).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod
from onnxruntime.quantization.calibrate import create_calibrator

from engine.dataset import Dataset
from engine.recipe import Calibration

CALIBRATION_BATCH = 32
HISTOGRAM_BINS = 2048
MSE_CANDIDATES = 200

# Our calibration choice -> onnxruntime's method. MSE reuses the entropy calibrator's value histograms.
ORT_METHOD = {
    Calibration.MINMAX: CalibrationMethod.MinMax,
    Calibration.PERCENTILE: CalibrationMethod.Percentile,
    Calibration.ENTROPY: CalibrationMethod.Entropy,
    Calibration.MSE: CalibrationMethod.Entropy,
}


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
    model: onnx.ModelProto,
    dataset: Dataset,
    method: Calibration,
    samples: int,
    batch_dynamic: bool,
    bits: int,
    tensors: set[str] | None = None,
) -> dict[str, tuple[float, float]]:
    """Range (low, high) of each float activation tensor (or only `tensors`) over `samples` rows."""
    with tempfile.TemporaryDirectory(prefix="quantscope-calib-") as tmp:
        model_path = Path(tmp) / "model.onnx"
        onnx.save(model, model_path)
        # onnxruntime's histogram collectors print progress to stdout; keep the CLI's output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            calibrator = create_calibrator(
                model_path,
                augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=ORT_METHOD[method],
                extra_options={"num_bins": HISTOGRAM_BINS, "symmetric": False},
            )
            calibrator.collect_data(reader_for(dataset, samples, batch_dynamic))
            if method is Calibration.MSE:
                histograms = calibrator.collector.histogram_dict
                ranges = {name: mse_range(h[0], h[1], bits) for name, h in histograms.items()}
            else:
                computed = calibrator.compute_data()
                ranges = {name: _as_range(*computed[name].range_value) for name in computed}
    return {name: r for name, r in ranges.items() if tensors is None or name in tensors}


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
