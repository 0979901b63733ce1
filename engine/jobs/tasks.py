"""The work itself: typed tasks a job hands to its executor, and the worker loop that runs them.

A task is a frozen dataclass with a `run(model, plan)` method (plan: engine.sweep.plan.DataPlan, the rows
that score and those that calibrate) that reuses engine.sweep's (or engine.sensitivity's) building blocks
unchanged; what it returns is typed too (`Built`, `Timed`, a CandidateResult, or the reference and ranges).
A configuration that raises comes back as a failed row plus its traceback, so one bad recipe never sinks
the job.

Workers are long-lived: each loads and checks a job's model and data once per blob hash (`loaded`) and
reuses them for every later task of that job. This module imports onnxruntime; the runner preloads it in
its forkserver so workers start warm.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from engine.data import Dataset, load_dataset
from engine.errors import is_disk_full
from engine.measure import LatencyProtocol
from engine.model import LoadedModel, load_model
from engine.onnx_files import has_external_data, packed
from engine.realise.calibration import CalibrationKey, CalibrationSet, Ranges, calibration_key
from engine.recipe import Recipe
from engine.sensitivity.compute import CandidateResult, Scoring, candidate_result, prepare_candidate
from engine.sweep import Reference, build_and_evaluate, reference_for, time_artifact
from engine.shifts import Shift
from engine.sweep.plan import DataPlan, plan_data
from engine.text import error_line

# Tests only: when set to a recipe key, the task building that recipe (or calibrating for it) kills its own
# process with SIGKILL, standing in for a segfault or the OOM killer inside onnxruntime.
CRASH_VARIABLE = "QUANTSCOPE_TEST_CRASH_ON"
# Tests only: likewise, that task does not return (a build stuck in onnxruntime) until its process is killed, or
# until the file named by HANG_UNTIL_VARIABLE exists.
HANG_VARIABLE = "QUANTSCOPE_TEST_HANG_ON"
HANG_UNTIL_VARIABLE = "QUANTSCOPE_TEST_HANG_UNTIL"


@dataclass(frozen=True)
class DataSource:
    """One stored data file and how to read it: its blob path locally, its bytes for a remote worker."""

    sha256: str  # of the file's bytes
    data: Path | bytes
    filename: str  # its extension tells the format
    label_column: str | None = None
    slice_column: str | None = None

    @property
    def identity(self) -> tuple:
        """The same bytes read the same way give the same Dataset."""
        return self.sha256, Path(self.filename).suffix.lower(), self.label_column, self.slice_column

    def load(self, model: LoadedModel) -> Dataset:
        return load_dataset(self.data, model.summary.inputs, filename=self.filename,
                            label_column=self.label_column, slice_column=self.slice_column)

    def as_bytes(self) -> DataSource:
        return replace(self, data=_read(self.data))


@dataclass(frozen=True)
class JobInputs:
    """A job's model, its validation data, an optional calibration file, and how many rows the job's static
    recipes calibrate on: what a worker loads once (`loaded`) and every task of the job reuses."""

    model_sha: str
    model: Path | bytes  # its .onnx file (with its external-data files beside it), or for a remote worker the
    # bytes of that file, or of a zip of those files (engine.onnx_files.packed)
    validation: DataSource
    calibration: DataSource | None = None
    calibration_rows_asked: int = 0  # engine.sweep.plan.calibration_rows_asked of the job's recipes
    extra_sets: tuple[tuple[str, DataSource], ...] = ()  # (name, data) of each extra evaluation set
    shifts: tuple[str, ...] = ()  # engine.shifts specs, e.g. "noise:0.1"
    scratch: Path | None = None  # where the model is unpacked or written for onnxruntime's tools (None: temp dir)

    @property
    def identity(self) -> tuple:
        calibration = None if self.calibration is None else self.calibration.identity
        extras = tuple((name, source.identity) for name, source in self.extra_sets)
        return self.model_sha, self.validation.identity, calibration, self.calibration_rows_asked, extras, self.shifts

    def load(self) -> tuple[LoadedModel, DataPlan]:
        model = load_model(self.model, scratch=self.scratch or Path(tempfile.gettempdir()))
        calibration = None if self.calibration is None else self.calibration.load(model)
        extras = {name: source.load(model) for name, source in self.extra_sets}
        return model, plan_data(self.validation.load(model), self.calibration_rows_asked, calibration, extras,
                                [Shift.parse(spec) for spec in self.shifts])

    def as_bytes(self) -> JobInputs:
        calibration = None if self.calibration is None else self.calibration.as_bytes()
        extras = tuple((name, source.as_bytes()) for name, source in self.extra_sets)
        model = self.model if isinstance(self.model, bytes) else \
            packed(self.model) if has_external_data(self.model) else self.model.read_bytes()
        return replace(self, model=model, validation=self.validation.as_bytes(), calibration=calibration,
                       extra_sets=extras, scratch=None)


def _read(source: Path | bytes) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()


# One job's inputs per worker process: a worker serves one job, and a Dask worker that serves several keeps
# only the latest, so memory stays at one copy.
_loaded: dict[tuple, tuple[LoadedModel, DataPlan]] = {}


def loaded(inputs: JobInputs) -> tuple[LoadedModel, DataPlan]:
    """The job's model and data plan, loaded and checked once per process and reused by its later tasks."""
    if inputs.identity not in _loaded:
        _loaded.clear()
        _loaded[inputs.identity] = inputs.load()
    return _loaded[inputs.identity]


# -- the tasks --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """A build's outcome: the row without latency, or a failed row with its traceback. A remote build sends
    its artifact's bytes back with the row (for an artifact with external data, a zip of its files)."""

    row: dict
    detail: str | None = None  # the traceback when `row` is a failed row
    artifact_bytes: bytes | None = None

    @property
    def failed(self) -> bool:
        return self.detail is not None


@dataclass(frozen=True)
class Timed:
    """A timing's outcome: the row with its latency columns, or a failed row with its traceback."""

    row: dict
    detail: str | None = None


@dataclass(frozen=True)
class ReferenceTask:
    """The fp32 model's outputs on the dataset, which every row is compared with."""

    inputs: JobInputs
    workdir: Path
    mask: str  # engine.masking: AUTO, NO_MASK or the mask input's name

    def run(self, model: LoadedModel, plan: DataPlan) -> Reference:
        return reference_for(model, plan.scored, self.workdir, self.mask, plan.extras)

    def describe(self) -> str:
        return "computing the fp32 reference"


@dataclass(frozen=True)
class CalibrateTask:
    """The activation ranges of one calibration key, for every build that shares it."""

    inputs: JobInputs
    key: CalibrationKey
    recipe: Recipe  # the first recipe waiting for these ranges

    def run(self, model: LoadedModel, plan: DataPlan) -> Ranges:
        _crash_if_asked(self.recipe)
        return CalibrationSet(plan.calibration).ranges(model, self.recipe)

    def describe(self) -> str:
        return f"{self.key[0]} on {self.key[1]} samples"


@dataclass(frozen=True)
class BuildTask:
    """Quantize and evaluate one recipe: its row without latency, the artifact written at `artifact_path`
    (None on a remote worker, which sends the bytes back). `ranges`: its shared activation ranges, if any."""

    inputs: JobInputs
    position: int  # the recipe's place in the job's list
    recipe: Recipe
    reference: Reference
    artifact_path: Path | None
    ranges: Ranges | None = None

    def run(self, model: LoadedModel, plan: DataPlan) -> Built:
        _crash_if_asked(self.recipe)
        if self.artifact_path is not None:
            return self._build(model, plan, self.artifact_path)
        with tempfile.TemporaryDirectory(prefix="quantscope-") as scratch:  # a remote worker shares no disk
            path = Path(scratch) / "artifact.onnx"
            built = self._build(model, plan, path)
            return built if built.failed else replace(
                built, artifact_bytes=packed(path) if has_external_data(path) else path.read_bytes())

    def _build(self, model: LoadedModel, plan: DataPlan, artifact_path: Path) -> Built:
        try:
            row = build_and_evaluate(model, plan.scored, self.recipe, artifact_path, self.reference,
                                     _calibration(plan, self.recipe, self.ranges), plan.extras)
            return Built({**row, **plan.columns(self.recipe)})
        except Exception as error:
            if is_disk_full(error):
                raise  # not this recipe's fault, and every later artifact would fail too: the job ends (see serve)
            # A failed row, and the others go on. Unlike engine.sweep.sweep this includes a RecipeError (e.g. an
            # override naming a missing layer): one bad recipe must not end a long job.
            return Built(self.reference.failed_row(self.recipe, error), traceback.format_exc())

    def describe(self) -> str:
        return self.recipe.short_name()


@dataclass(frozen=True)
class TimeTask:
    """Add the latency columns to a built row, the artifact timed beside the original model (the ratio to fp32).
    Holds the workspace's latency lock, so timings never overlap (across jobs and processes)."""

    inputs: JobInputs
    position: int
    recipe: Recipe
    row: dict
    artifact_sha: str
    artifact_path: Path
    threads: int
    batch: int
    protocol: LatencyProtocol
    lock_path: Path
    reference: Reference

    def run(self, model: LoadedModel, plan: DataPlan) -> Timed:
        try:
            fp32 = None if self.recipe.is_reference else model.file  # written before the lock: it is no timing
            with exclusive(self.lock_path):
                timed = time_artifact(self.artifact_path, plan.scored, self.threads, self.batch, self.protocol, fp32,
                                      self.recipe.is_reference)
                return Timed({**self.row, **timed})
        except Exception as error:
            return Timed(self.reference.failed_row(self.recipe, error), traceback.format_exc())

    def describe(self) -> str:
        return self.recipe.short_name()


@dataclass(frozen=True)
class SensitivityTask:
    """One candidate of a sensitivity table (engine.sensitivity): build its artifact, read its points and measure
    their cells, against the runner's fp32 reference and with the ranges its calibration key was given once."""

    inputs: JobInputs
    position: int  # the candidate's place in the table
    recipe: Recipe
    reference: Reference
    mask: str  # engine.masking: AUTO, NO_MASK or the mask input's name
    threads: int
    ranges: Ranges | None = None

    def run(self, model: LoadedModel, plan: DataPlan) -> CandidateResult:
        _crash_if_asked(self.recipe)
        with tempfile.TemporaryDirectory(prefix="quantscope-") as scratch:  # its artifacts: only its rows go back
            workdir = Path(scratch)
            scoring = Scoring.of(model, plan.scored, workdir, self.mask, self.threads, self.reference)
            candidate = prepare_candidate(model, self.recipe, workdir, _calibration(plan, self.recipe, self.ranges))
            return candidate_result(scoring, candidate, lambda message: None)

    def describe(self) -> str:
        return self.recipe.short_name()


Task = ReferenceTask | CalibrateTask | BuildTask | TimeTask | SensitivityTask


def _calibration(plan: DataPlan, recipe: Recipe, ranges: Ranges | None) -> CalibrationSet | None:
    """The plan's calibration rows, with the recipe's ranges when they were computed once for every task."""
    known = {} if ranges is None else {calibration_key(recipe): ranges}
    return None if plan.calibration is None else CalibrationSet(plan.calibration, known)


def _crash_if_asked(recipe: Recipe) -> None:
    if os.environ.get(CRASH_VARIABLE) == recipe.key():
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(HANG_VARIABLE) == recipe.key():
        release = os.environ.get(HANG_UNTIL_VARIABLE)
        while not (release and os.path.exists(release)):
            time.sleep(0.1)


def execute(task: Task):
    """Run a task against its job's inputs, loaded once per process: what local and Dask workers call."""
    return task.run(*loaded(task.inputs))


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """A lock across processes and jobs; the kernel releases it if its holder dies."""
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# -- a local worker process ------------------------------------------------------------------------------------


def serve(connection) -> None:
    """A worker process's loop: receive a task, send ("ok", value) or ("error", line, traceback), repeat until
    the runner closes the pipe. A task that found the disk full answers ("disk full", line, traceback)."""
    _exit_when_orphaned()
    while True:
        try:
            task = connection.recv()
        except EOFError:
            return
        try:
            message = ("ok", execute(task))
        except BaseException as error:
            message = ("disk full" if is_disk_full(error) else "error", error_line(error), traceback.format_exc())
        connection.send(message)
        del task, message
        _return_freed_memory()


def _return_freed_memory() -> None:
    """Hand the heap a task freed back to the system. glibc keeps freed memory for reuse, so a worker idle between
    tasks would otherwise stay as large as its largest task (a build holds a model, its artifact and a session)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


try:
    _LIBC = ctypes.CDLL("libc.so.6")  # glibc: Linux
except OSError:
    _LIBC = None


def _exit_when_orphaned(poll_seconds: float = 0.5) -> None:
    """If the runner dies (kill -9), its forkserver exits and this process is re-parented: stop working then."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="exit-when-orphaned", daemon=True).start()
