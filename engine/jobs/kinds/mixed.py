"""The mixed-precision job: engine.mixed's measured curve of one model, computed by the runner (its sensitivity table
on a Dask cluster when the job names a scheduler), its points kept as the job's results rows.

What `quantscope mixed` does, as a job: the sensitivity table of the curve's candidates, the ladder read off it,
and the points the budget needs, built, scored and timed one after another in the runner process (engine.mixed's
search decides which point to measure from the ones before it, so its points cannot be split over workers). The
job holds the workspace's turn to compute throughout: nothing else of the product runs beside its timings.

- The table: an earlier sensitivity job of the same model, data, candidates and scoring (the key its row is
  committed under, engine.jobs.kinds.sensitivity.table_configuration) lends its table; otherwise the job computes
  it, and its message says which. A computed table and the curve share one CalibrationSet, so static points reuse
  the table's activation ranges. A lent table was calibrated in its own job: the curve calibrates once more, on the
  same rows with the same method (check_table refuses a table scored or calibrated on other rows), so its ranges
  are the table's again, at the cost of one calibration per static candidate.
- With a scheduler (the runner's executor is a DaskExecutor) and no table to borrow, the table's cells are computed
  on the cluster by exactly the sensitivity kind's code (sensitivity.table_on_cluster: the fp32 reference in the
  runner, one calibration task per key, one task per candidate), so the table is the local one, and the curve then
  calibrates again as for a lent table (same rows, same method: the same ranges, the same points). The points stay
  in the runner: each depends on the ones measured before it (bisection), so there is nothing to run beside it, and
  each must be timed here, alone, on the artifact stored in the workspace. Building a point remotely would only add
  shipping its model and artifact both ways to a build that takes a fraction of its timing.
- Points: each is committed as a results row the moment it is measured (fp32 at position 0, the point with k moves
  at k + 1), its artifact moved into the workspace's store as a sweep row's is, so Workspace.results and
  artifact_path serve it and it exports like any row. At the end the budget's choice is marked on its row
  (results.MIXED_CHOSEN).
- Progress is points measured of points planned (cells while the table is computed); the heartbeat between points
  stops a cancelled job there. A resumed job computes its table again and keeps every committed point, measuring
  only the others; a point measured before under the same configuration (the result cache) is copied, not measured.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, fields
from pathlib import Path

from engine import results
from engine.errors import RecipeError, WorkspaceError
from engine.jobs.kinds import register
from engine.jobs.executor import check_scheduler_address
from engine.jobs.kinds.sensitivity import (
    TABLE, SensitivityParams, SensitivityRun, TableData, table_configuration, table_on_cluster,
)
from engine.jobs.run import JobRun
from engine.masking import AUTO
from engine.measure import ADAPTIVE, LatencyProtocol, capped_at
from engine.mixed import Budget, MaxDrop, MaxLatency, MaxSizeRatio, curve_candidates, mixed_curve
from engine.recipe import Calibration, Granularity, Recipe
from engine.sensitivity import DEFAULT_ACTIVATIONS, DEFAULT_BITS, SensitivityTable
from engine.store import DatasetRecord, cache, jobs
from engine.store.db import transaction
from engine.sweep import DEFAULT_LATENCY_BATCH
from engine.sweep.plan import calibration_rows_asked, plan_identity

BUDGETS: dict[str, type[Budget]] = {"max_drop": MaxDrop, "max_size_ratio": MaxSizeRatio, "max_latency_ms": MaxLatency}


@dataclass(frozen=True)
class MixedParams:
    """A mixed job's parameters: the curve's candidates as `quantscope mixed` names them (--bits, --granularity,
    --activations none|8|16|8,16, --calibration), how points are scored and timed, and the budget: exactly one of
    max_drop (the primary metric's drop from fp32, in its units), max_size_ratio (artifact bytes over fp32's) and
    max_latency_ms (median batch-1 latency)."""

    bits: tuple[int, ...] = DEFAULT_BITS
    granularity: str = Granularity.CHANNEL.value
    activations: tuple[int | None, ...] = DEFAULT_ACTIVATIONS
    calibration: str = Calibration.MINMAX.value
    group_size: int = 128
    threads: int = 1
    batch: int | None = DEFAULT_LATENCY_BATCH  # None: time single examples only
    calibration_dataset: str | None = None  # a dataset id to calibrate on; None: held-out validation rows
    mask: str = AUTO
    max_drop: float | None = None
    max_size_ratio: float | None = None
    max_latency_ms: float | None = None
    latency_cap: float = ADAPTIVE.cap_seconds  # seconds of timing per point and batch size (engine.measure)
    scheduler: str | None = None  # a Dask scheduler address to compute the table on; None: the runner computes it

    def __post_init__(self) -> None:
        check_scheduler_address(self.scheduler)
        for name in ("bits", "activations"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        given = [name for name in BUDGETS if getattr(self, name) is not None]
        if len(given) != 1:
            raise WorkspaceError("a mixed-precision search takes exactly one budget: max_drop, max_size_ratio or "
                                 f"max_latency_ms; got {', '.join(given) or 'none'}")
        if wrong := [a for a in self.activations if a not in (None, 8, 16)]:
            raise WorkspaceError(f"a curve's activations are none, 8, 16 or 8,16; got {wrong[0]!r}")
        counts = {"threads": self.threads, "group_size": self.group_size}
        counts |= {} if self.batch is None else {"batch": self.batch}
        for name, value in counts.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise WorkspaceError(f"{name} must be a positive integer; got {value!r}")
        try:
            self.budget()
            self.recipes()
            self.protocol()
        except (RecipeError, ValueError) as error:  # ValueError: a granularity or calibration with no such name
            raise WorkspaceError(str(error)) from None

    def budget(self) -> Budget:
        name = next(name for name in BUDGETS if getattr(self, name) is not None)
        return BUDGETS[name](getattr(self, name))

    def protocol(self) -> LatencyProtocol:
        """How every point is timed."""
        return capped_at(self.latency_cap)

    def recipes(self) -> list[Recipe]:
        """The candidates of the curve's table: the fewest weight bits' one is the curve's uniform start."""
        return curve_candidates(list(self.bits), self.granularity, list(self.activations), self.calibration,
                                self.group_size)

    def table_params(self) -> SensitivityParams:
        """The sensitivity job whose table this curve can take: the same candidates, scored alike."""
        return SensitivityParams(self.bits, (self.granularity,), self.activations, (self.calibration,),
                                 self.group_size, self.threads, self.calibration_dataset, self.mask)

    @classmethod
    def for_table(cls, table: SensitivityParams, **options) -> MixedParams:
        """The curve on a sensitivity job's candidates (one granularity and calibration; activations none, 8, 16
        or 8,16), scored and run with as many threads as it was, so that its table is the one the curve reads;
        `options`: the budget, batch and latency_cap."""
        if unknown := sorted(set(options) - {*BUDGETS, "batch", "latency_cap"}):
            raise WorkspaceError(f"a curve on a table takes a budget, batch and latency_cap; got {', '.join(unknown)}")
        for name, values in (("granularity", table.granularities), ("calibration", table.calibrations)):
            if len(values) != 1:
                raise WorkspaceError(f"a curve takes one {name}; the table compares {', '.join(map(str, values))}")
        return cls(table.bits, table.granularities[0], table.activations, table.calibrations[0], table.group_size,
                   table.threads, calibration_dataset=table.calibration_dataset, mask=table.mask, **options)

    def to_dict(self) -> dict:
        return {field.name: (list(value) if isinstance(value := getattr(self, field.name), tuple) else value)
                for field in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> MixedParams:
        return cls(**data)


@register
class MixedRun(JobRun):
    name = "mixed"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.params = MixedParams.from_dict(self.job.params)
        self.scratch = self.store.job_dir(self.job_id) / "scratch"  # the points being built; cleared on start
        self.scoring = ""  # what a point's row (its MIXED_* columns too) depends on besides its recipe: cache key
        self.fingerprint = ""
        self.committed: dict[str, dict] = {}  # recipe key -> row: a resumed job's points
        self.calibrations: int | None = None  # calibration tasks of a table computed on the cluster (None: none was)

    def work(self) -> str:
        model, dataset, calibration = self.job_records()
        self.fingerprint = dataset.fingerprint
        asked = calibration_rows_asked(self.params.recipes())
        plan = plan_identity(dataset.summary["rows"], asked, calibration and calibration.fingerprint)
        candidates = ", ".join(recipe.key() for recipe in self.params.recipes())  # they order the ladder: its columns
        self.scoring = (f"mixed-precision point of the curve of {candidates}; {plan}; fidelity mask: {self.params.mask}"
                        f"; latency: {self.params.protocol().describe()}")
        self.committed = {row[results.RECIPE_KEY]: row for row in jobs.result_rows(self.conn, self.job_id)}
        table = self._lent_table(dataset, calibration)
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True)
        try:
            with self.turn_to_compute(), self.beating_meanwhile():
                curve = self._compute(model, dataset, calibration, table)
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)
        self._mark_chosen(curve.chosen)
        measured = len(curve.rows)
        self.beat(force=True, done=measured, total=measured)  # the points planned were those the budget needed
        where = "" if self.calibrations is None else \
            f" on the Dask cluster with {self.calibrations} calibration{'s' * (self.calibrations != 1)}"
        source = ("the sensitivity table from an earlier sensitivity job" if table is not None
                  else f"the sensitivity table computed{where} (no finished sensitivity job of these candidates)")
        points = measured - 1
        return f"done: {curve.verdict()}. fp32 and {points} point{'s' * (points != 1)} measured; {source}"

    def _lent_table(self, dataset: DatasetRecord, calibration: DatasetRecord | None) -> SensitivityTable | None:
        """A finished sensitivity job's table of the curve's candidates, scored alike; None when there is none."""
        key = table_configuration(self.job.model_id, self.params.table_params(), dataset, calibration).key()
        earlier = jobs.earlier_result(self.conn, SensitivityRun.name, key)
        if earlier is None or not self.store.blobs.path(earlier[TABLE]).is_file():
            return None
        return SensitivityTable.read(self.store.blobs.path(earlier[TABLE]))

    def _compute(self, model_record, dataset: DatasetRecord, calibration: DatasetRecord | None,
                 table: SensitivityTable | None):
        self.beat("loading the model and data" + ("" if table else "; computing the sensitivity table"))
        recipes, params, workdir = self.params.recipes(), self.params, self.scratch / "work"
        data = TableData.load(self, model_record, dataset, calibration, recipes, self.scratch)
        if table is None and self.executor.remote_builds:
            table, self.calibrations = table_on_cluster(self, data, recipes, params.mask, params.threads, workdir)

        def progress(done: int, total: int, message: str) -> None:
            self.beat(f"{done} of {total}: {message}", done=done, total=total)  # raises JobLost if cancelled

        return mixed_curve(data.model, data.validation, recipes, params.budget(), self.scratch, workdir, table,
                           data.calibration, params.mask, params.threads, params.batch, progress, keeper=self,
                           protocol=params.protocol())

    def _configuration(self, recipe_key: str) -> cache.Configuration:
        return cache.Configuration(self.job.model_id, self.fingerprint, recipe_key, self.params.threads,
                                   self.params.batch, self.scoring)

    # -- engine.mixed.search.Keeper: each point committed as it is measured ------------------------------------

    def known(self, recipe: Recipe, position: int) -> dict | None:
        """A point this job committed before it was resumed, or one the result cache holds (committed now)."""
        key = recipe.key()
        row = self.committed.get(key)
        if row is None:
            row = self.copy_cached(key, position, self._configuration(key))
        return None if row is None else self._absolute(row)

    def keep(self, row: dict, position: int) -> dict:
        artifact_sha = None
        if results.ERROR not in row and row.get(results.ARTIFACT):
            artifact_sha = self.store_artifact(Path(row[results.ARTIFACT]))
            row = {**row, results.ARTIFACT: self.store.relative(self.store.artifacts.path(artifact_sha))}
        key = row[results.RECIPE_KEY]
        self.commit_row(key, position, row, artifact_sha, self._configuration(key))
        return self._absolute(row)

    def _absolute(self, row: dict) -> dict:
        artifact = row.get(results.ARTIFACT)
        return {**row, results.ARTIFACT: str(self.store.absolute(artifact))} if isinstance(artifact, str) else row

    def _mark_chosen(self, chosen) -> None:
        """The budget's choice on its committed row, and on no other."""
        with transaction(self.conn):
            for row in jobs.result_rows(self.conn, self.job_id):
                is_chosen = chosen is not None and row[results.RECIPE_KEY] == chosen[results.RECIPE_KEY]
                if row.get(results.MIXED_CHOSEN) is not is_chosen:
                    jobs.update_result(self.conn, self.job_id, row[results.RECIPE_KEY],
                                       {**row, results.MIXED_CHOSEN: is_chosen})
