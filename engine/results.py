"""The results row: one measured recipe. This module is its one home.

It holds the row's column names, the functions that make a row (measured, timed, failed), the table of rows
with its Pareto flags, the selectors every reader uses (measured, timed, failed, reference), the
recommendation rules, and the files a sweep writes (results.json, results.csv). The CLI, the dashboard,
the jobs and the benches read and write rows only through these names.

A row is a flat dict, JSON-friendly apart from numpy numbers and non-finite floats (see `write_results`).
Every metric of engine.metrics.METRICS that was computed is a column of its own, under its name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import pandas as pd

from engine.metrics import METRICS
from engine.onnx_files import copy_model
from engine.pareto import pareto_flags
from engine.provenance import machine_json, software_json
from engine.recipe import Recipe
from engine.text import error_line

# -- the columns -----------------------------------------------------------------------------------------------

# What was measured.
NAME = "name"  # the recipe's short name, e.g. "W4A8 static channel minmax"
DESCRIPTION = "description"  # the recipe in plain words
RECIPE = "recipe"  # the recipe's JSON
RECIPE_KEY = "recipe_key"  # Recipe.key(): the row's identity within a table
# How it was built.
REALISER = "realiser"  # which realiser built the artifact
SIMULATED = "simulated"  # True: quantize-dequantize in fp32, labelled so and never timed
ARTIFACT = "artifact"  # the artifact file's path
FLOAT_LAYERS = "float_layers"  # layers the realiser left in float
# Its size.
SIZE_BYTES = "size_bytes"  # the artifact's bytes (for a simulated recipe: the packed-integer estimate)
SIZE_IS_ESTIMATE = "size_is_estimate"
SIZE_RATIO = "size_ratio"  # size_bytes / the fp32 model's bytes
# Its scores: the primary metric, then every metric of METRICS under its own name.
TASK = "task"  # engine.metrics.Task value
METRIC_NAME = "metric_name"  # the primary metric's name, the same on every row of a table
METRIC = "metric"  # the primary metric's value
PER_SLICE = "per_slice"  # {slice: {metric: value, "rows": n}}
FIDELITY_MASK = "fidelity_mask"  # which output positions fidelity counts (engine.masking.Masking.describe)
# The same figures on each extra evaluation set (engine.shifts, --also): {name: set_figures(...)}; in results.csv
# flattened to NAME.metric, NAME.delta, NAME.<metric>...
EXTRA_SETS = "extra_sets"
# What was scored and what calibrated (engine.sweep.plan).
ROWS_SCORED = "rows_scored"  # how many validation rows every metric of the table is computed on
SCORED_ROWS = "scored_rows"  # which, in words: "rows 129..540 of the validation set"
CALIBRATION_SOURCE = "calibration_source"  # a file name or "rows 1..128 of the validation set"; None: not calibrated
CALIBRATION_NOTE = "calibration_note"  # why fewer rows than asked calibrated, when that happened
# How sure the primary metric is (engine.uncertainty): 95% intervals, seeded.
METRIC_CI_LOW, METRIC_CI_HIGH = "metric_ci_low", "metric_ci_high"
DELTA = "delta"  # the primary metric minus fp32's, on the same examples
DELTA_CI_LOW, DELTA_CI_HIGH = "delta_ci_low", "delta_ci_high"  # paired bootstrap; containing 0: no measurable change
MEASURED_WITH = "measured_with"  # JSON: the versions that computed the row (engine.provenance.software)
# Its latency and peak memory (absent on simulated and failed rows).
THREADS = "threads"  # onnxruntime intra-op threads the artifact was timed with; set on every timed row
LATENCY_BATCH = "latency_batch"  # N of the batch-N columns; None when only batch 1 was timed
LATENCY_PROTOCOL = "latency_protocol"  # engine.measure.LatencyProtocol.describe(): how the runs were chosen
MACHINE = "machine"  # JSON: the CPU and instruction sets the artifact was timed on (engine.provenance.machine)
RAM_PROTOCOL = "ram_protocol"  # engine.measure.PEAK_MEMORY_PROTOCOL, or why the peak memory was not measured


@dataclass(frozen=True)
class LatencyColumns:
    """The columns of one timed batch size (engine.measure's protocol): the median (of the block medians) and 95th
    percentile of the runs, how many runs, the median's 95% interval (covering the spread between sessions), whether
    the time cap stopped the timing before the interval was as narrow as asked, how many blocks (fresh sessions)
    were timed, the peak memory of a fresh session loading the artifact and running that batch
    (engine.measure.peak_memory), and the latency relative to fp32 timed interleaved in the same blocks
    (engine.measure.latency_ratio) with its 95% interval: the figure that holds across rows and runs on a machine
    whose speed drifts. 1 exactly on the fp32 row; None where the original could not be timed (the protocol says
    why)."""

    p50: str
    p95: str
    runs: str
    ci_low: str
    ci_high: str
    capped: str
    blocks: str
    ram: str
    vs_fp32: str
    vs_fp32_ci_low: str
    vs_fp32_ci_high: str


SINGLE_EXAMPLE = LatencyColumns("latency_b1_p50_ms", "latency_b1_p95_ms", "latency_b1_runs",
                                "latency_b1_ci_low_ms", "latency_b1_ci_high_ms", "latency_b1_capped",
                                "latency_b1_blocks", "ram_b1_peak_bytes", "latency_b1_vs_fp32",
                                "latency_b1_vs_fp32_ci_low", "latency_b1_vs_fp32_ci_high")
BATCH_N = LatencyColumns("latency_bN_p50_ms", "latency_bN_p95_ms", "latency_bN_runs",
                         "latency_bN_ci_low_ms", "latency_bN_ci_high_ms", "latency_bN_capped", "latency_bN_blocks",
                         "ram_bN_peak_bytes", "latency_bN_vs_fp32", "latency_bN_vs_fp32_ci_low",
                         "latency_bN_vs_fp32_ci_high")
LATENCY = SINGLE_EXAMPLE.p50  # the latency users compare: one example at a time, median run
RAM = SINGLE_EXAMPLE.ram  # the memory users compare: the session loaded and answering one example
# Every column a timing writes: what legitimately differs between two timings of the same artifact.
TIMING_COLUMNS = (THREADS, LATENCY_BATCH, LATENCY_PROTOCOL, MACHINE, RAM_PROTOCOL, *astuple(SINGLE_EXAMPLE),
                  *astuple(BATCH_N))
# Why a row has no numbers.
ERROR = "error"  # "TypeName: one line"
# A point of a mixed-precision curve (engine.mixed): a uniform recipe with some nodes moved to other precisions by
# the search. Absent (NaN) on every other row: `curve_rows` and `mixed_precision_rows` select by them.
MIXED_BASE = "mixed_base"  # the uniform recipe the curve starts from, its short name
MIXED_MOVES = "mixed_moves"  # how many of the search's ordered moves the point applies
MIXED_CHANGED = "mixed_changed"  # nodes the point moves from the base: the N of "N of M reverted"
MIXED_UNITS = "mixed_units"  # nodes the search could move: the M
MIXED_CHOSEN = "mixed_chosen"  # True on the point the curve's budget chose (the row of chosen.json)
# Added by `results_table`: is the row on the Pareto front of the metric against these costs?
PARETO_FRONTS = {
    "pareto_size": (METRIC, SIZE_BYTES),
    "pareto_latency": (METRIC, LATENCY),
    "pareto_ram": (METRIC, RAM),
    "pareto_3d": (METRIC, SIZE_BYTES, LATENCY),
}
PARETO_SIZE, PARETO_LATENCY, PARETO_RAM, PARETO_3D = PARETO_FRONTS

# Columns a results table always has, even when no row filled them (failed, simulated or untimed rows).
OPTIONAL_COLUMNS = (
    ARTIFACT, SIMULATED, SIZE_BYTES, SIZE_RATIO, METRIC, METRIC_CI_LOW, METRIC_CI_HIGH, DELTA, DELTA_CI_LOW,
    DELTA_CI_HIGH, FLOAT_LAYERS, PER_SLICE, EXTRA_SETS, ERROR, THREADS, LATENCY_BATCH,
    SINGLE_EXAMPLE.p50, SINGLE_EXAMPLE.p95, SINGLE_EXAMPLE.runs, SINGLE_EXAMPLE.blocks, BATCH_N.p50, BATCH_N.p95,
    SINGLE_EXAMPLE.ram, BATCH_N.ram, SINGLE_EXAMPLE.vs_fp32, SINGLE_EXAMPLE.vs_fp32_ci_low,
    SINGLE_EXAMPLE.vs_fp32_ci_high, BATCH_N.vs_fp32,
)


# -- making rows ------------------------------------------------------------------------------------------------


def identity(recipe: Recipe) -> dict:
    """The columns that say which recipe a row is about."""
    return {NAME: recipe.short_name(), DESCRIPTION: recipe.describe(), RECIPE: recipe.to_json(),
            RECIPE_KEY: recipe.key()}


def measured_row(recipe: Recipe, artifact, reference_bytes: int, task: str, metric_name: str,
                 scores: dict[str, float], per_slice: dict, sureness) -> dict:
    """A built and scored recipe: every column but latency. `artifact` is an engine.realise.Artifact,
    `sureness` an engine.uncertainty.Uncertainty of the primary metric."""
    return {
        **identity(recipe),
        REALISER: artifact.realiser,
        SIMULATED: artifact.simulated,
        ARTIFACT: str(artifact.path),
        SIZE_BYTES: artifact.size_bytes,
        SIZE_IS_ESTIMATE: artifact.size_is_estimate,
        SIZE_RATIO: artifact.size_bytes / reference_bytes,
        FLOAT_LAYERS: list(artifact.float_layers),
        TASK: task,
        METRIC_NAME: metric_name,
        METRIC: scores[metric_name],
        METRIC_CI_LOW: sureness.metric.low,
        METRIC_CI_HIGH: sureness.metric.high,
        DELTA: sureness.delta,
        DELTA_CI_LOW: sureness.delta_interval.low,
        DELTA_CI_HIGH: sureness.delta_interval.high,
        **scores,
        PER_SLICE: per_slice,
        MEASURED_WITH: software_json(),
    }


def latency_columns(threads: int, batch_n: int | None, protocol: str, timings: dict[LatencyColumns, object],
                    ratios: dict[LatencyColumns, object] | None = None) -> dict:
    """The latency columns of a timed row; `timings` maps SINGLE_EXAMPLE and/or BATCH_N to an
    engine.measure.Latency, `ratios` (where fp32 was timed beside it) to an engine.measure.LatencyRatio over fp32's,
    `protocol` says how its runs were chosen."""
    columns = {THREADS: threads, LATENCY_BATCH: batch_n, LATENCY_PROTOCOL: protocol, MACHINE: machine_json()}
    for names, latency in timings.items():
        ratio = (ratios or {}).get(names)
        columns.update({names.p50: latency.p50_ms, names.p95: latency.p95_ms, names.runs: latency.runs,
                        names.ci_low: latency.ci_low_ms, names.ci_high: latency.ci_high_ms,
                        names.capped: latency.capped, names.blocks: latency.blocks,
                        names.vs_fp32: None if ratio is None else ratio.ratio,
                        names.vs_fp32_ci_low: None if ratio is None else ratio.ci_low,
                        names.vs_fp32_ci_high: None if ratio is None else ratio.ci_high})
    return columns


def ram_columns(protocol: str, peaks: dict[LatencyColumns, int]) -> dict:
    """The peak-memory columns of a timed row: `peaks` maps SINGLE_EXAMPLE and/or BATCH_N to bytes (none when not
    measured), `protocol` says how they were measured or why not."""
    return {RAM_PROTOCOL: protocol, **{names.ram: peak for names, peak in peaks.items()}}


def latency_precision(row, names: LatencyColumns = SINGLE_EXAMPLE) -> float | None:
    """The median's 95% interval as a relative half-width (0.013 for +-1.3%); None where not timed or too few runs."""
    p50, low, high = row.get(names.p50), row.get(names.ci_low), row.get(names.ci_high)
    if any(value is None or (isinstance(value, float) and math.isnan(value)) for value in (p50, low, high)):
        return None
    return max(p50 - low, high - p50) / p50


def latency_vs_fp32(row, reference) -> float | None:
    """The row's batch-1 latency over fp32's: the ratio timed interleaved with fp32 where the row has it, else
    (rows timed without the original) the quotient of the two medians, timed at different moments; None untimed."""
    ratio = row.get(SINGLE_EXAMPLE.vs_fp32)
    if ratio is not None and not (isinstance(ratio, float) and math.isnan(ratio)):
        return float(ratio)
    ms, fp32_ms = row.get(LATENCY), None if reference is None else reference.get(LATENCY)
    if ms is None or fp32_ms is None or not (ms > 0 and fp32_ms > 0):  # also False for NaN
        return None
    return float(ms / fp32_ms)


def set_figures(rows: int, metric_name: str, scores: dict[str, float], sureness) -> dict:
    """A row's figures on one extra evaluation set, keyed like the row's own columns."""
    return {ROWS_SCORED: rows, METRIC_NAME: metric_name, METRIC: scores[metric_name], DELTA: sureness.delta,
            DELTA_CI_LOW: sureness.delta_interval.low, DELTA_CI_HIGH: sureness.delta_interval.high, **scores}


def scoring_columns(first_scored: int, validation_rows: int, calibration_source: str | None,
                    note: str | None) -> dict:
    """What a row was scored on (validation rows first_scored..validation_rows, counted from 1) and calibrated on."""
    return {ROWS_SCORED: validation_rows - first_scored + 1,
            SCORED_ROWS: f"rows {first_scored}..{validation_rows} of the validation set",
            CALIBRATION_SOURCE: calibration_source, CALIBRATION_NOTE: note}


def change_is_measurable(row) -> bool:
    """Whether the primary metric's difference to fp32 is outside the noise: its 95% interval excludes 0."""
    return not (row[DELTA_CI_LOW] <= 0 <= row[DELTA_CI_HIGH])


# A recipe "degrades under shift" when it loses, on an extra set, more than twice what it loses on the scored
# validation rows plus this share of fp32's figure there (one accuracy point at 100%), and measurably so.
SHIFT_MARGIN = 0.01


def loss(change: float, metric_name: str) -> float:
    """A change against fp32 as a loss: positive when worse, whichever way the metric points."""
    return -change if METRICS[metric_name].higher_is_better else change


def degrades_under_shift(row, name: str) -> bool:
    """Whether the recipe's loss on extra set `name` is much larger than on the clean scored rows."""
    figures = row[EXTRA_SETS][name]
    metric = figures[METRIC_NAME]
    worse_beyond_noise = (figures[DELTA_CI_HIGH] < 0) if METRICS[metric].higher_is_better else (figures[DELTA_CI_LOW] > 0)
    original = figures[METRIC] - figures[DELTA]
    clean = max(loss(row[DELTA], row[METRIC_NAME]), 0.0) if metric == row[METRIC_NAME] else 0.0
    return worse_beyond_noise and loss(figures[DELTA], metric) > 2 * clean + SHIFT_MARGIN * abs(original)


def failed_row(recipe: Recipe, task: str, metric_name: str, error: BaseException) -> dict:
    """A recipe that could not be built or measured: its identity and the error, no numbers."""
    return {**identity(recipe), TASK: task, METRIC_NAME: metric_name, ERROR: error_line(error)}


# -- the table --------------------------------------------------------------------------------------------------


def results_table(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows as a DataFrame with every optional column present (NaN where not measured) and Pareto flags."""
    table = pd.DataFrame(list(rows))
    table = table.assign(**{column: np.nan for column in OPTIONAL_COLUMNS if column not in table})
    if table.empty:
        return table
    higher_is_better = METRICS[metric_name(table)].higher_is_better
    objectives = {
        flag: {column: (higher_is_better if column == METRIC else False) for column in columns}
        for flag, columns in PARETO_FRONTS.items()
    }
    return pareto_flags(table, objectives)


def metric_name(table: pd.DataFrame) -> str:
    """The table's primary metric, e.g. top1 for classification or mae for regression."""
    return table[METRIC_NAME].iloc[0]


def measured_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows that were built and scored: a recipe onnxruntime could not build has an error and no numbers."""
    if METRIC not in table:  # every recipe failed
        return table.iloc[0:0]
    failed = table[ERROR].notna() if ERROR in table else False
    return table[~failed & table[METRIC].notna()]


def timed_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Measured rows whose artifact was timed, at batch 1, batch N or both (simulated recipes never are)."""
    measured = measured_rows(table)
    return measured[measured[THREADS].notna()]


def single_example_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Timed rows with a batch-1 latency: what latency charts and recommendations compare. A model with a
    fixed batch size above 1 is timed at that size only and has none."""
    timed = timed_rows(table)
    return timed[timed[LATENCY].notna()]


def curve_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The points of a mixed-precision curve, its uniform base included."""
    return table[table[MIXED_BASE].notna()] if MIXED_BASE in table else table.iloc[0:0]


def mixed_precision_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Curve points with at least one node moved from the uniform base: the mixed-precision recipes."""
    curve = curve_rows(table)
    return curve[curve[MIXED_CHANGED] > 0] if MIXED_CHANGED in curve else curve


def chosen_point(table: pd.DataFrame) -> pd.Series | None:
    """The curve point its budget chose; None when none met it (or the table holds no curve)."""
    if MIXED_CHOSEN not in table:
        return None
    chosen = table[table[MIXED_CHOSEN].fillna(False).astype(bool)]
    return None if chosen.empty else chosen.iloc[0]


def with_curve(table: pd.DataFrame, curve: pd.DataFrame) -> pd.DataFrame:
    """A sweep's rows and a mixed-precision curve's of the same model and data in one table, Pareto flags over
    both: the curve's points whose recipe the sweep measured too (its fp32 row, a uniform start) are the sweep's."""
    measured = set(table[RECIPE_KEY])
    added = curve[~curve[RECIPE_KEY].isin(measured)]
    records = [{key: value for key, value in row.items() if key not in PARETO_FRONTS}
               for row in [*table.to_dict(orient="records"), *added.to_dict(orient="records")]]
    return results_table(records)


def failed_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[table[ERROR].notna()] if ERROR in table else table.iloc[0:0]


def is_reference(row) -> bool:
    """Whether the row is the original fp32 model's."""
    return Recipe.from_json(row[RECIPE]).is_reference


def reference_row(table: pd.DataFrame) -> pd.Series | None:
    """The original fp32 model's row, which every other row is compared with; None if the sweep left it out."""
    for _, row in measured_rows(table).iterrows():
        if is_reference(row):
            return row
    return None


def row_for(table: pd.DataFrame, recipe_key: str) -> pd.Series:
    return table[table[RECIPE_KEY] == recipe_key].iloc[0]


def nearest_real_recipe(table: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    """What to deploy instead of a simulated recipe: the smallest real (not simulated) recipe that scores at least as
    well as `row`, or, when none does, the best-scoring real one; either is on the front of metric against size among
    real recipes. None when no real recipe was measured."""
    measured = measured_rows(table)
    real = measured[~measured[SIMULATED].astype(bool)]
    if real.empty:
        return None
    higher_is_better = METRICS[metric_name(table)].higher_is_better
    as_good = real[real[METRIC] >= row[METRIC]] if higher_is_better else real[real[METRIC] <= row[METRIC]]
    if as_good.empty:
        return real.sort_values([METRIC, SIZE_BYTES], ascending=[not higher_is_better, True], kind="stable").iloc[0]
    return as_good.sort_values([SIZE_BYTES, METRIC], ascending=[True, not higher_is_better], kind="stable").iloc[0]


def extra_set_names(table: pd.DataFrame) -> list[str]:
    """The extra evaluation sets the table's rows were scored on, in the order they were given."""
    names: dict[str, None] = {}
    for sets in table[EXTRA_SETS] if EXTRA_SETS in table else ():
        names.update(dict.fromkeys(sets if isinstance(sets, dict) else ()))
    return list(names)


def timed_batch_sizes(table: pd.DataFrame) -> tuple[int | None, int | None]:
    """(threads, N of the batch-N columns) the table's timed rows share; None where nothing says."""
    timed = timed_rows(table)
    if timed.empty:
        return None, None
    batches = timed[LATENCY_BATCH].dropna()
    return int(timed[THREADS].iloc[0]), (int(batches.iloc[0]) if not batches.empty else None)


# -- the recommendation -----------------------------------------------------------------------------------------


class Goal(Enum):
    """What a recommendation minimises, and the words its sentence uses."""

    SMALLEST = (SIZE_BYTES, "Smallest", "smaller")
    FASTEST = (LATENCY, "Fastest", "faster")

    def __init__(self, column: str, word: str, comparative: str) -> None:
        self.column = column
        self.word = word
        self.comparative = comparative


@dataclass(frozen=True)
class Recommendation:
    goal: Goal
    row: pd.Series
    reference: pd.Series
    tolerance: float  # relative, e.g. 0.01 for 1%


def within_tolerance(table: pd.DataFrame, reference: pd.Series, tolerance: float) -> pd.Series:
    """Rows whose primary metric is at most `tolerance` (relative) worse than the reference's."""
    allowed = tolerance * abs(reference[METRIC])
    if METRICS[reference[METRIC_NAME]].higher_is_better:
        return table[METRIC] >= reference[METRIC] - allowed
    return table[METRIC] <= reference[METRIC] + allowed


def recommend(table: pd.DataFrame, tolerance: float, goal: Goal) -> Recommendation | None:
    """The quantized recipe best at `goal` among those within tolerance of the original and better than it at `goal`.

    Simulated recipes are left out: their file is an fp32 simulation, nothing a user could deploy.
    None when the sweep has no fp32 reference or no real quantized recipe qualifies.
    """
    reference = reference_row(table)
    if reference is None:
        return None
    candidates = measured_rows(table)
    candidates = candidates[
        ~candidates[SIMULATED].astype(bool)
        & (candidates[RECIPE_KEY] != reference[RECIPE_KEY])
        & (candidates[goal.column] < reference[goal.column])  # also False where not timed (NaN)
    ]
    candidates = candidates[within_tolerance(candidates, reference, tolerance)]
    if candidates.empty:
        return None
    return Recommendation(goal, candidates.sort_values(goal.column, kind="stable").iloc[0], reference, tolerance)


# -- files ------------------------------------------------------------------------------------------------------


def json_value(value):
    """JSON has no infinity: write it as the string "inf" (SQNR of identical outputs); NaN as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_value(v) for v in value]
    if isinstance(value, np.generic):
        return json_value(value.item())
    return value


def row_record(row: dict, out_dir: Path) -> dict:
    """A row as its JSON files hold it: JSON values, the artifact's path relative to out_dir."""
    record = json_value(dict(row))
    if isinstance(record.get(ARTIFACT), str):
        record[ARTIFACT] = str(Path(record[ARTIFACT]).resolve().relative_to(Path(out_dir).resolve()))
    return record


def write_results(table: pd.DataFrame, out_dir: Path, stem: str = "results") -> None:
    """STEM.json (full rows, artifact paths relative to out_dir) and STEM.csv (flat columns): results.* for a sweep,
    curve.* for a mixed-precision curve."""
    out_dir = Path(out_dir)
    records = [row_record(row, out_dir) for row in table.to_dict(orient="records")]
    (out_dir / f"{stem}.json").write_text(json.dumps(records, indent=2))
    flat = table.drop(columns=[PER_SLICE, FLOAT_LAYERS, EXTRA_SETS]).assign(
        **{FLOAT_LAYERS: table[FLOAT_LAYERS].map(lambda layers: len(layers) if isinstance(layers, list) else None),
           ARTIFACT: [record[ARTIFACT] for record in records]},
    )
    on_sets = pd.DataFrame([
        {f"{name}.{key}": value for name, figures in (sets if isinstance(sets, dict) else {}).items()
         for key, value in figures.items() if key != METRIC_NAME}
        for sets in table[EXTRA_SETS]
    ], index=table.index)
    pd.concat([flat, on_sets], axis=1).to_csv(out_dir / f"{stem}.csv", index=False)


def export_results(table: pd.DataFrame, model_file: Path, out: Path) -> None:
    """The out directory a sweep writes: reference.onnx, artifacts/<slug>.onnx, results.json and results.csv. A
    model past 2 GB brings its external-data files along, beside its .onnx file, under the names it refers to."""
    (out / "artifacts").mkdir(parents=True, exist_ok=True)
    copy_model(model_file, out, "reference.onnx")
    exported = []
    for artifact, recipe in zip(table[ARTIFACT], table[RECIPE]):
        if isinstance(artifact, str):
            artifact = str(copy_model(Path(artifact), out / "artifacts", f"{Recipe.from_json(recipe).slug()}.onnx"))
        exported.append(artifact)
    write_results(table.assign(**{ARTIFACT: exported}), out)
