"""Where a job's work runs: task processes on this machine, or a Dask cluster for calibrations and builds.

Local: every task (the reference, each build, each timing) runs in a process of its own, forked from a
forkserver that has already imported the engine, so starting one costs milliseconds. A segfault or an
OOM kill ends that process only; the runner sees its exit code and records a failed row.

Dask: builds go to the cluster with the model and dataset bytes (no shared disk assumed) and come back
with the artifact bytes. Latency is always measured here, against the artifact stored in the workspace,
one artifact at a time, so every row's latency comes from the same machine and protocol.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

from engine.jobs import tasks


FORKSERVER_PRELOAD = ["engine.jobs.tasks"]  # imported once by the forkserver, inherited by every task


class WorkerDied(Exception):
    """A task's process ended without answering: killed by a signal (segfault, OOM killer) or exited."""


class TaskFailed(Exception):
    """A task raised outside its own error handling; the message is the original error's one line."""


def cpu_count() -> int:
    """Cores this process may use (a container or taskset may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None  # what went wrong, when the task gave no value
    detail: str | None = None  # its traceback, when there is one


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


@dataclass
class _Running:
    tag: Any
    process: multiprocessing.Process
    receiver: multiprocessing.connection.Connection


class TaskProcesses:
    """Runs each task in a fresh process and reports each one's outcome as it finishes."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(FORKSERVER_PRELOAD)
        self._running: list[_Running] = []

    def start(self, tag: Any, function, *args) -> None:
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(target=tasks.run_in_process, args=(sender, function, args), daemon=True)
        process.start()
        sender.close()  # ours: so a dead child shows up as end-of-file, not a hang
        self._running.append(_Running(tag, process, receiver))

    def tags(self, kind: str) -> list[Any]:
        """Tags of the running tasks whose tag starts with `kind`."""
        return [task.tag for task in self._running if task.tag[0] == kind]

    def collect(self, timeout: float) -> list[tuple[Any, Outcome]]:
        """Wait up to `timeout` seconds for tasks to finish; their outcomes, possibly none."""
        if not self._running:
            time.sleep(timeout)
            return []
        waitables = [task.receiver for task in self._running] + [task.process.sentinel for task in self._running]
        multiprocessing.connection.wait(waitables, timeout)
        finished = []
        for task in list(self._running):
            outcome = self._outcome(task)
            if outcome is not None:
                self._running.remove(task)
                task.receiver.close()
                task.process.join()
                finished.append((task.tag, outcome))
        return finished

    def _outcome(self, task: _Running) -> Outcome | None:
        if task.receiver.poll():  # an answer waits: read it even if the process has exited since
            try:
                status, *payload = task.receiver.recv()
            except EOFError:  # died before finishing its answer
                task.process.join()
                return Outcome(error=WorkerDied(f"worker process {_death(task.process.exitcode)}"))
            if status == "ok":
                return Outcome(value=payload[0])
            line, detail = payload
            return Outcome(error=TaskFailed(line), detail=detail)
        if task.process.exitcode is not None:
            return Outcome(error=WorkerDied(f"worker process {_death(task.process.exitcode)}"))
        return None

    def kill_all(self) -> None:
        for task in self._running:
            task.process.kill()
        for task in self._running:
            task.process.join()
            task.receiver.close()
        self._running.clear()


class DaskBuilds:
    """Builds (and calibrations) on a Dask cluster: `distributed.Client(address)`, one `client.submit` each."""

    def __init__(self, address: str, inputs: tasks.JobInputs, reference, job_id: str) -> None:
        from distributed import Client  # only jobs with a scheduler pay for importing distributed

        self._client = Client(address, timeout="20s")
        # Sent once, then referenced by every task.
        self._inputs, self._reference = self._client.scatter([inputs.as_bytes(), reference], broadcast=False)
        self._job_id = job_id
        self._futures: list[tuple[Any, Any]] = []  # (tag, distributed.Future)

    def build(self, tag: Any, recipe_json: str, ranges) -> None:
        self._submit(tag, tasks.build_remote, recipe_json, self._reference, ranges)

    def calibrate(self, tag: Any, recipe_json: str) -> None:
        self._submit(tag, tasks.calibrate, recipe_json)

    def _submit(self, tag: Any, function, *args) -> None:
        key = f"quantscope-{tag[0]}-{self._job_id}-{uuid.uuid4().hex[:8]}"
        self._futures.append((tag, self._client.submit(function, self._inputs, *args, key=key)))

    def count(self) -> int:
        return len(self._futures)

    def collect(self) -> list[tuple[Any, Outcome]]:
        finished = []
        for tag, future in list(self._futures):
            if future.status == "finished":
                finished.append((tag, Outcome(value=future.result())))
            elif future.status in ("error", "cancelled", "lost"):
                if future.status == "error":
                    error, detail = future.exception(), "".join(traceback.format_tb(future.traceback())) or None
                else:
                    error, detail = WorkerDied(f"the Dask task was {future.status}"), None
                finished.append((tag, Outcome(error=error, detail=detail)))
            else:
                continue
            self._futures.remove((tag, future))
        return finished

    def close(self) -> None:
        self._client.close()
