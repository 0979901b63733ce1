"""Time one artifact the quietest way there is: in a fresh process that has done nothing else, on the rows the
sweep scores. The yardstick bench/sweep_throughput.py holds both sides' latencies against.

    python bench/time_alone.py ARTIFACT MODEL DATA    # prints the latency columns as JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.jobs_side import recipes  # noqa: E402
from engine.data import load_dataset  # noqa: E402
from engine.model import load_model  # noqa: E402
from engine.sweep import DEFAULT_LATENCY_BATCH, time_artifact  # noqa: E402
from engine.sweep.plan import calibration_rows_asked, plan_data  # noqa: E402

if __name__ == "__main__":
    artifact, model_path, data_path = map(Path, sys.argv[1:4])
    inputs = load_model(model_path).summary.inputs
    scored = plan_data(load_dataset(data_path, inputs), calibration_rows_asked(recipes())).scored
    print(json.dumps(time_artifact(artifact, scored, 1, DEFAULT_LATENCY_BATCH)))
