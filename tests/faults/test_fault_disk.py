"""Fault: the disk holding the workspace fills up while a job runs.

For real on a 16 MB tmpfs (root only; skipped elsewhere), filled by another file mid-job; and simulated (ENOSPC
raised in a worker's build, in the runner's artifact store, and by SQLite's commit) with the in-process scheduler
of tests/scheduler_fakes.py.

What a user should get: a full disk fails every later artifact too, so the job ends failed with one line saying
the disk is full (the traceback is kept apart); rows committed before stay; the configuration that hit the full
disk gets no failed row, so that resume, once space is freed, computes it and the job's table is whole.
"""

from __future__ import annotations

import errno
import multiprocessing.forkserver
import os
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from engine import results
from engine.errors import DiskFull
from engine.jobs.executor import WorkerPool
from engine.jobs.tasks import HANG_UNTIL_VARIABLE, HANG_VARIABLE, BuildTask, DataSource, JobInputs, ReferenceTask
from engine.masking import AUTO
from engine.store import Store, jobs
from engine.store.blobs import BlobStore, sha256_file
from engine.store.db import connect, transaction
from engine.store.records import JobState
from engine.workspace import Workspace
from sample_models.catalog import SAMPLES
from tests.jobs_helpers import (
    GRID, OWNER, TIMEOUT, W2, W3, add_sample, assert_rows_kept, assert_store_is_consistent, committed_rows,
    comparable, undisturbed_table, unrecorded_artifacts, wait_until,
)
from tests.scheduler_fakes import FakeExecutor, queued_sweep, run_with

# The two simulated recipes first: each is committed as soon as it is built. Then one build at a time, the first
# of them held (HANG_VARIABLE) until the disk is full, so that every artifact after those two rows meets it.
RECIPES = [W3, W2, GRID["fp32"], GRID["fp16"], GRID["W8A8 dynamic channel"], GRID["W4 weight-only group32"]]


def disk_full_line(root: Path) -> str:
    return f"the workspace disk is full: free some space on the disk holding {root}, then resume"


def free_bytes(disk: Path) -> int:
    stat = os.statvfs(disk)
    return stat.f_bavail * stat.f_frsize


def fill(disk: Path, leave: int = 0) -> Path:
    """Write a file until the disk has only `leave` bytes left (none: until it refuses a single byte); the file, to
    delete to free the space again."""
    ballast = disk / f"ballast-{len(list(disk.glob('ballast-*')))}"
    descriptor = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1 << 20, 4096, 1):
            try:
                while free_bytes(disk) - chunk >= leave and os.write(descriptor, b"\0" * chunk):
                    pass
            except OSError as error:
                assert error.errno == errno.ENOSPC
    finally:
        os.close(descriptor)
    assert free_bytes(disk) <= max(leave, 0) + 4096
    return ballast


def test_a_disk_that_fills_up_mid_job_fails_it_in_one_line_keeps_its_rows_and_resume_finishes_it(
        tmpfs, tmp_path, monkeypatch, survived):
    ws = Workspace.open(tmpfs / "ws")
    model_id, dataset_id = add_sample(ws)
    release = tmp_path / "release-fp32"  # on the roomy disk
    monkeypatch.setenv(HANG_VARIABLE, RECIPES[2].key())
    monkeypatch.setenv(HANG_UNTIL_VARIABLE, str(release))
    job_id = ws.submit_sweep(model_id, dataset_id, RECIPES, OWNER, workers=1)
    wait_until(lambda: (job := ws.job(job_id)).done == 2 and job.message == "building fp32",
               what="the simulated rows committed, fp32 being built")
    before = committed_rows(ws, job_id)
    ballast = fill(tmpfs, leave=64_000)  # room for the database's small writes, not for a 155 KB artifact
    release.touch()

    job = ws.wait(job_id, TIMEOUT)
    assert job.state == "failed", job.message
    assert job.error == disk_full_line(ws.root)
    assert "No space left on device" in job.error_detail  # the worker's traceback, kept apart from the one line
    assert_rows_kept(ws, job_id, before)
    kept = ws.results(job_id)
    assert len(kept) == 2 and kept["error"].isna().all()  # no row failed for want of space
    assert_store_is_consistent(ws)  # and the job's scratch space went with it

    # An upload to the full disk says so in one line (the dashboard shows it, the CLI prints it).
    more = fill(tmpfs)  # now not a byte is left
    upload_refused = r"^the disk holding the workspace is full \(.*\): free some space and try again$"
    with pytest.raises(DiskFull, match=upload_refused):
        ws.add_model(SAMPLES["breast_cancer_mlp"].model_path, "breast_cancer_mlp", OWNER)

    ballast.unlink()  # the user frees space, and resumes
    more.unlink()
    monkeypatch.delenv(HANG_VARIABLE)
    ws.resume(job_id)
    job = ws.wait(job_id, TIMEOUT)
    assert job.state == "done", (job.error, job.error_detail)
    assert_rows_kept(ws, job_id, before)
    assert_store_is_consistent(ws)
    assert unrecorded_artifacts(ws) == set()  # artifacts built before the failure were reused, not duplicated
    pd.testing.assert_frame_equal(comparable(ws.results(job_id)), undisturbed_table("digits_cnn", RECIPES, tmp_path))
    survived("workspace disk full (a real tmpfs)", len(before))


# -- simulated: ENOSPC where each part of the runner meets it ------------------------------------------------------


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.open(tmp_path / "ws")


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _sqlite_full(*args, **kwargs):
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = sqlite3.SQLITE_FULL
    raise error


@pytest.mark.parametrize("where", ["the reference's task", "a worker's build", "the artifact store", "the commit"])
def test_enospc_anywhere_in_the_runner_fails_the_job_in_one_line_and_resume_computes_what_is_missing(
        store, monkeypatch, where, survived):
    recipes = [GRID["fp32"], W3, GRID["W4 weight-only group32"], W2]
    victim = recipes[2]
    full = {"the reference's task": {"reference"}, "a worker's build": {victim.key()}}.get(where, set())
    executor = FakeExecutor(disk_full_on=frozenset(full))
    with monkeypatch.context() as patch:
        if where == "the artifact store":  # moving a built artifact in
            real_put_file = BlobStore.put_file
            patch.setattr(BlobStore, "put_file", lambda blobs, source: _no_space() if victim.slug() in str(source)
                          else real_put_file(blobs, source))
        elif where == "the commit":  # SQLite cannot write the row
            real_add = jobs.add_result
            patch.setattr(jobs, "add_result", lambda conn, job_id, recipe_key, *rest, **options: _sqlite_full()
                          if recipe_key == victim.key() else real_add(conn, job_id, recipe_key, *rest, **options))
        job, table = run_with(store, queued_sweep(store, recipes, workers=1), executor)

    assert job.state is JobState.FAILED
    assert job.error == disk_full_line(store.root)
    committed = table.get(results.RECIPE_KEY, pd.Series(dtype=object))
    assert victim.key() not in set(committed)  # no failed row: resume must build it
    assert table.get(results.ERROR, pd.Series(dtype=object)).isna().all()
    assert not (store.job_dir("job") / "scratch").exists()
    before = {row[results.RECIPE_KEY]: row for row in stored_rows(store)}

    with store.connect() as conn:
        assert jobs.requeue(conn, "job")
    job, table = run_with(store, "job", FakeExecutor())
    assert job.state is JobState.DONE
    assert list(table[results.RECIPE_KEY]) == [recipe.key() for recipe in recipes]
    after = {row[results.RECIPE_KEY]: row for row in stored_rows(store)}
    assert {key: after[key] for key in before} == before  # the rows committed before the fault, unchanged
    survived(f"ENOSPC in {where} (simulated)", len(before))


def stored_rows(store: Store) -> list[dict]:
    with store.connect() as conn:
        return jobs.result_rows(conn, "job")


def test_rows_that_finished_together_with_the_full_disk_answer_are_committed_first(store):
    fp32, w3 = GRID["fp32"], W3  # W3 is simulated: committed as soon as it is built
    executor = FakeExecutor(disk_full_on=frozenset({fp32.key()}), together=True)  # [fp32 (disk full), W3 (built)]
    job, table = run_with(store, queued_sweep(store, [fp32, w3], workers=2), executor)
    assert job.state is JobState.FAILED and job.error == disk_full_line(store.root)
    assert list(table[results.RECIPE_KEY]) == [w3.key()]


def test_a_worker_that_finds_the_disk_full_answers_so_rather_than_with_a_failed_row(tmpfs, tmp_path):
    """The worker side, in a real worker process: the build's ENOSPC comes back as DiskFull, not as a row."""
    sample = SAMPLES["digits_cnn"]
    model_id, dataset_sha = sha256_file(sample.model_path), sha256_file(sample.data_path)
    inputs = JobInputs(model_id, sample.model_path, DataSource(dataset_sha, sample.data_path, sample.data_path.name))
    (tmpfs / "scratch").mkdir()
    fill(tmpfs)
    pool = WorkerPool()
    try:
        pool.start(ReferenceTask(inputs, tmp_path / "reference", AUTO))  # on the roomy disk
        reference = _outcomes(pool)[0].value
        pool.start(BuildTask(inputs, 0, W3, reference, tmpfs / "scratch" / "w3.onnx"))
        (outcome,) = _outcomes(pool)
    finally:
        pool.close()
        _stop_forkserver()
    assert isinstance(outcome.error, DiskFull), outcome
    assert str(outcome.error).startswith("OSError: [Errno 28] No space left on device")
    assert "Traceback" in outcome.detail


def _outcomes(pool: WorkerPool) -> list:
    while not (finished := pool.collect(1.0)):
        pass
    return [outcome for _, outcome in finished]


def _stop_forkserver() -> None:
    """The pool's tasks ran in workers forked by this (pytest's) process's forkserver: stop it too."""
    forkserver = getattr(multiprocessing.forkserver, "_forkserver", None)
    if forkserver is not None and hasattr(forkserver, "_stop"):
        forkserver._stop()


def test_a_commit_that_fails_leaves_no_transaction_open_holding_the_write_lock(tmp_path):
    conn = connect(tmp_path / "db.sqlite")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE child (parent REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
    with pytest.raises(sqlite3.IntegrityError):  # checked at COMMIT, which fails: as one can on a full disk
        with transaction(conn):
            conn.execute("INSERT INTO child VALUES (1)")
    assert not conn.in_transaction
    other = connect(tmp_path / "db.sqlite", busy_timeout_ms=100)
    with transaction(other):  # the write lock is free
        other.execute("INSERT INTO parent VALUES (1)")
    with transaction(conn):  # and the connection can start another transaction
        conn.execute("INSERT INTO child VALUES (1)")
    assert conn.execute("SELECT count(*) FROM child").fetchone()[0] == 1
    conn.close()
    other.close()
