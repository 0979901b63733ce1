"""The job-system side of bench/sweep_throughput.py, written only against the workspace API that every
revision since the job system has, so that a baseline revision's checkout can run it too:

    PYTHONPATH=CHECKOUT python bench/jobs_side.py MODEL DATA HOME    # prints the sweep's wall seconds
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from engine.recipe import ActivationSpec, Granularity, Mode, Recipe, WeightSpec
from engine.sweep import default_grid

try:
    from engine.workspace import Workspace
except ImportError:  # revisions before engine/workspace.py
    from engine.jobs import Workspace

TIMEOUT_SECONDS = 1800


def recipes() -> list[Recipe]:
    """The default grid plus W8A8 per-channel with percentile and entropy calibration: 12 configurations."""
    per_channel = WeightSpec(8, Granularity.CHANNEL)
    return default_grid() + [
        Recipe(per_channel, ActivationSpec(8, calibration), Mode.STATIC) for calibration in ("percentile", "entropy")
    ]


def through_jobs(model_path: Path, data_path: Path, home: Path):
    """An empty workspace: add the model and data, submit the sweep, wait. (wall seconds, workspace, job id)."""
    started = time.perf_counter()
    workspace = Workspace.open(home)
    model = workspace.add_model(model_path, model_path.name, owner="bench")
    dataset = workspace.add_dataset(data_path, data_path.name, model.id, owner="bench")
    job_id = workspace.submit_sweep(model.id, dataset.id, recipes(), owner="bench")
    job = workspace.wait(job_id, timeout=TIMEOUT_SECONDS)
    if job.state != "done":
        raise SystemExit(f"the job ended {job.state}: {job.error}")
    workspace.results(job_id)
    return time.perf_counter() - started, workspace, job_id


if __name__ == "__main__":
    model_file, data_file, home_dir = map(Path, sys.argv[1:4])
    print(through_jobs(model_file, data_file, home_dir)[0])
