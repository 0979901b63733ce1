"""Sweep throughput: the job system against the one-after-another loop, same machine, same run.

    python bench/sweep_throughput.py [--model wide_cnn] [--rounds 1]

Both sides measure the same 12 configurations (the default grid plus W8A8 per-channel with percentile and
entropy calibration) end to end, from the model and data files to the finished table:

    naive  for each recipe, from scratch: quantize to a file, open a session, evaluate, time it
           (engine.sweep.measure_recipe; the fp32 reference is computed once, as any loop would)
    jobs   an empty workspace: add the model and data, submit the sweep, wait, read the table

The job system may go faster only honestly: builds run in parallel on the cores, static recipes that
calibrate alike share one calibration, there is no result cache to hit (the workspace starts empty), and
latency is measured one artifact at a time with engine.measure's protocol (same MIN_RUNS / MIN_SECONDS)
while the timed session keeps its core. The latency columns of both tables are compared to show that.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sample_models is not an installed package

from engine.data import load_dataset  # noqa: E402
from engine.workspace import JobState, Workspace  # noqa: E402
from engine.jobs.executor import cpu_count  # noqa: E402
from engine.measure import MIN_RUNS, MIN_SECONDS  # noqa: E402
from engine.model import load_model  # noqa: E402
from engine.recipe import ActivationSpec, Granularity, Mode, Recipe, WeightSpec  # noqa: E402
from engine.results import BATCH_N, LATENCY, METRIC, SINGLE_EXAMPLE, results_table  # noqa: E402
from engine.sweep import default_grid, measure_recipe, reference_for  # noqa: E402
from sample_models.catalog import SAMPLES  # noqa: E402


def recipes() -> list[Recipe]:
    per_channel = WeightSpec(8, Granularity.CHANNEL)
    return default_grid() + [
        Recipe(per_channel, ActivationSpec(8, calibration), Mode.STATIC) for calibration in ("percentile", "entropy")
    ]


def naive(model_path: Path, data_path: Path, out: Path):
    started = time.perf_counter()
    model = load_model(model_path)
    dataset = load_dataset(data_path, model.summary.inputs)
    reference = reference_for(model, dataset, out)
    rows = [measure_recipe(model, dataset, recipe, out, reference) for recipe in recipes()]
    return time.perf_counter() - started, results_table(rows)


def through_jobs(model_path: Path, data_path: Path, home: Path):
    started, started_at = time.perf_counter(), time.time()
    workspace = Workspace.open(home)
    model = workspace.add_model(model_path, model_path.name, owner="bench")
    dataset = workspace.add_dataset(data_path, data_path.name, model.id, owner="bench")
    job_id = workspace.submit_sweep(model.id, dataset.id, recipes(), owner="bench")
    job = workspace.wait(job_id, timeout=1800)
    if job.state is not JobState.DONE:
        raise SystemExit(f"the job ended {job.state}: {job.error}")
    table = workspace.results(job_id)
    return time.perf_counter() - started, table, workspace.result_times(job_id)[0] - started_at


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
    args = parser.parse_args()
    sample = SAMPLES[args.model]
    print(f"{args.model}: {len(recipes())} configurations, {cpu_count()} cores, "
          f"latency protocol MIN_RUNS={MIN_RUNS} MIN_SECONDS={MIN_SECONDS}")

    naive_times, job_times = [], []
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory() as scratch:
            naive_seconds, naive_table = naive(sample.model_path, sample.data_path, Path(scratch) / "naive")
            job_seconds, job_table, first_row = through_jobs(sample.model_path, sample.data_path,
                                                             Path(scratch) / "workspace")
        naive_times.append(naive_seconds)
        job_times.append(job_seconds)
        print(f"round {round_ + 1}: naive {naive_seconds:.2f} s, jobs {job_seconds:.2f} s")
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

    naive_seconds, job_seconds = statistics.median(naive_times), statistics.median(job_times)
    print(f"naive loop:  {naive_seconds:.2f} s")
    print(f"job system:  {job_seconds:.2f} s")
    print(f"naive / jobs = {naive_seconds / job_seconds:.2f}x")


if __name__ == "__main__":
    main()
