"""Where a job's tasks run. A job is handed an executor; the scheduling (what runs when) is the job kind's.

Every executor offers the same four calls: `start(task)`, `running()`, `collect(timeout)` -> [(task,
Outcome)], `close()`; and says with `remote_builds` whether builds and calibrations leave this machine
(then their ends are polled for, not waited on).

WorkerPool (local): long-lived worker processes forked from a forkserver that has already imported the
engine. Each loads the job's model and dataset once and runs task after task. A segfault or an OOM kill
ends that worker only: its task comes back as WorkerDied and the next task gets a fresh worker.

DaskExecutor: builds, calibrations and sensitivity candidates go to a Dask cluster with the model and dataset
bytes (no shared disk assumed) and come back with the artifact bytes (a candidate: its rows). The reference and
every timing run in a local WorkerPool, against the artifact stored in the workspace, so every row's latency comes
from the same machine and protocol. A task whose worker dies is rescheduled by Dask itself (its scheduler's
`allowed-failures`); once Dask gives up it comes back as WorkerDied.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import time
import traceback
import uuid
from dataclasses import dataclass, replace
from typing import Any, Protocol

from engine.errors import DiskFull, WorkspaceError
from engine.jobs import tasks
from engine.jobs.tasks import BuildTask, CalibrateTask, SensitivityTask, Task
from engine.text import error_line

FORKSERVER_PRELOAD = ["engine.jobs.tasks"]  # imported once by the forkserver, inherited by every worker
SCHEDULER_ADDRESS = re.compile(r"^(tcp|tls)://[^\s/:]+:\d+$")
REMOTE_TASKS = BuildTask | CalibrateTask | SensitivityTask  # what a DaskExecutor sends to the cluster
WITH_REFERENCE = BuildTask | SensitivityTask  # remote tasks that compare with the fp32 reference, scattered once


def check_scheduler_address(address: str | None) -> None:
    """A job's `scheduler` parameter: None (local processes) or a Dask scheduler's address."""
    if address is not None and not SCHEDULER_ADDRESS.match(address):
        raise WorkspaceError(f"a Dask scheduler address looks like tcp://host:8786; got {address!r}")


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


class Executor(Protocol):
    remote_builds: bool

    def start(self, task: Task) -> None: ...

    def running(self) -> list[Task]: ...

    def collect(self, timeout: float) -> list[tuple[Task, Outcome]]: ...

    def close(self) -> None: ...


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


@dataclass
class _Worker:
    process: multiprocessing.Process
    connection: multiprocessing.connection.Connection
    task: Task | None = None  # what it is running; None while idle


class WorkerPool:
    """Tasks in long-lived local worker processes, one task per worker at a time; a worker is started when no
    idle one is left, so the pool is as large as the most tasks the job ever runs at once."""

    remote_builds = False

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(FORKSERVER_PRELOAD)
        self._workers: list[_Worker] = []

    def start(self, task: Task) -> None:
        """Hand the task to an idle worker, or to a new one. An idle worker that died meanwhile (the OOM killer
        picks big idle processes too) is buried, and the task goes to another."""
        for worker in [worker for worker in self._workers if worker.task is None]:
            try:
                worker.connection.send(task)
            except OSError:  # a broken pipe: nobody is reading at the other end any more
                worker.process.kill()  # (it has exited; this only makes sure of it before the join)
                self._buried(worker)
                continue
            worker.task = task
            return
        worker = self._new_worker()
        worker.connection.send(task)
        worker.task = task

    def _new_worker(self) -> _Worker:
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(target=tasks.serve, args=(theirs,), daemon=True)
        process.start()
        theirs.close()  # the worker's end: so a dead worker shows up as end-of-file, not a hang
        worker = _Worker(process, ours)
        self._workers.append(worker)
        return worker

    def running(self) -> list[Task]:
        return [worker.task for worker in self._workers if worker.task is not None]

    def collect(self, timeout: float) -> list[tuple[Task, Outcome]]:
        """Wait up to `timeout` seconds for tasks to finish; their outcomes, possibly none."""
        busy = [worker for worker in self._workers if worker.task is not None]
        if not busy:
            time.sleep(timeout)
            return []
        multiprocessing.connection.wait([w.connection for w in busy] + [w.process.sentinel for w in busy], timeout)
        finished = []
        for worker in busy:
            outcome = self._outcome(worker)
            if outcome is not None:
                finished.append((worker.task, outcome))
                worker.task = None
        return finished

    def _outcome(self, worker: _Worker) -> Outcome | None:
        if worker.connection.poll():  # an answer waits: read it even if the process has exited since
            try:
                status, *payload = worker.connection.recv()
            except EOFError:  # died before finishing its answer
                return self._buried(worker)
            if status == "ok":
                return Outcome(value=payload[0])
            line, detail = payload
            return Outcome(error=DiskFull(line) if status == "disk full" else TaskFailed(line), detail=detail)
        if worker.process.exitcode is not None:
            return self._buried(worker)
        return None

    def _buried(self, worker: _Worker) -> Outcome:
        """A worker that died: out of the pool, its task a WorkerDied."""
        worker.process.join()
        worker.connection.close()
        self._workers.remove(worker)
        return Outcome(error=WorkerDied(f"worker process {_death(worker.process.exitcode)}"))

    def close(self) -> None:
        for worker in self._workers:
            worker.process.kill()
        for worker in self._workers:
            worker.process.join()
            worker.connection.close()
        self._workers.clear()


class DaskExecutor:
    """Builds and calibrations on a Dask cluster (`distributed.Client(address)`, one `client.submit` each);
    everything else in a local WorkerPool."""

    remote_builds = True

    def __init__(self, address: str, job_id: str) -> None:
        from distributed import Client, KilledWorker  # only jobs with a scheduler pay for importing distributed

        self._client = Client(address, timeout="20s")
        self._killed_worker = KilledWorker
        self._job_id = job_id
        self._local = WorkerPool()
        self._scattered: dict[int, Any] = {}  # id of a local object -> its future on the cluster, sent once
        self._futures: list[tuple[Task, Any]] = []  # (task, distributed.Future)

    def start(self, task: Task) -> None:
        if not isinstance(task, REMOTE_TASKS):
            self._local.start(task)
            return
        remote = replace(task, artifact_path=None) if isinstance(task, BuildTask) else task
        inputs = self._scatter(task.inputs, task.inputs.as_bytes)
        reference = None
        if isinstance(task, WITH_REFERENCE):  # sent once, not inside every task
            reference, remote = self._scatter(task.reference, task.reference.in_memory), replace(remote, reference=None)
        key = f"quantscope-{type(task).__name__}-{self._job_id}-{uuid.uuid4().hex[:8]}"
        self._futures.append((task, self._client.submit(_run_remote, remote, inputs, reference, key=key)))

    def _scatter(self, local: Any, payload) -> Any:
        if id(local) not in self._scattered:
            self._scattered[id(local)] = self._client.scatter(payload(), broadcast=False)
        return self._scattered[id(local)]

    def running(self) -> list[Task]:
        return self._local.running() + [task for task, _ in self._futures]

    def collect(self, timeout: float) -> list[tuple[Task, Outcome]]:
        finished = self._local.collect(timeout)
        for task, future in list(self._futures):
            if future.status == "finished":
                finished.append((task, Outcome(value=future.result())))
            elif future.status in ("error", "cancelled", "lost"):
                if future.status == "error":
                    error, detail = future.exception(), "".join(traceback.format_tb(future.traceback())) or None
                    if isinstance(error, self._killed_worker):  # every worker that tried it died
                        error = WorkerDied(f"the Dask workers running it died ({error_line(error)})")
                else:
                    error, detail = WorkerDied(f"the Dask task was {future.status}"), None
                finished.append((task, Outcome(error=error, detail=detail)))
            else:
                continue
            self._futures.remove((task, future))
        return finished

    def close(self) -> None:
        self._local.close()
        self._client.close()


def _run_remote(task: Task, inputs: tasks.JobInputs, reference) -> Any:
    """On a Dask worker: the task with the job's bytes (and the reference) the cluster already holds."""
    with_reference = {"reference": reference} if isinstance(task, WITH_REFERENCE) else {}
    return tasks.execute(replace(task, inputs=inputs, **with_reference))


def executor_for(params: dict, job_id: str) -> Executor:
    """A Dask cluster when the job names a scheduler, else local worker processes."""
    scheduler = params.get("scheduler")
    return DaskExecutor(scheduler, job_id) if scheduler else WorkerPool()
