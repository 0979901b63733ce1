"""The sensitivity table: its columns, its rows (one per point and candidate) and its two files.

`sensitivity.json` holds everything: what the table was measured on (`info`), each candidate (its recipe, its
artifact's own figures), each point (its range statistics and value histogram, for the dashboard) and the rows
with each row's quantization grid. `sensitivity.csv` is the rows alone, flat. The column names below are a
contract other tools read (`quantscope mixed`, the dashboard); this module is their one home.

Deltas are "this cell's metric minus fp32's" as in engine.results; `drop` orients the loss of `only_this` so that
positive is worse whatever the metric (top-1 or MAE), for sorting by harm.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.metrics import METRICS
from engine.results import json_value
from engine.sensitivity.points import Point, QuantGrid
from engine.sensitivity.statistics import Histogram, RangeStats

SCHEMA_VERSION = 1
JSON_FILE = "sensitivity.json"
CSV_FILE = "sensitivity.csv"

# -- the columns: the contract first -------------------------------------------------------------------------
LAYER = "layer"  # node name: a weight's consumer, an activation's producer (a graph input: its own name)
KIND = "kind"  # WEIGHTS or ACTIVATIONS
OP_TYPE = "op_type"
PARAMS = "params"  # constant elements the point quantizes (0 for activations)
CANDIDATE = "candidate"  # the candidate recipe's short name
BITS = "bits"  # the point's width under this candidate
METRIC_NAME = "metric_name"  # the primary metric (accuracy with labels, else fidelity), the same on every row
FP32_METRIC = "fp32_metric"
ONLY_THIS = "only_this"  # the metric with only this point quantized
ALL_BUT_THIS = "all_but_this"  # the metric with every point of the candidate's artifact quantized but this one
OUTPUT_SQNR_DB = "output_sqnr_db"  # SQNR of the point's tensor (an activation; a weight's node output), this alone
WEIGHT_SQNR_DB = "weight_sqnr_db"  # SQNR of the dequantized weight against fp32 (weights)
METHOD = "method"  # "real": onnxruntime's quantization; "simulated": fake-quant in fp32 (in either cell)
# -- and what else a row knows
TENSOR = "tensor"  # the weight initializer or activation tensor quantized
ONLY_THIS_METHOD = "only_this_method"  # each cell's method
ALL_BUT_THIS_METHOD = "all_but_this_method"
ONLY_THIS_DELTA = "only_this_delta"  # only_this minus fp32, on the same examples
ONLY_THIS_DELTA_LOW = "only_this_delta_ci_low"  # its paired 95% interval
ONLY_THIS_DELTA_HIGH = "only_this_delta_ci_high"
DROP = "drop"  # the loss from quantizing only this point: positive is worse, in the metric's units
ALL_QUANTIZED = "all_quantized"  # the candidate's artifact with every point quantized
RECOVERY = "recovery"  # all_but_this minus all_quantized: what keeping this point in float gives back
RECOVERY_LOW = "recovery_ci_low"  # its paired 95% interval
RECOVERY_HIGH = "recovery_ci_high"
MIN = "min"  # of the fp32 values the point quantizes (activations: on the scored rows, real tokens)
MAX = "max"
ABS_P999 = "abs_p999"  # 99.9th percentile of |value|
OUTLIER_RATIO = "outlier_ratio"  # max |value| / abs_p999
NONFINITE = "nonfinite"  # infinite or NaN values among them
SCALE = "scale"  # the quantization step (per channel: the widest channel's)
ZERO_POINT = "zero_point"
NOTE = "note"  # why a cell means something else than its name says, in words
ERROR = "error"  # what failed, for a row that could not be measured
GRID = "grid"  # the row's QuantGrid as a dict (JSON only)

CONTRACT_COLUMNS = (LAYER, KIND, OP_TYPE, PARAMS, CANDIDATE, BITS, METRIC_NAME, FP32_METRIC, ONLY_THIS, ALL_BUT_THIS,
                    OUTPUT_SQNR_DB, WEIGHT_SQNR_DB, METHOD)
COLUMNS = (*CONTRACT_COLUMNS, TENSOR, ONLY_THIS_METHOD, ALL_BUT_THIS_METHOD, ONLY_THIS_DELTA, ONLY_THIS_DELTA_LOW,
           ONLY_THIS_DELTA_HIGH, DROP, ALL_QUANTIZED, RECOVERY, RECOVERY_LOW, RECOVERY_HIGH, MIN, MAX, ABS_P999,
           OUTLIER_RATIO, NONFINITE, SCALE, ZERO_POINT, NOTE, ERROR, GRID)
_NUMERIC = (FP32_METRIC, ONLY_THIS, ALL_BUT_THIS, OUTPUT_SQNR_DB, WEIGHT_SQNR_DB, ONLY_THIS_DELTA, ONLY_THIS_DELTA_LOW,
            ONLY_THIS_DELTA_HIGH, DROP, ALL_QUANTIZED, RECOVERY, RECOVERY_LOW, RECOVERY_HIGH, MIN, MAX, ABS_P999,
            OUTLIER_RATIO, SCALE)


def _identity(point: Point, candidate: str, metric_name: str) -> dict:
    grid = point.grid
    widest = grid.widest_channel() if grid is not None else None
    return {
        LAYER: point.layer, KIND: point.kind, OP_TYPE: point.op_type, PARAMS: point.params, CANDIDATE: candidate,
        BITS: point.bits, METRIC_NAME: metric_name, TENSOR: point.tensor,
        SCALE: grid.scale[widest] if grid is not None else math.nan,
        ZERO_POINT: grid.zero_point[widest] if grid is not None else None,
        GRID: grid.to_dict() if grid is not None else None,
    }


def row(point: Point, candidate: str, metric_name: str, fp32_metric: float, *,
        only_this: tuple[float, float, float, float], all_but_this: tuple[float, float, float, float],
        all_quantized: float, output_sqnr_db: float, weight_sqnr_db: float, ranges: RangeStats,
        methods: tuple[str, str], note: str | None) -> dict:
    """One measured point. `only_this`: (metric, delta, delta interval); `all_but_this`: (metric, recovery, its
    interval); `methods`: each cell's."""
    only_value, only_delta, only_low, only_high = only_this
    all_but_value, recovery, recovery_low, recovery_high = all_but_this
    sign = 1 if METRICS[metric_name].higher_is_better else -1
    return {
        **_identity(point, candidate, metric_name), FP32_METRIC: fp32_metric,
        ONLY_THIS: only_value, ONLY_THIS_DELTA: only_delta, ONLY_THIS_DELTA_LOW: only_low,
        ONLY_THIS_DELTA_HIGH: only_high, DROP: 0.0 - sign * only_delta,
        ALL_BUT_THIS: all_but_value, ALL_QUANTIZED: all_quantized, RECOVERY: recovery, RECOVERY_LOW: recovery_low,
        RECOVERY_HIGH: recovery_high, OUTPUT_SQNR_DB: output_sqnr_db, WEIGHT_SQNR_DB: weight_sqnr_db,
        MIN: ranges.min, MAX: ranges.max, ABS_P999: ranges.abs_p999, OUTLIER_RATIO: ranges.outlier_ratio,
        NONFINITE: ranges.nonfinite, METHOD: "simulated" if "simulated" in methods else "real",
        ONLY_THIS_METHOD: methods[0], ALL_BUT_THIS_METHOD: methods[1], NOTE: note, ERROR: None,
    }


def failed_row(point: Point, candidate: str, metric_name: str, error: str) -> dict:
    return {**_identity(point, candidate, metric_name), ERROR: error}


def point_identity(point: Point) -> dict:
    """What names a point in the JSON's `points` list, without its arrays."""
    return {LAYER: point.layer, KIND: point.kind, OP_TYPE: point.op_type, TENSOR: point.tensor, PARAMS: point.params}


def point_record(identity: dict, ranges: RangeStats) -> dict:
    """A point as the JSON's `points` list holds it: identity (point_identity), range statistics and histogram."""
    return {**identity, "ranges": ranges.to_dict()}


def rows_table(rows: Sequence[dict]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(COLUMNS))


@dataclass
class SensitivityTable:
    """The rows, and what they rest on."""

    info: dict  # model, rows scored and calibration (engine.sweep.plan's columns), task, metric, fp32 metric, masking
    candidates: list[dict]  # per candidate: its recipe, realiser, all_quantized with its interval, point counts
    points: list[dict]  # per point: identity, range statistics, histogram (point_record)
    rows: pd.DataFrame  # COLUMNS, one row per (point, candidate)

    def to_dict(self) -> dict:
        records = self.rows.replace({np.nan: None}).to_dict(orient="records")
        return json_value({"schema_version": SCHEMA_VERSION, "info": self.info, "candidates": self.candidates,
                           "points": self.points, "rows": records})

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """sensitivity.json and sensitivity.csv in `out_dir`."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path, csv_path = out_dir / JSON_FILE, out_dir / CSV_FILE
        json_path.write_text(json.dumps(self.to_dict(), indent=1))
        self.rows.drop(columns=[GRID]).to_csv(csv_path, index=False)
        return json_path, csv_path

    @classmethod
    def read(cls, path: Path) -> SensitivityTable:
        """A table written by `write`: the directory or its sensitivity.json."""
        path = Path(path)
        data = json.loads((path / JSON_FILE if path.is_dir() else path).read_text())
        rows = rows_table(data["rows"])
        for column in _NUMERIC:
            rows[column] = pd.to_numeric(rows[column].map(_from_json_number), errors="coerce")
        return cls(data["info"], data["candidates"], data["points"], rows)

    # -- what readers ask -----------------------------------------------------------------------------------

    def by_harm(self, candidate: str) -> pd.DataFrame:
        """The candidate's rows, the point that hurts most when quantized alone first."""
        rows = self.rows[self.rows[CANDIDATE] == candidate]
        return rows.sort_values(DROP, ascending=False, kind="stable", na_position="last")

    def describe(self, top: int = 3) -> str:
        """A few lines for a terminal: each candidate's whole-artifact figure and its most harmful points."""
        info = self.info
        lines = [f"{info['model']}: {info[METRIC_NAME]} {info[FP32_METRIC]:.4g} in fp32 on {info['rows_scored']} rows"]
        for candidate in self.candidates:
            name = candidate["candidate"]
            if candidate.get("error"):
                lines.append(f"{name}: not built: {candidate['error']}")
                continue
            rows = self.by_harm(name)
            worst = rows[rows[DROP] > 0].head(top)
            harm = ", ".join(f"{row[LAYER]} ({row[KIND]}, {-row[DROP]:+.3g})" for _, row in worst.iterrows())
            lines.append(f"{name}: all quantized {candidate['all_quantized']:.4g}, {candidate['points']} points "
                         f"(+{candidate['stand_ins']} simulated); "
                         + (f"worst alone: {harm}" if harm else "no point alone lowers the metric"))
        return "\n".join(lines)

    def ranges(self, kind: str, layer: str, tensor: str) -> RangeStats:
        record = next(p for p in self.points if (p[KIND], p[LAYER], p[TENSOR]) == (kind, layer, tensor))
        return RangeStats.from_dict({k: _from_json_number(v) for k, v in record["ranges"].items()})

    def histogram(self, kind: str, layer: str, tensor: str) -> Histogram:
        """The point's fp32 value histogram (draw `grid(...)`'s levels over it)."""
        return self.ranges(kind, layer, tensor).histogram

    def grid(self, kind: str, layer: str, tensor: str, candidate: str) -> QuantGrid | None:
        """The integer grid the candidate rounds the point's values to (None where it has none fixed ahead)."""
        match = self.rows[(self.rows[KIND] == kind) & (self.rows[LAYER] == layer) & (self.rows[TENSOR] == tensor)
                          & (self.rows[CANDIDATE] == candidate)]
        grid = match[GRID].iloc[0] if len(match) else None
        return QuantGrid(**{**grid, "scale": tuple(grid["scale"]), "zero_point": tuple(grid["zero_point"])}) \
            if isinstance(grid, dict) else None


def _from_json_number(value):
    """engine.results.json_value writes infinities as strings."""
    return {"inf": math.inf, "-inf": -math.inf}.get(value, value) if isinstance(value, str) else value

