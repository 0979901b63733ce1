"""The work itself: typed tasks a job hands to its executor, and the worker loop that runs them.

A task is a frozen dataclass with a `run(model, dataset)` method that reuses engine.sweep's building
blocks unchanged; what it returns is typed too (`Built`, `Timed`, or the reference and ranges themselves).
A configuration that raises comes back as a failed row plus its traceback, so one bad recipe never sinks
the job.

Workers are long-lived: each loads and checks a job's model and dataset once per blob hash (`loaded`) and
reuses them for every later task of that job. This module imports onnxruntime; the runner preloads it in
its forkserver so workers start warm.
"""

from __future__ import annotations

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
from engine.model import LoadedModel, load_model
from engine.realise.calibration import CalibrationKey, CalibrationSet, Ranges, calibration_key
from engine.recipe import Recipe
from engine.sweep import Reference, build_and_evaluate, reference_for, time_artifact
from engine.text import error_line

# Tests only: when set to a recipe key, the task building that recipe (or calibrating for it) kills its own
# process with SIGKILL, standing in for a segfault or the OOM killer inside onnxruntime.
CRASH_VARIABLE = "QUANTSCOPE_TEST_CRASH_ON"
# Tests only: likewise, that task does not return (a build stuck in onnxruntime) until its process is killed, or
# until the file named by HANG_UNTIL_VARIABLE exists.
HANG_VARIABLE = "QUANTSCOPE_TEST_HANG_ON"
HANG_UNTIL_VARIABLE = "QUANTSCOPE_TEST_HANG_UNTIL"


@dataclass(frozen=True)
class JobInputs:
    """How to load a job's model and dataset: blob paths locally, the bytes themselves for a remote worker.
    The blob hashes name the pair, so a worker that has loaded it once reuses it."""

    model_sha: str
    dataset_sha: str
    model: Path | bytes
    dataset: Path | bytes
    dataset_filename: str  # its extension tells the format
    label_column: str | None = None
    slice_column: str | None = None

    @property
    def identity(self) -> tuple:
        """What the loaded pair depends on: the same bytes read the same way."""
        return (self.model_sha, self.dataset_sha, Path(self.dataset_filename).suffix.lower(), self.label_column,
                self.slice_column)

    def load(self) -> tuple[LoadedModel, Dataset]:
        model = load_model(self.model)
        dataset = load_dataset(
            self.dataset, model.summary.inputs, filename=self.dataset_filename,
            label_column=self.label_column, slice_column=self.slice_column,
        )
        return model, dataset

    def as_bytes(self) -> JobInputs:
        return replace(self, model=_read(self.model), dataset=_read(self.dataset))


def _read(source: Path | bytes) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()


# One job's model and dataset per worker process: a worker serves one job, and a Dask worker that serves
# several keeps only the latest pair, so memory stays at one copy.
_loaded: dict[tuple, tuple[LoadedModel, Dataset]] = {}


def loaded(inputs: JobInputs) -> tuple[LoadedModel, Dataset]:
    """The job's model and dataset, loaded and checked once per process and reused by its later tasks."""
    if inputs.identity not in _loaded:
        _loaded.clear()
        _loaded[inputs.identity] = inputs.load()
    return _loaded[inputs.identity]


# -- the tasks --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """A build's outcome: the row without latency, or a failed row with its traceback. A remote build sends
    its artifact's bytes back with the row."""

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

    def run(self, model: LoadedModel, dataset: Dataset) -> Reference:
        return reference_for(model, dataset, self.workdir)

    def describe(self) -> str:
        return "computing the fp32 reference"


@dataclass(frozen=True)
class CalibrateTask:
    """The activation ranges of one calibration key, for every build that shares it."""

    inputs: JobInputs
    key: CalibrationKey
    recipe: Recipe  # the first recipe waiting for these ranges

    def run(self, model: LoadedModel, dataset: Dataset) -> Ranges:
        _crash_if_asked(self.recipe)
        return CalibrationSet(dataset).ranges(model, self.recipe)

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

    def run(self, model: LoadedModel, dataset: Dataset) -> Built:
        _crash_if_asked(self.recipe)
        if self.artifact_path is not None:
            return self._build(model, dataset, self.artifact_path)
        with tempfile.TemporaryDirectory(prefix="quantscope-") as scratch:  # a remote worker shares no disk
            path = Path(scratch) / "artifact.onnx"
            built = self._build(model, dataset, path)
            return built if built.failed else replace(built, artifact_bytes=path.read_bytes())

    def _build(self, model: LoadedModel, dataset: Dataset, artifact_path: Path) -> Built:
        try:
            known = {} if self.ranges is None else {calibration_key(self.recipe): self.ranges}
            calibration = CalibrationSet(dataset, known)
            return Built(build_and_evaluate(model, dataset, self.recipe, artifact_path, self.reference, calibration))
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
    """Add the latency columns to a built row. Holds the workspace's latency lock, so timings never overlap
    (across jobs and processes)."""

    inputs: JobInputs
    position: int
    recipe: Recipe
    row: dict
    artifact_sha: str
    artifact_path: Path
    threads: int
    batch: int
    lock_path: Path
    reference: Reference

    def run(self, model: LoadedModel, dataset: Dataset) -> Timed:
        try:
            with exclusive(self.lock_path):
                return Timed({**self.row, **time_artifact(self.artifact_path, dataset, self.threads, self.batch)})
        except Exception as error:
            return Timed(self.reference.failed_row(self.recipe, error), traceback.format_exc())

    def describe(self) -> str:
        return self.recipe.short_name()


Task = ReferenceTask | CalibrateTask | BuildTask | TimeTask


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


def _exit_when_orphaned(poll_seconds: float = 0.5) -> None:
    """If the runner dies (kill -9), its forkserver exits and this process is re-parented: stop working then."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="exit-when-orphaned", daemon=True).start()
