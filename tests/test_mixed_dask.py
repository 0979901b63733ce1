"""Mixed-precision jobs on a Dask cluster: the sensitivity table computed there by the sensitivity kind's code, the
points built and timed by the runner, the same curve as the local job's; its points cache like local ones; a bad
address is refused and an unreachable scheduler fails the job, each in one line.

A real LocalCluster of worker processes on loopback and real runners on digits_cnn (its whole curve takes seconds).
"""

from __future__ import annotations

import socket

import pandas as pd
import pytest

from engine import results
from engine.workspace import JobState, Workspace, WorkspaceError
from tests.jobs_helpers import OWNER, TIMEOUT, add_sample, local_dask_cluster, stored_results

WHOLE_CURVE = {"batch": None, "max_drop": 0.0, "bits": (8, 4), "activations": (8,)}  # W8A8, W4A8: one calibration
COMPARED = [results.NAME, results.RECIPE_KEY, results.METRIC, results.DELTA, results.SIZE_BYTES, results.SIMULATED,
            results.MIXED_BASE, results.MIXED_MOVES, results.MIXED_CHANGED, results.MIXED_UNITS, results.MIXED_CHOSEN]


def curve(workspace: Workspace, job_id: str) -> pd.DataFrame:
    job = workspace.wait(job_id, TIMEOUT)
    assert job.state == JobState.DONE, (job.error, job.error_detail)
    return workspace.results(job_id)[COMPARED].reset_index(drop=True)


def test_a_job_with_its_table_on_a_dask_cluster_measures_the_local_curve_and_caches_it_alike(tmp_path, monkeypatch):
    local = Workspace.open(tmp_path / "local")
    local_job = local.submit_mixed(*add_sample(local), OWNER, **WHOLE_CURVE)
    remote = Workspace.open(tmp_path / "remote")
    model_id, data_id = add_sample(remote)
    with local_dask_cluster(monkeypatch) as cluster:
        remote_job = remote.submit_mixed(model_id, data_id, OWNER, scheduler=cluster.scheduler_address,
                                         **WHOLE_CURVE)
        remote_curve = curve(remote, remote_job)
    local_curve = curve(local, local_job)
    job = remote.job(remote_job)
    assert job.params["scheduler"] == cluster.scheduler_address
    assert "table computed on the Dask cluster with 1 calibration" in job.message
    assert "Dask" not in local.job(local_job).message
    assert len(local_curve) > 3 and local_curve[results.MIXED_CHOSEN].sum() == 1
    pd.testing.assert_frame_equal(remote_curve, local_curve)
    assert not any(row["cached"] for row in stored_results(remote, remote_job))

    # the same configuration without the cluster: every point is the cluster job's, copied from the result cache
    again = remote.submit_mixed(model_id, data_id, OWNER, **WHOLE_CURVE)
    pd.testing.assert_frame_equal(curve(remote, again), local_curve)
    assert all(row["cached"] for row in stored_results(remote, again))


def test_a_bad_scheduler_address_is_refused_and_an_unreachable_one_fails_the_job_in_one_line(tmp_path):
    workspace = Workspace.open(tmp_path / "ws")
    model_id, data_id = add_sample(workspace)
    with pytest.raises(WorkspaceError, match="tcp://host:8786") as refused:
        workspace.submit_mixed(model_id, data_id, OWNER, scheduler="localhost:8786", **WHOLE_CURVE)
    assert len(str(refused.value).splitlines()) == 1 and workspace.jobs(OWNER) == []

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    job = workspace.wait(workspace.submit_mixed(model_id, data_id, OWNER, scheduler=f"tcp://127.0.0.1:{port}",
                                                **WHOLE_CURVE), TIMEOUT)
    assert job.state == JobState.FAILED
    assert job.error.startswith("the job's workers could not start") and len(job.error.splitlines()) == 1
    assert stored_results(workspace, job.id) == []
