"""Mixed-precision jobs (engine.jobs.kinds.mixed): engine.mixed's curve computed by a detached runner, each point a
results row with its artifact in the store, a finished sensitivity job's table reused, cancel, resume, failure, and
a point exported like any row.

Real runners on digits_cnn, whose whole curve (W4A8 start, --max-drop 0: every point up to all moves) takes seconds.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from engine import results
from engine.cli import main
from engine.data import load_dataset
from engine.export.bundle import MODEL_FILE, read_bundle
from engine.jobs.processes import live_group_members
from engine.mixed import MaxDrop, curve_candidates, mixed_curve
from engine.model import load_model
from engine.sensitivity import SensitivityTable
from engine.sensitivity import table as columns
from engine.store import jobs as job_rows
from engine.store.home import HOME_VARIABLE
from engine.sweep.plan import calibration_rows_asked, plan_data
from engine.workspace import JobState, Workspace, WorkspaceError
from sample_models.catalog import SAMPLES
from tests.jobs_helpers import OWNER, TIMEOUT, add_sample, runner_pid, stored_results, wait_until

DIGITS = SAMPLES["digits_cnn"]
WHOLE_CURVE = {"batch": None, "max_drop": 0.0}  # untimed at batch N; a drop of 0 walks the ladder to its end
COMPARED = [results.NAME, results.RECIPE_KEY, results.METRIC, results.DELTA, results.SIZE_BYTES, results.SIMULATED,
            results.MIXED_BASE, results.MIXED_MOVES, results.MIXED_CHANGED, results.MIXED_UNITS, results.MIXED_CHOSEN]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace.open(tmp_path_factory.mktemp("mixed-jobs") / "ws")


@pytest.fixture(scope="module")
def curve_job(ws) -> str:
    job_id = ws.submit_mixed(*add_sample(ws), OWNER, **WHOLE_CURVE)
    job = ws.wait(job_id, TIMEOUT)
    assert job.state == JobState.DONE, (job.error, job.error_detail)
    return job_id


def test_a_job_commits_the_in_process_curve_with_every_artifact_in_the_store(ws, curve_job, tmp_path):
    table = ws.results(curve_job)
    model = load_model(DIGITS.model_path)
    dataset = load_dataset(DIGITS.data_path, model.summary.inputs)
    recipes = curve_candidates([8, 4], "channel", [8], "minmax")
    expected = mixed_curve(model, dataset, recipes, MaxDrop(0.0), tmp_path / "out", tmp_path / "work", batch=None)
    assert len(table) == len(expected.rows) > 3
    pd.testing.assert_frame_equal(table[COMPARED].reset_index(drop=True),
                                  expected.rows[COMPARED].reset_index(drop=True), check_dtype=False)
    assert results.chosen_point(table)[results.RECIPE_KEY] == expected.chosen[results.RECIPE_KEY]
    job = ws.job(curve_job)
    assert job.done == job.total == len(table) and expected.chosen[results.NAME] in job.message

    scored = plan_data(dataset, calibration_rows_asked(recipes)).scored
    for _, row in table.iterrows():  # each artifact, in the store, scores its row's metric in a fresh session
        artifact = ws.artifact_path(curve_job, row[results.RECIPE_KEY])
        assert str(artifact) == row[results.ARTIFACT] and artifact.is_relative_to(ws.store.artifacts.root)
        assert artifact.stat().st_size == row[results.SIZE_BYTES]
        session = ort.InferenceSession(str(artifact))
        logits = session.run(None, scored.inputs)[0]
        assert np.mean(logits.argmax(axis=1) == scored.labels) == pytest.approx(row[results.METRIC], abs=1e-9)


def test_an_identical_job_copies_every_point_from_the_cache(ws, curve_job):
    again = ws.wait(ws.submit_mixed(*add_sample(ws), OWNER, **WHOLE_CURVE), TIMEOUT)
    assert again.state == JobState.DONE, again.error
    assert all(row["cached"] for row in stored_results(ws, again.id))
    pd.testing.assert_frame_equal(ws.results(again.id)[COMPARED], ws.results(curve_job)[COMPARED])


def test_a_finished_sensitivity_jobs_table_is_the_one_the_curve_reads(tmp_path):
    """The table job's stored table is cut down to one node's rows: a curve that read it has one node to move,
    one computed afresh would have every layer."""
    ws = Workspace.open(tmp_path / "ws")
    model_id, data_id = add_sample(ws)
    table_job = ws.wait(ws.submit_sensitivity(model_id, data_id, OWNER, bits=(8, 4), activations=(8,)), TIMEOUT)
    assert table_job.state == JobState.DONE, table_job.error
    table = ws.sensitivity(table_job.id)
    node = table.rows[columns.LAYER].iloc[0]
    cut = SensitivityTable(table.info, table.candidates, table.points,
                           table.rows[table.rows[columns.LAYER] == node])
    with ws.store.connect() as conn:
        (row,) = job_rows.result_rows(conn, table_job.id)
        row["table"] = ws.store.blobs.put_bytes(json.dumps(cut.to_dict()).encode())
        job_rows.update_result(conn, table_job.id, stored_results(ws, table_job.id)[0]["recipe_key"], row)

    job = ws.wait(ws.submit_mixed_on_table(table_job.id, OWNER, **WHOLE_CURVE), TIMEOUT)
    assert job.state == JobState.DONE, (job.error, job.error_detail)
    assert "table from an earlier sensitivity job" in job.message
    points = results.curve_rows(ws.results(job.id))
    assert set(points[results.MIXED_UNITS]) == {1}
    assert len(table.rows[columns.LAYER].unique()) > 1  # what a table computed afresh would have moved


def test_cancel_stops_between_points_and_resume_measures_only_the_rest(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    job_id = ws.submit_mixed(*add_sample(ws), OWNER, **WHOLE_CURVE)
    wait_until(lambda: len(stored_results(ws, job_id)) >= 2, what="the first points")
    pid = runner_pid(ws, job_id)
    ws.cancel(job_id)
    wait_until(lambda: not live_group_members(pid), timeout=5, what="the runner to exit")
    assert ws.job(job_id).state == JobState.CANCELLED
    before = {row["recipe_key"]: row for row in stored_results(ws, job_id)}
    assert 2 <= len(before) < 9  # the whole curve of digits_cnn has 9 rows

    ws.resume(job_id)
    resumed = ws.wait(job_id, TIMEOUT)
    assert resumed.state == JobState.DONE, (resumed.error, resumed.error_detail)
    after = {row["recipe_key"]: row for row in stored_results(ws, job_id)}
    def identity(row) -> tuple:  # position, artifact, created: a point committed again would differ
        return row["position"], row["artifact"], row["created"]

    assert len(after) == 9 and all(identity(after[key]) == identity(before[key]) for key in before)
    assert [row[results.MIXED_CHOSEN] for _, row in ws.results(job_id).iterrows()].count(True) == 1


def test_a_failing_input_fails_the_job_with_one_line_and_bad_parameters_are_refused(tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    model_id, data_id = add_sample(ws)
    job = ws.wait(ws.submit_mixed(model_id, data_id, OWNER, mask="no_such_input", **WHOLE_CURVE), TIMEOUT)
    assert job.state == JobState.FAILED and "no input 'no_such_input'" in job.error and "\n" not in job.error
    for options, words in [({}, "exactly one budget"), ({"max_drop": 0.01, "max_size_ratio": 0.5}, "exactly one"),
                           ({"max_size_ratio": 0}, "--max-size-ratio"), ({"max_drop": 0.01, "activations": (4,)},
                                                                        "none, 8, 16 or 8,16"),
                           ({"max_drop": 0.01, "threads": 0}, "threads")]:
        with pytest.raises(WorkspaceError, match=words):
            ws.submit_mixed(model_id, data_id, OWNER, **options)
    table = ws.submit_sensitivity(model_id, data_id, OWNER, bits=(8,), activations=("dynamic",))
    ws.wait(table, TIMEOUT)
    with pytest.raises(WorkspaceError, match="none, 8, 16 or 8,16"):
        ws.submit_mixed_on_table(table, OWNER, max_drop=0.01)


def test_a_curve_point_exports_from_its_job_with_its_row_figures(ws, curve_job, tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_VARIABLE, str(ws.root))
    chosen = results.chosen_point(ws.results(curve_job))
    out = tmp_path / "bundle"
    assert main(["export", "--from-job", curve_job, "--row", chosen[results.RECIPE_KEY], "--out", str(out)]) == 0
    figures = read_bundle(out)
    assert figures["metric"]["value"] == chosen[results.METRIC]
    assert (out / MODEL_FILE).read_bytes() == ws.artifact_path(curve_job, chosen[results.RECIPE_KEY]).read_bytes()
