"""Fault: another process holds the SQLite database's write lock (BEGIN EXCLUSIVE) longer than the busy timeout.

A backup tool, an `sqlite3` shell left inside a transaction, or a stuck process can do this. The callers' busy
timeout is shortened to 1 s here (QUANTSCOPE_BUSY_TIMEOUT_MS; 10 s normally) so that a lock of a few seconds
outlasts it. A job's runner waits longer (engine.store.db.RUNNER_BUSY_TIMEOUT_MS) and then says what happened.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from engine.jobs.tasks import HANG_UNTIL_VARIABLE, HANG_VARIABLE
from engine.store.db import BUSY_TIMEOUT_VARIABLE, RUNNER_BUSY_TIMEOUT_VARIABLE
from engine.store.home import HOME_VARIABLE
from engine.workspace import Workspace
from tests.jobs_helpers import (
    GRID, OWNER, TIMEOUT, W2, add_sample, assert_rows_kept, assert_store_is_consistent, committed_rows, comparable,
    undisturbed_table, wait_until,
)

RECIPES = list(GRID.values())  # digits_cnn's default grid


def start_job(workspace: Workspace, tmp_path: Path, monkeypatch) -> tuple[str, Path]:
    """The sweep, with W2's build held until the returned file exists: the lock surely comes mid-job."""
    release = tmp_path / "release-W2"
    monkeypatch.setenv(HANG_VARIABLE, W2.key())
    monkeypatch.setenv(HANG_UNTIL_VARIABLE, str(release))
    job_id = workspace.submit_sweep(*add_sample(workspace), RECIPES, OWNER)
    wait_until(lambda: workspace.job(job_id).done >= 2, what="two committed rows")
    return job_id, release


@contextmanager
def database_locked(db_path: Path, seconds: float) -> Iterator[subprocess.Popen]:
    """Another process holds an EXCLUSIVE transaction on the database from when this is entered until its block
    has ended and at least `seconds` have passed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sqlite3, sys\n"
            f"conn = sqlite3.connect({str(db_path)!r}, isolation_level=None)\n"
            "conn.execute('BEGIN EXCLUSIVE')\n"
            "print('held', flush=True)\n"
            "sys.stdin.readline()\n"
            "conn.execute('COMMIT')\n"
        )],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        locked_at = time.monotonic()
        yield holder
        time.sleep(max(0.0, locked_at + seconds - time.monotonic()))
        holder.stdin.write("release\n")
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def cli(home: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          env={**os.environ, HOME_VARIABLE: str(home)}, timeout=TIMEOUT)


def test_a_lock_held_past_the_busy_timeout_mid_job_is_waited_out_and_the_job_finishes(
        workspace, tmp_path, monkeypatch, survived):
    monkeypatch.setenv(BUSY_TIMEOUT_VARIABLE, "1000")  # for the processes started from here on: runner, CLI
    job_id, release = start_job(workspace, tmp_path, monkeypatch)
    before = committed_rows(workspace, job_id)

    with database_locked(workspace.store.db_path, seconds=5):  # five times the callers' busy timeout
        release.touch()  # W2 is built too, and waits with the others to be committed
        # Reading and opening the workspace take no write lock: the dashboard and the CLI still answer.
        started = time.monotonic()
        opened = Workspace.open(workspace.root)
        assert time.monotonic() - started < 1.0
        assert opened.job(job_id).state == "running"
        listed = cli(workspace.root, "jobs", "list")
        assert listed.returncode == 0, listed.stderr
        assert job_id in listed.stdout and "running" in listed.stdout

    job = workspace.wait(job_id, TIMEOUT)
    assert job.state == "done", (job.error, job.error_detail)
    assert job.done == len(RECIPES) and workspace.results(job_id)["error"].isna().all()
    assert_rows_kept(workspace, job_id, before)
    assert_store_is_consistent(workspace)
    pd.testing.assert_frame_equal(comparable(workspace.results(job_id)),
                                  undisturbed_table("digits_cnn", RECIPES, tmp_path))
    survived("database locked past the busy timeout", len(before))


def test_a_lock_held_past_the_runners_patience_fails_the_job_in_one_line_and_resume_finishes_it(
        workspace, tmp_path, monkeypatch, survived):
    monkeypatch.setenv(BUSY_TIMEOUT_VARIABLE, "1000")
    # The runner gives up on a write after 4 s (its first write comes within a second or two of the lock); its last
    # word, waiting for another 4 s, is written as soon as the lock goes at 7 s, and says why.
    monkeypatch.setenv(RUNNER_BUSY_TIMEOUT_VARIABLE, "4000")
    job_id, release = start_job(workspace, tmp_path, monkeypatch)
    before = committed_rows(workspace, job_id)

    with database_locked(workspace.store.db_path, seconds=7):
        release.touch()
    job = workspace.wait(job_id, TIMEOUT)
    assert job.state == "failed"
    assert job.error == ("another process kept the workspace database locked for over 4 s (the job could not save "
                         "its progress); resume once it is free")
    assert "database is locked" in job.error_detail
    assert_rows_kept(workspace, job_id, before)
    assert_store_is_consistent(workspace)

    workspace.resume(job_id)
    job = workspace.wait(job_id, TIMEOUT)
    assert job.state == "done", (job.error, job.error_detail)
    assert_rows_kept(workspace, job_id, before)
    assert_store_is_consistent(workspace)
    pd.testing.assert_frame_equal(comparable(workspace.results(job_id)),
                                  undisturbed_table("digits_cnn", RECIPES, tmp_path))
    survived("database locked past the runner's patience", len(before))
