"""Sensitivity jobs on a Dask cluster: the table of the local job, every figure of it; a bad address, an
unreachable scheduler and a lost worker end in one line.

A real LocalCluster of worker processes on loopback, real runners, digits_cnn (its table takes seconds).
"""

from __future__ import annotations

import json
import socket

import dask
import pytest

from engine.jobs.tasks import CRASH_VARIABLE
from engine.sensitivity import candidates
from engine.sensitivity import table as columns
from engine.workspace import JobState, Workspace, WorkspaceError
from tests.jobs_helpers import OWNER, TIMEOUT, add_sample, local_dask_cluster

BITS, ACTIVATIONS = (8, 4), (8, None)  # W8A8 and W4A8 share one calibration; W8 and W4 weight-only need none


def finished_table(workspace: Workspace, **options):
    job_id = workspace.submit_sensitivity(*add_sample(workspace), OWNER, bits=BITS, activations=ACTIVATIONS,
                                          **options)
    job = workspace.wait(job_id, TIMEOUT)
    assert job.state == JobState.DONE, (job.error, job.error_detail)
    return job, workspace.sensitivity(job_id)


def test_a_job_on_a_dask_cluster_gives_every_figure_of_the_local_job(tmp_path, monkeypatch):
    local_job, local = finished_table(Workspace.open(tmp_path / "local"))
    with local_dask_cluster(monkeypatch) as cluster:
        remote_job, remote = finished_table(Workspace.open(tmp_path / "remote"), scheduler=cluster.scheduler_address)

    assert remote_job.params["scheduler"] == cluster.scheduler_address and "scheduler" not in local_job.message
    assert "on the Dask cluster with 1 calibration" in remote_job.message  # shared by the two static candidates
    assert remote_job.done == remote_job.total == len(remote.candidates) == 4  # progress counted candidates
    assert set(remote.rows[columns.CANDIDATE]) == {recipe.short_name() for recipe in candidates(BITS,
                                                                                                 activations=ACTIVATIONS)}
    assert remote.rows[columns.ERROR].isna().all() and len(remote.points) > 0
    # the whole table: info, candidates, points with their histograms, and every column of every row
    assert json.dumps(remote.to_dict(), sort_keys=True) == json.dumps(local.to_dict(), sort_keys=True)


def test_a_bad_scheduler_address_is_refused_in_one_line_before_anything_is_queued(tmp_path):
    workspace = Workspace.open(tmp_path / "ws")
    model_id, data_id = add_sample(workspace)
    with pytest.raises(WorkspaceError, match="tcp://host:8786") as refused:
        workspace.submit_sensitivity(model_id, data_id, OWNER, scheduler="localhost:8786")
    assert len(str(refused.value).splitlines()) == 1
    assert workspace.jobs(OWNER) == []


def test_an_unreachable_scheduler_fails_the_job_in_one_line(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workspace = Workspace.open(tmp_path / "ws")
    job_id = workspace.submit_sensitivity(*add_sample(workspace), OWNER, bits=(8,),
                                          scheduler=f"tcp://127.0.0.1:{port}")
    job = workspace.wait(job_id, TIMEOUT)
    assert job.state == JobState.FAILED
    assert job.error.startswith("the job's workers could not start") and len(job.error.splitlines()) == 1


def test_a_lost_worker_fails_the_job_in_one_line(tmp_path, monkeypatch):
    static = candidates((8,))[0]  # W8A8: the calibration task for it kills its own worker process
    monkeypatch.setenv(CRASH_VARIABLE, static.key())  # inherited by the cluster's worker processes
    workspace = Workspace.open(tmp_path / "ws")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), local_dask_cluster(monkeypatch) as cluster:
        job_id = workspace.submit_sensitivity(*add_sample(workspace), OWNER, bits=(8,), activations=(8, None),
                                              scheduler=cluster.scheduler_address)
        failed = workspace.wait(job_id, TIMEOUT)
    assert failed.state == JobState.FAILED, failed.message
    assert failed.error.startswith(f"calibrating for {static.short_name()} on the Dask cluster: its Dask worker was "
                                   "lost") and len(failed.error.splitlines()) == 1
    with pytest.raises(WorkspaceError, match="no table yet"):
        workspace.sensitivity(job_id)
