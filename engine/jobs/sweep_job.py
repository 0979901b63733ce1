"""A sweep job, run by its runner: every configuration measured once, each row committed as it is ready.

The order of work:
  1. rows already committed (a resumed job) are skipped; rows in the result cache are copied, not computed;
  2. the fp32 reference is computed once, in a task process, and handed to every build;
  3. builds (quantize + evaluate) run in parallel; each artifact moves into the workspace's store. Static
     recipes that calibrate alike (same calibration_key) wait for one calibration task and share its ranges;
  4. timings run one at a time. While one runs, at most (cores - threads) builds run beside it, so the
     timed session has its cores to itself, as in the one-after-another loop of engine.sweep.sweep.
Only one job computes at a time in a workspace (steps 2-4): another job's builds beside a timing would
disturb it, and each job already keeps every core busy, so two at once would finish no sooner.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import time
import traceback
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from engine.jobs.executor import DaskBuilds, Outcome, TaskProcesses, WorkerDied, cpu_count
from engine.jobs.tasks import JobInputs, build, calibrate, compute_reference, time_row
from engine.realise.calibration import CalibrationKey, Ranges, calibration_key
from engine.recipe import Recipe
from engine.store import Store
from engine.store import cache, jobs, library
from engine.store.db import transaction
from engine.sweep import Reference, failed_row

HEARTBEAT_SECONDS = 1.0
TURN_POLL_SECONDS = 0.1
REMOTE_POLL_SECONDS = 0.1


class JobLost(Exception):
    """The job is no longer this runner's: it was cancelled, or declared interrupted."""


class JobFailed(Exception):
    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail


class SweepRun:
    def __init__(self, store: Store, conn: sqlite3.Connection, job_id: str):
        self.store, self.conn, self.job_id = store, conn, job_id
        self.processes = TaskProcesses()  # its forkserver starts with the first task: none if all rows are cached
        self.pid = os.getpid()
        job = jobs.get_job(conn, job_id)
        params = job.params
        self.recipes = [Recipe.from_json(text) for text in params["recipes"]]
        self.threads, self.batch, self.scheduler = params["threads"], params["batch"], params.get("scheduler")
        self.workers = params.get("workers") or cpu_count()
        self.builds_beside_timing = max(0, min(self.workers, cpu_count() - self.threads))
        self.model_id, self.dataset_id = job.model_id, job.dataset_id
        self.fingerprint: str | None = None
        self.inputs: JobInputs | None = None
        self.scratch = store.job_dir(job_id) / "scratch"  # artifacts being built; cleared on every start
        self.remote: DaskBuilds | None = None
        self.reference: Reference | None = None
        self.to_build: deque[tuple[int, Recipe]] = deque()
        self.ranges: dict[CalibrationKey, Ranges] = {}  # computed by calibration tasks
        self.calibrating: set[CalibrationKey] = set()
        self.to_time: deque[tuple[int, Recipe, dict, str]] = deque()
        self.counts = {"computed": 0, "from the cache": 0, "failed": 0}
        self.last_beat, self.last_message = 0.0, ""

    def run(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True)
        try:
            self._find_inputs()
            pending = self._copy_cached(self._missing())
            if pending:
                with self._turn_to_compute():
                    self._compute(pending)
            summary = ", ".join(f"{count} {what}" for what, count in self.counts.items())
            calibrated = [recipe for _, recipe in pending if calibration_key(recipe) is not None]
            if calibrated:
                runs = len(self.ranges)
                summary += f"; {runs} calibration{'s' * (runs != 1)} for {len(calibrated)} static recipes"
            jobs.finish(self.conn, self.job_id, self.pid, "done", f"done: {summary}")
        except JobLost:
            pass
        except JobFailed as failure:
            jobs.finish(self.conn, self.job_id, self.pid, "failed", "failed", str(failure), failure.detail)
        except Exception as error:
            jobs.finish(self.conn, self.job_id, self.pid, "failed", "failed",
                        f"{type(error).__name__}: {error}".splitlines()[0], traceback.format_exc())
        finally:
            self.processes.kill_all()
            if self.remote is not None:
                self.remote.close()
            shutil.rmtree(self.scratch, ignore_errors=True)

    # -- what is left to do ----------------------------------------------------------------------------------

    def _find_inputs(self) -> None:
        model = library.find_model(self.conn, self.model_id)
        dataset = library.find_dataset(self.conn, self.dataset_id)
        if model is None or dataset is None:
            raise JobFailed("the job's model or dataset is no longer in the workspace")
        self.fingerprint = dataset.fingerprint
        self.inputs = JobInputs(self.store.blobs.path(model.id), self.store.blobs.path(dataset.sha256),
                                dataset.filename, dataset.label_column, dataset.slice_column)

    def _missing(self) -> list[tuple[int, Recipe]]:
        committed = jobs.committed_keys(self.conn, self.job_id)
        return [(position, recipe) for position, recipe in enumerate(self.recipes) if recipe.key() not in committed]

    def _configuration(self, recipe: Recipe) -> cache.Configuration:
        return cache.Configuration(self.model_id, self.fingerprint, recipe.key(), self.threads, self.batch)

    def _copy_cached(self, missing: list[tuple[int, Recipe]]) -> list[tuple[int, Recipe]]:
        """Commit the rows the cache already holds; the configurations still to compute."""
        pending = []
        for position, recipe in missing:
            hit = cache.lookup(self.conn, self._configuration(recipe))
            stored = hit and cache.artifact_path(self.conn, hit[1])
            if not stored or not self.store.absolute(stored).is_file():
                pending.append((position, recipe))
                continue
            with transaction(self.conn):
                jobs.add_result(self.conn, self.job_id, recipe.key(), position, hit[0], hit[1], cached=True)
            self.counts["from the cache"] += 1
        return pending

    # -- computing ---------------------------------------------------------------------------------------------

    def _compute(self, pending: list[tuple[int, Recipe]]) -> None:
        self._beat("computing the fp32 reference")
        self.processes.start(("reference",), compute_reference, self.inputs, self.scratch)
        outcome = self._wait_for_reference()
        if outcome.error is not None:
            raise JobFailed(f"the fp32 reference could not be computed: {outcome.error}", outcome.detail)
        self.reference = outcome.value
        if self.scheduler:
            self.remote = DaskBuilds(self.scheduler, self.inputs, self.reference, self.job_id)
        self.to_build.extend(pending)
        while self.to_build or self.to_time or self._in_flight():
            self._start_ready_work()
            self._beat(self._status())
            finished = self.processes.collect(REMOTE_POLL_SECONDS if self.remote else HEARTBEAT_SECONDS)
            if self.remote is not None:
                finished += self.remote.collect()
            for tag, outcome in finished:
                self._handle(tag, outcome)

    @contextmanager
    def _turn_to_compute(self) -> Iterator[None]:
        """Wait, beating, until no other job of the workspace computes; the kernel frees the turn if we die."""
        with open(self.store.compute_lock, "a") as lock:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    self._beat("waiting for another sweep to finish: timings need the machine to themselves")
                    time.sleep(TURN_POLL_SECONDS)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _wait_for_reference(self) -> Outcome:
        while True:
            for _, outcome in self.processes.collect(HEARTBEAT_SECONDS):
                return outcome
            self._beat()

    def _in_flight(self) -> int:
        local = self.processes.tags("build") + self.processes.tags("time") + self.processes.tags("calibrate")
        return len(local) + (self.remote.count() if self.remote else 0)

    def _status(self) -> str:
        """What the job is doing now, in words, e.g. "timing fp16; building W4 weight-only group32"."""
        timing = [tag[2].short_name() for tag in self.processes.tags("time")]
        building = [tag[2].short_name() for tag in self.processes.tags("build")]
        calibrating = [f"{tag[1][0]} on {tag[1][1]} samples" for tag in self.processes.tags("calibrate")]
        parts = [f"timing {', '.join(timing)}"] if timing else []
        parts += [f"calibrating {', '.join(calibrating)}"] if calibrating else []
        parts += [f"building {', '.join(building)}"] if building else []
        parts += [f"building {self.remote.count()} on the Dask cluster"] if self.remote and self.remote.count() else []
        return "; ".join(parts) or "finishing"

    def _start_ready_work(self) -> None:
        local_builds = len(self.processes.tags("build")) + len(self.processes.tags("calibrate"))
        timing = bool(self.processes.tags("time"))
        if self.to_time and not timing and (self.remote or local_builds <= self.builds_beside_timing):
            position, recipe, row, artifact_sha = self.to_time.popleft()
            self.processes.start(("time", position, recipe, artifact_sha), time_row, self.inputs, row,
                                 self.store.artifacts.path(artifact_sha), self.threads, self.batch,
                                 self.store.latency_lock, self.reference)
            timing = True
        limit = self.builds_beside_timing if (timing or self.to_time) else self.workers
        while (self.remote is not None or local_builds < limit) and (task := self._next_build()):
            kind, subject, recipe = task
            if kind == "calibrate":
                tag = ("calibrate", subject, recipe)
                if self.remote is not None:
                    self.remote.calibrate(tag, recipe.to_json())
                else:
                    self.processes.start(tag, calibrate, self.inputs, recipe.to_json())
            else:
                tag, ranges = ("build", subject, recipe), self.ranges.get(calibration_key(recipe))
                if self.remote is not None:
                    self.remote.build(tag, recipe.to_json(), ranges)
                else:
                    self.processes.start(tag, build, self.inputs, recipe.to_json(),
                                         self.scratch / f"{recipe.slug()}.onnx", self.reference, ranges)
            local_builds += 1

    def _next_build(self) -> tuple[str, object, Recipe] | None:
        """The first recipe whose ranges are known (or that needs none): ("build", position, recipe); else the
        calibration the first waiting recipe needs: ("calibrate", key, recipe); None while calibrations run."""
        for index, (position, recipe) in enumerate(self.to_build):
            key = calibration_key(recipe)
            if key is None or key in self.ranges:
                del self.to_build[index]
                return "build", position, recipe
            if key not in self.calibrating:
                self.calibrating.add(key)
                return "calibrate", key, recipe
        return None

    def _handle(self, tag: tuple, outcome: Outcome) -> None:
        if tag[0] == "calibrate":
            self._calibrated(tag[1], outcome)
            return
        kind, position, recipe = tag[:3]
        if outcome.error is not None:
            error = outcome.error
            if isinstance(error, WorkerDied):
                error = WorkerDied(f"{error} while {'timing' if kind == 'time' else 'building'} this configuration")
            self._commit(position, recipe, failed_row(recipe, self.reference, error), None, outcome.detail)
        elif kind == "build":
            row, detail = outcome.value[:2]
            if detail is not None:
                self._commit(position, recipe, row, None, detail)
                return
            if self.remote is not None:  # a remote build sends its artifact's bytes back with the row
                artifact_sha = self.store.artifacts.put_bytes(outcome.value[2])
            else:
                artifact_sha = self.store.artifacts.put_file(self.scratch / f"{recipe.slug()}.onnx")
            row["artifact"] = self.store.relative(self.store.artifacts.path(artifact_sha))
            if row["simulated"]:  # a simulated artifact is not timed, as in engine.sweep
                self._commit(position, recipe, row, artifact_sha)
            else:
                self.to_time.append((position, recipe, row, artifact_sha))
        else:
            row, detail = outcome.value
            self._commit(position, recipe, row, tag[3] if detail is None else None, detail)

    def _calibrated(self, key: CalibrationKey, outcome: Outcome) -> None:
        """Keep the ranges for the builds waiting on them; if calibration failed, so does each of those recipes."""
        self.calibrating.discard(key)
        if outcome.error is None:
            self.ranges[key] = outcome.value
            return
        error = outcome.error
        if isinstance(error, WorkerDied):
            error = WorkerDied(f"{error} while calibrating")
        waiting = [(position, recipe) for position, recipe in self.to_build if calibration_key(recipe) == key]
        for position, recipe in waiting:
            self.to_build.remove((position, recipe))
            self._commit(position, recipe, failed_row(recipe, self.reference, error), None, outcome.detail)

    def _commit(self, position: int, recipe: Recipe, row: dict, artifact_sha: str | None,
                detail: str | None = None) -> None:
        """The row, its artifact and its cache entry, in one transaction: all or nothing."""
        failed = "error" in row
        self.counts["failed" if failed else "computed"] += 1
        with transaction(self.conn):
            if artifact_sha is not None:
                size = self.store.artifacts.path(artifact_sha).stat().st_size
                cache.record_artifact(self.conn, artifact_sha, row["artifact"], size)
            jobs.add_result(self.conn, self.job_id, recipe.key(), position, row, artifact_sha, cached=False,
                            error_detail=detail)
            if not failed:
                cache.remember(self.conn, self._configuration(recipe), row, artifact_sha)

    def _beat(self, message: str | None = None) -> None:
        """Write the heartbeat (at most once a second, or when the message changes); stop if the job was taken away."""
        now = time.monotonic()
        news = message is not None and message != self.last_message
        if not news and now - self.last_beat < HEARTBEAT_SECONDS:
            return
        self.last_beat, self.last_message = now, message or self.last_message
        if not jobs.beat(self.conn, self.job_id, self.pid, message):
            raise JobLost()
