"""The work itself: one step of a sweep, run in a task process (local) or on a Dask worker (remote).

Each function reuses engine.sweep's building blocks unchanged. A configuration that raises comes back as
engine.sweep's failed row plus the traceback, so one bad recipe never sinks the job.

This module imports onnxruntime; the runner preloads it in its forkserver so task processes start warm.
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
from dataclasses import dataclass
from pathlib import Path

from engine.data import Dataset, load_dataset
from engine.model import LoadedModel, load_model
from engine.realise.calibration import CalibrationSet, Ranges, calibration_key
from engine.recipe import Recipe
from engine.sweep import Reference, build_and_evaluate, failed_row, reference_for, time_artifact

# Tests only: when set to a recipe key, the task building that recipe (or calibrating for it) kills its own
# process with SIGKILL, standing in for a segfault or the OOM killer inside onnxruntime.
CRASH_VARIABLE = "QUANTSCOPE_TEST_CRASH_ON"

Built = tuple[dict, str | None]  # (row, traceback when the row is a failed row)


@dataclass(frozen=True)
class JobInputs:
    """How to load a job's model and dataset: blob paths locally, the bytes themselves for a remote worker."""

    model: Path | bytes
    dataset: Path | bytes
    dataset_filename: str  # its extension tells the format
    label_column: str | None = None
    slice_column: str | None = None

    def load(self) -> tuple[LoadedModel, Dataset]:
        model = load_model(self.model)
        dataset = load_dataset(
            self.dataset, model.summary.inputs, filename=self.dataset_filename,
            label_column=self.label_column, slice_column=self.slice_column,
        )
        return model, dataset

    def as_bytes(self) -> JobInputs:
        return JobInputs(_read(self.model), _read(self.dataset), self.dataset_filename, self.label_column,
                         self.slice_column)


def _read(source: Path | bytes) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()


def compute_reference(inputs: JobInputs, workdir: Path) -> Reference:
    model, dataset = inputs.load()
    return reference_for(model, dataset, workdir)


def calibrate(inputs: JobInputs, recipe_json: str) -> Ranges:
    """The activation ranges of the recipe's calibration key, for every build that shares the key."""
    recipe = Recipe.from_json(recipe_json)
    _crash_if_asked(recipe)
    model, dataset = inputs.load()
    return CalibrationSet(dataset).ranges(model, recipe)


def build(inputs: JobInputs, recipe_json: str, artifact_path: Path, reference: Reference,
          ranges: Ranges | None = None) -> Built:
    """Quantize and evaluate one recipe: its row without latency, the artifact written at artifact_path.
    `ranges`: its activation ranges, computed by `calibrate`, when it has calibrated activations."""
    recipe = Recipe.from_json(recipe_json)
    _crash_if_asked(recipe)
    try:
        model, dataset = inputs.load()
        known = {calibration_key(recipe): ranges} if ranges is not None else {}
        calibration = CalibrationSet(dataset, known)
        return build_and_evaluate(model, dataset, recipe, Path(artifact_path), reference, calibration), None
    except Exception as error:
        # A failed row, and the others go on. Unlike engine.sweep.sweep this includes a RecipeError (e.g. an
        # override naming a missing layer): one bad recipe must not end a long job.
        return failed_row(recipe, reference, error), traceback.format_exc()


def _crash_if_asked(recipe: Recipe) -> None:
    if os.environ.get(CRASH_VARIABLE) == recipe.key():
        os.kill(os.getpid(), signal.SIGKILL)


def build_remote(inputs: JobInputs, recipe_json: str, reference: Reference,
                 ranges: Ranges | None) -> tuple[dict, str | None, bytes | None]:
    """`build` on a Dask worker, which shares no disk with the runner: the artifact comes back as bytes."""
    with tempfile.TemporaryDirectory(prefix="quantscope-") as scratch:
        artifact_path = Path(scratch) / "artifact.onnx"
        row, detail = build(inputs, recipe_json, artifact_path, reference, ranges)
        return row, detail, artifact_path.read_bytes() if detail is None else None


def time_row(inputs: JobInputs, row: dict, artifact_path: Path, threads: int, batch: int,
             lock_path: Path, reference: Reference) -> Built:
    """Add the latency columns to a built row. Holds the workspace's latency lock, so timings never overlap."""
    try:
        _, dataset = inputs.load()
        with exclusive(lock_path):
            return {**row, **time_artifact(artifact_path, dataset, threads, batch)}, None
    except Exception as error:
        return failed_row(Recipe.from_json(row["recipe"]), reference, error), traceback.format_exc()


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """A lock across processes and jobs; the kernel releases it if its holder dies."""
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# -- running a task in its own process ------------------------------------------------------------------------


def run_in_process(connection, function, args: tuple) -> None:
    """A task process's entry point: run `function`, send ("ok", value) or ("error", line, traceback)."""
    _exit_when_orphaned()
    try:
        message = ("ok", function(*args))
    except BaseException as error:
        text = str(error).strip()
        line = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
        message = ("error", line, traceback.format_exc())
    connection.send(message)
    connection.close()


def _exit_when_orphaned(poll_seconds: float = 0.5) -> None:
    """If the runner dies (kill -9), its forkserver exits and this process is re-parented: stop working then."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="exit-when-orphaned", daemon=True).start()
