"""What `quantscope verify` runs in a fresh process: a bundle's model scored again on the data, as the sweep did.

    python -m engine.export.reevaluate BUNDLE DATA [--reference FP32.onnx] [--no-latency]

prints one JSON object on stdout: the recomputed primary metric, every metric, the per-slice breakdown and, unless
--no-latency, the latency timed as a sweep times it; or {"error": line, "bad_input": bool}, exiting 2 for bad input
(a QuantscopeError) and 1 for anything else. The scored rows, the task, the fidelity mask and the number of
threads come from bundle.json, and the steps are the sweep's own (engine.sweep.rows, engine.measure,
engine.metrics), so an untouched bundle reproduces its metric exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from engine import results
from engine.data import load_dataset
from engine.errors import BundleError, QuantscopeError
from engine.export.bundle import read_bundle
from engine.masking import Masking
from engine.measure import open_session, predict
from engine.metrics import Task, evaluate
from engine.model import load_model
from engine.sweep import reference_for, time_artifact
from engine.text import error_line


def reevaluate(bundle: Path, data: Path, reference: Path | None, latency: bool) -> dict:
    figures = read_bundle(bundle)
    model_path = Path(bundle) / figures["model"]["file"]
    validation = figures["data"]["validation"]
    metric = figures["metric"]
    task = Task(metric["task"])
    needs_reference = task is Task.FIDELITY
    if needs_reference and reference is None:
        raise BundleError(f"this bundle's metric ({metric['label']}) compares with the original model: give it with "
                          "--reference FP32.onnx")
    # The data is read against the model the sweep read it against: the original's inputs when it is given.
    model = load_model(reference if reference is not None else model_path)
    dataset = load_dataset(data, model.summary.inputs, filename=validation["file"],
                           label_column=validation["label_column"], slice_column=validation["slice_column"])
    if len(dataset) != validation["rows"]:
        raise BundleError(f"{data} has {len(dataset)} rows; the bundle was measured on {validation['rows']}")
    scored = dataset.rows(slice(figures["scoring"]["first_scored_row"] - 1, None))
    output = predict(open_session(model_path), scored)
    if reference is not None:
        with tempfile.TemporaryDirectory(prefix="quantscope-verify-") as workdir:
            original = reference_for(model, scored, Path(workdir), figures["scoring"]["mask"])
        masking, original_output = original.masking, original.output
    else:  # task metrics need no original; fidelity against itself is left out below
        masking, original_output = Masking(None, "no original given"), output
    evaluation = evaluate(original_output, output, scored.labels, scored.slices, task, masking.mask(scored))
    scores = {**evaluation.metrics, **(evaluation.fidelity if reference is not None else {})}
    task_names = set(evaluation.metrics) | {"rows"}
    per_slice = {name: {key: value for key, value in values.items() if reference is not None or key in task_names}
                 for name, values in evaluation.per_slice.items()}
    timing = None
    if latency and figures["latency"].get("threads"):
        batch = (figures["latency"].get("batch_n") or {}).get("batch")
        timing = time_artifact(model_path, scored, int(figures["latency"]["threads"]), batch)
    return results.json_value({"metric": scores.get(metric["name"]), "scores": scores, "per_slice": per_slice,
                               "fidelity_compared": reference is not None,
                               "latency": None if timing is None else {
                                   key: _plain(value) for key, value in timing.items()}})


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.export.reevaluate")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--reference", type=Path)
    parser.add_argument("--no-latency", dest="latency", action="store_false")
    args = parser.parse_args(argv)
    try:
        answer = reevaluate(args.bundle, args.data, args.reference, args.latency)
        code = 0
    except (QuantscopeError, OSError) as error:
        answer, code = {"error": error_line(error) if not isinstance(error, QuantscopeError) else str(error),
                        "bad_input": True}, 2
    except Exception as error:  # the model no longer runs here: a failed verification, not bad input
        answer, code = {"error": error_line(error), "bad_input": False}, 1
    print(json.dumps(answer))
    return code


if __name__ == "__main__":
    sys.exit(main())
