"""Sensitivity jobs: the table computed by a detached runner, stored in the workspace, cached, cancelled, resumed.

Real runners on digits_cnn, whose table takes seconds.
"""

from __future__ import annotations

import pandas as pd
import pytest

from engine.data import load_dataset
from engine.jobs.processes import live_group_members
from engine.model import load_model
from engine.sensitivity import candidates, sensitivity_table
from engine.sensitivity import table as columns
from engine.workspace import JobState, Workspace, WorkspaceError
from sample_models.catalog import SAMPLES
from tests.jobs_helpers import FP32, OWNER, TIMEOUT, add_sample, runner_pid, wait_until

MEASURED = [columns.LAYER, columns.KIND, columns.TENSOR, columns.CANDIDATE, columns.ONLY_THIS, columns.ALL_BUT_THIS,
            columns.OUTPUT_SQNR_DB, columns.WEIGHT_SQNR_DB, columns.METHOD]


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace.open(tmp_path / "ws")


def test_a_job_gives_the_in_process_table_and_a_second_one_takes_it_from_the_cache(workspace, tmp_path):
    model_id, data_id = add_sample(workspace)
    job_id = workspace.submit_sensitivity(model_id, data_id, OWNER, bits=(8,))
    job = workspace.wait(job_id, TIMEOUT)
    assert job.state == JobState.DONE, (job.error, job.error_detail)
    table = workspace.sensitivity(job_id)

    sample = SAMPLES["digits_cnn"]
    model = load_model(sample.model_path)
    expected = sensitivity_table(model, load_dataset(sample.data_path, model.summary.inputs),
                                 candidates([8]), tmp_path / "in-process")
    assert len(table.rows) == len(expected.rows) > 0
    pd.testing.assert_frame_equal(table.rows[MEASURED].reset_index(drop=True),
                                  expected.rows[MEASURED].reset_index(drop=True), check_dtype=False)
    assert job.done == job.total == 2 * len(table.rows)  # progress counted cells: only_this and all_but_this each
    point = table.points[0]
    assert table.histogram(point["kind"], point["layer"], point["tensor"]).counts

    again = workspace.wait(workspace.submit_sensitivity(model_id, data_id, OWNER, bits=(8,)), TIMEOUT)
    assert again.state == JobState.DONE and "from the cache" in again.message
    pd.testing.assert_frame_equal(workspace.sensitivity(again.id).rows, table.rows)
    other = workspace.wait(workspace.submit_sensitivity(model_id, data_id, OWNER, bits=(8,), activations=(None,)),
                           TIMEOUT)
    assert "from the cache" not in other.message  # another candidate is another configuration


def test_cancel_stops_the_table_between_cells_and_resume_computes_it_again(workspace):
    model_id, data_id = add_sample(workspace)
    job_id = workspace.submit_sensitivity(model_id, data_id, OWNER, bits=(8, 4), activations=(8, None))
    running = wait_until(lambda: (job := workspace.job(job_id)).done > 0 and job, what="the first cells")
    pid = runner_pid(workspace, job_id)
    workspace.cancel(job_id)
    wait_until(lambda: not live_group_members(pid), timeout=5, what="the runner to exit")
    cancelled = workspace.job(job_id)
    assert cancelled.state == JobState.CANCELLED and cancelled.done < cancelled.total == running.total
    with pytest.raises(WorkspaceError, match="no table yet"):
        workspace.sensitivity(job_id)

    workspace.resume(job_id)
    resumed = workspace.wait(job_id, TIMEOUT)
    assert resumed.state == JobState.DONE and resumed.done == resumed.total
    assert set(workspace.sensitivity(job_id).rows[columns.CANDIDATE]) == {
        recipe.short_name() for recipe in candidates([8, 4], activations=[8, None])}


def test_bad_parameters_are_refused_before_anything_is_queued(workspace):
    model_id, data_id = add_sample(workspace)
    for options, words in [({"bits": (9,)}, "2-8 bits"), ({"activations": (32,)}, "none, 8, 16"),
                           ({"granularities": ("rows",)}, "rows"), ({"threads": 0}, "threads"),
                           ({"bits": (4,), "activations": ("dynamic",)}, "8-bit weights")]:
        with pytest.raises(WorkspaceError, match=words):
            workspace.submit_sensitivity(model_id, data_id, OWNER, **options)
    assert workspace.jobs(OWNER) == []


def test_each_reader_refuses_the_other_kind_of_job(workspace):
    model_id, data_id = add_sample(workspace)
    sweep = workspace.submit_sweep(model_id, data_id, [FP32], OWNER)
    with pytest.raises(WorkspaceError, match="not a sensitivity table"):
        workspace.sensitivity(sweep)
    table = workspace.submit_sensitivity(model_id, data_id, OWNER, bits=(8,))
    with pytest.raises(WorkspaceError, match="not a table of recipes"):
        workspace.results(table)
    workspace.wait(sweep, TIMEOUT), workspace.wait(table, TIMEOUT)
