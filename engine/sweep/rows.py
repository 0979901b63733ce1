"""One row of a sweep: the fp32 reference, then build, score and time one recipe's artifact.

Each row is measured on the artifact a user would download: size is that file's bytes (or, for a
simulated recipe, the labelled packed-integer estimate), metrics are that file's outputs on the whole
validation set, latency is onnxruntime running that file, peak memory a fresh onnxruntime session loading and
running it. Simulated rows get neither.
The row's columns are engine.results'; the job system runs these same steps in its workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from engine import results
from engine.data import Dataset
from engine.measure import (
    ADAPTIVE, PEAK_MEMORY_PROTOCOL, SAME_AS_REFERENCE, LatencyProtocol, MemoryNotMeasured, batch_is_dynamic,
    latency_feed, latency_ratio, measure_latencies, measure_latency, open_session, peak_memory, predict,
)
from engine.metrics import Task, detect_task, evaluate, primary_metric
from engine.model import LoadedModel
from engine.onnx_files import files_bytes
from engine.realise import quantize
from engine.realise.calibration import CalibrationSet
from engine.masking import AUTO, Masking, apply_mask, choose_masking
from engine.recipe import Recipe
from engine.text import error_line
from engine.uncertainty import uncertainty

DEFAULT_LATENCY_BATCH = 32


class _SharedOutput:
    """For a reference whose `output` was saved to the .npy file `output_file`: the output is memory-mapped from
    it, and a pickle (a task on its way to a worker) carries the path, not the array, so the workers that read it
    share one copy of its pages instead of each unpickling its own."""

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if state.get("output_file") is not None:
            state["output"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        if state.get("output_file") is not None:
            state["output"] = np.load(state["output_file"], mmap_mode="r")
        self.__dict__.update(state)


@dataclass(frozen=True)
class SetReference(_SharedOutput):
    """The original model on one extra evaluation set: its outputs, the set's task and primary metric."""

    output: np.ndarray
    task: Task
    metric: str
    output_file: Path | None = None

    def in_memory(self) -> SetReference:
        return replace(self, output=np.array(self.output), output_file=None)


@dataclass(frozen=True)
class Reference(_SharedOutput):
    """What every quantized row is compared with: the original model's outputs and size, which output
    positions fidelity counts, and its outputs on each extra evaluation set."""

    output: np.ndarray
    task: Task
    metric: str  # the primary metric's name
    size_bytes: int
    masking: Masking
    extras: dict[str, SetReference] = field(default_factory=dict)
    output_file: Path | None = None

    def failed_row(self, recipe: Recipe, error: BaseException) -> dict:
        """The row of a recipe that could not be built or measured, in this reference's table."""
        return results.failed_row(recipe, self.task.value, self.metric, error)

    def in_memory(self) -> Reference:
        """The same reference with its outputs in memory, for a worker that shares no disk with this one."""
        return replace(self, output=np.array(self.output), output_file=None,
                       extras={name: extra.in_memory() for name, extra in self.extras.items()})


def reference_for(model: LoadedModel, dataset: Dataset, workdir: Path, mask: str = AUTO,
                  extras: dict[str, Dataset] | None = None) -> Reference:
    """The fp32 model's outputs on `dataset` and on each extra set; `mask` is engine.masking's AUTO, NO_MASK or
    a mask input's name. The outputs are saved in `workdir`/reference_outputs and memory-mapped from there."""
    path = Path(workdir) / "reference.onnx"
    outputs = Path(workdir) / "reference_outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    model.save(path)
    session = open_session(path)
    output, output_file = _saved(predict(session, dataset), outputs / "scored.npy")
    task = detect_task(output, dataset.labels)
    on_sets = {name: _set_reference(*_saved(predict(session, data), outputs / f"set{index}.npy"), data)
               for index, (name, data) in enumerate((extras or {}).items())}
    return Reference(output, task, primary_metric(task, output), files_bytes(path),
                     choose_masking(dataset, output, mask), on_sets, output_file)


def _saved(output: np.ndarray, path: Path) -> tuple[np.ndarray, Path]:
    """The output written to `path` and memory-mapped back (the computed copy is let go of), and the path."""
    np.save(path, output)
    return np.load(path, mmap_mode="r"), path


def _set_reference(output: np.ndarray, output_file: Path, data: Dataset) -> SetReference:
    task = detect_task(output, data.labels)
    return SetReference(output, task, primary_metric(task, output), output_file)


def score_output(reference: np.ndarray, output: np.ndarray, data: Dataset, task: Task, metric: str, masking: Masking,
                 by_slice: bool = True):
    """(evaluation, uncertainty) of `output` against the fp32 `reference` on `data`."""
    mask = masking.mask(data)
    evaluation = evaluate(reference, output, data.labels, data.slices if by_slice else None, task, mask)
    return evaluation, uncertainty(metric, apply_mask(reference, mask), apply_mask(output, mask), data.labels)


def build_and_evaluate(
    model: LoadedModel,
    dataset: Dataset,
    recipe: Recipe,
    artifact_path: Path,
    reference: Reference,
    calibration: CalibrationSet | None = None,
    extras: dict[str, Dataset] | None = None,
) -> dict:
    """Realise the recipe and score its artifact on `dataset` and on each extra set: every column but latency.

    Calibration comes from `calibration` (ranges shared with other recipes), else from the dataset."""
    artifact = quantize(model, recipe, artifact_path, calibration=calibration or dataset)
    session = None if recipe.is_reference else open_session(artifact.path)

    def outputs(data: Dataset, original: np.ndarray) -> np.ndarray:
        # The fp32 artifact has the very bytes the reference was computed on: its outputs are already known.
        return original if session is None else predict(session, data)

    evaluation, sureness = score_output(reference.output, outputs(dataset, reference.output), dataset, reference.task,
                                   reference.metric, reference.masking)
    row = results.measured_row(recipe, artifact, reference.size_bytes, reference.task.value, reference.metric,
                               {**evaluation.metrics, **evaluation.fidelity}, evaluation.per_slice, sureness)
    on_sets = {}
    for name, data in (extras or {}).items():
        original = reference.extras[name]
        scored, sure = score_output(original.output, outputs(data, original.output), data, original.task,
                               original.metric, reference.masking, by_slice=False)
        on_sets[name] = results.set_figures(len(data), original.metric, {**scored.metrics, **scored.fidelity}, sure)
    return {**row, results.FIDELITY_MASK: reference.masking.describe(), results.EXTRA_SETS: on_sets}


def time_artifact(artifact_path: Path | str, dataset: Dataset, threads: int, batch: int | None,
                  protocol: LatencyProtocol = ADAPTIVE, fp32: Path | str | None = None,
                  is_fp32: bool = False) -> dict:
    """Latency and peak-memory columns at batch 1 and, unless `batch` is None, at `batch`; nothing else may run
    meanwhile.

    The artifact is timed together with `fp32`, the original model (engine.measure.measure_latencies: a fresh
    session on each in every block, runs interleaved), so each size also gets the latency relative to fp32's,
    which the machine's drift does not move. `is_fp32`: the artifact is the original itself, timed alone, ratio 1
    exactly. Without `fp32`, or if onnxruntime cannot open it, the ratio columns stay empty and the protocol says
    why; the artifact is timed alone then.

    A model with a fixed batch size is timed at that size only: as batch 1 if it is 1, else as batch N
    (with latency_batch saying N), leaving the other columns empty.
    """
    session = open_session(artifact_path, threads)  # to read the batch size: the protocol opens its own to time
    if batch_is_dynamic(session):
        sizes = {results.SINGLE_EXAMPLE: 1} | ({results.BATCH_N: batch} if batch else {})
    else:
        fixed = session.get_inputs()[0].shape[0]
        sizes = {results.SINGLE_EXAMPLE: 1} if fixed == 1 else {results.BATCH_N: fixed}
    del session
    feeds = {columns: latency_feed(dataset, size) for columns, size in sizes.items()}
    beside, how = _fp32_beside(fp32, threads) if not is_fp32 else (None, "the fp32 model itself: ratio 1, timed alone")
    timings, ratios = {}, {}
    for columns, feed in feeds.items():
        if beside is None:
            timings[columns] = measure_latency(artifact_path, feed, threads, protocol)
            ratios[columns] = SAME_AS_REFERENCE if is_fp32 else None
        else:
            timed = measure_latencies({"artifact": artifact_path, "fp32": beside}, feed, threads, protocol)
            timings[columns] = timed["artifact"]
            ratios[columns] = latency_ratio(timed["artifact"], timed["fp32"])
    try:
        peaks = dict(zip(feeds, peak_memory(artifact_path, list(feeds.values()), threads)))
        ram = results.ram_columns(PEAK_MEMORY_PROTOCOL, peaks)
    except MemoryNotMeasured as reason:
        ram = results.ram_columns(str(reason), {})
    described = f"{protocol.describe()}; vs fp32: {how}"
    return {**results.latency_columns(threads, sizes.get(results.BATCH_N), described, timings, ratios), **ram}


def _fp32_beside(fp32: Path | str | None, threads: int) -> tuple[Path | str | None, str]:
    """The original model to time beside an artifact, or None; and how the ratio to fp32 was had, or why not."""
    if fp32 is None:
        return None, "not measured (no original model given)"
    try:
        open_session(fp32, threads)
    except Exception as error:  # the row keeps its own latency; only the comparison is lost
        return None, f"not measured (onnxruntime cannot open the original model: {error_line(error)})"
    return fp32, ("fp32 timed interleaved in the same blocks (a fresh session on each per block, the order "
                  "alternating; the cap is per model, so this timing takes up to twice the cap); ratio = median of "
                  "the per-block ratios, its 95% interval from their spread")


def measure_recipe(
    model: LoadedModel,
    dataset: Dataset,
    recipe: Recipe,
    out_dir: Path,
    reference: Reference,
    threads: int = 1,
    batch: int | None = DEFAULT_LATENCY_BATCH,
    calibration: CalibrationSet | None = None,
    protocol: LatencyProtocol = ADAPTIVE,
    extras: dict[str, Dataset] | None = None,
    timed: bool = True,
) -> dict:
    """One complete row: build, evaluate, and time the artifact (simulated artifacts are not timed; nor is any
    with `timed` False, for a caller that times its own way)."""
    artifact_path = Path(out_dir) / "artifacts" / f"{recipe.slug()}.onnx"
    row = build_and_evaluate(model, dataset, recipe, artifact_path, reference, calibration, extras)
    if timed and not row[results.SIMULATED]:
        original = None if recipe.is_reference else model.file
        row.update(time_artifact(artifact_path, dataset, threads, batch, protocol, original, recipe.is_reference))
    return row
