"""The sweep job: every configuration measured once, each row committed as it is ready.

The order of work:
  1. rows already committed (a resumed job) are skipped; rows in the result cache are copied, not computed;
  2. the fp32 reference is computed once and handed to every build;
  3. builds (quantize + evaluate) run in parallel; each artifact moves into the workspace's store. Static
     recipes that calibrate alike (same calibration_key) wait for one calibration task and share its ranges;
  4. timings run one at a time and alone: no build, calibration or evaluation runs while an artifact is
     timed, locally or on a Dask cluster (which may share this machine), so a latency is what the artifact
     takes on a quiet machine, as in the one-after-another loop of engine.sweep.sweep. Builds keep the cores
     busy in between; the job stops starting builds ("drains") to time once as many artifacts wait as there
     are parallel builds, or when no build is left to start, so idle cores are paid for rarely.
Only one job computes at a time in a workspace (steps 2-4): another job's builds beside a timing would
disturb it, and each job already keeps every core busy, so two at once would finish no sooner.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from engine import results
from engine.errors import DiskFull, WorkspaceError
from engine.jobs.executor import Outcome, WorkerDied, check_scheduler_address, cpu_count
from engine.jobs.kinds import register
from engine.jobs.run import HEARTBEAT_SECONDS, JobFailed, JobRun
from engine.jobs.tasks import (
    BuildTask, Built, CalibrateTask, JobInputs, ReferenceTask, Task, Timed, TimeTask,
)
from engine.masking import AUTO
from engine.measure import ADAPTIVE, LatencyProtocol, capped_at
from engine.model_zip import is_zip, unpack_model_zip
from engine.realise.calibration import CalibrationKey, Ranges, calibration_key
from engine.recipe import Recipe
from engine.store import cache, jobs, library
from engine.sweep import DEFAULT_LATENCY_BATCH, Reference
from engine.shifts import Shift
from engine.sweep.plan import calibration_rows_asked, check_set_name, plan_identity

REMOTE_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class SweepParams:
    """A sweep job's parameters, as stored in its row (JSON) and checked before it is queued."""

    recipes: tuple[Recipe, ...]
    threads: int = 1
    batch: int | None = DEFAULT_LATENCY_BATCH  # None: time single examples only
    scheduler: str | None = None  # a Dask scheduler address; None: local worker processes
    workers: int | None = None  # parallel builds; None: one per core
    calibration_dataset: str | None = None  # a dataset id to calibrate on; None: held-out validation rows
    mask: str = AUTO  # which output positions fidelity counts: engine.masking's AUTO, NO_MASK or an input's name
    extra_sets: tuple[tuple[str, str], ...] = ()  # (name, dataset id) of each extra evaluation set
    shifts: tuple[str, ...] = ()  # synthetic shifts of the scored rows, engine.shifts specs such as "noise:0.1"
    latency_cap: float = ADAPTIVE.cap_seconds  # seconds of timing per artifact and batch size (engine.measure)

    def __post_init__(self) -> None:
        unique = tuple({recipe.key(): recipe for recipe in self.recipes}.values())  # a recipe twice is one row
        if not unique:
            raise WorkspaceError("a sweep needs at least one recipe")
        object.__setattr__(self, "recipes", unique)
        counts = {"threads": self.threads}
        counts |= {} if self.batch is None else {"batch": self.batch}
        counts |= {} if self.workers is None else {"workers": self.workers}
        for name, value in counts.items():
            if not isinstance(value, int) or value < 1:
                raise WorkspaceError(f"{name} must be a positive integer; got {value!r}")
        check_scheduler_address(self.scheduler)
        object.__setattr__(self, "extra_sets", tuple(tuple(pair) for pair in self.extra_sets))
        object.__setattr__(self, "shifts", tuple(Shift.parse(spec).name for spec in self.shifts))
        names: list[str] = []
        for name in [name for name, _ in self.extra_sets] + list(self.shifts):
            names.append(check_set_name(name, names))
        try:
            self.protocol()
        except ValueError as error:
            raise WorkspaceError(str(error)) from None

    def protocol(self) -> LatencyProtocol:
        """How every artifact of the sweep is timed."""
        return capped_at(self.latency_cap)

    def to_dict(self) -> dict:
        return {"recipes": [recipe.to_json() for recipe in self.recipes], "threads": self.threads,
                "batch": self.batch, "scheduler": self.scheduler, "workers": self.workers,
                "calibration_dataset": self.calibration_dataset, "mask": self.mask,
                "extra_sets": [list(pair) for pair in self.extra_sets], "shifts": list(self.shifts),
                "latency_cap": self.latency_cap}

    @classmethod
    def from_dict(cls, data: dict) -> SweepParams:
        return cls(tuple(Recipe.from_json(text) for text in data["recipes"]), data["threads"], data["batch"],
                   data.get("scheduler"), data.get("workers"), data.get("calibration_dataset"), data.get("mask", AUTO),
                   tuple(tuple(pair) for pair in data.get("extra_sets", ())), tuple(data.get("shifts", ())),
                   data.get("latency_cap", ADAPTIVE.cap_seconds))


@dataclass(frozen=True)
class _Waiting:
    """A built row waiting for its timing."""

    position: int
    recipe: Recipe
    row: dict
    artifact_sha: str


@register
class SweepRun(JobRun):
    name = "sweep"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.params = params = SweepParams.from_dict(self.job.params)
        self.recipes, self.threads, self.batch = params.recipes, params.threads, params.batch
        self.protocol = params.protocol()
        self.workers = params.workers or cpu_count()
        self.fingerprint: str | None = None
        self.plan: str | None = None  # engine.sweep.plan.plan_identity: which rows score, what calibrates
        self.inputs: JobInputs | None = None
        self.scratch = self.store.job_dir(self.job_id) / "scratch"  # artifacts being built; cleared on every start
        self.reference: Reference | None = None
        self.to_build: deque[tuple[int, Recipe]] = deque()
        self.ranges: dict[CalibrationKey, Ranges] = {}  # computed by calibration tasks
        self.calibrating: set[CalibrationKey] = set()
        self.to_time: deque[_Waiting] = deque()
        self.counts = {"computed": 0, "from the cache": 0, "failed": 0}

    def work(self) -> str:
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True)
        try:
            self._find_inputs()
            pending = self._copy_cached(self._missing())
            if pending:
                with self.turn_to_compute():
                    self._compute(pending)
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)
        summary = ", ".join(f"{count} {what}" for what, count in self.counts.items())
        calibrated = [recipe for _, recipe in pending if calibration_key(recipe) is not None]
        if calibrated:
            runs = len(self.ranges)
            summary += f"; {runs} calibration{'s' * (runs != 1)} for {len(calibrated)} static recipes"
        return f"done: {summary}"

    # -- what is left to do ----------------------------------------------------------------------------------

    def _find_inputs(self) -> None:
        model = library.find_model(self.conn, self.job.model_id)
        dataset = library.find_dataset(self.conn, self.job.dataset_id)
        wanted = self.params.calibration_dataset
        calibration = None if wanted is None else library.find_dataset(self.conn, wanted)
        extras = [(name, library.find_dataset(self.conn, data_id)) for name, data_id in self.params.extra_sets]
        if model is None or dataset is None or (wanted is not None and calibration is None) \
                or any(record is None for _, record in extras):
            raise JobFailed("the job's model or data is no longer in the workspace")
        asked = calibration_rows_asked(self.recipes)
        self.fingerprint = dataset.fingerprint
        fingerprints = [(name, record.fingerprint) for name, record in extras]
        fingerprints += [(shift, shift) for shift in self.params.shifts]
        self.plan = plan_identity(dataset.summary["rows"], asked, calibration and calibration.fingerprint,
                                  fingerprints)
        self.inputs = JobInputs(model.id, self.store.blobs.path(model.id), self.data_source(dataset),
                                None if calibration is None else self.data_source(calibration), asked,
                                tuple((name, self.data_source(record)) for name, record in extras), self.params.shifts,
                                self.scratch)

    def _missing(self) -> list[tuple[int, Recipe]]:
        committed = jobs.committed_keys(self.conn, self.job_id)
        return [(position, recipe) for position, recipe in enumerate(self.recipes) if recipe.key() not in committed]

    def _configuration(self, recipe: Recipe) -> cache.Configuration:
        return cache.Configuration(self.job.model_id, self.fingerprint, recipe.key(), self.threads, self.batch,
                                   f"{self.plan}; fidelity mask: {self.params.mask}; "
                                   f"latency: {self.protocol.describe()}")

    def _copy_cached(self, missing: list[tuple[int, Recipe]]) -> list[tuple[int, Recipe]]:
        """Commit the rows the cache already holds; the configurations still to compute."""
        pending = []
        for position, recipe in missing:
            if self.copy_cached(recipe.key(), position, self._configuration(recipe)) is None:
                pending.append((position, recipe))
            else:
                self.counts["from the cache"] += 1
        return pending

    # -- computing ---------------------------------------------------------------------------------------------

    def _compute(self, pending: list[tuple[int, Recipe]]) -> None:
        self.beat("computing the fp32 reference")
        self.executor.start(ReferenceTask(self.inputs, self.scratch, self.params.mask))
        outcome = self._wait_for_reference()
        if isinstance(outcome.error, DiskFull):
            raise outcome.error
        if outcome.error is not None:
            raise JobFailed(f"the fp32 reference could not be computed: {outcome.error}", outcome.detail)
        self.reference = outcome.value
        self.to_build.extend(pending)
        poll = REMOTE_POLL_SECONDS if self.executor.remote_builds else HEARTBEAT_SECONDS
        while self.to_build or self.to_time or self.executor.running():
            self._start_ready_work()
            self.beat(self._status())
            finished = self.executor.collect(poll)
            for task, outcome in sorted(finished, key=lambda done: isinstance(done[1].error, DiskFull)):
                self._handle(task, outcome)  # a full disk ends the job: the other finished rows are committed first
            if finished:
                self.beat(force=True)  # a job taken away (cancelled, declared interrupted) starts no more work

    def _wait_for_reference(self) -> Outcome:
        while True:
            for _, outcome in self.executor.collect(HEARTBEAT_SECONDS):
                return outcome
            self.beat()

    def _running(self, kind: type) -> list[Task]:
        return [task for task in self.executor.running() if isinstance(task, kind)]

    def _status(self) -> str:
        """What the job is doing now, in words, e.g. "timing fp16; building W4 weight-only group32"."""
        parts = []
        for verb, kind in (("timing", TimeTask), ("calibrating", CalibrateTask), ("building", BuildTask)):
            running = self._running(kind)
            if running:
                parts.append(f"{verb} {', '.join(task.describe() for task in running)}")
        return "; ".join(parts) or "finishing"

    def _start_ready_work(self) -> None:
        """A timing when the machine is quiet and it is time to drain; else builds up to `workers` at once."""
        if self._running(TimeTask):
            return  # a timing has the machine to itself
        draining = bool(self.to_time) and (len(self.to_time) >= self.workers or not self.to_build)
        if draining:
            if not self.executor.running():
                waiting = self.to_time.popleft()
                self.executor.start(TimeTask(self.inputs, waiting.position, waiting.recipe, waiting.row,
                                             waiting.artifact_sha, self.store.artifacts.path(waiting.artifact_sha),
                                             self.threads, self.batch, self.protocol, self.store.latency_lock,
                                             self.reference))
            return
        while len(self._running(BuildTask | CalibrateTask)) < self.workers and (task := self._next_build()):
            self.executor.start(task)

    def _next_build(self) -> BuildTask | CalibrateTask | None:
        """The first recipe whose ranges are known (or that needs none), as a build; else the calibration the
        first waiting recipe needs; None while calibrations run."""
        for index, (position, recipe) in enumerate(self.to_build):
            key = calibration_key(recipe)
            if key is None or key in self.ranges:
                del self.to_build[index]
                return BuildTask(self.inputs, position, recipe, self.reference,
                                 self.scratch / f"{recipe.slug()}.onnx", self.ranges.get(key))
            if key not in self.calibrating:
                self.calibrating.add(key)
                return CalibrateTask(self.inputs, key, recipe)
        return None

    def _handle(self, task: Task, outcome: Outcome) -> None:
        if isinstance(outcome.error, DiskFull):  # every later artifact would fail too: the job ends, and this
            raise outcome.error  # configuration keeps no row, so that resume builds it once there is space
        if isinstance(task, CalibrateTask):
            self._calibrated(task.key, outcome)
        elif outcome.error is not None:
            error = outcome.error
            if isinstance(error, WorkerDied):
                error = WorkerDied(f"{error} while {'timing' if isinstance(task, TimeTask) else 'building'} "
                                   "this configuration")
            self._commit(task.position, task.recipe, self.reference.failed_row(task.recipe, error), None,
                         outcome.detail)
        elif isinstance(task, BuildTask):
            self._built(task, outcome.value)
        else:
            timed: Timed = outcome.value
            self._commit(task.position, task.recipe, timed.row, task.artifact_sha if timed.detail is None else None,
                         timed.detail)

    def _built(self, task: BuildTask, built: Built) -> None:
        if built.failed:
            self._commit(task.position, task.recipe, built.row, None, built.detail)
            return
        artifact_sha = self._store_artifact(task, built)
        row = {**built.row, results.ARTIFACT: self.store.relative(self.store.artifacts.path(artifact_sha))}
        if row[results.SIMULATED]:  # a simulated artifact is not timed, as in engine.sweep
            self._commit(task.position, task.recipe, row, artifact_sha)
        else:
            self.to_time.append(_Waiting(task.position, task.recipe, row, artifact_sha))

    def _store_artifact(self, task: BuildTask, built: Built) -> str:
        """Move the built artifact into the workspace's store: one file, or past 2 GB a folder of its .onnx file
        and external data. A remote build's came back as bytes (a zip of its files, for a folder)."""
        path = task.artifact_path
        if built.artifact_bytes is not None:
            if not is_zip(built.artifact_bytes):
                return self.store.artifacts.put_bytes(built.artifact_bytes)
            path = unpack_model_zip(built.artifact_bytes, Path(tempfile.mkdtemp(dir=self.scratch)), path.name)
        return self.store_artifact(path)

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
            self._commit(position, recipe, self.reference.failed_row(recipe, error), None, outcome.detail)

    def _commit(self, position: int, recipe: Recipe, row: dict, artifact_sha: str | None,
                detail: str | None = None) -> None:
        """The row, its artifact and its cache entry, in one transaction: all or nothing."""
        self.counts["failed" if results.ERROR in row else "computed"] += 1
        self.commit_row(recipe.key(), position, row, artifact_sha, self._configuration(recipe), detail)

