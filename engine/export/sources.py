"""Where a bundle's row comes from: a sweep job's stored row, or a recipe measured now the way a sweep measures it.

`measure_for_export` runs the in-process sweep (engine.sweep.sweep) on fp32 and the recipe: the same data plan
(which rows score, which calibrate), the same reference, build, scoring and timing as any sweep, so the row it
exports is the row a sweep of that recipe shows, to the last digit of its metric. `source_from_job` takes a
finished job's stored row and the artifact bytes it was measured on, never a rebuild.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from engine import results
from engine.data import Dataset, load_dataset
from engine.errors import RecipeError, WorkspaceError
from engine.export.bundle import DataFile, ExportSource
from engine.masking import AUTO
from engine.measure import ADAPTIVE, capped_at
from engine.model import load_model
from engine.recipe import Recipe
from engine.store.blobs import sha256_file
from engine.sweep import DEFAULT_LATENCY_BATCH, sweep

MIN_KEY_PREFIX = 6  # characters of a recipe key that may name a row


@dataclass(frozen=True)
class MeasureOptions:
    """How to read the data and measure, as `quantscope sweep` takes them."""

    label_column: str | None = None
    slice_column: str | None = None
    calibration_data: Path | None = None  # static recipes calibrate on it; else on held-out validation rows
    mask: str = AUTO  # which output positions fidelity counts (engine.masking)
    threads: int = 1
    batch: int | None = DEFAULT_LATENCY_BATCH  # None: time single examples only
    latency_cap: float = ADAPTIVE.cap_seconds  # seconds of timing per artifact and batch size (engine.measure)


def _data_file(role: str, path: Path, rows: int, options: MeasureOptions) -> DataFile:
    return DataFile(role, path.name, sha256_file(path), path.stat().st_size, rows, options.label_column,
                    options.slice_column)


@dataclass(frozen=True)
class Measured:
    source: ExportSource  # the recipe's row beside fp32's, and what they rest on
    data: Dataset  # the validation data as it was read


def measure_for_export(model_path: Path, data_path: Path, recipe: Recipe, workdir: Path,
                       options: MeasureOptions = MeasureOptions(), timed: bool = True,
                       progress: bool = False) -> Measured:
    """fp32 and `recipe` measured by engine.sweep.sweep in `workdir` (timed unless `timed` is False; a tqdm bar on
    stderr with `progress`). Raises RecipeError when the recipe (or the original) could not be built or measured."""
    model_path, data_path = Path(model_path), Path(data_path)
    model = load_model(model_path)
    read = dict(filename=None, label_column=options.label_column, slice_column=options.slice_column)
    dataset = load_dataset(data_path, model.summary.inputs, **read)
    calibration = None if options.calibration_data is None else load_dataset(options.calibration_data,
                                                                              model.summary.inputs, **read)
    recipes = list({candidate.key(): candidate for candidate in (Recipe.fp32(), recipe)}.values())
    with tqdm(total=len(recipes), desc=model_path.name, unit="recipe", leave=False, disable=not progress) as bar:
        def advance(done: int, total: int, message: str) -> None:
            bar.n = done
            bar.set_postfix_str(message)
            bar.refresh()

        table = sweep(model, dataset, recipes, workdir, options.threads, options.batch, progress=advance,
                      calibration_data=calibration, mask=options.mask, timed=timed,
                      protocol=capped_at(options.latency_cap))
    failed = results.failed_rows(table)
    if not failed.empty:
        first = failed.iloc[0]
        raise RecipeError(f"{first[results.NAME]} could not be built or measured: {first[results.ERROR]}")
    row = results.row_for(table, recipe.key())
    files = [_data_file("validation", data_path, len(dataset), options)]
    if calibration is not None:
        files.append(_data_file("calibration", Path(options.calibration_data), len(calibration), options))
    source = ExportSource(table, row, Path(row[results.ARTIFACT]), model_path.name, sha256_file(model_path),
                          int(results.reference_row(table)[results.SIZE_BYTES]), tuple(files), options.mask,
                          measured_at=time.time())
    return Measured(source, dataset)


def find_row(table: pd.DataFrame, choice: str, job_id: str) -> pd.Series:
    """The measured row a user names by its recipe key, a key's first characters or the recipe's name."""
    measured = results.measured_rows(table)
    keys = measured[results.RECIPE_KEY].astype(str)
    exact = measured[(keys == choice) | (measured[results.NAME] == choice)]
    found = exact if not exact.empty else (
        measured[keys.str.startswith(choice)] if len(choice) >= MIN_KEY_PREFIX else exact)
    if len(found) == 1:
        return found.iloc[0]
    listed = "; ".join(f"{key} ({name})" for key, name in zip(keys, measured[results.NAME]))
    how = "matches several" if len(found) > 1 else "matches no"
    raise WorkspaceError(f"{choice!r} {how} measured row of job {job_id}; its rows: {listed}")


def source_from_job(workspace, job_id: str, choice: str) -> ExportSource:
    """A sweep job's row (named as `find_row` takes it) with the artifact it was measured on."""
    job = workspace.job(job_id)
    table = workspace.results(job_id)
    row = find_row(table, choice, job_id)
    model = workspace.model(job.model_id)
    params = job.params

    def data_file(role: str, dataset_id: str) -> DataFile:
        record = workspace.dataset(dataset_id)
        return DataFile(role, record.filename, record.sha256, record.bytes, record.summary["rows"],
                        record.label_column, record.slice_column)

    files = [data_file("validation", job.dataset_id)]
    if params.get("calibration_dataset"):
        files.append(data_file("calibration", params["calibration_dataset"]))
    files += [data_file(name, dataset_id) for name, dataset_id in params.get("extra_sets", ())]
    reference = results.reference_row(table)
    base_bytes = model.bytes if reference is None else int(reference[results.SIZE_BYTES])  # what size_ratio divides by
    return ExportSource(table, row, workspace.artifact_path(job_id, row[results.RECIPE_KEY]), model.name, model.id,
                        base_bytes, tuple(files), params.get("mask", AUTO), tuple(params.get("shifts", ())),
                        job_id=job_id, measured_at=job.finished)
