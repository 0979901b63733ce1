"""Sweep throughput: the job system against the one-after-another loop, same machine, same run.

    python bench/sweep_throughput.py [--model wide_cnn] [--rounds 1] [--baseline REV]

Both sides measure the same 12 configurations (the default grid plus W8A8 per-channel with percentile and
entropy calibration) end to end, from the model and data files to the finished table:

    naive     for each recipe, from scratch: calibrate, quantize to a file, open a session, evaluate, time it
              (engine.sweep's build_and_evaluate and time_artifact on the rows a sweep scores; the fp32
              reference is computed once)
    jobs      an empty workspace: add the model and data, submit the sweep, wait, read the table
    baseline  with --baseline REV: the same jobs side run by git revision REV's code (checked out in a
              temporary directory), in the same rounds, so an older job system's figure stands beside today's

The job system may go faster only honestly: builds run in parallel on the cores, static recipes that
calibrate alike share one calibration, there is no result cache to hit (the workspace starts empty), and
every artifact is timed alone with engine.measure's protocol. Printed per round:
  - the floor for any executor doing this work: reference + builds / cores + timings (timings exclusive),
    from the naive loop's own step times, and the job system's wall time against it;
  - latency p50, jobs / naive, over every timed row and batch size (undisturbed timing keeps it near 1; the
    machine's speed drifting between the two sides' timings moves it too), the same for the latency relative to
    fp32 timed interleaved with it (the drift cancels within each side's blocks: the figure that should hold), and
    each side against the same artifacts timed alone, one fresh process each (bench/time_alone.py), outside
    both sides' wall times: the yardstick that says which side, if either, was disturbed;
  - what the latency protocol costs and what its intervals are worth: the naive loop's timed artifacts timed
    again with each earlier protocol (one session until +-2% or 2 s, the adaptive protocol before blocks; one
    session of at least 20 runs and 0.3 s, before that), outside both sides' wall times; per protocol its seconds
    of timing, the naive sweep's wall time and floor with those seconds in place of its own (on the largest
    sample, wide_cnn, the default), the median precision its intervals claim, and how many of the job system's
    p50s (timed in other processes) fall inside them: what an interval that covers between-session spread buys.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sample_models is not an installed package

from bench.jobs_side import recipes, through_jobs  # noqa: E402
from bench.revisions import REPOSITORY, check_out  # noqa: E402
from engine.data import load_dataset  # noqa: E402
from engine.jobs.executor import cpu_count  # noqa: E402
from engine.measure import ADAPTIVE, LatencyProtocol  # noqa: E402
from engine.model import load_model  # noqa: E402
from engine.results import (  # noqa: E402
    ARTIFACT, BATCH_N, METRIC, SIMULATED, SINGLE_EXAMPLE, is_reference, latency_precision, results_table,
)
from engine.realise.calibration import CalibrationSet  # noqa: E402
from engine.sweep import DEFAULT_LATENCY_BATCH, build_and_evaluate, reference_for, time_artifact  # noqa: E402
from engine.sweep.plan import calibration_rows_asked, plan_data  # noqa: E402
from sample_models.catalog import SAMPLES  # noqa: E402

# The protocols before this one, each one session: adaptive until +-2% or 2 s; before that, 20 runs and 0.3 s.
EARLIER_PROTOCOLS = {
    "one session, adaptive": LatencyProtocol(min_blocks=1, max_blocks=1),
    "one session, fixed": LatencyProtocol(warmup_runs=5, min_runs=20, target_precision=None, cap_seconds=0.3,
                                          min_blocks=1, max_blocks=1),
}


def naive(model_path: Path, data_path: Path, out: Path) -> dict:
    """The loop, with the seconds of each kind of step: reference, builds (with evaluation), timings."""
    started = time.perf_counter()
    model = load_model(model_path)
    plan = plan_data(load_dataset(data_path, model.summary.inputs), calibration_rows_asked(recipes()))
    dataset = plan.scored  # the rows the job scores too: the first ones calibrate
    reference = reference_for(model, dataset, out)
    steps = {"reference": time.perf_counter() - started, "builds": 0.0, "timings": 0.0}
    rows = []
    for recipe in recipes():
        begin = time.perf_counter()
        calibration = CalibrationSet(plan.calibration)  # from scratch, per recipe: nothing shared in this loop
        row = build_and_evaluate(model, dataset, recipe, out / "artifacts" / f"{recipe.slug()}.onnx", reference,
                                 calibration)
        steps["builds"] += time.perf_counter() - begin
        if not row[SIMULATED]:
            begin = time.perf_counter()
            fp32 = None if recipe.is_reference else model.file
            row.update(time_artifact(row[ARTIFACT], dataset, 1, DEFAULT_LATENCY_BATCH, ADAPTIVE, fp32,
                                     recipe.is_reference))
            steps["timings"] += time.perf_counter() - begin
        rows.append(row)
    wall = time.perf_counter() - started
    earlier = {}
    for label, protocol in EARLIER_PROTOCOLS.items():
        begin = time.perf_counter()
        retimed = [row if row[SIMULATED] else
                   {**row, **time_artifact(row[ARTIFACT], dataset, 1, DEFAULT_LATENCY_BATCH, protocol)} for row in rows]
        earlier[label] = {"timings": time.perf_counter() - begin, "table": results_table(retimed)}
    return {"wall": wall, "table": results_table(rows), "steps": steps, "earlier": earlier}


def jobs(model_path: Path, data_path: Path, home: Path):
    """The jobs side with this checkout's code: (wall seconds, table, seconds from submit to the first row)."""
    submitted = time.time()
    seconds, workspace, job_id = through_jobs(model_path, data_path, home)
    return seconds, workspace.results(job_id), workspace.result_times(job_id)[0] - submitted


def baseline_jobs(tree: Path, model_path: Path, data_path: Path, home: Path) -> float:
    """The jobs side run by the baseline's code: bench/jobs_side.py from this checkout, the engine from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    side = subprocess.run([sys.executable, str(REPOSITORY / "bench" / "jobs_side.py"), model_path, data_path, home],
                          cwd=tree, env=env, capture_output=True, text=True, check=True)
    return float(side.stdout.strip().splitlines()[-1])


def floor_seconds(steps: dict) -> float:
    """The least wall time for this work on this machine: builds divide by the cores, the rest does not."""
    return steps["reference"] + steps["builds"] / cpu_count() + steps["timings"]


def timed_alone(loop: dict, model_path: Path, data_path: Path):
    """The naive loop's table with each timed artifact's latency columns from a fresh process of its own."""
    table = loop["table"].copy()
    for index, row in table.iterrows():
        if not row[SIMULATED]:
            side = subprocess.run([sys.executable, str(REPOSITORY / "bench" / "time_alone.py"), row[ARTIFACT],
                                   model_path, data_path], capture_output=True, text=True, check=True)
            for column, value in json.loads(side.stdout).items():
                if column in (SINGLE_EXAMPLE.p50, BATCH_N.p50):
                    table.at[index, column] = value
    return table


def latency_ratios(tops, bottoms, figure: str = "p50") -> list[float]:
    """tops / bottoms of a latency figure ("p50", or "vs_fp32" for the ratio to fp32 timed beside it) for every
    timed row and batch size (same recipe order in both tables); fp32's own ratio (1 by definition) left out."""
    quantized = [figure != "vs_fp32" or not is_reference(row) for _, row in bottoms.iterrows()]
    return [
        top / bottom
        for columns in (SINGLE_EXAMPLE, BATCH_N)
        for top, bottom, counted in zip(tops[getattr(columns, figure)], bottoms[getattr(columns, figure)], quantized)
        if counted and top == top and bottom == bottom  # both timed (NaN is not equal to itself)
    ]


def ratio_text(ratios: list[float]) -> str:
    return f"median {statistics.median(ratios):.3f}, range {min(ratios):.3f} to {max(ratios):.3f}"


def held(intervals, others) -> tuple[int, int]:
    """How many of the `others` table's p50s lie inside the `intervals` table's 95% intervals, of how many timings
    both have (same recipe order)."""
    pairs = [
        (low, high, p50)
        for columns in (SINGLE_EXAMPLE, BATCH_N)
        for low, high, p50 in zip(intervals[columns.ci_low], intervals[columns.ci_high], others[columns.p50])
        if pd.notna(low) and pd.notna(p50)
    ]
    return sum(low <= p50 <= high for low, high, p50 in pairs), len(pairs)


def claimed_precision(table) -> float:
    """The median over every timing of the table of its interval's relative half-width."""
    precisions = [latency_precision(row, columns) for _, row in table.iterrows()
                  for columns in (SINGLE_EXAMPLE, BATCH_N)]
    return statistics.median(p for p in precisions if p is not None)


def protocols(loop: dict) -> dict[str, dict]:
    """Per latency protocol, this one first: its seconds of timing, its table and the naive sweep's wall time with
    those seconds in place of the loop's own."""
    timed = {"blocks (this)": {"timings": loop["steps"]["timings"], "table": loop["table"]}, **loop["earlier"]}
    return {label: {**figures, "wall": loop["wall"] - loop["steps"]["timings"] + figures["timings"],
                    "floor": floor_seconds({**loop["steps"], "timings": figures["timings"]})}
            for label, figures in timed.items()}


def report_round(round_: int, loop: dict, job_seconds: float, job_table, alone_table, first_row: float,
                 baseline_seconds: float | None) -> None:
    baseline = f", jobs at the baseline {baseline_seconds:.2f} s" if baseline_seconds is not None else ""
    print(f"round {round_ + 1}: naive {loop['wall']:.2f} s, jobs {job_seconds:.2f} s{baseline}")
    steps, floor = loop["steps"], floor_seconds(loop["steps"])
    print(f"  floor: reference {steps['reference']:.2f} s + builds {steps['builds']:.2f} s / {cpu_count()} cores + "
          f"timings {steps['timings']:.2f} s = {floor:.2f} s; jobs / floor = {job_seconds / floor:.2f}; the job's "
          f"first row came {first_row:.2f} s after submitting")
    ratios = latency_ratios(job_table, loop["table"])
    print(f"  same metrics: {job_table[METRIC].equals(loop['table'][METRIC])}; latency p50 over {len(ratios)} "
          f"timings, jobs / naive: {ratio_text(ratios)}")
    relative = latency_ratios(job_table, loop["table"], "vs_fp32")
    print(f"  latency vs fp32 (timed interleaved with fp32) over {len(relative)} timings, jobs / naive: "
          f"{ratio_text(relative)}")
    print(f"  against each artifact timed alone in a fresh process: jobs / alone "
          f"{ratio_text(latency_ratios(job_table, alone_table))}; naive / alone "
          f"{ratio_text(latency_ratios(loop['table'], alone_table))}")
    print(f"  latency protocols (this one: {ADAPTIVE.describe()}), the naive loop's artifacts timed with each:")
    for label, figures in protocols(loop).items():
        inside, of = held(figures["table"], job_table)
        print(f"    {label}: {figures['timings']:.2f} s of timing, naive sweep {figures['wall']:.2f} s (floor "
              f"{figures['floor']:.2f} s); intervals claim +-{claimed_precision(figures['table']):.1%} (median), "
              f"and hold {inside} of {of} of the job system's p50s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wide_cnn", choices=sorted(SAMPLES))
    parser.add_argument("--rounds", type=int, default=1, help="repeat both sides; medians are reported")
    parser.add_argument("--baseline", help="a git revision whose job system runs the jobs side too, e.g. f34b6be")
    args = parser.parse_args()
    sample = SAMPLES[args.model]
    print(f"{args.model}: {len(recipes())} configurations, {cpu_count()} cores")

    naive_times, job_times, baseline_times, protocol_walls = [], [], [], []
    with tempfile.TemporaryDirectory() as kept:
        tree = check_out(args.baseline, Path(kept)) if args.baseline else None
        for round_ in range(args.rounds):
            with tempfile.TemporaryDirectory() as scratch:
                loop = naive(sample.model_path, sample.data_path, Path(scratch) / "naive")
                job_seconds, job_table, first_row = jobs(sample.model_path, sample.data_path, Path(scratch) / "ws")
                alone_table = timed_alone(loop, sample.model_path, sample.data_path)
                if tree is not None:
                    baseline_times.append(baseline_jobs(tree, sample.model_path, sample.data_path,
                                                        Path(scratch) / "baseline"))
            naive_times.append(loop["wall"])
            protocol_walls.append({label: figures["wall"] for label, figures in protocols(loop).items()})
            job_times.append(job_seconds)
            report_round(round_, loop, job_seconds, job_table, alone_table, first_row,
                         baseline_times[-1] if tree else None)

    naive_seconds, job_seconds = statistics.median(naive_times), statistics.median(job_times)
    print(f"naive loop:  {naive_seconds:.2f} s")
    print(f"job system:  {job_seconds:.2f} s")
    print(f"naive / jobs = {naive_seconds / job_seconds:.2f}x")
    walls = {label: statistics.median(wall[label] for wall in protocol_walls) for label in protocol_walls[0]}
    this = walls["blocks (this)"]
    print("naive sweep by latency protocol: " + ", ".join(f"{label} {wall:.2f} s ({wall / this:.2f}x)"
                                                          for label, wall in walls.items()))
    if baseline_times:
        baseline_seconds = statistics.median(baseline_times)
        print(f"job system at {args.baseline}: {baseline_seconds:.2f} s (naive / jobs there = "
              f"{naive_seconds / baseline_seconds:.2f}x); {args.baseline} / this = {baseline_seconds / job_seconds:.2f}x")


if __name__ == "__main__":
    main()
