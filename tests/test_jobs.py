"""Sweep jobs: crash isolation, kill and resume, cancel, concurrency, the result cache, Dask, the CLI.

Every job runs for real: a detached runner process, task processes, onnxruntime. The recipes are few and
the models small (digits_cnn, breast_cancer_mlp) to keep the file quick on two cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from engine.data import load_dataset
from engine.jobs.processes import live_group_members
from engine.jobs.tasks import CRASH_VARIABLE
from engine.model import load_model
from engine.recipe import ActivationSpec, Recipe
from engine.sweep import default_grid, sweep
from engine.workspace import Workspace, WorkspaceError
from sample_models.catalog import SAMPLES
from tests.jobs_helpers import (
    FP32, GRID, OWNER, TIMEOUT, W2, W3, W4_GROUP, W8_STATIC, add_sample, assert_store_is_consistent, comparable,
    local_dask_cluster, run_sweep, runner_pid, stored_results, wait_until,
)


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace.open(tmp_path / "ws")


# -- the happy path ---------------------------------------------------------------------------------------------


def test_a_job_gives_the_rows_of_the_in_process_sweep_with_artifacts_in_the_workspace(workspace, tmp_path):
    recipes = [FP32, W8_STATIC, W3]
    job_id = run_sweep(workspace, recipes)
    table = workspace.results(job_id)

    sample = SAMPLES["digits_cnn"]
    model = load_model(sample.model_path)
    expected = sweep(model, load_dataset(sample.data_path, model.summary.inputs), recipes, tmp_path / "naive")
    pd.testing.assert_frame_equal(comparable(table), comparable(expected))

    assert list(table["recipe_key"]) == [recipe.key() for recipe in recipes]
    for row in table.itertuples():
        artifact = workspace.artifact_path(job_id, row.recipe_key)
        assert Path(row.artifact) == artifact and artifact.is_relative_to(workspace.root)
        if not row.simulated:
            assert row.size_bytes == artifact.stat().st_size
            assert row.latency_b1_p50_ms > 0 and row.ram_b1_peak_bytes > 0  # measured in the worker's own child
    job = workspace.job(job_id)
    assert (job.done, job.total, job.owner) == (3, 3, OWNER) and job.started <= job.finished
    assert [j.id for j in workspace.jobs(OWNER)] == [job_id] and workspace.jobs("someone else") == []
    pid = runner_pid(workspace, job_id)  # the runner and its processes exit when the job ends
    wait_until(lambda: not live_group_members(pid), timeout=5, what="the runner to exit")


def test_static_recipes_that_calibrate_alike_share_one_calibration(workspace, tmp_path):
    minmax = [recipe for recipe in default_grid() if recipe.mode.value == "static"]
    percentile = Recipe(W8_STATIC.weights, ActivationSpec(8, "percentile"), W8_STATIC.mode)
    recipes = [*minmax, percentile]
    job_id = run_sweep(workspace, recipes)
    assert len(minmax) == 3
    assert workspace.job(job_id).message == "done: 4 computed, 0 from the cache, 0 failed; 2 calibrations for 4 static recipes"

    sample = SAMPLES["digits_cnn"]
    model = load_model(sample.model_path)
    expected = sweep(model, load_dataset(sample.data_path, model.summary.inputs), recipes, tmp_path / "naive")
    pd.testing.assert_frame_equal(comparable(workspace.results(job_id)), comparable(expected))


# -- failures ---------------------------------------------------------------------------------------------------


def test_a_worker_killed_mid_sweep_fails_its_row_and_the_job_goes_on(workspace, monkeypatch):
    monkeypatch.setenv(CRASH_VARIABLE, W4_GROUP.key())  # that build SIGKILLs its own process
    recipes = [FP32, W3, W4_GROUP, W2]
    job_id = run_sweep(workspace, recipes)
    table = workspace.results(job_id).set_index("name")
    assert table.loc["W4 weight-only group32", "error"] == (
        "WorkerDied: worker process killed by SIGKILL while building this configuration"
    )
    assert table.drop(index="W4 weight-only group32")["error"].isna().all()
    assert table.loc[["fp32", "W3 weight-only channel", "W2 weight-only channel"], "metric"].notna().all()
    assert_store_is_consistent(workspace)
    assert "1 failed" in workspace.job(job_id).message


def test_a_calibration_killed_mid_sweep_fails_the_recipes_waiting_for_it_and_the_job_goes_on(workspace, monkeypatch):
    w8_tensor = GRID["W8A8 static tensor minmax"]
    monkeypatch.setenv(CRASH_VARIABLE, w8_tensor.key())  # the calibration started for it SIGKILLs itself
    recipes = [W3, w8_tensor, W8_STATIC]
    job_id = run_sweep(workspace, recipes)
    table = workspace.results(job_id).set_index("name")
    for name in ("W8A8 static tensor minmax", "W8A8 static channel minmax"):
        assert table.loc[name, "error"] == "WorkerDied: worker process killed by SIGKILL while calibrating"
    assert pd.isna(table.loc["W3 weight-only channel", "error"])
    assert_store_is_consistent(workspace)
    assert workspace.job(job_id).message.startswith("done: 1 computed, 0 from the cache, 2 failed")


def test_a_job_that_cannot_read_its_data_fails_with_one_line_and_the_traceback(workspace):
    model_id, dataset_id = add_sample(workspace)
    dataset = next(d for d in workspace.datasets(OWNER) if d.id == dataset_id)
    workspace.store.blobs.path(dataset.sha256).write_bytes(b"no longer an npz file")
    job = workspace.wait(workspace.submit_sweep(model_id, dataset_id, [FP32, W3], OWNER), TIMEOUT)
    assert job.state == "failed"
    assert job.error.startswith("the fp32 reference could not be computed: DataError") and "\n" not in job.error
    assert "Traceback" in job.error_detail
    assert workspace.results(job.id).empty


def test_kill_9_of_the_runner_leaves_an_interrupted_job_that_resume_completes(workspace, tmp_path):
    recipes = list(GRID.values())
    model_id, dataset_id = add_sample(workspace)
    job_id = workspace.submit_sweep(model_id, dataset_id, recipes, OWNER)
    wait_until(lambda: workspace.job(job_id).done >= 2, what="two committed rows")
    pid = runner_pid(workspace, job_id)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not live_group_members(pid), timeout=5, what="the job's processes to exit")

    reopened = Workspace.open(tmp_path / "ws")  # recover() runs on open
    job = reopened.job(job_id)
    assert job.state == "interrupted" and "resume" in job.message
    kept = len(stored_results(reopened, job_id))
    assert job.done == kept and 2 <= kept < len(recipes)
    assert_store_is_consistent(reopened)

    resumed_at = time.time()
    reopened.resume(job_id)
    assert reopened.wait(job_id, TIMEOUT).state == "done"
    rows = stored_results(reopened, job_id)
    newly_computed = [row for row in rows if row["created"] >= resumed_at and not row["cached"]]
    assert len(rows) == len(recipes) and len(newly_computed) == len(recipes) - kept
    assert reopened.results(job_id)["error"].isna().all()


def test_cancel_stops_the_job_and_its_processes_within_two_seconds(workspace):
    model_id, dataset_id = add_sample(workspace)
    job_id = workspace.submit_sweep(model_id, dataset_id, list(GRID.values()), OWNER)
    wait_until(lambda: workspace.job(job_id).done >= 1, what="a committed row")
    pid = runner_pid(workspace, job_id)
    assert live_group_members(pid)

    started = time.monotonic()
    workspace.cancel(job_id)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert live_group_members(pid) == []
    job = workspace.job(job_id)
    assert job.state == "cancelled" and job.done < job.total
    assert_store_is_consistent(workspace)
    workspace.cancel(job_id)  # cancelling an ended job changes nothing
    assert workspace.job(job_id).state == "cancelled"


def test_requests_that_cannot_be_carried_out_raise_workspace_errors(workspace):
    model_id, dataset_id = add_sample(workspace)
    other_model, _ = add_sample(workspace, "breast_cancer_mlp")
    with pytest.raises(WorkspaceError, match="another model"):
        workspace.submit_sweep(other_model, dataset_id, [FP32], OWNER)
    with pytest.raises(WorkspaceError, match="at least one recipe"):
        workspace.submit_sweep(model_id, dataset_id, [], OWNER)
    with pytest.raises(WorkspaceError, match="tcp://host:8786"):
        workspace.submit_sweep(model_id, dataset_id, [FP32], OWNER, scheduler="localhost")
    with pytest.raises(WorkspaceError, match="no model"):
        workspace.submit_sweep(model_id, dataset_id, [FP32], "a stranger")
    with pytest.raises(WorkspaceError, match="no job"):
        workspace.job("missing")
    job_id = run_sweep(workspace, [W3])
    with pytest.raises(WorkspaceError, match="is done"):
        workspace.resume(job_id)


# -- concurrency and the cache ----------------------------------------------------------------------------------


def test_two_sweeps_at_once_both_finish_with_the_right_rows(workspace, tmp_path):
    recipes = [FP32, W8_STATIC, W2]
    digits = workspace.submit_sweep(*add_sample(workspace, "digits_cnn"), recipes, OWNER)
    mlp = workspace.submit_sweep(*add_sample(workspace, "breast_cancer_mlp"), recipes, OWNER)
    for job_id, name in ((digits, "digits_cnn"), (mlp, "breast_cancer_mlp")):
        assert workspace.wait(job_id, TIMEOUT).state == "done"
        sample = SAMPLES[name]
        model = load_model(sample.model_path)
        expected = sweep(model, load_dataset(sample.data_path, model.summary.inputs), recipes, tmp_path / name)
        pd.testing.assert_frame_equal(comparable(workspace.results(job_id)), comparable(expected))
    assert_store_is_consistent(workspace)
    # one job computes at a time, so neither job's timings ran beside the other's builds
    spans = sorted((min(times), max(times)) for times in (row_times(workspace, digits), row_times(workspace, mlp)))
    assert spans[0][1] <= spans[1][0]


def row_times(workspace, job_id: str) -> list[float]:
    with workspace.store.connect() as conn:
        return [created for (created,) in conn.execute("SELECT created FROM results WHERE job_id = ?", (job_id,))]


def test_the_cache_means_a_configuration_is_computed_once(workspace):
    first = run_sweep(workspace, [FP32, W3])
    second = run_sweep(workspace, [FP32, W3])
    assert [row["cached"] for row in stored_results(workspace, second)] == [1, 1]  # no computation at all
    assert "0 computed, 2 from the cache" in workspace.job(second).message
    pd.testing.assert_frame_equal(workspace.results(second), workspace.results(first))  # latency included

    third = run_sweep(workspace, [FP32, W3, W2])
    assert [row["cached"] for row in stored_results(workspace, third)] == [1, 1, 0]
    other_latency_batch = run_sweep(workspace, [FP32], batch=8)  # another latency setting is another configuration
    assert [row["cached"] for row in stored_results(workspace, other_latency_batch)] == [0]


# -- scale-out --------------------------------------------------------------------------------------------------


def test_a_dask_cluster_gives_the_table_of_local_processes(tmp_path, monkeypatch):
    recipes = [FP32, W8_STATIC, W4_GROUP, W3]
    local = Workspace.open(tmp_path / "local")
    local_table = local.results(run_sweep(local, recipes))

    with local_dask_cluster(monkeypatch) as cluster:
        remote = Workspace.open(tmp_path / "remote")
        job_id = run_sweep(remote, recipes, scheduler=cluster.scheduler_address)
    remote_table = remote.results(job_id)

    pd.testing.assert_frame_equal(comparable(remote_table), comparable(local_table))
    assert list(remote_table["metric"]) == list(local_table["metric"])
    assert list(remote_table["size_bytes"]) == list(local_table["size_bytes"])
    assert remote.job(job_id).params["scheduler"] == cluster.scheduler_address
    for row in remote_table.itertuples():  # artifacts came back and live in the runner's workspace
        assert Path(row.artifact).is_relative_to(remote.root)
        if not row.simulated:
            assert Path(row.artifact).stat().st_size == row.size_bytes and row.latency_b1_p50_ms > 0


# -- the command line -------------------------------------------------------------------------------------------


def cli(home: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "QUANTSCOPE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=TIMEOUT)


def test_the_cli_detaches_lists_shows_and_reports_bad_ids(tmp_path):
    sample = SAMPLES["breast_cancer_mlp"]
    home = tmp_path / "ws"
    detached = cli(home, "sweep", sample.model_path, sample.data_path, "--weights", "3", "--detach")
    assert detached.returncode == 0, detached.stderr
    job_id = detached.stdout.strip()
    assert Workspace.open(home).wait(job_id, TIMEOUT).state == "done"

    listed = cli(home, "jobs", "list")
    assert job_id in listed.stdout and "done" in listed.stdout
    shown = cli(home, "jobs", "show", job_id)
    assert shown.returncode == 0 and "W3 weight-only channel" in shown.stdout and "2 of 2" in shown.stdout

    for action in ("show", "cancel", "resume"):
        missing = cli(home, "jobs", action, "no-such-job")
        assert missing.returncode == 2 and missing.stderr.strip() == "quantscope: error: no job no-such-job"
    bad = cli(home, "sweep", sample.model_path, sample.data_path, "--scheduler", "nowhere")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "tcp://" in bad.stderr
