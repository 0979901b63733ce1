"""Mixed-precision jobs on a Dask cluster: the sensitivity table computed there by the sensitivity kind's code, the
points built and timed by the runner, the same curve as the local job's; its points cache like local ones; a bad
address is refused in one line. (An unreachable scheduler fails any job kind in the runner, before its work starts:
tests/test_sensitivity_dask.py has that case.)

A real LocalCluster of worker processes on loopback and real runners on digits_cnn (its whole curve takes seconds).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from engine import results
from engine.mixed import CHOSEN_FILE, CURVE_STEM
from engine.workspace import JobState, Workspace, WorkspaceError
from sample_models.catalog import SAMPLES
from tests.jobs_helpers import OWNER, TIMEOUT, add_sample, local_dask_cluster, stored_results, quantscope

DIGITS = SAMPLES["digits_cnn"]
WHOLE_CURVE = {"batch": None, "max_drop": 0.0, "bits": (8, 4), "activations": (8,)}  # W8A8, W4A8: one calibration
COMPARED = [results.NAME, results.RECIPE_KEY, results.METRIC, results.DELTA, results.SIZE_BYTES, results.SIMULATED,
            results.MIXED_BASE, results.MIXED_MOVES, results.MIXED_CHANGED, results.MIXED_UNITS, results.MIXED_CHOSEN]


def curve(workspace: Workspace, job_id: str) -> pd.DataFrame:
    job = workspace.wait(job_id, TIMEOUT)
    assert job.state == JobState.DONE, (job.error, job.error_detail)
    return workspace.results(job_id)[COMPARED].reset_index(drop=True)


def mixed_cli(home: Path, *args) -> subprocess.CompletedProcess:
    return quantscope(home, "mixed", DIGITS.model_path, DIGITS.data_path, *args)


def test_a_job_with_its_table_on_a_dask_cluster_measures_the_local_curve_and_caches_it_alike(tmp_path, monkeypatch):
    local = Workspace.open(tmp_path / "local")
    model = local.add_model(DIGITS.model_path, DIGITS.model_path.name, OWNER)  # named as the CLI names it
    dataset = local.add_dataset(DIGITS.data_path, DIGITS.data_path.name, model.id, OWNER)
    local_job = local.submit_mixed(model.id, dataset.id, OWNER, **WHOLE_CURVE)
    out = tmp_path / "out"
    with local_dask_cluster(monkeypatch) as cluster:
        command = mixed_cli(tmp_path / "remote", "--out", out, "--bits", "8,4", "--activations", "8", "--max-drop",
                            0, "--no-batch", "--scheduler", cluster.scheduler_address)
    assert command.returncode == 0, command.stderr
    local_curve = curve(local, local_job)
    remote = Workspace.open(tmp_path / "remote")
    (job,) = remote.jobs()
    assert job.kind == "mixed" and job.params["scheduler"] == cluster.scheduler_address
    assert "table computed on the Dask cluster with 1 calibration" in job.message
    assert "Dask" not in local.job(local_job).message
    assert len(local_curve) > 3 and local_curve[results.MIXED_CHOSEN].sum() == 1
    pd.testing.assert_frame_equal(curve(remote, job.id), local_curve)
    assert not any(row["cached"] for row in stored_results(remote, job.id))

    # the files of the in-process command: every row with its artifact copied under out/artifacts, the chosen row
    written = pd.DataFrame(json.loads((out / f"{CURVE_STEM}.json").read_text()))
    pd.testing.assert_frame_equal(written[COMPARED], local_curve, check_dtype=False)
    for artifact, size in zip(written[results.ARTIFACT], written[results.SIZE_BYTES]):
        assert artifact.startswith("artifacts/") and (out / artifact).stat().st_size == size
    chosen = json.loads((out / CHOSEN_FILE).read_text())
    assert chosen[results.RECIPE_KEY] == results.chosen_point(local.results(local_job))[results.RECIPE_KEY]
    assert (out / f"{CURVE_STEM}.csv").is_file() and chosen[results.NAME] in command.stdout

    # the same configuration without the cluster: every point is the cluster job's, copied from the result cache
    again = remote.submit_mixed(*add_sample(remote), OWNER, **WHOLE_CURVE)
    pd.testing.assert_frame_equal(curve(remote, again), local_curve)
    assert all(row["cached"] for row in stored_results(remote, again))


def test_a_bad_scheduler_address_is_refused_in_one_line_before_anything_is_queued(tmp_path):
    workspace = Workspace.open(tmp_path / "ws")
    model_id, data_id = add_sample(workspace)
    with pytest.raises(WorkspaceError, match="tcp://host:8786") as refused:
        workspace.submit_mixed(model_id, data_id, OWNER, scheduler="localhost:8786", **WHOLE_CURVE)
    assert len(str(refused.value).splitlines()) == 1 and workspace.jobs(OWNER) == []
    bad = mixed_cli(tmp_path / "ws", "--out", tmp_path / "out", "--max-drop", 0.01, "--scheduler", "nowhere")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "tcp://" in bad.stderr
    assert workspace.jobs() == [] and not (tmp_path / "out").exists()

