"""The sensitivity job: engine.sensitivity's table of one model, computed by the runner or on a Dask cluster, kept
in the workspace.

Without a scheduler the table is computed in the runner process itself by `sensitivity_table`, whose cells share
one scoring (the fp32 reference, one calibration per key, probes): split over local worker processes, each would
redo that sharing. Its progress callback, called between cells, writes the job's progress (cells done of cells)
with the heartbeat and so stops the table at the next cell once the job is cancelled; a heartbeat thread covers
the long steps with no cell boundary (calibrating and building a candidate's artifact).

With a scheduler (the runner's executor is then a DaskExecutor) each candidate is one task on the cluster
(tasks.SensitivityTask: build, read its points, measure its cells, the same code as in the runner), after the
runner has computed the fp32 reference once and one CalibrateTask per calibration key has computed the ranges its
candidates share, so that the table is the local one (`table_on_cluster`, which a mixed-precision job computes its
table with too). Progress counts candidates; cancel stops between tasks; a task Dask gives up on (its workers died)
fails the job in one line.

The finished table is one JSON blob in the workspace (engine.sensitivity's sensitivity.json), recorded as the
job's one result row; an earlier job of the same configuration (model, data, candidates, scoring, engine
version; wherever it ran) lends its table instead of computing it again. A resumed job computes its table from
the start: the cells share the scoring set up at its beginning, so a partial table is not kept.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.data import Dataset
from engine.errors import DiskFull, QuantscopeError, RecipeError, WorkspaceError
from engine.jobs.executor import WorkerDied, check_scheduler_address
from engine.jobs.kinds import register
from engine.jobs.kinds.sweep import REMOTE_POLL_SECONDS
from engine.jobs.run import JobFailed, JobRun
from engine.jobs.tasks import CalibrateTask, JobInputs, SensitivityTask
from engine.masking import AUTO
from engine.model import LoadedModel, load_model
from engine.realise.calibration import calibration_key
from engine.recipe import Calibration, Granularity, Recipe
from engine.sensitivity import (
    DEFAULT_ACTIVATIONS, DEFAULT_BITS, DYNAMIC, SensitivityTable, candidates, sensitivity_table,
)
from engine.sensitivity.compute import CandidateResult, assemble, table_scoring
from engine.sweep.plan import calibration_rows_asked
from engine.store import DatasetRecord, ModelRecord, cache, jobs
from engine.store.db import transaction
from engine.text import error_line

TABLE = "table"  # the result row's field: the sha256 of the table's JSON among the workspace's blobs


@dataclass(frozen=True)
class SensitivityParams:
    """A sensitivity job's parameters: the candidates as the CLI's --bits, --granularity, --activations and
    --calibration name them (engine.sensitivity.candidates), and how cells are scored."""

    bits: tuple[int, ...] = DEFAULT_BITS
    granularities: tuple[str, ...] = (Granularity.CHANNEL.value,)
    activations: tuple[int | str | None, ...] = DEFAULT_ACTIVATIONS  # None: weight-only; 8, 16: static; DYNAMIC
    calibrations: tuple[str, ...] = (Calibration.MINMAX.value,)
    group_size: int = 128
    threads: int = 1
    calibration_dataset: str | None = None  # a dataset id to calibrate on; None: held-out validation rows
    mask: str = AUTO  # engine.masking's AUTO, NO_MASK or an input's name
    scheduler: str | None = None  # a Dask scheduler address; None: the runner computes the table itself

    def __post_init__(self) -> None:
        check_scheduler_address(self.scheduler)
        for name in ("bits", "granularities", "activations", "calibrations"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        wrong = [a for a in self.activations if a not in (None, 8, 16, DYNAMIC)]
        if wrong:
            raise WorkspaceError(f"activations are none, 8, 16 or {DYNAMIC}; got {wrong[0]!r}")
        for name, value in (("threads", self.threads), ("group_size", self.group_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise WorkspaceError(f"{name} must be a positive integer; got {value!r}")
        try:
            self.recipes()
        except (RecipeError, ValueError) as error:  # ValueError: a granularity or calibration with no such name
            raise WorkspaceError(str(error)) from None

    def recipes(self) -> list[Recipe]:
        return candidates(self.bits, self.granularities, self.activations, self.calibrations, self.group_size)

    def to_dict(self) -> dict:
        return {"bits": list(self.bits), "granularities": list(self.granularities),
                "activations": list(self.activations), "calibrations": list(self.calibrations),
                "group_size": self.group_size, "threads": self.threads,
                "calibration_dataset": self.calibration_dataset, "mask": self.mask, "scheduler": self.scheduler}

    @classmethod
    def from_dict(cls, data: dict) -> SensitivityParams:
        return cls(**data)


def table_configuration(model_id: str, params: SensitivityParams, dataset: DatasetRecord,
                        calibration: DatasetRecord | None) -> cache.Configuration:
    """What a table depends on: the key its job's row is committed under, where a later job (a sensitivity or a
    mixed-precision one) finds it."""
    candidates = json.dumps([recipe.key() for recipe in params.recipes()])
    scoring = f"sensitivity; calibration: {calibration and calibration.fingerprint}; mask: {params.mask}"
    return cache.Configuration(model_id, dataset.fingerprint, candidates, params.threads, None, scoring)


@register
class SensitivityRun(JobRun):
    name = "sensitivity"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.params = SensitivityParams.from_dict(self.job.params)
        self.scratch = self.store.job_dir(self.job_id) / "scratch"  # the candidates' artifacts; cleared on start
        self.calibrations: int | None = None  # calibration tasks run on the cluster (None: computed in the runner)

    def work(self) -> str:
        model, dataset, calibration = self.job_records()
        configuration = self._configuration(dataset, calibration)
        earlier = jobs.earlier_result(self.conn, self.name, configuration.key())
        if earlier is not None and self.store.blobs.path(earlier[TABLE]).is_file():
            self._commit(configuration, earlier, cached=True)
            return "done: the table from the cache (an earlier job measured the same)"
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True)
        try:
            with self.turn_to_compute(), self.beating_meanwhile():
                table = self._compute(model, dataset, calibration)
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)
        if table.rows.empty:
            raise JobFailed("nothing measured: no candidate was built with a point to quantize")
        sha = self.store.blobs.put_bytes(json.dumps(table.to_dict()).encode())
        self._commit(configuration, {TABLE: sha, "rows": len(table.rows), "points": len(table.points),
                                     "candidates": [c["candidate"] for c in table.candidates]}, cached=False)
        where = "" if self.calibrations is None else f"; on the Dask cluster with {self.calibrations} calibration" \
            f"{'s' * (self.calibrations != 1)}"
        return f"done: {len(table.rows)} rows ({len(table.points)} points, {len(table.candidates)} candidates){where}"

    def _configuration(self, dataset: DatasetRecord, calibration: DatasetRecord | None) -> cache.Configuration:
        return table_configuration(self.job.model_id, self.params, dataset, calibration)

    def _compute(self, model_record, dataset: DatasetRecord, calibration: DatasetRecord | None) -> SensitivityTable:
        self.beat("loading the model and data; calibrating and building each candidate")
        recipes, params = self.params.recipes(), self.params
        data = TableData.load(self, model_record, dataset, calibration, recipes, self.scratch)
        if self.executor.remote_builds:
            table, self.calibrations = table_on_cluster(self, data, recipes, params.mask, params.threads,
                                                        self.scratch)
            return table

        def progress(done: int, total: int, message: str) -> None:
            self.beat(f"{done} of {total} cells: {message}", done=done, total=total)  # raises JobLost if cancelled

        return sensitivity_table(data.model, data.validation, recipes, self.scratch, data.calibration, params.mask,
                                 params.threads, progress)

    def _commit(self, configuration: cache.Configuration, row: dict, cached: bool) -> None:
        """The table's row under its configuration's key, where a later job of the same configuration finds it."""
        with transaction(self.conn):
            jobs.add_result(self.conn, self.job_id, configuration.key(), 0, row, None, cached=cached)
            jobs.count_all_done(self.conn, self.job_id)  # the progress counted cells (on a cluster: candidates)


@dataclass(frozen=True)
class TableData:
    """A job's model and data as the runner loaded them, and as the cluster's tasks load them (`stored`)."""

    model: LoadedModel
    validation: Dataset
    calibration: Dataset | None
    stored: JobInputs

    @classmethod
    def load(cls, run: JobRun, model_record: ModelRecord, dataset: DatasetRecord, calibration: DatasetRecord | None,
             recipes: Sequence[Recipe], scratch: Path) -> TableData:
        model = load_model(run.store.blobs.path(model_record.id), name=model_record.name)
        calibration_source = None if calibration is None else run.data_source(calibration)
        stored = JobInputs(model_record.id, run.store.blobs.path(model_record.id), run.data_source(dataset),
                           calibration_source, calibration_rows_asked(recipes), scratch=scratch)
        return cls(model, stored.validation.load(model),
                   None if calibration_source is None else calibration_source.load(model), stored)


def table_on_cluster(run: JobRun, data: TableData, recipes: Sequence[Recipe], mask: str, threads: int,
                     workdir: Path) -> tuple[SensitivityTable, int]:
    """The table of `recipes` computed on the run's Dask cluster (its executor a DaskExecutor), equal to the one
    `sensitivity_table` computes in the runner; and how many calibration tasks it ran. The fp32 reference is
    computed once in the runner (in `workdir`), each calibration key by one CalibrateTask, each candidate by one
    SensitivityTask once its ranges are known. Progress counts candidates; the beat between polls stops a cancelled
    job; a task that fails as a whole fails the job in one line. What the sensitivity and mixed kinds both call."""
    executor = run.executor
    run.beat("computing the fp32 reference")
    plan, scoring = table_scoring(data.model, data.validation, recipes, workdir, data.calibration, mask, threads)
    waiting = list(enumerate(recipes))
    ranges, calibrating, results = {}, set(), {}
    while waiting or executor.running():
        for position, recipe in list(waiting):  # a candidate starts once its ranges are known
            key = calibration_key(recipe)
            if key is None or key in ranges:
                waiting.remove((position, recipe))
                executor.start(SensitivityTask(data.stored, position, recipe, scoring.reference, mask, threads,
                                               ranges.get(key)))
            elif key not in calibrating:
                calibrating.add(key)
                executor.start(CalibrateTask(data.stored, key, recipe))
        running = ", ".join(f"{'calibrating ' if isinstance(task, CalibrateTask) else 'measuring '}"
                            f"{task.describe()}" for task in executor.running())
        run.beat(f"{len(results)} of {len(recipes)} candidates on the Dask cluster" + (running and f"; {running}"),
                 done=len(results), total=len(recipes))  # raises JobLost if cancelled
        for task, outcome in executor.collect(REMOTE_POLL_SECONDS):
            if isinstance(task, CalibrateTask) and not (outcome.error and _ends_the_table(outcome.error)):
                # the shared ranges; after a calibration onnxruntime cannot do, none: each of its candidates
                # then calibrates itself and, as in the runner, records the error as its own
                calibrating.discard(task.key)
                ranges[task.key] = outcome.value
                continue
            if outcome.error is not None:
                raise _cluster_failure(task, outcome.error, outcome.detail)
            results[task.position] = outcome.value
    ordered: list[CandidateResult] = [results[position] for position in range(len(recipes))]
    return assemble(data.model, plan, scoring, recipes, ordered), len(ranges)


def _cluster_failure(task: CalibrateTask | SensitivityTask, error: BaseException, detail: str | None) -> Exception:
    """The job's end when a task fails as a whole (in the runner, the same errors would end the table too: a
    user's error, a full disk; a candidate onnxruntime cannot build is a row's error, not the task's)."""
    if isinstance(error, DiskFull):
        return error
    what = f"calibrating for {task.recipe.short_name()}" if isinstance(task, CalibrateTask) else \
        f"measuring {task.recipe.short_name()}"
    cause = "its Dask worker was lost" if isinstance(error, WorkerDied) else "it failed"
    return JobFailed(f"{what} on the Dask cluster: {cause}: {error_line(error)}; resume computes the table again",
                     detail)


def _ends_the_table(error: BaseException) -> bool:
    """What ends the table wherever it is computed: the user's error, a full disk, and on a cluster a lost worker."""
    return isinstance(error, QuantscopeError | WorkerDied)
