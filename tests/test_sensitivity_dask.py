"""Sensitivity jobs on a Dask cluster: the table of the local job, every figure of it; a bad address, an
unreachable scheduler and a lost worker end in one line.

A real LocalCluster of worker processes on loopback, real runners and CLI, digits_cnn (its table takes
seconds).
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import dask
import pytest

from engine.jobs.tasks import CRASH_VARIABLE
from engine.sensitivity import JSON_FILE, candidates
from engine.sensitivity import table as columns
from engine.workspace import JobState, Workspace, WorkspaceError
from sample_models.catalog import SAMPLES
from tests.jobs_helpers import OWNER, TIMEOUT, add_sample, local_dask_cluster, quantscope

BITS, ACTIVATIONS = (8, 4), (8, None)  # W8A8 and W4A8 share one calibration; W8 and W4 weight-only need none
SAMPLE = SAMPLES["digits_cnn"]


def cli(home: Path, *args) -> subprocess.CompletedProcess:
    return quantscope(home, "sensitivity", SAMPLE.model_path, SAMPLE.data_path, *args)


def test_a_job_on_a_dask_cluster_gives_every_figure_of_the_local_job(tmp_path, monkeypatch):
    workspace = Workspace.open(tmp_path / "local")
    model = workspace.add_model(SAMPLE.model_path, SAMPLE.model_path.name, OWNER)  # named as the CLI names it
    dataset = workspace.add_dataset(SAMPLE.data_path, SAMPLE.data_path.name, model.id, OWNER)
    local_job = workspace.wait(workspace.submit_sensitivity(model.id, dataset.id, OWNER, bits=BITS,
                                                            activations=ACTIVATIONS), TIMEOUT)
    assert local_job.state == JobState.DONE, (local_job.error, local_job.error_detail)
    local = workspace.sensitivity(local_job.id)

    with local_dask_cluster(monkeypatch) as cluster:
        command = cli(tmp_path / "remote", "--out", tmp_path / "out", "--bits", "8,4", "--activations", "8,none",
                      "--scheduler", cluster.scheduler_address)
    assert command.returncode == 0, command.stderr
    (remote_job,) = Workspace.open(tmp_path / "remote").jobs()
    assert remote_job.params["scheduler"] == cluster.scheduler_address and "Dask" not in local_job.message
    assert "on the Dask cluster with 1 calibration" in remote_job.message  # shared by the two static candidates
    assert remote_job.done == remote_job.total == len(local.candidates) == 4  # progress counted candidates
    names = {recipe.short_name() for recipe in candidates(BITS, activations=ACTIVATIONS)}
    assert set(local.rows[columns.CANDIDATE]) == names
    assert local.rows[columns.ERROR].isna().all() and len(local.points) > 0
    # the whole table the CLI wrote: info, candidates, points with their histograms, every column of every row
    written = json.loads((tmp_path / "out" / JSON_FILE).read_text())
    assert json.dumps(written, sort_keys=True) == json.dumps(local.to_dict(), sort_keys=True)


def test_a_bad_scheduler_address_is_refused_in_one_line_before_anything_is_queued(tmp_path):
    workspace = Workspace.open(tmp_path / "ws")
    model_id, data_id = add_sample(workspace)
    with pytest.raises(WorkspaceError, match="tcp://host:8786") as refused:
        workspace.submit_sensitivity(model_id, data_id, OWNER, scheduler="localhost:8786")
    assert len(str(refused.value).splitlines()) == 1
    assert workspace.jobs(OWNER) == []
    bad = cli(tmp_path / "ws", "--out", tmp_path / "out", "--scheduler", "nowhere")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "tcp://" in bad.stderr
    assert workspace.jobs() == [] and not (tmp_path / "out").exists()


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
