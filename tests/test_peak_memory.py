"""Peak memory: a fresh process's onnxruntime session on the artifact, as a column, a Pareto front and a chart axis."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from engine import peak_memory as probe
from engine import results
from engine.data import Dataset
from engine.measure import LatencyProtocol, MemoryNotMeasured, peak_memory
from engine.model import load_model
from engine.pareto import pareto_front
from engine.recipe import Recipe
from engine.sweep import grid, sweep, time_artifact
from tests.builders import mlp_model

QUICK = LatencyProtocol(warmup_runs=1, min_runs=5, target_precision=None, cap_seconds=0.05)
SMALL_WIDTH, LARGE_WIDTH = 32, 2048  # about 10 KB and 17 MB of weights


def _dataset(rows: int = 40) -> Dataset:
    x = np.random.default_rng(0).normal(size=(rows, 8)).astype(np.float32)
    return Dataset({"x": x}, np.arange(rows) % 4, None, "generated")


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlps")
    paths = {}
    for width in (SMALL_WIDTH, LARGE_WIDTH):
        paths[width] = folder / f"mlp{width}.onnx"
        onnx.save(mlp_model(width), paths[width])
    return paths


def test_every_timed_batch_gets_a_peak_that_grows_with_the_model(model_files):
    small, large = (time_artifact(model_files[width], _dataset(), 1, 16, QUICK) for width in (SMALL_WIDTH, LARGE_WIDTH))
    for columns in (small, large):
        assert 0 < columns[results.SINGLE_EXAMPLE.ram] <= columns[results.BATCH_N.ram]
        assert columns[results.RAM_PROTOCOL].startswith("peak resident memory (VmHWM) of a fresh process")
    weights_added = model_files[LARGE_WIDTH].stat().st_size - model_files[SMALL_WIDTH].stat().st_size
    # A session holds its weights at least once while it loads and runs: the larger model costs at least the bytes
    # its file adds (onnxruntime copies them, so in fact more).
    assert large[results.RAM] - small[results.RAM] >= weights_added


def test_what_the_measuring_process_holds_does_not_move_the_figure(model_files):
    """The figure belongs to the session, not to the process that asks: holding (or having freed) 200 MB in the
    caller, as a long-lived worker does, changes it by less than a few MB."""
    path, feed = str(model_files[LARGE_WIDTH]), {"x": np.zeros((1, 8), np.float32)}
    alone = peak_memory(path, [feed], 1)[0]
    ballast = np.ones(200 * 1024**2 // 8)
    loaded = peak_memory(path, [feed], 1)[0]
    del ballast
    assert abs(loaded - alone) < 4 * 1024**2


def test_without_the_kernel_counter_the_row_says_why_and_keeps_its_latency(model_files, monkeypatch):
    monkeypatch.setattr(probe, "PEAK_RESET", "/proc/self/no-such-file")
    columns = time_artifact(model_files[SMALL_WIDTH], _dataset(), 1, None, QUICK)
    assert columns[results.LATENCY] > 0
    assert results.RAM not in columns and columns[results.RAM_PROTOCOL].startswith("not measured: ")


def test_ram_is_a_pareto_front_of_the_results_table(model_files, tmp_path):
    """Real rows carry RAM and join the metric-against-RAM front exactly where pareto_front puts them; simulated
    rows (W3) have no RAM and are on no RAM front."""
    model = load_model(model_files[LARGE_WIDTH])
    data = _dataset(200)
    recipes = [Recipe.fp16(), *grid([8, 3], ["channel"], [None])]
    table = sweep(model, data, recipes, tmp_path, batch=None)
    simulated = table[results.SIMULATED].astype(bool)
    assert simulated.any() and table.loc[simulated, results.RAM].isna().all()
    assert not table.loc[simulated, results.PARETO_RAM].any()
    real = table[~simulated]
    assert (real[results.RAM] > 0).all()
    expected = pareto_front(real[[results.METRIC, results.RAM]].to_numpy(float), [True, False])
    assert real[results.PARETO_RAM].tolist() == expected.tolist() and expected.any()


def test_a_measurement_that_fails_says_why_and_the_next_one_still_works(model_files, tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(MemoryNotMeasured, match=r"^not measured: the peak-memory process failed \(.*Error"):
        peak_memory(str(tmp_path / "broken.onnx"), [{"x": np.zeros((1, 8), np.float32)}], 1)
    assert peak_memory(str(model_files[SMALL_WIDTH]), [{"x": np.zeros((1, 8), np.float32)}], 1)[0] > 0
