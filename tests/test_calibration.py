"""Calibration: our entropy search is onnxruntime's KL-divergence search, fast, and really clips."""

import contextlib
import io

import numpy as np
import onnx
import pytest
from onnxruntime.quantization.calibrate import CalibrationMethod, HistogramCollector, create_calibrator

from engine.realise import quantize
from engine.realise import calibration as calibration_module
from engine.realise.calibration import ENTROPY_MAX_BINS, CalibrationSet, calibration_key, entropy_range, reader_for
from engine.recipe import ActivationSpec, Granularity, Mode, Recipe, WeightSpec


def _onnxruntime_threshold(histogram) -> tuple[float, float]:
    collector = HistogramCollector("entropy", False, 2048, 128, None, None)
    with contextlib.redirect_stdout(io.StringIO()):
        low, high = collector.get_entropy_threshold(histogram, 128)
    return float(low), float(high)


def _histogram(values: np.ndarray, bins: int = 2048):
    """A histogram as onnxruntime's collector keeps it: symmetric about zero, plus the observed extremes."""
    threshold = np.abs(values).max()
    counts, edges = np.histogram(values, bins, range=(-threshold, threshold))
    return counts, edges, values.min(), values.max(), threshold


@pytest.fixture(scope="module")
def digits_histograms(digits, tmp_path_factory):
    """The histograms onnxruntime's entropy calibrator collects on the digits CNN, one per activation."""
    model, data = digits
    folder = tmp_path_factory.mktemp("calibration")
    onnx.save(model.copy(), folder / "model.onnx")
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(folder / "model.onnx", augmented_model_path=str(folder / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Entropy, extra_options={"num_bins": 2048})
        calibrator.collect_data(reader_for(data, 128, batch_dynamic=True))
    return calibrator.collector.histogram_dict


def test_entropy_range_is_onnxruntimes_threshold_on_real_activations(digits_histograms):
    assert len(digits_histograms) >= 5
    for name, histogram in digits_histograms.items():
        assert entropy_range(*histogram[:4], bits=8) == _onnxruntime_threshold(histogram), name


@pytest.mark.parametrize("values", [
    np.concatenate([np.random.default_rng(0).normal(size=50_000), [40.0, -25.0]]),  # outliers worth clipping
    np.maximum(np.random.default_rng(1).normal(size=50_000), 0),  # after a ReLU: the negative half is empty
    np.random.default_rng(2).integers(0, 5, size=2_000).astype(np.float32),  # sparse: most bins empty
], ids=["outliers", "relu", "sparse"])
def test_entropy_range_is_onnxruntimes_threshold_on_shaped_data(values):
    histogram = _histogram(values)
    assert entropy_range(*histogram[:4], bits=8) == _onnxruntime_threshold(histogram)


def test_entropy_range_clips_outliers_and_keeps_16_bits_unclipped():
    values = np.concatenate([np.random.default_rng(0).normal(size=50_000), [40.0, -25.0]])
    low, high = entropy_range(*_histogram(values)[:4], bits=8)
    assert -10 < low < -2 and 2 < high < 10
    assert entropy_range(*_histogram(values)[:4], bits=16) == (-25.0, 40.0)


def test_a_histogram_widened_past_the_limit_is_merged_not_searched_bin_by_bin():
    values = np.concatenate([np.random.default_rng(0).normal(size=50_000), [40.0, -25.0]])
    wide = _histogram(values, bins=ENTROPY_MAX_BINS * 4)
    low, high = entropy_range(*wide[:4], bits=8)
    reference_low, reference_high = entropy_range(*_histogram(values)[:4], bits=8)
    assert low == pytest.approx(reference_low, rel=0.1) and high == pytest.approx(reference_high, rel=0.1)


def test_entropy_calibration_gives_other_activation_ranges_than_minmax(digits, tmp_path):
    """onnxruntime's quantize_static on its own turns "entropy" into exactly the minmax model."""
    model, data = digits

    def activation_scales(calibration: str) -> dict[str, float]:
        recipe = Recipe(WeightSpec(8, Granularity.CHANNEL), ActivationSpec(8, calibration), Mode.STATIC)
        artifact = onnx.load(quantize(model, recipe, tmp_path / f"{calibration}.onnx", calibration=data).path)
        initializers = {t.name: onnx.numpy_helper.to_array(t) for t in artifact.graph.initializer}
        return {node.input[0]: float(initializers[node.input[1]]) for node in artifact.graph.node
                if node.op_type == "QuantizeLinear" and initializers[node.input[1]].size == 1}

    minmax, entropy = activation_scales("minmax"), activation_scales("entropy")
    assert minmax.keys() == entropy.keys()
    assert all(entropy[name] <= minmax[name] * (1 + 1e-6) for name in minmax)
    assert any(entropy[name] < minmax[name] * 0.99 for name in minmax)


def test_a_calibration_set_computes_each_key_once_and_shared_ranges_build_the_same_bytes(digits, tmp_path, monkeypatch):
    model, data = digits
    a8_minmax, a8_mse, a16_mse = ActivationSpec(8), ActivationSpec(8, "mse"), ActivationSpec(16, "mse")
    recipes = [
        Recipe(WeightSpec(8, Granularity.TENSOR), a8_minmax, Mode.STATIC),
        Recipe(WeightSpec(4, Granularity.CHANNEL), a8_minmax, Mode.STATIC),
        Recipe(WeightSpec(3, Granularity.CHANNEL), a8_minmax, Mode.STATIC),  # simulated, same ranges
        Recipe(WeightSpec(8, Granularity.CHANNEL), a8_mse, Mode.STATIC),
        Recipe(WeightSpec(8, Granularity.CHANNEL), a16_mse, Mode.STATIC),  # mse weighs rounding: 16 bits differ
    ]
    alone = [quantize(model, r, tmp_path / f"alone-{i}.onnx", calibration=data).path.read_bytes()
             for i, r in enumerate(recipes)]

    computed = []
    original = calibration_module.activation_ranges
    monkeypatch.setattr(calibration_module, "activation_ranges",
                        lambda *args, **options: computed.append(args[2:]) or original(*args, **options))
    shared = CalibrationSet(data)
    together = [quantize(model, r, tmp_path / f"shared-{i}.onnx", calibration=shared).path.read_bytes()
                for i, r in enumerate(recipes)]
    assert together == alone
    assert [(method.value, bits) for method, _, _, bits in computed] == [("minmax", None), ("mse", 8), ("mse", 16)]
    assert calibration_key(recipes[0]) == calibration_key(recipes[1]) != calibration_key(recipes[3])


def test_a_node_width_other_than_the_recipes_has_its_own_calibration_key_where_the_bits_matter():
    """A 16-bit node in an 8-bit recipe: mse weighs rounding at 16 bits; entropy at 16 bits is the full range,
    minmax's; minmax and percentile ranges do not depend on the bits."""
    def key(calibration, bits):
        return calibration_key(Recipe(WeightSpec(8), ActivationSpec(8, calibration, 64), Mode.STATIC), bits)

    assert key("mse", 16) == ("mse", 64, 16) != key("mse", None) == ("mse", 64, 8)
    assert key("entropy", 16) == ("minmax", 64, None) == key("minmax", 16) == key("minmax", None)
    assert key("percentile", 16) == key("percentile", None) == ("percentile", 64, None)


def test_minmax_ranges_collected_run_by_run_are_those_of_every_row_at_once(digits, tmp_path):
    """A few rows per collect_data call bounds what the calibrator holds; for min and max it changes nothing."""
    model, data = digits
    recipe = Recipe(WeightSpec(8, Granularity.CHANNEL), ActivationSpec(8), Mode.STATIC)
    ranges = CalibrationSet(data).ranges(model, recipe)
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(model.file, augmented_model_path=str(tmp_path / "augmented.onnx"))
        calibrator.collect_data(reader_for(data, 128, batch_dynamic=True))  # onnxruntime's way: every row at once
    at_once = {name: calibration_module._as_range(*value.range_value)
               for name, value in calibrator.compute_data().data.items()}
    assert calibration_module.CALIBRATION_BATCH < 128 and ranges == at_once and len(ranges) >= 5
