"""Export bundles, `quantscope verify`, `quantscope gate` and the export history, on the digits sample.

One module-wide sweep job (fp32, a real int8 recipe and a simulated 2-bit one, batch-1 timing only) in the
session's private workspace is what the bundles are made from and compared with.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from engine import results
from engine.export import history
from engine.export.bundle import (
    BUNDLE_FILE, CARD_FILE, MODEL_FILE, REPORT_FILE, SIMULATION_FILE, bundle_figures, read_bundle,
)
from engine.export.gate import ERROR, FAIL, PASS, Limits, gate
from engine.export.report import render_report
from engine.export.sources import MeasureOptions, measure_for_export, source_from_job
from engine.export.verify import BAD_INPUT, FAILED, verify
from engine.cli import main
from engine.errors import BundleError
from engine.recipe import Recipe
from engine.store.blobs import sha256_file
from engine.workspace import Workspace
from sample_models.catalog import SAMPLES
from tests.browser import CHROMIUM, NEEDS_CHROMIUM, REPO, chromium, new_page

CLI = [sys.executable, "-m", "engine.cli"]
DIGITS = SAMPLES["digits_cnn"]
OWNER = "export-tests"
INT8 = Recipe.from_dict({"weights": {"bits": 8, "granularity": "channel"}, "activations": {"bits": 8},
                         "mode": "static"})
TWO_BIT = Recipe.from_dict({"weights": {"bits": 2, "granularity": "channel"}})  # no kernel: simulated
JOB_TIMEOUT = 180
SCREENSHOTS = REPO / "docs" / "screenshots"


def run_cli(*args) -> subprocess.CompletedProcess:
    """`quantscope` as a CI job runs it: a process of its own."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600)


def quantscope(capsys, *args) -> tuple[int, str, str]:
    """The same entry point in this process (it skips starting Python): (exit code, stdout, stderr)."""
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def ws(private_workspace) -> Workspace:
    return Workspace.open(private_workspace)


@pytest.fixture(scope="module")
def job(ws):
    """A finished sweep job of the digits sample: (job id, its results table)."""
    model = ws.add_model(DIGITS.model_path, DIGITS.model_path.name, OWNER)
    data = ws.add_dataset(DIGITS.data_path, DIGITS.data_path.name, model.id, OWNER)
    job_id = ws.submit_sweep(model.id, data.id, [Recipe.fp32(), INT8, TWO_BIT], OWNER, batch=None)
    deadline = time.monotonic() + JOB_TIMEOUT
    while not ws.job(job_id).is_finished and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ws.job(job_id).state == "done", ws.job(job_id).error
    return job_id, ws.results(job_id)


@pytest.fixture(scope="module")
def job_bundle(job, tmp_path_factory):
    """`quantscope export --from-job` of the int8 row: (bundle directory, the row)."""
    job_id, table = job
    row = results.row_for(table, INT8.key())
    out = tmp_path_factory.mktemp("from-job") / "bundle"
    assert main(["export", "--from-job", job_id, "--row", INT8.key(), "--out", str(out)]) == 0
    return out, row


def recipe_file(tmp_path: Path, recipe: Recipe) -> Path:
    path = tmp_path / f"{recipe.slug()}.json"
    path.write_text(recipe.to_json())
    return path


# --- export ------------------------------------------------------------------------------------------------------


def test_an_exported_recipe_scores_exactly_what_its_sweep_row_shows(job, tmp_path):
    """Measured afresh for the export (the CLI's --recipe path), the model is the sweep's, byte for byte, and so
    are its metric, its change against fp32 and its per-slice figures."""
    _, table = job
    row = results.row_for(table, INT8.key())
    out = tmp_path / "bundle"
    done = run_cli("export", DIGITS.model_path, DIGITS.data_path, "--recipe", recipe_file(tmp_path, INT8),
                   "--out", out, "--no-batch")
    assert done.returncode == 0, done.stderr
    figures = read_bundle(out)
    assert figures["metric"]["value"] == row[results.METRIC]
    assert figures["metric"]["delta"] == row[results.DELTA]
    assert {name: entry["value"] for name, entry in figures["metric"]["per_slice"].items()} == {
        name: scores["top1"] for name, scores in row[results.PER_SLICE].items()}
    assert figures["model"]["sha256"] == sha256_file(Path(row[results.ARTIFACT])) == sha256_file(out / MODEL_FILE)
    assert figures["scoring"]["scored_rows"] == row[results.SCORED_ROWS] == "rows 129..540 of the validation set"
    assert figures["data"]["validation"]["sha256"] == sha256_file(DIGITS.data_path)
    assert figures["latency"]["batch_1"]["runs"] >= 5 and figures["latency"]["batch_n"] is None
    assert "avx2" in figures["latency"]["machine"]["instruction_sets"] or figures["latency"]["machine"]["cpu"]
    assert figures["versions"]["onnxruntime"] and figures["versions"]["engine_source"]
    assert "export" in done.stdout and "in the workspace's history" in done.stdout


def test_a_bundle_from_a_job_holds_the_stored_artifact_and_its_figures(ws, job, job_bundle):
    job_id, _ = job
    out, row = job_bundle
    figures = read_bundle(out)
    assert (out / MODEL_FILE).read_bytes() == ws.artifact_path(job_id, INT8.key()).read_bytes()
    assert figures["metric"]["value"] == row[results.METRIC]
    assert figures["latency"]["batch_1"]["p50_ms"] == row[results.SINGLE_EXAMPLE.p50]
    assert figures["latency"]["fp32"]["batch_1"]["p50_ms"] == results.reference_row(job[1])[results.LATENCY]
    assert figures["measured"]["job_id"] == job_id and figures["model"]["deployable"]
    assert {name: sha256_file(out / name) for name in figures["files"]} == figures["files"]
    assert json.loads((out / "recipe.json").read_text()) == INT8.to_dict()
    card = (out / CARD_FILE).read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model_relation"] == "quantized" and front["library_name"] == "onnx"
    assert {"onnx", "quantized", "int8", "static"} <= set(front["tags"])
    hub = front["model-index"][0]["results"][0]
    assert {"type": "accuracy", "value": row[results.METRIC], "name": "Top-1 accuracy"} in hub["metrics"]
    assert "## What was quantized" in card and "## What it costs" in card


def test_a_simulated_row_is_not_offered_as_deployable_and_names_the_real_recipe_to_ship(ws, job):
    job_id, _ = job
    record = history.export_job_row(ws, job_id, TWO_BIT.key(), OWNER)
    model = record.figures["model"]
    assert list(record.files)[0] == SIMULATION_FILE and not model["deployable"]
    assert "simulated" in model["not_deployable_because"] and model["size_is_estimate"]
    assert model["nearest_real_recipe"]["name"] == INT8.short_name()  # the smallest real recipe, scoring better
    files = ws.export_files(record.id, OWNER)
    assert "Not deployable." in files[REPORT_FILE].read_text() and "simulated" in files[CARD_FILE].read_text()
    assert "not_timed_because" in record.figures["latency"]


def test_a_row_is_named_by_its_key_or_name_and_a_wrong_one_lists_the_rows(ws, job, capsys, tmp_path):
    job_id, _ = job
    assert source_from_job(ws, job_id, INT8.key()[:8]).row[results.NAME] == INT8.short_name()
    assert source_from_job(ws, job_id, "fp32").recipe.is_reference
    code, _, err = quantscope(capsys, "export", "--from-job", job_id, "--row", "nope", "--out", tmp_path / "never")
    assert code == 2 and INT8.key() in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "never").exists()


def test_the_report_says_what_a_fixed_batch_model_was_timed_at(ws, job):
    """A model fixed at batch 4 is timed at 4 only: the report shows that row and no single-example one."""
    source = source_from_job(ws, job[0], INT8.key())
    row = source.row.copy()
    timed_at_four = {results.LATENCY_BATCH: 4, results.BATCH_N.p50: 0.5, results.BATCH_N.p95: 0.6,
                     results.BATCH_N.runs: 30, results.SINGLE_EXAMPLE.p50: np.nan, results.SINGLE_EXAMPLE.p95: np.nan}
    for column, value in timed_at_four.items():
        row[column] = value
    figures = bundle_figures(replace(source, row=row))
    assert figures["latency"]["batch_1"] is None and figures["latency"]["batch_n"]["batch"] == 4
    page = render_report(figures, source.table)
    assert "<td>4 examples</td>" in page and "<td>1 example</td>" not in page


# --- history -----------------------------------------------------------------------------------------------------


def test_every_export_is_in_the_history_and_comes_back_byte_for_byte(ws, job_bundle, tmp_path, capsys):
    out, _ = job_bundle
    record = next(record for record in ws.exports() if record.figures == read_bundle(out))
    assert record.owner == "cli" and record.recipe_key == INT8.key()
    name, data = history.zip_of(ws, record.id)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {Path(member).name: archive.read(member) for member in archive.namelist()}
    assert members == {file.name: file.read_bytes() for file in out.iterdir()}
    assert name == f"{history.bundle_name(record)}.zip" and history.zip_of(ws, record.id)[1] == data
    code, listed, _ = quantscope(capsys, "exports", "list")
    assert code == 0 and record.id in listed and record.model_sha256[:12] in listed
    written = history.write_files(ws, record.id, tmp_path / "again")
    assert {name: (tmp_path / "again" / name).read_bytes() for name in written} == members


def test_a_bundles_name_keeps_no_path_separator_of_an_uploaded_name(ws, job_bundle):
    out, _ = job_bundle
    record = next(record for record in ws.exports() if record.figures == read_bundle(out))
    hostile = replace(record, figures={**record.figures, "base_model": {"name": "..\\..\\evil/../x y.onnx"}})
    assert history.bundle_name(hostile) == f"x-y-{INT8.slug()}"
    windows = replace(record, figures={**record.figures, "base_model": {"name": "..\\..\\evil.onnx"}})
    assert "\\" not in history.bundle_name(windows) and not history.bundle_name(windows).startswith(".")


# --- verify ------------------------------------------------------------------------------------------------------


def test_verify_passes_on_a_fresh_bundle_and_catches_a_changed_byte(job_bundle, tmp_path, capsys):
    out, _ = job_bundle
    code, printed, err = quantscope(capsys, "verify", out, DIGITS.data_path)
    assert code == 0, printed + err
    assert printed.startswith("verified: model.onnx sha256 matches; top1") and "latency p50" in printed

    changed = tmp_path / "changed"
    changed.mkdir()
    for file in out.iterdir():
        (changed / file.name).write_bytes(file.read_bytes())
    model = bytearray((changed / MODEL_FILE).read_bytes())
    model[len(model) // 2] ^= 0x01
    (changed / MODEL_FILE).write_bytes(bytes(model))
    verification = verify(changed, DIGITS.data_path)
    assert verification.code == FAILED and verification.line.startswith("verify failed: model.onnx has sha256")


def test_verify_recomputes_the_metric_and_fails_when_it_differs(job_bundle, tmp_path):
    """With the sha256 intact, a figure that is not what the model scores is caught by the fresh evaluation."""
    out, _ = job_bundle
    for file in out.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    figures = read_bundle(tmp_path)
    figures["metric"]["value"] -= 1 / 412  # one example fewer right
    (tmp_path / BUNDLE_FILE).write_text(json.dumps(figures))
    verification = verify(tmp_path, DIGITS.data_path, DIGITS.model_path, latency=False)
    assert verification.code == FAILED and "top1 is" in verification.line and "in the bundle" in verification.line


def test_verify_refuses_bad_input_with_exit_code_2(job_bundle, tmp_path, capsys):
    out, _ = job_bundle
    other_data = SAMPLES["breast_cancer_mlp"].data_path
    code, printed, err = quantscope(capsys, "verify", out, other_data)
    assert code == BAD_INPUT and not printed
    assert err.strip().splitlines() == [
        f"quantscope: error: {other_data} is not the data the bundle was measured on (digits_cnn.npz, sha256 "
        f"{sha256_file(DIGITS.data_path)[:16]}...)"]
    with pytest.raises(BundleError, match="is not an export bundle"):
        verify(tmp_path, DIGITS.data_path)
    with pytest.raises(BundleError, match="not the original"):
        verify(out, DIGITS.data_path, reference=other_data)


# --- gate --------------------------------------------------------------------------------------------------------


def test_gate_passes_fails_and_errs_with_exit_codes_0_1_2(tmp_path, capsys):
    int8 = recipe_file(tmp_path, INT8)
    verdict_file = tmp_path / "verdict.json"
    passed = run_cli("gate", DIGITS.model_path, DIGITS.data_path, "--recipe", int8, "--max-drop", "0.02",
                     "--max-size-ratio", "0.5", "--verdict", verdict_file)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.startswith("PASS W8A8 static channel minmax: top1 drop") and passed.stdout.count("\n") == 1
    verdict = json.loads(verdict_file.read_text())
    assert verdict["verdict"] == "pass" and [check["name"] for check in verdict["checks"]] == ["metric", "size"]
    assert verdict["inputs"]["model"]["sha256"] == sha256_file(DIGITS.model_path)

    code, failed, _ = quantscope(capsys, "gate", DIGITS.model_path, DIGITS.data_path, "--recipe", int8, "--max-drop",
                                 "0.02", "--max-size-ratio", "0.05", "--verdict", verdict_file)
    assert code == 1 and failed.startswith("FAIL") and "fp32 > 0.05x" in failed
    assert json.loads(verdict_file.read_text())["verdict"] == "fail"

    code, simulated, _ = quantscope(capsys, "gate", DIGITS.model_path, DIGITS.data_path, "--recipe",
                                    recipe_file(tmp_path, TWO_BIT), "--max-drop", "0.02", "--verdict", verdict_file)
    assert code == 2 and simulated.startswith("ERROR") and "simulated" in simulated
    assert json.loads(verdict_file.read_text())["verdict"] == "error"
    missing = gate(DIGITS.model_path, tmp_path / "none.npz", INT8, Limits(0.02))
    assert missing.code == ERROR and "none.npz" in missing.line


def test_gate_latency_is_compared_with_fp32_timed_in_the_same_run(tmp_path):
    """The original gated against itself differs only by noise: a limit of 1.1x passes (the margin says how much
    noise there was; at exactly 1x a correct 95% interval lies wholly above the limit 2.5% of the time) and a
    limit of half its time fails."""
    options = MeasureOptions()
    same = gate(DIGITS.model_path, DIGITS.data_path, Recipe.fp32(), Limits(0.0, max_latency_ratio=1.1), options)
    assert same.code == PASS, same.line
    latency = next(check for check in same.checks if check.name == "latency").figures
    assert latency["margin"] == pytest.approx((latency["ratio"] - latency["ratio_ci_low"]) / latency["ratio"])
    assert latency["fp32"]["runs"] == latency["recipe"]["runs"] >= 20 and "interleaved" in latency["method"]
    assert "noise margin" in same.line
    half = gate(DIGITS.model_path, DIGITS.data_path, Recipe.fp32(), Limits(0.0, max_latency_ratio=0.5), options)
    assert half.code == FAIL and "latency" in half.line


def test_the_export_path_measures_through_the_sweep(tmp_path):
    """Untimed measuring (the gate's) gives the timed export's metric: timing never touches the figures."""
    timed = measure_for_export(DIGITS.model_path, DIGITS.data_path, INT8, tmp_path / "a", MeasureOptions(batch=None))
    untimed = measure_for_export(DIGITS.model_path, DIGITS.data_path, INT8, tmp_path / "b", timed=False)
    assert timed.source.row[results.METRIC] == untimed.source.row[results.METRIC]
    assert timed.source.row[results.THREADS] == 1 and pd.isna(untimed.source.row[results.THREADS])


# --- the report in a browser -------------------------------------------------------------------------------------


@pytest.mark.skipif(not CHROMIUM.exists(), reason=NEEDS_CHROMIUM)
def test_the_report_renders_its_charts_offline(job, job_bundle):
    """Every request the page makes is answered only if it is the file itself; none may go anywhere else."""
    out, _ = job_bundle
    _, table = job
    requested = []
    with chromium() as browser:
        page = new_page(browser)

        def answer(route) -> None:
            requested.append(route.request.url)
            route.continue_() if route.request.url.startswith("file://") else route.abort()

        page.route("**/*", answer)
        page.goto((out / REPORT_FILE).as_uri())
        page.locator(".js-plotly-plot .point").first.wait_for()
        charts = page.locator(".js-plotly-plot")
        assert charts.count() == 3  # metric against size, against latency, and per slice
        assert charts.nth(0).locator(".scatterlayer .point").count() == len(results.measured_rows(table))
        assert charts.nth(2).locator(".bars .point").count() == 2  # the two slices
        assert page.get_by_text("Scores next to fp32").is_visible()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "report.png", full_page=True)
    assert requested == [(out / REPORT_FILE).as_uri()], requested
