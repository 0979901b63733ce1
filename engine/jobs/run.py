"""What every kind of job does the same way inside its runner: heartbeat, its last word, and its turn to compute.

A kind subclasses JobRun, names itself, and implements `work()`, returning the job's closing message; the
runner builds it with the job's row, a connection and an executor, and calls `run()`. Kinds whose rows are measured
recipes (sweep, mixed) commit them through `store_artifact`, `commit_row` and `copy_cached`.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from engine import results
from engine.errors import is_disk_full
from engine.jobs.executor import Executor
from engine.jobs.tasks import DataSource
from engine.onnx_files import files_bytes, model_files
from engine.store import DatasetRecord, JobInfo, ModelRecord, Store
from engine.store import cache, jobs, library
from engine.store.db import RUNNER_BUSY_TIMEOUT_MS, connect, is_full, is_locked, transaction
from engine.store.records import JobState
from engine.text import error_line

HEARTBEAT_SECONDS = 1.0
TURN_POLL_SECONDS = 0.1


class JobLost(Exception):
    """The job is no longer this runner's: it was cancelled, or declared interrupted."""


class JobFailed(Exception):
    """The job cannot go on: its one-line reason, and a traceback when there is one."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail


class JobRun:
    name: ClassVar[str]  # the jobs table's `kind`

    def __init__(self, store: Store, conn: sqlite3.Connection, job: JobInfo, executor: Executor):
        self.store, self.conn, self.job, self.executor = store, conn, job, executor
        self.job_id = job.id
        self.pid = os.getpid()
        self.last_beat, self.last_message = 0.0, ""

    def work(self) -> str:
        """Do the job; the closing message (e.g. "done: 10 computed"). Raise JobFailed to end it failed."""
        raise NotImplementedError

    def run(self) -> None:
        """`work()`, then the job's last word: done, or failed with one line and the traceback."""
        try:
            message = self.work()
            jobs.finish(self.conn, self.job_id, self.pid, JobState.DONE, message)
        except JobLost:
            pass
        except JobFailed as failure:
            jobs.finish(self.conn, self.job_id, self.pid, JobState.FAILED, "failed", str(failure), failure.detail)
        except Exception as error:
            jobs.finish(self.conn, self.job_id, self.pid, JobState.FAILED, "failed", self.failure_line(error),
                        traceback.format_exc())

    def failure_line(self, error: Exception) -> str:
        """The failed job's one line: what the user can do about a full disk or a locked database, else the error.

        The rows committed so far stay, and resume computes the configurations without a row."""
        if is_disk_full(error) or is_full(error):
            return f"the workspace disk is full: free some space on the disk holding {self.store.root}, then resume"
        if is_locked(error):
            return (f"another process kept the workspace database locked for over {RUNNER_BUSY_TIMEOUT_MS / 1000:g} s"
                    " (the job could not save its progress); resume once it is free")
        return error_line(error)

    def beat(self, message: str | None = None, force: bool = False, done: int | None = None,
             total: int | None = None) -> None:
        """Write the heartbeat (at most once a second, when the message changes, or when forced), with the progress
        when given; raise JobLost if the job was taken away."""
        now = time.monotonic()
        news = message is not None and message != self.last_message
        if not (news or force) and now - self.last_beat < HEARTBEAT_SECONDS:
            return
        self.last_beat, self.last_message = now, message or self.last_message
        if not jobs.beat(self.conn, self.job_id, self.pid, message, done, total):
            raise JobLost()

    @contextmanager
    def beating_meanwhile(self) -> Iterator[None]:
        """A thread writes the heartbeat every second while the block computes in this thread, for work with long
        steps between its own `beat()` calls (one calibration of a big model); those calls still notice a lost job,
        and a cancelled job's runner is killed anyway."""
        stop = threading.Event()

        def keep_beating() -> None:
            conn = connect(self.store.db_path, RUNNER_BUSY_TIMEOUT_MS)  # a connection belongs to one thread
            try:
                while not stop.wait(HEARTBEAT_SECONDS) and jobs.beat(conn, self.job_id, self.pid):
                    pass
            finally:
                conn.close()

        thread = threading.Thread(target=keep_beating, name="heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    @contextmanager
    def turn_to_compute(self) -> Iterator[None]:
        """Wait, beating, until no other job of the workspace computes; the kernel frees the turn if we die."""
        with open(self.store.compute_lock, "a") as lock:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    self.beat("waiting for another sweep to finish: timings need the machine to themselves")
                    time.sleep(TURN_POLL_SECONDS)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- the job's inputs --------------------------------------------------------------------------------------

    def job_records(self) -> tuple[ModelRecord, DatasetRecord, DatasetRecord | None]:
        """The job's model, its validation data and its calibration data (None: held-out validation rows)."""
        model = library.find_model(self.conn, self.job.model_id)
        dataset = library.find_dataset(self.conn, self.job.dataset_id)
        wanted = self.job.params.get("calibration_dataset")
        calibration = None if wanted is None else library.find_dataset(self.conn, wanted)
        if model is None or dataset is None or (wanted is not None and calibration is None):
            raise JobFailed("the job's model or data is no longer in the workspace")
        return model, dataset, calibration

    def data_source(self, dataset: DatasetRecord) -> DataSource:
        """A stored data file as workers and the runner read it."""
        return DataSource(dataset.sha256, self.store.blobs.path(dataset.sha256), dataset.filename,
                          dataset.label_column, dataset.slice_column)

    # -- measured recipes as rows ----------------------------------------------------------------------------

    def store_artifact(self, path: Path) -> str:
        """Move a built artifact into the workspace's store, its sha256: one file, or past 2 GB a folder of its
        .onnx file and external data."""
        files = model_files(path)
        return self.store.artifacts.put_folder(files) if len(files) > 1 else self.store.artifacts.put_file(path)

    def commit_row(self, recipe_key: str, position: int, row: dict, artifact_sha: str | None,
                   configuration: cache.Configuration, detail: str | None = None) -> None:
        """A measured row (its artifact already stored, its path workspace-relative), the artifact's record and the
        row's cache entry, in one transaction: all or nothing."""
        with transaction(self.conn):
            if artifact_sha is not None:
                size = files_bytes(self.store.artifacts.path(artifact_sha))
                cache.record_artifact(self.conn, artifact_sha, row[results.ARTIFACT], size)
            jobs.add_result(self.conn, self.job_id, recipe_key, position, row, artifact_sha, cached=False,
                            error_detail=detail)
            if results.ERROR not in row:
                cache.remember(self.conn, configuration, row, artifact_sha)

    def copy_cached(self, recipe_key: str, position: int, configuration: cache.Configuration) -> dict | None:
        """Commit the row the result cache holds for the configuration, whose artifact is still stored; the row
        (its artifact path workspace-relative), or None when there is none to copy."""
        hit = cache.lookup(self.conn, configuration)
        stored = hit and cache.artifact_path(self.conn, hit[1])
        if not stored or not self.store.absolute(stored).is_file():
            return None
        with transaction(self.conn):
            jobs.add_result(self.conn, self.job_id, recipe_key, position, hit[0], hit[1], cached=True)
        return hit[0]
