"""Sensitivity jobs: the table computed by the runner against the table computed on a Dask cluster, same run.

    python bench/sensitivity_dask.py [--model NAME] [--workers N]

Both sides are sensitivity jobs of a fresh workspace (a detached runner, the result cache empty) on the sample
with the CLI's default candidates (W8A8 and W4A8 static, per channel, minmax):

    local  the runner computes the whole table itself (engine.sensitivity.sensitivity_table)
    dask   a LocalCluster of N worker processes (default 2) on loopback: the runner computes the fp32 reference,
           one calibration task per calibration key, then one task per candidate (engine.jobs.tasks.SensitivityTask)

Printed: each side's wall seconds from submit to done (the cluster starts first and is not counted), round by round
(`--rounds`, local then dask each round) and their medians, the ratio, and whether the two tables are equal in
every figure (sensitivity.json byte for byte); exit 1 unless they are.
On a shared machine the seconds are noisy; the equality is not.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sample_models is not an installed package

from engine.workspace import JobState, Workspace  # noqa: E402
from sample_models.catalog import SAMPLES  # noqa: E402

OWNER = "bench"


def timed_table(home: Path, sample, scheduler: str | None) -> tuple[float, dict]:
    workspace = Workspace.open(home)
    model = workspace.add_model(sample.model_path, sample.model_path.stem, OWNER)
    dataset = workspace.add_dataset(sample.data_path, sample.data_path.name, model.id, OWNER)
    start = time.perf_counter()
    job = workspace.wait(workspace.submit_sensitivity(model.id, dataset.id, OWNER, scheduler=scheduler), 3600)
    seconds = time.perf_counter() - start
    if job.state is not JobState.DONE:
        raise SystemExit(f"the {'dask' if scheduler else 'local'} job {job.state}: {job.error}")
    return seconds, workspace.sensitivity(job.id).to_dict()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="text_encoder", choices=sorted(SAMPLES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="local then dask, this many times (default 1)")
    args = parser.parse_args()
    from distributed import LocalCluster

    sample = SAMPLES[args.model]
    seconds: dict[str, list[float]] = {"local": [], "dask": []}
    equal = True
    with tempfile.TemporaryDirectory(prefix="quantscope-bench-") as scratch, \
            LocalCluster(n_workers=args.workers, threads_per_worker=1, host="127.0.0.1", processes=True,
                         dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        for round_ in range(args.rounds):  # side by side, so that the machine's load weighs on both alike
            local_seconds, local = timed_table(Path(scratch) / f"local{round_}", sample, None)
            dask_seconds, remote = timed_table(Path(scratch) / f"dask{round_}", sample, cluster.scheduler_address)
            seconds["local"].append(local_seconds)
            seconds["dask"].append(dask_seconds)
            equal &= json.dumps(local, sort_keys=True) == json.dumps(remote, sort_keys=True)
            print(f"round {round_ + 1}: local {local_seconds:.1f} s, dask {dask_seconds:.1f} s", flush=True)
    names = ", ".join(candidate["candidate"] for candidate in local["candidates"])
    print(f"{args.model}: {len(local['rows'])} rows, candidates {names}")
    local_median, dask_median = statistics.median(seconds["local"]), statistics.median(seconds["dask"])
    print(f"local (the runner alone)    {local_median:7.1f} s (median of {args.rounds})")
    print(f"dask ({args.workers} worker processes) {dask_median:7.1f} s")
    print(f"ratio local / dask          {local_median / dask_median:7.2f}x")
    print(f"tables equal in every figure: {'yes' if equal else 'NO'}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
