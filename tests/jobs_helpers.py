"""What tests of real jobs share: the sample recipes, adding a sample, waiting, and checking the store after a fault.

Used by tests/test_jobs.py and the fault and load tests in tests/faults/.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from engine import results
from engine.data import load_dataset
from engine.jobs.processes import live_group_members
from engine.model import load_model
from engine.store import jobs as job_rows
from engine.sweep import default_grid, sweep
from engine.workspace import Workspace
from sample_models.catalog import SAMPLES

GRID = {recipe.short_name(): recipe for recipe in default_grid()}
FP32, FP16 = GRID["fp32"], GRID["fp16"]
W8_STATIC, W4_GROUP = GRID["W8A8 static channel minmax"], GRID["W4 weight-only group32"]
W3, W2 = GRID["W3 weight-only channel"], GRID["W2 weight-only channel"]  # simulated: never timed, quick
LATENCY_COLUMNS = [*results.TIMING_COLUMNS, "pareto_latency", "pareto_ram", "pareto_3d"]  # timings, and the flags they move
OWNER = "test"
TIMEOUT = 120


def quantscope(home: Path, command: str, *args) -> subprocess.CompletedProcess:
    """`quantscope COMMAND ARGS...` in a fresh process on the workspace at `home`."""
    return subprocess.run([sys.executable, "-m", "engine.cli", command, *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, "QUANTSCOPE_HOME": str(home)}, timeout=TIMEOUT)


def add_sample(workspace: Workspace, name: str = "digits_cnn", owner: str = OWNER) -> tuple[str, str]:
    sample = SAMPLES[name]
    model = workspace.add_model(sample.model_path, name, owner)
    dataset = workspace.add_dataset(sample.data_path, sample.data_path.name, model.id, owner)
    return model.id, dataset.id


def run_sweep(workspace: Workspace, recipes, name: str = "digits_cnn", **options) -> str:
    job_id = workspace.submit_sweep(*add_sample(workspace, name), recipes, OWNER, **options)
    job = workspace.wait(job_id, TIMEOUT)
    assert job.state == "done", (job.error, job.error_detail)
    return job_id


def wait_until(condition, timeout: float = TIMEOUT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def runner_pid(workspace: Workspace, job_id: str) -> int:
    with workspace.store.connect() as conn:
        return job_rows.runner_pid(conn, job_id)[0]


def stored_results(workspace: Workspace, job_id: str) -> list[sqlite3.Row]:
    with workspace.store.connect() as conn:
        return conn.execute("SELECT * FROM results WHERE job_id = ? ORDER BY position", (job_id,)).fetchall()


def assert_store_is_consistent(workspace: Workspace) -> None:
    """The database is whole, every measured row's artifact is there with its recorded size, and nothing is left
    half-written: no scratch directory of a job that is not running, no blob being written."""
    with workspace.store.connect() as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        stored = conn.execute(
            "SELECT r.row, a.path, a.bytes FROM results r LEFT JOIN artifacts a ON a.sha256 = r.artifact"
        )
        for row in stored:
            if "error" not in json.loads(row["row"]):  # every row is whole JSON; a measured one has its file
                assert (workspace.root / row["path"]).stat().st_size == row["bytes"]
        for row in conn.execute("SELECT path, bytes FROM artifacts"):  # the cache's artifacts too
            assert (workspace.root / row["path"]).stat().st_size == row["bytes"]
        active = {row["id"] for row in conn.execute("SELECT id FROM jobs WHERE state IN ('queued', 'running')")}
    left = {path.parent.name for path in (workspace.root / "jobs").glob("*/scratch")}
    assert left <= active, f"scratch left by jobs that are not running: {sorted(left - active)}"
    assert not list(workspace.root.glob("*/*/.incoming-*")), "half-written blobs left behind"


def unrecorded_artifacts(workspace: Workspace) -> set[str]:
    """Artifact files the database does not know (built, then the job stopped before committing their row)."""
    with workspace.store.connect() as conn:
        recorded = {row["path"] for row in conn.execute("SELECT path FROM artifacts")}
    files = {path.relative_to(workspace.root).as_posix() for path in (workspace.root / "artifacts").glob("*/*")}
    return files - recorded


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    """A results table without what legitimately differs between runs: latency and where artifacts live."""
    return table.drop(columns=[c for c in [*LATENCY_COLUMNS, "artifact"] if c in table]).reset_index(drop=True)


_undisturbed: dict[tuple, pd.DataFrame] = {}


def undisturbed_table(name: str, recipes, workdir: Path) -> pd.DataFrame:
    """The in-process sweep of these recipes on a sample (no jobs, no faults), as `comparable` shows it, in the
    recipes' order; computed once per test session for each sample and set of recipes."""
    keys = [recipe.key() for recipe in recipes]
    cached = (name, frozenset(keys))
    if cached not in _undisturbed:
        sample = SAMPLES[name]
        model = load_model(sample.model_path)
        dataset = load_dataset(sample.data_path, model.summary.inputs)
        _undisturbed[cached] = comparable(sweep(model, dataset, list(recipes), workdir / f"undisturbed-{name}"))
    table = _undisturbed[cached]
    order = [list(table["recipe_key"]).index(key) for key in keys]
    return table.iloc[order].reset_index(drop=True)


def committed_rows(workspace: Workspace, job_id: str) -> dict[str, tuple]:
    """The job's committed rows as stored, by recipe key: to check that a fault changed none of them."""
    return {row["recipe_key"]: tuple(row) for row in stored_results(workspace, job_id)}


def assert_rows_kept(workspace: Workspace, job_id: str, before: dict[str, tuple]) -> int:
    """Every row in `before` is still committed, unchanged; how many there were."""
    after = committed_rows(workspace, job_id)
    assert {key: after.get(key) for key in before} == before, "a row committed before the fault changed or went"
    return len(before)


def wait_for_group_to_exit(group: int, timeout: float = 10) -> None:
    wait_until(lambda: not live_group_members(group), timeout=timeout, what=f"process group {group} to exit")


@contextmanager
def local_dask_cluster(monkeypatch, workers: int = 2) -> Iterator:
    """A Dask cluster of `workers` worker processes on loopback, closed on leaving (skips without distributed)."""
    distributed = pytest.importorskip("distributed")
    # Spawned Dask workers re-run the parent's __main__; Streamlit page tests can leave a page script there.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1", processes=True,
                                  dashboard_address=None) as cluster:
        yield cluster
