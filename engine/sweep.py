"""A sweep: many recipes on one (model, dataset), one measured row per recipe, Pareto fronts flagged.

Each row is measured on the artifact a user would download: size is that file's bytes (or, for a
simulated recipe, the labelled packed-integer estimate), metrics are that file's outputs on the whole
validation set, latency is onnxruntime running that file. Simulated rows get no latency.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.data import Dataset
from engine.errors import QuantscopeError
from engine.measure import batch_is_dynamic, latency_feed, measure_latency, open_session, predict
from engine.metrics import METRICS, Task, detect_task, evaluate, primary_metric
from engine.model import LoadedModel
from engine.pareto import pareto_flags
from engine.realise import quantize
from engine.realise.calibration import CalibrationSet
from engine.recipe import ActivationSpec, Calibration, Granularity, Mode, Recipe, WeightSpec, calibration_applies

DEFAULT_LATENCY_BATCH = 32
PARETO_FRONTS = {
    "pareto_size": ("metric", "size_bytes"),
    "pareto_latency": ("metric", "latency_b1_p50_ms"),
    "pareto_3d": ("metric", "size_bytes", "latency_b1_p50_ms"),
}

Progress = Callable[[int, int, str], None]  # (done, total, message)


def default_grid() -> list[Recipe]:
    """fp32, fp16, W8A8 static per-tensor and per-channel, W8 dynamic, W4A8 per-channel,
    W4 weight-only in blocks of 32 and 128, and simulated W3 and W2 per-channel."""
    a8 = ActivationSpec(bits=8)
    return [
        Recipe.fp32(),
        Recipe.fp16(),
        Recipe(WeightSpec(8, Granularity.TENSOR), a8, Mode.STATIC),
        Recipe(WeightSpec(8, Granularity.CHANNEL), a8, Mode.STATIC),
        Recipe(WeightSpec(8, Granularity.CHANNEL), a8, Mode.DYNAMIC),
        Recipe(WeightSpec(4, Granularity.CHANNEL), a8, Mode.STATIC),
        Recipe(WeightSpec(4, Granularity.GROUP, group_size=32), mode=Mode.WEIGHT_ONLY),
        Recipe(WeightSpec(4, Granularity.GROUP, group_size=128), mode=Mode.WEIGHT_ONLY),
        Recipe(WeightSpec(3, Granularity.CHANNEL), mode=Mode.WEIGHT_ONLY),
        Recipe(WeightSpec(2, Granularity.CHANNEL), mode=Mode.WEIGHT_ONLY),
    ]


def grid(
    weight_bits: Iterable[int],
    granularities: Iterable[Granularity | str],
    activation_bits: Iterable[int | None],
    calibrations: Iterable[Calibration | str] = (Calibration.MINMAX,),
    group_size: int = 128,
    include_reference: bool = True,
) -> list[Recipe]:
    """Every consistent combination: no activation bits -> weight-only, otherwise static. A calibration
    that does not apply to an activation width (entropy at 16 bits) is left out of that width."""
    recipes = [Recipe.fp32()] if include_reference else []
    for bits, granularity, act_bits, calibration in itertools.product(
        weight_bits, granularities, activation_bits, calibrations
    ):
        if bits in (16, 32):
            recipe = Recipe(WeightSpec(bits))
        elif act_bits is None:
            recipe = Recipe(WeightSpec(bits, granularity, group_size), mode=Mode.WEIGHT_ONLY)
        elif calibration_applies(act_bits, calibration):
            recipe = Recipe(WeightSpec(bits, granularity, group_size), ActivationSpec(act_bits, calibration), Mode.STATIC)
        else:
            continue
        if recipe not in recipes:
            recipes.append(recipe)
    return recipes


@dataclass(frozen=True)
class Reference:
    """What every quantized row is compared with: the original model's outputs and size."""

    output: np.ndarray
    task: Task
    metric: str  # the primary metric's name
    size_bytes: int


def reference_for(model: LoadedModel, dataset: Dataset, workdir: Path) -> Reference:
    path = Path(workdir) / "reference.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.serialized())
    output = predict(open_session(path), dataset)
    task = detect_task(output, dataset.labels)
    return Reference(output, task, primary_metric(task, output), path.stat().st_size)


def build_and_evaluate(
    model: LoadedModel,
    dataset: Dataset,
    recipe: Recipe,
    artifact_path: Path,
    reference: Reference,
    calibration: CalibrationSet | None = None,
) -> dict:
    """Realise the recipe and score its artifact on the whole validation set: every column but latency.

    Calibration comes from `calibration` (ranges shared with other recipes), else from the dataset."""
    artifact = quantize(model, recipe, artifact_path, calibration=calibration or dataset)
    # The fp32 artifact has the very bytes the reference was computed on: its outputs are already known.
    output = reference.output if recipe.is_reference else predict(open_session(artifact.path), dataset)
    evaluation = evaluate(reference.output, output, dataset.labels, dataset.slices, task=reference.task)
    scores = {**evaluation.metrics, **evaluation.fidelity}
    return {
        "name": recipe.short_name(),
        "description": recipe.describe(),
        "recipe": recipe.to_json(),
        "recipe_key": recipe.key(),
        "realiser": artifact.realiser,
        "simulated": artifact.simulated,
        "artifact": str(artifact.path),
        "size_bytes": artifact.size_bytes,
        "size_is_estimate": artifact.size_is_estimate,
        "size_ratio": artifact.size_bytes / reference.size_bytes,
        "float_layers": list(artifact.float_layers),
        "task": reference.task.value,
        "metric_name": reference.metric,
        "metric": scores[reference.metric],
        **scores,
        "per_slice": evaluation.per_slice,
    }


def time_artifact(artifact_path: Path | str, dataset: Dataset, threads: int, batch: int) -> dict:
    """Latency columns at batch 1 and at `batch`; run these one at a time so timings do not disturb each other.

    A model with a fixed batch size is timed at that size only: as batch 1 if it is 1, else as batch N
    (with latency_batch saying N), leaving the other columns empty.
    """
    session = open_session(artifact_path, threads)
    if batch_is_dynamic(session):
        sizes = {"b1": 1, "bN": batch}
    else:
        fixed = session.get_inputs()[0].shape[0]
        sizes = {"b1": 1} if fixed == 1 else {"bN": fixed}
    columns = {"threads": threads, "latency_batch": sizes.get("bN")}
    for label, size in sizes.items():
        latency = measure_latency(session, latency_feed(dataset, size), threads)
        columns[f"latency_{label}_p50_ms"] = latency.p50_ms
        columns[f"latency_{label}_p95_ms"] = latency.p95_ms
        columns[f"latency_{label}_runs"] = latency.runs
    return columns


def measure_recipe(
    model: LoadedModel,
    dataset: Dataset,
    recipe: Recipe,
    out_dir: Path,
    reference: Reference,
    threads: int = 1,
    batch: int = DEFAULT_LATENCY_BATCH,
    calibration: CalibrationSet | None = None,
) -> dict:
    """One complete row: build, evaluate, and time the artifact (simulated artifacts are not timed)."""
    artifact_path = Path(out_dir) / "artifacts" / f"{recipe.slug()}.onnx"
    row = build_and_evaluate(model, dataset, recipe, artifact_path, reference, calibration)
    if not row["simulated"]:
        row.update(time_artifact(artifact_path, dataset, threads, batch))
    return row


def sweep(
    model: LoadedModel,
    dataset: Dataset,
    recipes: Sequence[Recipe],
    out_dir: Path,
    threads: int = 1,
    batch: int = DEFAULT_LATENCY_BATCH,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Measure every recipe, one after another, in this process. The job system runs the same steps in workers.

    Recipes that calibrate alike share their activation ranges, computed once."""
    out_dir = Path(out_dir)
    reference = reference_for(model, dataset, out_dir)
    calibration = CalibrationSet(dataset)
    rows = []
    for done, recipe in enumerate(recipes):
        if progress:
            progress(done, len(recipes), recipe.short_name())
        try:
            rows.append(measure_recipe(model, dataset, recipe, out_dir, reference, threads, batch, calibration))
        except QuantscopeError:
            raise
        except Exception as error:  # one recipe onnxruntime cannot build must not sink the others
            rows.append(failed_row(recipe, reference, error))
    if progress:
        progress(len(recipes), len(recipes), "done")
    return results_table(rows)


def failed_row(recipe: Recipe, reference: Reference, error: BaseException) -> dict:
    """A row for a recipe that could not be built or measured: its identity and the error, no numbers."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return {
        "name": recipe.short_name(),
        "description": recipe.describe(),
        "recipe": recipe.to_json(),
        "recipe_key": recipe.key(),
        "task": reference.task.value,
        "metric_name": reference.metric,
        "error": f"{type(error).__name__}: {message}",
    }


# Columns a results table always has, even when no row filled them (failed, simulated or untimed rows).
OPTIONAL_COLUMNS = (
    "artifact", "simulated", "size_bytes", "size_ratio", "metric", "float_layers", "per_slice", "error",
    "threads", "latency_batch", "latency_b1_p50_ms", "latency_b1_p95_ms", "latency_bN_p50_ms", "latency_bN_p95_ms",
)


def results_table(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows as a DataFrame with every optional column present (NaN where not measured) and Pareto flags."""
    table = pd.DataFrame(list(rows))
    table = table.assign(**{column: np.nan for column in OPTIONAL_COLUMNS if column not in table})
    if table.empty:
        return table
    higher_is_better = METRICS[table["metric_name"].iloc[0]].higher_is_better
    objectives = {
        flag: {column: (higher_is_better if column == "metric" else False) for column in columns}
        for flag, columns in PARETO_FRONTS.items()
    }
    return pareto_flags(table, objectives)


def _json_value(value):
    """JSON has no infinity: write it as the string "inf" (SQNR of identical outputs); NaN as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, np.generic):
        return _json_value(value.item())
    return value


def write_results(table: pd.DataFrame, out_dir: Path) -> None:
    """results.json (full rows, artifact paths relative to out_dir) and results.csv (flat columns)."""
    out_dir = Path(out_dir)
    records = [_json_value(row) for row in table.to_dict(orient="records")]
    for record in records:
        if isinstance(record["artifact"], str):
            record["artifact"] = str(Path(record["artifact"]).resolve().relative_to(out_dir.resolve()))
    (out_dir / "results.json").write_text(json.dumps(records, indent=2))
    flat = table.drop(columns=["per_slice", "float_layers"]).assign(
        float_layers=table["float_layers"].map(lambda layers: len(layers) if isinstance(layers, list) else None),
        artifact=[record["artifact"] for record in records],
    )
    flat.to_csv(out_dir / "results.csv", index=False)
