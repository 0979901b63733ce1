"""The sensitivity job: engine.sensitivity's table of one model, computed by the runner, kept in the workspace.

The table is computed in the runner process itself by `sensitivity_table`, whose cells share one scoring (the
fp32 reference, one calibration per key, probes): split over worker processes, each would redo that sharing.
Its progress callback, called between cells, writes the job's progress (cells done of cells) with the heartbeat
and so stops the table at the next cell once the job is cancelled; a heartbeat thread covers the long steps with
no cell boundary (calibrating and building a candidate's artifact).

The finished table is one JSON blob in the workspace (engine.sensitivity's sensitivity.json), recorded as the
job's one result row; an earlier job of the same configuration (model, data, candidates, scoring, engine
version) lends its table instead of computing it again. A resumed job computes its table from the start: the
cells share the scoring set up at its beginning, so a partial table is not kept.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

from engine.errors import RecipeError, WorkspaceError
from engine.jobs.kinds import register
from engine.jobs.run import JobFailed, JobRun
from engine.jobs.tasks import DataSource
from engine.masking import AUTO
from engine.model import load_model
from engine.recipe import Calibration, Granularity, Recipe
from engine.sensitivity import (
    DEFAULT_ACTIVATIONS, DEFAULT_BITS, DYNAMIC, SensitivityTable, candidates, sensitivity_table,
)
from engine.store import DatasetRecord, cache, jobs, library
from engine.store.db import transaction

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

    def __post_init__(self) -> None:
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
                "calibration_dataset": self.calibration_dataset, "mask": self.mask}

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

    def work(self) -> str:
        model, dataset, calibration = self._records()
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
        return f"done: {len(table.rows)} rows ({len(table.points)} points, {len(table.candidates)} candidates)"

    def _records(self):
        model = library.find_model(self.conn, self.job.model_id)
        dataset = library.find_dataset(self.conn, self.job.dataset_id)
        wanted = self.params.calibration_dataset
        calibration = None if wanted is None else library.find_dataset(self.conn, wanted)
        if model is None or dataset is None or (wanted is not None and calibration is None):
            raise JobFailed("the job's model or data is no longer in the workspace")
        return model, dataset, calibration

    def _configuration(self, dataset: DatasetRecord, calibration: DatasetRecord | None) -> cache.Configuration:
        return table_configuration(self.job.model_id, self.params, dataset, calibration)

    def _compute(self, model_record, dataset: DatasetRecord, calibration: DatasetRecord | None) -> SensitivityTable:
        self.beat("loading the model and data; calibrating and building each candidate")
        model = load_model(self.store.blobs.path(model_record.id), name=model_record.name)
        validation = self._source(dataset).load(model)
        calibration_data = None if calibration is None else self._source(calibration).load(model)

        def progress(done: int, total: int, message: str) -> None:
            self.beat(f"{done} of {total} cells: {message}", done=done, total=total)  # raises JobLost if cancelled

        return sensitivity_table(model, validation, self.params.recipes(), self.scratch, calibration_data,
                                 self.params.mask, self.params.threads, progress)

    def _source(self, dataset: DatasetRecord) -> DataSource:
        return DataSource(dataset.sha256, self.store.blobs.path(dataset.sha256), dataset.filename,
                          dataset.label_column, dataset.slice_column)

    def _commit(self, configuration: cache.Configuration, row: dict, cached: bool) -> None:
        """The table's row under its configuration's key, where a later job of the same configuration finds it."""
        with transaction(self.conn):
            jobs.add_result(self.conn, self.job_id, configuration.key(), 0, row, None, cached=cached)
            jobs.count_all_done(self.conn, self.job_id)  # the progress counted cells: all of them are in the table
