"""`quantscope sweep` end to end on every sample model, and the CLI's handling of bad input."""

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import onnx
import pandas as pd
import pytest

import engine.realise.native as native
from engine.cli import format_table
from engine.data import Dataset, load_dataset
from engine.measure import open_session, predict
from engine.metrics import evaluate
from engine.model import load_model
from engine.results import write_results
from engine.sweep import default_grid, sweep
from sample_models.catalog import SAMPLES
from tests.builders import gemm_model

CLI = [sys.executable, "-m", "engine.cli"]


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


LATENCY_CAP = "0.5"


@pytest.fixture(scope="module", params=list(SAMPLES))
def swept(request, tmp_path_factory):
    """The default sweep of one sample model, run through the CLI, each artifact timed for at most 0.5 s per batch
    size (the protocol's own tests are in test_measure.py)."""
    sample = SAMPLES[request.param]
    out = tmp_path_factory.mktemp(sample.name)
    result = run_cli("sweep", sample.model_path, sample.data_path, "--out", out, "--latency-cap", LATENCY_CAP)
    assert result.returncode == 0, result.stderr
    return sample, out, result


def test_sweep_writes_a_row_per_recipe_with_every_column(swept):
    sample, out, result = swept
    rows = json.loads((out / "results.json").read_text())
    table = pd.read_csv(out / "results.csv")
    assert len(rows) == len(table) >= 10
    assert all(row["error"] is None for row in rows)
    names = [row["name"] for row in rows]
    assert names[:2] == ["fp32", "fp16"] and "W2 weight-only channel" in names
    for row in rows:
        assert row["simulated"] == (row["name"] in ("W3 weight-only channel", "W2 weight-only channel"))
        timed = row["latency_b1_p50_ms"] is not None
        assert timed != row["simulated"]  # simulated rows never get a latency, nor a peak memory
        assert (row["ram_b1_peak_bytes"] is not None) == (row["ram_bN_peak_bytes"] is not None) == timed
        if timed:
            assert 0 < row["latency_b1_p50_ms"] <= row["latency_b1_p95_ms"]
            assert row["threads"] == 1 and row["latency_batch"] == 32
            assert 0 < row["ram_b1_peak_bytes"] <= row["ram_bN_peak_bytes"]  # the batch-N peak includes batch 1's
            assert "fresh process" in row["ram_protocol"]
            protocol, versus = row["latency_protocol"].split("; vs fp32: ")
            assert protocol.endswith(f"or {LATENCY_CAP} s in all")
            assert versus.startswith("the fp32 model itself" if row["name"] == "fp32" else "fp32 timed interleaved")
            assert row["latency_b1_vs_fp32_ci_low"] <= row["latency_b1_vs_fp32"] <= row["latency_b1_vs_fp32_ci_high"]
    assert {"pareto_size", "pareto_latency", "pareto_ram", "pareto_3d"} <= set(table.columns)
    assert table["pareto_size"].any() and table["pareto_3d"].any()
    assert "metric = top1" in result.stdout and "1 thread(s)" in result.stdout


def test_every_real_artifact_reproduces_its_row_in_a_fresh_session(swept):
    """Numbers must be true: reload each non-simulated artifact and get exactly the row's metric and size, on the
    validation rows the row says it was scored on (the first 128 calibrate the static recipes)."""
    sample, out, _ = swept
    model = load_model(sample.model_path)
    validation = load_dataset(sample.data_path, model.summary.inputs)
    data = validation.rows(slice(128, None))
    reference = predict(open_session(out / "reference.onnx"), data)
    for row in json.loads((out / "results.json").read_text()):
        assert row["scored_rows"] == f"rows 129..{len(validation)} of the validation set"
        assert row["rows_scored"] == len(validation) - 128
        artifact = out / row["artifact"]
        if row["simulated"]:
            assert row["size_is_estimate"] and row["size_bytes"] < artifact.stat().st_size
            continue
        assert row["size_bytes"] == artifact.stat().st_size
        evaluation = evaluate(reference, predict(open_session(artifact), data), data.labels, data.slices)
        assert evaluation.primary == (row["metric_name"], row["metric"]), row["name"]


def test_size_ratio_is_relative_to_the_original_file(swept):
    sample, out, _ = swept
    rows = {row["name"]: row for row in json.loads((out / "results.json").read_text())}
    assert rows["fp32"]["size_bytes"] == sample.model_path.stat().st_size
    assert rows["fp32"]["size_ratio"] == 1.0
    if sample.model_path.stat().st_size > 100_000:  # in a 7 KB model the QDQ scales outweigh the saving
        assert rows["W8A8 static channel minmax"]["size_ratio"] < 0.6


def test_slices_are_broken_down_when_the_data_has_them(tmp_path):
    sample = SAMPLES["digits_cnn"]
    out = tmp_path / "digits"
    recipe = tmp_path / "w4.json"
    recipe.write_text('{"weights": {"bits": 4, "granularity": "group", "group_size": 32}}')
    result = run_cli("sweep", sample.model_path, sample.data_path, "--out", out, "--recipe", recipe)
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "results.json").read_text())
    assert [row["name"] for row in rows] == ["W4 weight-only group32"]
    slices = rows[0]["per_slice"]
    assert set(slices) == {"ink:heavy", "ink:light"}
    assert sum(s["rows"] for s in slices.values()) == 540


def test_grid_options_build_the_cartesian_product(tmp_path):
    sample = SAMPLES["breast_cancer_mlp"]
    csv = sample.model_path.parent / "breast_cancer_mlp_val.csv"
    result = run_cli(
        "sweep", sample.model_path, csv, "--out", tmp_path, "--weights", "8,5", "--granularity", "tensor,channel",
        "--activations", "none,8", "--label-column", "label",
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "results.json").read_text())
    assert len(rows) == 1 + 2 * 2 * 2  # fp32 reference + the product
    assert rows[0]["name"] == "fp32" and rows[0]["metric"] > 0.9


def test_inspect_prints_the_summary_as_text_and_json():
    path = SAMPLES["tiny_transformer"].model_path
    text = run_cli("inspect", path)
    assert text.returncode == 0 and "input  tokens: float32[?, 8, 8]" in text.stdout
    summary = json.loads(run_cli("inspect", path, "--json").stdout)
    assert summary["inputs"][0]["name"] == "tokens" and len(summary["layers"]) >= 8


def _bad_npz(tmp_path):
    path = tmp_path / "wrong.npz"
    np.savez(path, image=np.zeros((4, 1, 9, 9), np.float32))
    return path


def _garbage_model(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x08\x01garbage")
    return path


def _bad_recipe(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"weights": {"bits": 12}}')
    return path


def test_a_latency_cap_outside_its_range_is_refused_before_anything_runs(tmp_path):
    sample = SAMPLES["breast_cancer_mlp"]
    result = run_cli("sweep", sample.model_path, sample.data_path, "--out", tmp_path / "o", "--latency-cap", "0")
    assert result.returncode == 2 and not (tmp_path / "o").exists()
    assert result.stderr.strip().splitlines()[-1].endswith(
        "argument --latency-cap: a latency cap is seconds per artifact and batch size, above 0 and at most 600; got 0.0")


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t: ["inspect", t / "missing.onnx"], "no model file"),
        (lambda t: ["inspect", _garbage_model(t)], "garbage.onnx is not an ONNX model"),
        (lambda t: ["sweep", SAMPLES["digits_cnn"].model_path, _bad_npz(t), "--out", t / "o"], "expects shape [?, 1, 8, 8]"),
        (lambda t: ["sweep", SAMPLES["digits_cnn"].model_path, SAMPLES["digits_cnn"].data_path, "--out", t / "o",
                    "--recipe", _bad_recipe(t)], "weight bits must be 2-8"),
        (lambda t: ["sweep", SAMPLES["digits_cnn"].model_path, SAMPLES["digits_cnn"].data_path, "--out", t / "o",
                    "--recipe", t / "absent.json"], "No such file"),
        (lambda t: ["sweep", SAMPLES["digits_cnn"].model_path, SAMPLES["digits_cnn"].data_path, "--out", t / "o",
                    "--weights", "9"], "weight bits must be 2-8"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_code_2(tmp_path, make_args, message):
    result = run_cli(*make_args(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_recipe_that_onnxruntime_cannot_build_becomes_an_error_row(tmp_path, monkeypatch, digits, capsys):
    """One failing configuration must not sink the sweep: the others are measured, the failure is reported."""
    def broken(*args, **kwargs):
        raise RuntimeError("onnxruntime could not quantize this graph")

    monkeypatch.setattr(native, "quantize_dynamic", broken)
    model, data = digits
    recipes = [r for r in default_grid() if r.short_name() in ("fp32", "W8A8 dynamic channel", "W3 weight-only channel")]
    table = sweep(model, data, recipes, tmp_path)
    write_results(table, tmp_path)
    errors = dict(zip(table["name"], table["error"]))
    assert errors["W8A8 dynamic channel"] == "RuntimeError: onnxruntime could not quantize this graph"
    assert pd.isna(errors["fp32"]) and pd.isna(errors["W3 weight-only channel"])
    failed = table.set_index("name").loc["W8A8 dynamic channel"]
    assert pd.isna(failed["metric"]) and not failed["pareto_size"]
    rows = json.loads((tmp_path / "results.json").read_text())
    assert rows[1]["artifact"] is None and rows[0]["artifact"] == "artifacts/" + Path(rows[0]["artifact"]).name
    assert "onnxruntime could not quantize this graph" in format_table(table)


def test_without_labels_fidelity_to_fp32_is_the_metric(tmp_path, digits):
    model, data = digits
    unlabelled = Dataset(inputs=data.inputs, labels=None, slices=None, source="no labels")
    recipes = [r for r in default_grid() if r.short_name() in ("fp32", "W2 weight-only channel")]
    table = sweep(model, unlabelled, recipes, tmp_path).set_index("name")
    assert set(table["task"]) == {"fidelity"} and set(table["metric_name"]) == {"top1_agreement"}
    assert table.loc["fp32", "metric"] == 1.0
    assert 0.3 < table.loc["W2 weight-only channel", "metric"] < 1.0
    assert "top1" not in table.columns  # no labels, no task metrics


def test_a_model_with_external_data_in_its_own_directory_sweeps_from_the_cli(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    onnx.save(gemm_model(), model_dir / "m.onnx", save_as_external_data=True, location="weights.bin",
              size_threshold=0)
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32))
    result = run_cli("sweep", model_dir / "m.onnx", data, "--out", tmp_path / "out", "--weights", "8",
                     "--activations", "8")
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["name"] for row in rows] == ["fp32", "W8A8 static channel minmax"]
    assert rows[0]["metric"] == 1.0 and rows[1]["metric_name"] == "top1_agreement"


def test_calibration_data_calibrates_static_rows_and_every_validation_row_is_scored(tmp_path):
    sample = SAMPLES["breast_cancer_mlp"]
    with np.load(sample.data_path) as validation:
        arrays = dict(validation)
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, **{name: values[:64] for name, values in arrays.items() if name not in ("labels", "slice")})
    out = tmp_path / "out"
    result = run_cli("sweep", sample.model_path, sample.data_path, "--out", out, "--weights", "8", "--activations",
                     "8", "--calibration-data", calibration, "--no-batch")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads((out / "results.json").read_text())}
    assert set(rows) == {"fp32", "W8A8 static channel minmax"}
    assert all(row["rows_scored"] == len(arrays["labels"]) for row in rows.values())
    assert rows["W8A8 static channel minmax"]["calibration_source"] == "calibration.npz"
    assert rows["fp32"]["calibration_source"] is None
    assert all(row["latency_batch"] is None and row["latency_b1_runs"] >= 15 and row["latency_b1_blocks"] >= 3
               for row in rows.values())


def test_every_timed_row_states_its_latency_relative_to_fp32_timed_in_the_same_blocks(tmp_path):
    """The quantized row's ratio to fp32 at batch 1 and batch N, inside its interval, from the interleaved timing
    the protocol text names; fp32's is 1 exactly and it was timed alone; the JSON is strict."""
    sample = SAMPLES["breast_cancer_mlp"]
    out = tmp_path / "out"
    result = run_cli("sweep", sample.model_path, sample.data_path, "--out", out, "--weights", "8", "--activations",
                     "8", "--latency-cap", "0.3")
    assert result.returncode == 0, result.stderr
    text = (out / "results.json").read_text()
    rows = {row["name"]: row for row in json.loads(text, parse_constant=lambda name: pytest.fail(f"JSON has {name}"))}
    quantized, fp32 = rows["W8A8 static channel minmax"], rows["fp32"]
    for size in ("b1", "bN"):
        ratio, low, high = (quantized[f"latency_{size}_vs_fp32{end}"] for end in ("", "_ci_low", "_ci_high"))
        assert 0 < low <= ratio <= high
        assert (fp32[f"latency_{size}_vs_fp32"], fp32[f"latency_{size}_vs_fp32_ci_low"],
                fp32[f"latency_{size}_vs_fp32_ci_high"]) == (1.0, 1.0, 1.0)
    assert "fp32 timed interleaved in the same blocks" in quantized["latency_protocol"]
    assert "twice the cap" in quantized["latency_protocol"] and "timed alone" in fp32["latency_protocol"]
    assert "b1 x fp32" in result.stdout


def test_extra_sets_and_shifts_give_per_set_figures_and_fp32_matches_a_plain_run(tmp_path):
    sample = SAMPLES["breast_cancer_mlp"]
    model = load_model(sample.model_path)
    validation = load_dataset(sample.data_path, model.summary.inputs)
    with np.load(sample.data_path) as arrays:
        noisy_arrays = dict(arrays)
    rng = np.random.default_rng(0)
    noisy_arrays["features"] = (noisy_arrays["features"] * rng.normal(1, 0.3, noisy_arrays["features"].shape)
                                ).astype(np.float32)
    noisy = tmp_path / "noisy.npz"
    np.savez(noisy, **noisy_arrays)
    out = tmp_path / "out"
    result = run_cli("sweep", sample.model_path, sample.data_path, "--out", out, "--weights", "4,2", "--no-batch",
                     "--also", f"noisy={noisy}", "--shift", "noise:0.2")
    assert result.returncode == 0, result.stderr
    assert "noisy change" in result.stdout and "noise:0.2 change" in result.stdout
    rows = {row["name"]: row for row in json.loads((out / "results.json").read_text())}
    fp32 = rows["fp32"]["extra_sets"]
    assert list(fp32) == ["noisy", "noise:0.2"]
    plain = predict(open_session(sample.model_path), load_dataset(noisy, model.summary.inputs))
    assert fp32["noisy"]["top1"] == float(np.mean(plain.argmax(1) == validation.labels))
    assert fp32["noisy"]["rows_scored"] == len(validation) and fp32["noisy"]["delta"] == 0
    assert fp32["noise:0.2"]["rows_scored"] == len(validation)  # nothing calibrates: every row is scored
    for row in rows.values():
        for figures in row["extra_sets"].values():
            assert figures["delta_ci_low"] <= figures["delta"] <= figures["delta_ci_high"]
    flat = pd.read_csv(out / "results.csv")
    assert {"noisy.top1", "noisy.delta", "noise:0.2.top1"} <= set(flat.columns)


def test_a_shift_that_does_not_fit_the_model_is_one_line(tmp_path):
    sample = SAMPLES["breast_cancer_mlp"]
    result = run_cli("sweep", sample.model_path, sample.data_path, "--shift", "brightness:0.2", "--weights", "4")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].endswith(
        "the shift brightness:0.2 changes image inputs (4-D float), and this model has none")
    bad = run_cli("sweep", sample.model_path, sample.data_path, "--shift", "blur:1")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "quantscope: error: a shift is KIND:LEVEL with KIND one of noise, scale, brightness, contrast, dropout, "
        "e.g. noise:0.1; got 'blur:1'"]
