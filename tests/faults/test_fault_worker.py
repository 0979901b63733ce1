"""Fault: a worker process killed from outside (kill -9, the OOM killer) while the job runs.

tests/test_jobs.py has a worker that kills itself (CRASH_VARIABLE); here the test finds the job's workers through
/proc (the runner's process group) and SIGKILLs them from outside: the one stuck building a recipe, and an idle one
that the job would hand its next task to.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd

from engine.jobs.processes import live_group_members
from engine.jobs.tasks import HANG_VARIABLE
from tests.jobs_helpers import (
    FP32, OWNER, TIMEOUT, W3, W4_GROUP, add_sample, assert_rows_kept, assert_store_is_consistent, committed_rows,
    comparable, runner_pid, stored_results, undisturbed_table, unrecorded_artifacts, wait_for_group_to_exit,
    wait_until,
)


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, ppid, pgrp, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def pool_workers(runner: int) -> list[int]:
    """The job's worker processes: the children of the forkserver its runner started. The runner's process group
    holds them all (runner, forkserver, resource tracker, workers)."""
    members = live_group_members(runner)
    parent = {pid: int(_stat(pid)[1]) for pid in members}
    forkservers = {pid for pid in members
                   if parent[pid] == runner and b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()}
    return sorted(pid for pid in members if parent[pid] in forkservers)


def test_workers_killed_from_outside_mid_build_fail_that_row_the_job_goes_on_and_a_rerun_computes_it(
        workspace, tmp_path, monkeypatch, survived):
    recipes = [FP32, W4_GROUP, W3]
    monkeypatch.setenv(HANG_VARIABLE, W4_GROUP.key())  # its build never returns: it is surely mid-build when killed
    model_id, dataset_id = add_sample(workspace)
    # Two builds at a time: fp32 and W4 start together, W3 (simulated, never timed) takes the worker fp32 freed and
    # is committed; fp32's timing then waits for W4's build to end (timings run alone): one worker idle, one mid-build.
    job_id = workspace.submit_sweep(model_id, dataset_id, recipes, OWNER, workers=2)
    wait_until(lambda: (job := workspace.job(job_id)).done == 1 and job.message == "building W4 weight-only group32",
               what="W3 committed and W4 being built")
    before = committed_rows(workspace, job_id)
    runner = runner_pid(workspace, job_id)
    workers = pool_workers(runner)
    assert len(workers) == 2  # one building W4, one idle since it built W3

    # Hold the runner still while both die, so that it finds them dead in either order: the builder through its
    # pipe, the idle one only when it hands it W3.
    os.kill(runner, signal.SIGSTOP)
    try:
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not set(workers) & set(live_group_members(runner)), timeout=10, what="the workers to die")
    finally:
        os.kill(runner, signal.SIGCONT)

    job = workspace.wait(job_id, TIMEOUT)
    assert job.state == "done", (job.error, job.error_detail)
    assert job.message == "done: 2 computed, 0 from the cache, 1 failed"
    table = workspace.results(job_id).set_index("name")
    assert table.loc["W4 weight-only group32", "error"] == (
        "WorkerDied: worker process killed by SIGKILL while building this configuration")
    assert table.drop(index="W4 weight-only group32")["error"].isna().all()  # fp32's timing went to a fresh worker
    assert_rows_kept(workspace, job_id, before)
    assert_store_is_consistent(workspace)
    wait_for_group_to_exit(runner)

    # A re-run computes the failed configuration (failed rows are never cached) and takes the others from the cache.
    monkeypatch.delenv(HANG_VARIABLE)
    again = workspace.submit_sweep(model_id, dataset_id, recipes, OWNER)
    assert workspace.wait(again, TIMEOUT).state == "done"
    assert [row["cached"] for row in stored_results(workspace, again)] == [1, 0, 1]
    pd.testing.assert_frame_equal(comparable(workspace.results(again)),
                                  undisturbed_table("digits_cnn", recipes, tmp_path))
    assert_store_is_consistent(workspace)
    assert unrecorded_artifacts(workspace) == set()
    survived("workers killed mid-build", assert_rows_kept(workspace, job_id, before))
