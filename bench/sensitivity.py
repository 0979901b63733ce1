"""Sensitivity table: the fast computation against the naive one, same machine, same run, same cells.

    python bench/sensitivity.py [--model NAME] [--points L] [--threads N]

Both sides compute the table of L points (default: every point) x the CLI's two default candidates (W8A8 and
W4A8 static, per channel, minmax) on the sample's validation set, the first rows calibrating:

    naive  every cell from scratch: calibrate, quantize with the realisers, read the points, build the cell's
           model, open a session, run every scored row (engine.sensitivity.naive)
    fast   engine.sensitivity.sensitivity_table: calibrate once per calibration key, quantize once per candidate,
           then per cell build the model, open a session, run every scored row

The model defaults to the text_encoder sample when it exists, else tiny_transformer. Printed: each side's wall
seconds and seconds per cell, the ratio, and every figure of every row compared; the run fails (exit 1) unless
they are equal.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sample_models is not an installed package

from engine.data import load_dataset  # noqa: E402
from engine.model import load_model  # noqa: E402
from engine.realise import quantize  # noqa: E402
from engine.realise.calibration import CalibrationSet  # noqa: E402
from engine.sensitivity import candidates, sensitivity_table  # noqa: E402
from engine.sensitivity import table as columns  # noqa: E402
from engine.sensitivity.naive import naive_table  # noqa: E402
from engine.sensitivity.points import extract_points  # noqa: E402
from engine.sweep.plan import calibration_rows_asked, plan_data  # noqa: E402
from sample_models.catalog import SAMPLES  # noqa: E402

KEY = [columns.CANDIDATE, columns.KIND, columns.LAYER, columns.TENSOR]
FIGURES = [columns.ONLY_THIS, columns.ONLY_THIS_DELTA, columns.ONLY_THIS_DELTA_LOW, columns.ONLY_THIS_DELTA_HIGH,
           columns.ALL_BUT_THIS, columns.RECOVERY, columns.RECOVERY_LOW, columns.RECOVERY_HIGH, columns.ALL_QUANTIZED,
           columns.OUTPUT_SQNR_DB, columns.WEIGHT_SQNR_DB, columns.MIN, columns.MAX, columns.ABS_P999,
           columns.OUTLIER_RATIO, columns.NONFINITE, columns.SCALE, columns.METHOD]


def chosen_points(model, dataset, recipes, limit: int | None, workdir: Path) -> set | None:
    """The first `limit` points of each candidate in graph order (None: all)."""
    if limit is None:
        return None
    plan = plan_data(dataset, calibration_rows_asked(recipes))
    keys = set()
    for recipe in recipes:
        artifact = quantize(model, recipe, workdir / f"{recipe.slug()}.onnx", CalibrationSet(plan.calibration))
        points = extract_points(model, onnx.load(artifact.path),
                                (recipe.weights.bits, recipe.activations.bits), artifact.simulated).points
        keys |= {point.key for point in points[:limit]}
    return keys


def compare(fast, naive) -> list[str]:
    """One line per figure that differs between the two tables (none: the same numbers)."""
    a = fast.rows.sort_values(KEY).reset_index(drop=True)
    b = naive.rows.sort_values(KEY).reset_index(drop=True)
    if not a[KEY].equals(b[KEY]):
        return ["the two tables have different rows"]
    problems = []
    for column in FIGURES:
        x, y = a[column].to_numpy(), b[column].to_numpy()
        same = [(u == v) or (u != u and v != v) for u, v in zip(x, y)]  # NaN equals NaN here
        if not all(same):
            numeric = [abs(float(u) - float(v)) for u, v, s in zip(x, y, same) if not s and isinstance(u, float)]
            problems.append(f"{column}: {same.count(False)} rows differ" +
                            (f", by up to {max(numeric):.3g}" if numeric else ""))
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="text_encoder" if "text_encoder" in SAMPLES else "tiny_transformer",
                        choices=sorted(SAMPLES))
    parser.add_argument("--points", type=int, help="the first L points of each candidate (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sample = SAMPLES[args.model]
    model = load_model(sample.model_path)
    dataset = load_dataset(sample.data_path, model.summary.inputs)
    recipes = candidates()
    with tempfile.TemporaryDirectory(prefix="quantscope-bench-sensitivity-") as scratch:
        scratch = Path(scratch)
        only = chosen_points(model, dataset, recipes, args.points, scratch / "listing")
        begin = time.perf_counter()
        fast = sensitivity_table(model, dataset, recipes, scratch / "fast", threads=args.threads, only=only)
        fast_seconds = time.perf_counter() - begin
        begin = time.perf_counter()
        naive = naive_table(model, dataset, recipes, scratch / "naive", threads=args.threads, only=only)
        naive_seconds = time.perf_counter() - begin
    stand_ins = int(fast.rows[columns.NOTE].notna().sum())  # left in float by the realiser: no all_but_this cell
    cells = 2 * len(fast.rows) - stand_ins
    points = fast.rows.groupby(columns.CANDIDATE).size().to_dict()
    print(f"model {args.model}: {len(dataset)} rows ({fast.info['rows_scored']} scored), candidates "
          + ", ".join(f"{name} ({n} points)" for name, n in points.items()))
    print(f"naive  {naive_seconds:8.1f} s  {naive_seconds / cells:6.3f} s per cell")
    print(f"fast   {fast_seconds:8.1f} s  {fast_seconds / cells:6.3f} s per cell")
    print(f"ratio  {naive_seconds / fast_seconds:8.1f}x  over {cells} cells ({len(fast.rows)} rows)")
    problems = compare(fast, naive)
    failed = int(fast.rows[columns.ERROR].notna().sum())
    print(f"numbers: {'every figure of every row equal' if not problems else '; '.join(problems)}"
          + (f"; {failed} rows failed on both sides" if failed else ""))
    print(fast.describe())
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
