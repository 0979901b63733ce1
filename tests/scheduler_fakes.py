"""An in-process stand-in for a job's executor, and a sweep job run with it: no processes, no onnxruntime.

The fake finishes one running task per `collect`, in an order drawn from a seeded generator, and answers each
kind of task with a canned outcome. Used by tests/test_scheduler.py and tests/faults/test_fault_disk.py.
"""

from __future__ import annotations

import os
import random
import types

import numpy as np

from engine import results
from engine.errors import DiskFull
from engine.jobs.executor import Outcome, WorkerDied
from engine.jobs.kinds import kind_named
from engine.jobs.kinds.sweep import SweepParams, SweepRun
from engine.jobs.tasks import BuildTask, Built, CalibrateTask, ReferenceTask, Timed, TimeTask
from engine.masking import Masking
from engine.metrics import Task
from engine.store import DatasetRecord, Store
from engine.store import jobs, library
from engine.store.db import connect
from engine.sweep import Reference
from engine.uncertainty import Interval, Uncertainty

REFERENCE = Reference(np.zeros((4, 3), dtype=np.float32), Task.CLASSIFICATION, "top1", 1000,
                      Masking(None, "no attention-mask-like input"))


class FakeExecutor:
    """Runs nothing: answers each task with a canned outcome when `collect` picks it."""

    remote_builds = False

    def __init__(self, seed: int = 0, dies_on: frozenset[str] = frozenset(), on_collect=None,
                 disk_full_on: frozenset[str] = frozenset(), together: bool = False):
        self.random = random.Random(seed)
        self.dies_on = dies_on  # recipe keys whose build or calibration "kills its worker"
        self.disk_full_on = disk_full_on  # recipe keys whose build finds the disk full, as a worker reports it
        # (and "reference": the fp32 reference's task finds it full)
        self.together = together  # answer every running task in one `collect`, in the order they started
        self.on_collect = on_collect  # called before each answer: lets a test cancel the job mid-run
        self.started: list = []
        self.running_now: list = []
        self.concurrency: list[tuple[int, int]] = []  # at each start: (timings running, builds running)

    def start(self, task) -> None:
        self.started.append(task)
        self.running_now.append(task)
        timings = sum(isinstance(t, TimeTask) for t in self.running_now)
        builds = sum(isinstance(t, BuildTask | CalibrateTask) for t in self.running_now)
        self.concurrency.append((timings, builds))

    def running(self) -> list:
        return list(self.running_now)

    def collect(self, timeout: float) -> list:
        if not self.running_now:
            return []
        if self.on_collect:
            self.on_collect(self)
        if self.together:
            finished, self.running_now = self.running_now, []
            return [(task, self.answer(task)) for task in finished]
        task = self.running_now.pop(self.random.randrange(len(self.running_now)))
        return [(task, self.answer(task))]

    def answer(self, task) -> Outcome:
        if isinstance(task, ReferenceTask):
            if "reference" in self.disk_full_on:
                return Outcome(error=DiskFull("OSError: [Errno 28] No space left on device"), detail="Traceback ...")
            return Outcome(value=REFERENCE)
        if getattr(task, "recipe", None) is not None and task.recipe.key() in self.dies_on \
                and not isinstance(task, TimeTask):
            return Outcome(error=WorkerDied("worker process killed by SIGKILL"))
        if isinstance(task, BuildTask) and task.recipe.key() in self.disk_full_on:
            return Outcome(error=DiskFull("OSError: [Errno 28] No space left on device"), detail="Traceback ...")
        if isinstance(task, CalibrateTask):
            return Outcome(value={"ranges for": task.key})
        if isinstance(task, BuildTask):
            task.artifact_path.parent.mkdir(parents=True, exist_ok=True)
            task.artifact_path.write_bytes(task.recipe.key().encode())
            artifact = types.SimpleNamespace(realiser="fake", simulated=task.recipe.weights.bits < 4,
                                             path=task.artifact_path, size_bytes=100, size_is_estimate=False,
                                             float_layers=())
            sureness = Uncertainty(Interval(0.85, 0.94), -0.01, Interval(-0.03, 0.01))
            row = results.measured_row(task.recipe, artifact, REFERENCE.size_bytes, "classification", "top1",
                                       {"top1": 0.9}, {}, sureness)
            row["ranges used"] = task.ranges  # so a test can see which calibration each build got
            return Outcome(value=Built(row))
        if isinstance(task, TimeTask):
            return Outcome(value=Timed({**task.row, results.THREADS: task.threads}))
        raise AssertionError(f"unexpected task {task}")

    def close(self) -> None:
        pass




def queued_sweep(store: Store, recipes, **options) -> str:
    """A job as the workspace would queue it, for a model and dataset that exist only as library rows."""
    model_id, dataset_sha = "m" * 64, "d" * 64
    params = SweepParams(tuple(recipes), **options)
    with store.connect() as conn:
        library.save_model(conn, model_id, "test", "fake.onnx", {}, 10, shared=False)
        library.save_dataset(conn, DatasetRecord("data", dataset_sha, "fake.npz", model_id, "test", False, None, None,
                                                 "fingerprint", 10, {"rows": 400}, 0.0))
        jobs.create_job(conn, "job", SweepRun.name, "test", model_id, "data", params.to_dict(), len(params.recipes))
    return "job"


def run_with(store: Store, job_id: str, executor: FakeExecutor):
    conn = connect(store.db_path)
    try:
        assert jobs.claim(conn, job_id, os.getpid())
        kind = kind_named(jobs.get_job(conn, job_id).kind)
        kind(store, conn, jobs.get_job(conn, job_id), executor).run()
        return jobs.get_job(conn, job_id), results.results_table(jobs.result_rows(conn, job_id))
    finally:
        conn.close()
