"""The workspace: the one API the CLI and the dashboard call. Nothing here computes a sweep.

    ws = Workspace.open()                                  # creates or migrates, then recover()
    model = ws.add_model(path_or_bytes, "resnet", owner)   # validated with load_model, stored once by sha256
    data = ws.add_dataset(path_or_bytes, "val.npz", model.id, owner)
    job_id = ws.submit_sweep(model.id, data.id, recipes, owner)   # returns at once; a runner does the work
    ws.wait(job_id, timeout=600); ws.results(job_id)       # the committed rows as engine.results.results_table
    job_id = ws.submit_sensitivity(model.id, data.id, owner, bits=(8,)); ws.sensitivity(job_id)  # SensitivityTable
    job_id = ws.submit_mixed(model.id, data.id, owner, max_drop=0.01); ws.results(job_id)  # the measured curve
    job_id = ws.submit_mixed_on_table(table_job_id, owner, max_size_ratio=0.3)  # the curve on a table's candidates
    ws.record_export(owner, job_id, recipe, figures, files, "model.onnx")  # a bundle (engine.export) in the history

It sits above engine.store (SQLite and blobs: every SQL statement lives there) and engine.jobs (runners and
their workers). Submitting records the job and starts its runner, which does the work and writes progress
and rows back; the workspace reads them, and stops or restarts runners. Every refusal is a WorkspaceError.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from engine.allowed_paths import allowed_dirs, allowed_file
from engine.data import MAX_DATASET_BYTES, load_dataset
from engine.errors import DataError, QuantscopeError, WorkspaceError
from engine.jobs.kinds.mixed import MixedParams, MixedRun
from engine.jobs.kinds.sensitivity import TABLE, SensitivityParams, SensitivityRun
from engine.jobs.kinds.sweep import SweepParams, SweepRun
from engine.masking import AUTO
from engine.measure import ADAPTIVE
from engine.jobs.processes import kill_runner, launch_runner, runner_is_alive
from engine.model import load_model
from engine.model_zip import is_zip
from engine.recipe import Recipe
from engine.results import ARTIFACT, results_table
from engine.sensitivity import SensitivityTable
from engine.tensors import TensorSpec
from engine.store import DatasetRecord, ExportRecord, JobInfo, ModelRecord, Store, workspace_root
from engine.store import exports, jobs, library
from engine.store.records import ACTIVE_STATES, RESUMABLE_STATES, JobState
from engine.sweep import DEFAULT_LATENCY_BATCH

__all__ = ["DatasetRecord", "ExportRecord", "JobInfo", "JobState", "ModelRecord", "Workspace", "WorkspaceError",
           "workspace_root"]

STALE_HEARTBEAT_SECONDS = 60.0  # a live runner writes one every second
POLL_SECONDS = 0.1


class Workspace:
    """One workspace directory: its library of models and datasets, its jobs and their results."""

    def __init__(self, store: Store):
        self.store = store

    @classmethod
    def open(cls, path: Path | str | None = None) -> Workspace:
        """The workspace at `path`, $QUANTSCOPE_HOME or ./workspace, created or migrated as needed."""
        workspace = cls(Store.open(path))
        workspace.recover()
        return workspace

    @property
    def root(self) -> Path:
        return self.store.root

    # -- the library ------------------------------------------------------------------------------------------

    def add_model(self, source: Path | bytes, name: str, owner: str, shared: bool = False) -> ModelRecord:
        """Validate and store a model: an .onnx file, or a zip of a model folder (engine.model_zip). A single
        .onnx file is stored as it came. A model with external data (read only from its own directory) is stored
        self-contained: with that data inlined in one file, or, past protobuf's 2 GiB
        (engine.onnx_files.external_data_threshold), as one folder blob of its .onnx file and its data file."""
        model = load_model(source, name=name, scratch=self.store.incoming)  # raises ModelError for anything unusable
        if isinstance(source, bytes) and not is_zip(source):
            model_id, size = self.store.blobs.put_bytes(source), len(source)
        elif not isinstance(source, bytes) and not is_zip(source) and model.summary.bytes == Path(source).stat().st_size:
            model_id, size = self.store.blobs.put_copy(Path(source)), model.summary.bytes  # no external data
        else:
            with tempfile.TemporaryDirectory(dir=self.store.incoming) as folder:
                try:
                    files = model.save(Path(folder) / "model.onnx")
                except OSError as error:
                    self.store.blobs.raise_if_disk_full(error)
                    raise
                size = sum(file.stat().st_size for file in files)
                model_id = (self.store.blobs.put_folder(files) if len(files) > 1
                            else self.store.blobs.put_file(files[0]))
        with self.store.connect() as conn:
            return library.save_model(conn, model_id, owner, name, _jsonable(model.summary.to_dict()), size, shared)

    def add_dataset(self, source: Path | bytes, filename: str, model_id: str, owner: str,
                    label_column: str | None = None, slice_column: str | None = None,
                    shared: bool = False) -> DatasetRecord:
        model_record = self.model(model_id, owner)
        data = source if isinstance(source, bytes) else _read_upload(Path(source), DataError("no data file at"))
        inputs = [TensorSpec.from_dict(spec) for spec in model_record.summary["inputs"]]  # checked when it was added
        dataset = load_dataset(data, inputs, filename=filename, label_column=label_column,
                               slice_column=slice_column)  # raises DataError when it does not fit the model
        sha256 = self.store.blobs.put_bytes(data)
        reading = [sha256, model_id, Path(filename).suffix.lower(), label_column, slice_column]
        record = DatasetRecord(
            id=hashlib.sha256(json.dumps(reading).encode()).hexdigest(), sha256=sha256, filename=filename,
            model_id=model_id, owner=owner, shared=shared, label_column=label_column, slice_column=slice_column,
            fingerprint=dataset.fingerprint(), bytes=len(data), summary=_jsonable(dataset.summary()),
            created=time.time(),
        )
        with self.store.connect() as conn:
            return library.save_dataset(conn, record)

    @staticmethod
    def server_file(path: str) -> Path:
        """A model or data file named by its path on this machine, if it lies in a directory the operator allows
        (engine.allowed_paths: QUANTSCOPE_ALLOWED_DIRS; unset, nothing is allowed); else a WorkspaceError."""
        return allowed_file(path)

    @staticmethod
    def server_directories() -> list[Path]:
        """The directories server_file opens files from; none when the operator allows none."""
        return allowed_dirs()

    def models(self, owner: str | None = None) -> list[ModelRecord]:
        """The owner's models and the shared ones, newest first (owner None: every owner's)."""
        with self.store.connect() as conn:
            return library.list_models(conn, owner)

    def datasets(self, owner: str | None = None, model_id: str | None = None) -> list[DatasetRecord]:
        with self.store.connect() as conn:
            return library.list_datasets(conn, owner, model_id)

    def share_model(self, model_id: str, owner: str) -> None:
        """Put the owner's copy of the model in the shared library."""
        with self.store.connect() as conn:
            if not library.share(conn, "models", model_id, owner):
                raise WorkspaceError(f"no model {model_id} for {owner}")

    def share_dataset(self, dataset_id: str, owner: str) -> None:
        """Put the owner's copy of the dataset in the shared library."""
        with self.store.connect() as conn:
            if not library.share(conn, "datasets", dataset_id, owner):
                raise WorkspaceError(f"no dataset {dataset_id} for {owner}")

    # -- jobs -----------------------------------------------------------------------------------------------

    def submit_sweep(self, model_id: str, dataset_id: str, recipes: Sequence[Recipe], owner: str,
                     threads: int = 1, batch: int | None = DEFAULT_LATENCY_BATCH, scheduler: str | None = None,
                     workers: int | None = None, calibration_dataset_id: str | None = None,
                     mask: str = AUTO, extra_sets: Sequence[tuple[str, str]] = (), shifts: Sequence[str] = (),
                     latency_cap: float = ADAPTIVE.cap_seconds) -> str:
        """Queue a sweep and start its runner; returns the job id at once. Static recipes calibrate on
        `calibration_dataset_id` if given, else on validation rows held out of scoring (engine.sweep.plan);
        `mask` chooses which output positions fidelity counts (engine.masking). Every row is also scored on each
        (name, dataset id) of `extra_sets` and on each synthetic shift ("noise:0.1": engine.shifts). Each artifact
        is timed for at most `latency_cap` seconds per batch size (engine.measure)."""
        self._check_data(model_id, owner, dataset_id, calibration_dataset_id, *(data_id for _, data_id in extra_sets))
        try:
            params = SweepParams(tuple(recipes), threads, batch, scheduler, workers, calibration_dataset_id, mask,
                                 tuple(extra_sets), tuple(shifts), latency_cap)
        except DataError as error:  # a shift or set name the sweep cannot use
            raise WorkspaceError(str(error)) from None
        return self._submit(SweepRun.name, owner, model_id, dataset_id, params.to_dict(), len(params.recipes))

    def submit_sensitivity(self, model_id: str, dataset_id: str, owner: str, **options) -> str:
        """Queue a sensitivity table (engine.sensitivity) and start its runner; returns the job id at once.
        `options` are SensitivityParams' fields: the candidates as the CLI names them (bits, granularities,
        activations, calibrations, group_size), threads, calibration_dataset (an id), mask, and scheduler (a Dask
        scheduler's address, e.g. tcp://host:8786, to measure the candidates on; None: the runner itself)."""
        self._check_data(model_id, owner, dataset_id, options.get("calibration_dataset"))
        params = SensitivityParams(**options)
        return self._submit(SensitivityRun.name, owner, model_id, dataset_id, params.to_dict(), 1)

    def sensitivity(self, job_id: str) -> SensitivityTable:
        """A finished sensitivity job's table."""
        job = self.job(job_id)
        if job.kind != SensitivityRun.name:
            raise WorkspaceError(f"job {job_id} is a {job.kind} job, not a sensitivity table")
        with self.store.connect() as conn:
            rows = jobs.result_rows(conn, job_id)
        if not rows:
            raise WorkspaceError(f"job {job_id} has no table yet: it is {job.state}")
        return SensitivityTable.read(self.store.blobs.path(rows[0][TABLE]))

    def submit_mixed(self, model_id: str, dataset_id: str, owner: str, **options) -> str:
        """Queue a mixed-precision search (engine.mixed, as `quantscope mixed`) and start its runner; returns the job
        id at once. `options` are MixedParams' fields: the candidates (bits, granularity, activations, calibration,
        group_size), threads, batch, calibration_dataset (an id), mask, exactly one budget (max_drop,
        max_size_ratio or max_latency_ms), and scheduler (a Dask scheduler's address to compute the sensitivity
        table on; the points are built and timed by the runner either way). A finished sensitivity job of the same
        candidates lends its table."""
        self._check_data(model_id, owner, dataset_id, options.get("calibration_dataset"))
        params = MixedParams(**options)
        return self._submit(MixedRun.name, owner, model_id, dataset_id, params.to_dict(), 1)

    def submit_mixed_on_table(self, table_job_id: str, owner: str, **options) -> str:
        """A mixed-precision search on a finished sensitivity job's model, data and candidates, which lends it its
        table; `options`: the budget, batch and latency_cap."""
        job = self.job(table_job_id)
        self.sensitivity(table_job_id)  # a finished table, or a WorkspaceError saying why not
        params = MixedParams.for_table(SensitivityParams.from_dict(job.params), **options)
        return self.submit_mixed(job.model_id, job.dataset_id, owner, **params.to_dict())

    def _check_data(self, model_id: str, owner: str, *data_ids: str | None) -> None:
        """The owner may use the model and each data set, and each was checked against that model."""
        self.model(model_id, owner)
        for data_id in data_ids:
            if data_id is not None and (dataset := self.dataset(data_id, owner)).model_id != model_id:
                raise WorkspaceError(f"dataset {dataset.filename} was checked against another model")

    def _submit(self, kind: str, owner: str, model_id: str, dataset_id: str, params: dict, total: int) -> str:
        """Record a job of a registered kind (engine.jobs.kinds) and start its runner."""
        job_id = uuid.uuid4().hex[:12]
        with self.store.connect() as conn:
            jobs.create_job(conn, job_id, kind, owner, model_id, dataset_id, params, total=total)
        self._launch(job_id)
        return job_id

    def job(self, job_id: str) -> JobInfo:
        with self.store.connect() as conn:
            job = jobs.get_job(conn, job_id)
        if job is None:
            raise WorkspaceError(f"no job {job_id}")
        return self._notice_lost_runner(job)

    def jobs(self, owner: str | None = None) -> list[JobInfo]:
        """Newest first."""
        with self.store.connect() as conn:
            listed = jobs.list_jobs(conn, owner)
        return [self._notice_lost_runner(job) for job in listed]

    def results(self, job_id: str) -> pd.DataFrame:
        """The committed rows, in recipe order, as engine.results.results_table; artifact paths are absolute. A
        mixed job's rows are its curve: fp32, then the points by moves applied (results.curve_rows)."""
        if (kind := self.job(job_id).kind) not in (SweepRun.name, MixedRun.name):
            raise WorkspaceError(f"job {job_id} is a {kind} job: its result is not a table of recipes")
        with self.store.connect() as conn:
            rows = jobs.result_rows(conn, job_id)
        for row in rows:
            if row.get(ARTIFACT):
                row[ARTIFACT] = str(self.store.absolute(row[ARTIFACT]))
        return results_table(rows)

    def result_times(self, job_id: str) -> list[float]:
        """When each of the job's rows was committed (unix seconds), earliest first."""
        with self.store.connect() as conn:
            return jobs.result_times(conn, job_id)

    def artifact_path(self, job_id: str, recipe_key: str) -> Path:
        with self.store.connect() as conn:
            found = jobs.artifact_of(conn, job_id, recipe_key)
        if found is None:
            raise WorkspaceError(f"job {job_id} has no artifact for recipe {recipe_key}")
        return self.store.absolute(found)

    def model_file(self, model_id: str) -> Path:
        """Where a stored model's .onnx file is (content-addressed: never rewritten); past 2 GB its weights are in
        the files beside it (engine.onnx_files.model_files)."""
        return self.store.blobs.path(model_id)

    def cancel(self, job_id: str) -> None:
        """Stop the job and kill its processes; returns once they are gone (within about two seconds)."""
        with self.store.connect() as conn:
            before = jobs.stop(conn, job_id, JobState.CANCELLED, "cancelled")
        if before is None:
            self.job(job_id)  # unknown id -> WorkspaceError; an ended job stays as it ended
            return
        kill_runner(before["pid"], job_id)
        self._clear_scratch(job_id)

    def resume(self, job_id: str) -> None:
        """Run an interrupted, failed or cancelled job again: only its configurations without a row."""
        with self.store.connect() as conn:
            requeued = jobs.requeue(conn, job_id)
        if not requeued:
            state = self.job(job_id).state
            raise WorkspaceError(f"job {job_id} is {state}; only {', '.join(RESUMABLE_STATES)} jobs can be resumed")
        self._launch(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        """The job once it has ended, or as it is when `timeout` seconds have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.is_finished or (deadline is not None and time.monotonic() >= deadline):
                return job
            time.sleep(POLL_SECONDS)

    def recover(self) -> list[str]:
        """Mark active jobs whose runner is gone (dead pid, stale heartbeat) interrupted; their ids.

        Reading a job does the same for that job, so a dead runner is noticed whenever anyone looks.
        """
        with self.store.connect() as conn:
            active = [job for job in jobs.list_jobs(conn) if job.state in ACTIVE_STATES]
        return [job.id for job in active if self._notice_lost_runner(job).state is JobState.INTERRUPTED]

    # -- export history ---------------------------------------------------------------------------------------

    def record_export(self, owner: str, job_id: str | None, recipe: Recipe, figures: dict, files: dict[str, Path],
                      model_file: str) -> ExportRecord:
        """Store a written bundle's files (`model_file` among the artifacts, where a sweep's row already has it;
        the others as blobs) and record it in the history with its figures (bundle.json)."""
        stored = {name: (self.store.artifacts if name == model_file else self.store.blobs).put_copy(path)
                  for name, path in files.items()}
        with self.store.connect() as conn:
            return exports.add_export(conn, uuid.uuid4().hex[:12], owner, job_id, recipe.key(), recipe.short_name(),
                                      recipe.to_json(), figures, stored[model_file], stored)

    def exports(self, owner: str | None = None) -> list[ExportRecord]:
        """The owner's exports (owner None: everyone's), newest first."""
        with self.store.connect() as conn:
            return exports.list_exports(conn, owner)

    def export(self, export_id: str, owner: str | None = None) -> ExportRecord:
        with self.store.connect() as conn:
            found = exports.get_export(conn, export_id, owner)
        if found is None:
            raise WorkspaceError(f"no export {export_id}" + (f" for {owner}" if owner else ""))
        return found

    def export_files(self, export_id: str, owner: str | None = None) -> dict[str, Path]:
        """Where a recorded bundle's files are stored, by file name in the bundle's order."""
        record = self.export(export_id, owner)
        return {name: (self.store.artifacts if sha256 == record.model_sha256 else self.store.blobs).path(sha256)
                for name, sha256 in record.files.items()}

    # -- helpers ----------------------------------------------------------------------------------------------

    def _launch(self, job_id: str) -> None:
        pid = launch_runner(self.store, job_id)
        with self.store.connect() as conn:
            jobs.set_runner(conn, job_id, pid)

    def _notice_lost_runner(self, job: JobInfo) -> JobInfo:
        """An active job whose runner is gone becomes interrupted."""
        if not job.state.is_active or not self._runner_lost(job):
            return job
        with self.store.connect() as conn:
            before = jobs.stop(conn, job.id, JobState.INTERRUPTED,
                               f"interrupted after {job.done} of {job.total}: its runner stopped; resume to finish")
            if before is not None:
                kill_runner(before["pid"], job.id)  # a hung runner (stale heartbeat) must not go on working
                self._clear_scratch(job.id)  # its half-built artifacts; resume starts from the committed rows
            return jobs.get_job(conn, job.id)

    def _clear_scratch(self, job_id: str) -> None:
        """A stopped job's scratch space (artifacts being built), which nothing will finish any more."""
        shutil.rmtree(self.store.job_dir(job_id) / "scratch", ignore_errors=True)

    def _runner_lost(self, job: JobInfo) -> bool:
        with self.store.connect() as conn:
            pid, heartbeat = jobs.runner_pid(conn, job.id)
        stale = heartbeat is None or time.time() - heartbeat > STALE_HEARTBEAT_SECONDS
        if pid is None:  # queued, runner not launched yet: lost only if its launcher died long ago
            return stale
        return stale or not runner_is_alive(pid, job.id)

    def model(self, model_id: str, owner: str | None = None) -> ModelRecord:
        """The model if the owner may use it (their own or a shared one; owner None: anyone's)."""
        with self.store.connect() as conn:
            model = library.find_model(conn, model_id, owner)
        if model is None:
            raise WorkspaceError(f"no model {model_id} for {owner}")
        return model

    def dataset(self, dataset_id: str, owner: str | None = None) -> DatasetRecord:
        """The dataset if the owner may use it, as for `model`."""
        with self.store.connect() as conn:
            dataset = library.find_dataset(conn, dataset_id, owner)
        if dataset is None:
            raise WorkspaceError(f"no dataset {dataset_id} for {owner}")
        return dataset


def _read_upload(path: Path, missing: QuantscopeError) -> bytes:
    """The file's bytes, reading no more than one byte past the data size bound (load_dataset refuses those)."""
    if not path.is_file():
        raise type(missing)(f"{missing} {path}")
    with open(path, "rb") as file:
        return file.read(MAX_DATASET_BYTES + 1)


def _jsonable(summary: dict) -> dict:
    """Summaries hold tuples and numpy numbers; store what JSON can say."""
    return json.loads(json.dumps(summary, default=lambda value: value.tolist()))
