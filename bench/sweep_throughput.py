"""Sweep throughput: the job system against the one-after-another loop, same machine, same run.

    python bench/sweep_throughput.py [--model wide_cnn] [--rounds 1] [--baseline REV]

Both sides measure the same 12 configurations (the default grid plus W8A8 per-channel with percentile and
entropy calibration) end to end, from the model and data files to the finished table:

    naive     for each recipe, from scratch: quantize to a file, open a session, evaluate, time it
              (engine.sweep.measure_recipe; the fp32 reference is computed once, as any loop would)
    jobs      an empty workspace: add the model and data, submit the sweep, wait, read the table
    baseline  with --baseline REV: the same jobs side run by git revision REV's code (checked out in a
              temporary directory), in the same rounds, so an older job system's figure stands beside today's

The job system may go faster only honestly: builds run in parallel on the cores, static recipes that
calibrate alike share one calibration, there is no result cache to hit (the workspace starts empty), and
latency is measured one artifact at a time with engine.measure's protocol (same MIN_RUNS / MIN_SECONDS)
while the timed session keeps its core. The latency columns of both tables are compared to show that.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sample_models is not an installed package

from bench.jobs_side import recipes, through_jobs  # noqa: E402
from engine.data import load_dataset  # noqa: E402
from engine.jobs.executor import cpu_count  # noqa: E402
from engine.measure import MIN_RUNS, MIN_SECONDS  # noqa: E402
from engine.model import load_model  # noqa: E402
from engine.results import BATCH_N, LATENCY, METRIC, SINGLE_EXAMPLE, results_table  # noqa: E402
from engine.sweep import measure_recipe, reference_for  # noqa: E402
from sample_models.catalog import SAMPLES  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]


def naive(model_path: Path, data_path: Path, out: Path):
    started = time.perf_counter()
    model = load_model(model_path)
    dataset = load_dataset(data_path, model.summary.inputs)
    reference = reference_for(model, dataset, out)
    rows = [measure_recipe(model, dataset, recipe, out, reference) for recipe in recipes()]
    return time.perf_counter() - started, results_table(rows)


def jobs(model_path: Path, data_path: Path, home: Path):
    """The jobs side with this checkout's code: (wall seconds, table, seconds from submit to the first row)."""
    submitted = time.time()
    seconds, workspace, job_id = through_jobs(model_path, data_path, home)
    return seconds, workspace.results(job_id), workspace.result_times(job_id)[0] - submitted


def check_out(revision: str, into: Path) -> Path:
    """The files of `revision` (git archive), without touching this checkout."""
    archive = into / "baseline.tar"
    subprocess.run(["git", "-C", str(REPOSITORY), "archive", "--output", str(archive), revision], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def baseline_jobs(tree: Path, model_path: Path, data_path: Path, home: Path) -> float:
    """The jobs side run by the baseline's code: bench/jobs_side.py from this checkout, the engine from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    side = subprocess.run([sys.executable, str(REPOSITORY / "bench" / "jobs_side.py"), model_path, data_path, home],
                          cwd=tree, env=env, capture_output=True, text=True, check=True)
    return float(side.stdout.strip().splitlines()[-1])


def timed_seconds(table) -> float:
    """Time spent in the timed runs of the latency protocol: serial on both sides, so a floor for both."""
    return sum(
        (table[columns.runs] * table[columns.p50]).sum() / 1000 for columns in (SINGLE_EXAMPLE, BATCH_N)
    )


def ceiling(naive_seconds: float, timed: float) -> float:
    """The best any executor can do on this machine: timings stay serial (Amdahl), and work divides by the cores."""
    return naive_seconds / max(timed, naive_seconds / cpu_count())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wide_cnn", choices=sorted(SAMPLES))
    parser.add_argument("--rounds", type=int, default=1, help="repeat both sides; medians are reported")
    parser.add_argument("--baseline", help="a git revision whose job system runs the jobs side too, e.g. f34b6be")
    args = parser.parse_args()
    sample = SAMPLES[args.model]
    print(f"{args.model}: {len(recipes())} configurations, {cpu_count()} cores, "
          f"latency protocol MIN_RUNS={MIN_RUNS} MIN_SECONDS={MIN_SECONDS}")

    naive_times, job_times, baseline_times = [], [], []
    with tempfile.TemporaryDirectory() as kept:
        tree = check_out(args.baseline, Path(kept)) if args.baseline else None
        for round_ in range(args.rounds):
            with tempfile.TemporaryDirectory() as scratch:
                naive_seconds, naive_table = naive(sample.model_path, sample.data_path, Path(scratch) / "naive")
                job_seconds, job_table, first_row = jobs(sample.model_path, sample.data_path, Path(scratch) / "ws")
                if tree is not None:
                    baseline_times.append(baseline_jobs(tree, sample.model_path, sample.data_path,
                                                        Path(scratch) / "baseline"))
            naive_times.append(naive_seconds)
            job_times.append(job_seconds)
            report_round(round_, naive_seconds, naive_table, job_seconds, job_table, first_row,
                         baseline_times[-1] if tree is not None else None)

    naive_seconds, job_seconds = statistics.median(naive_times), statistics.median(job_times)
    print(f"naive loop:  {naive_seconds:.2f} s")
    print(f"job system:  {job_seconds:.2f} s")
    print(f"naive / jobs = {naive_seconds / job_seconds:.2f}x")
    if baseline_times:
        baseline_seconds = statistics.median(baseline_times)
        print(f"job system at {args.baseline}: {baseline_seconds:.2f} s; naive / jobs there = "
              f"{naive_seconds / baseline_seconds:.2f}x; {args.baseline} / this = {baseline_seconds / job_seconds:.2f}x")


def report_round(round_: int, naive_seconds: float, naive_table, job_seconds: float, job_table, first_row: float,
                 baseline_seconds: float | None) -> None:
    baseline = f", jobs at the baseline {baseline_seconds:.2f} s" if baseline_seconds is not None else ""
    print(f"round {round_ + 1}: naive {naive_seconds:.2f} s, jobs {job_seconds:.2f} s{baseline}")
    print(f"  where the time goes: timed latency runs {timed_seconds(naive_table):.2f} s (naive) and "
          f"{timed_seconds(job_table):.2f} s (jobs), one artifact at a time on both sides; the job's first row "
          f"came {first_row:.2f} s after submitting (runner and forkserver start-up, fp32 reference, first build)")
    same_metrics = naive_table[METRIC].equals(job_table[METRIC])
    timed = naive_table[LATENCY].notna()
    latency_ratio = statistics.median(
        job_table.loc[timed, column].iloc[i] / naive_table.loc[timed, column].iloc[i]
        for column in (SINGLE_EXAMPLE.p50, BATCH_N.p50) for i in range(int(timed.sum()))
    )
    print(f"  same metrics: {same_metrics}; latency p50, jobs / naive (median over rows): {latency_ratio:.2f}")
    print(f"  ceiling for any executor doing the naive loop's work here: naive / max(timed runs, naive / "
          f"{cpu_count()} cores) = {ceiling(naive_seconds, timed_seconds(naive_table)):.2f}x, reached only with "
          f"no start-up, no warm-up runs and every core busy every moment")


if __name__ == "__main__":
    main()
