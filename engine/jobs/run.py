"""What every kind of job does the same way inside its runner: heartbeat, its last word, and its turn to compute.

A kind subclasses JobRun, names itself, and implements `work()`, returning the job's closing message; the
runner builds it with the job's row, a connection and an executor, and calls `run()`.
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
from typing import ClassVar

from engine.errors import is_disk_full
from engine.jobs.executor import Executor
from engine.store import JobInfo, Store
from engine.store import jobs
from engine.store.db import RUNNER_BUSY_TIMEOUT_MS, connect, is_full, is_locked
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
