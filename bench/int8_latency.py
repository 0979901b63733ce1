"""Benchmark: is our int8 artifact really faster? Latency on the compute-bound sample, side by side.

Three artifacts of `wide_cnn`, each in its own onnxruntime session with 1 intra-op thread:
  fp32      the original model
  ours      quantscope's W8A8 static per-channel recipe (the artifact a user downloads)
  ort-tool  onnxruntime's own `quantize_static` called with its defaults (QDQ, per-tensor, s8s8)
Timings interleave the three sessions round by round so that machine noise hits all of them alike.
Prints the median and p95 per artifact and the ratios int8/fp32 and ours/ort-tool, at batch 1 and 32.
Run: .venv/bin/python bench/int8_latency.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from onnxruntime.quantization import quantize_static

from engine.data import Dataset, load_dataset
from engine.measure import latency_feed, open_session
from engine.model import load_model
from engine.realise import quantize
from engine.realise.calibration import reader_for
from engine.recipe import ActivationSpec, Granularity, Mode, Recipe, WeightSpec
from sample_models.catalog import SAMPLES

ROUNDS = 15
RUNS_PER_ROUND = 10
WARMUP = 10
THREADS = 1
OUR_INT8 = Recipe(WeightSpec(8, Granularity.CHANNEL), ActivationSpec(8), Mode.STATIC)


def build_artifacts(workdir: Path) -> tuple[dict[str, Path], Dataset]:
    sample = SAMPLES["wide_cnn"]
    model = load_model(sample.model_path)
    data = load_dataset(sample.data_path, model.summary.inputs)
    ort_tool = workdir / "ort_tool.onnx"
    quantize_static(str(sample.model_path), str(ort_tool), reader_for(data, OUR_INT8.activations.calibration_samples, True))
    ours = quantize(model, OUR_INT8, workdir / "ours.onnx", calibration=data)
    return {"fp32": sample.model_path, "ours": ours.path, "ort-tool": ort_tool}, data


def interleaved_latency(paths: dict[str, Path], feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sessions = {name: open_session(path, THREADS) for name, path in paths.items()}
    for session in sessions.values():
        for _ in range(WARMUP):
            session.run(None, feed)
    timings = {name: [] for name in sessions}
    for _ in range(ROUNDS):
        for name, session in sessions.items():
            for _ in range(RUNS_PER_ROUND):
                start = time.perf_counter_ns()
                session.run(None, feed)
                timings[name].append((time.perf_counter_ns() - start) / 1e6)
    return {name: np.array(values) for name, values in timings.items()}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths, data = build_artifacts(Path(tmp))
        sizes = {name: path.stat().st_size for name, path in paths.items()}
        print(f"wide_cnn, onnxruntime CPU, {THREADS} thread, {ROUNDS * RUNS_PER_ROUND} timed runs each, interleaved")
        print("bytes: " + ", ".join(f"{name} {size:,}" for name, size in sizes.items()))
        for batch in (1, 32):
            ms = interleaved_latency(paths, latency_feed(data, batch))
            p50 = {name: float(np.median(values)) for name, values in ms.items()}
            cells = ", ".join(f"{name} p50 {p50[name]:.3f} ms / p95 {np.percentile(ms[name], 95):.3f} ms" for name in ms)
            print(f"batch {batch:>2}: {cells}")
            print(
                f"batch {batch:>2}: int8/fp32 = {p50['ours'] / p50['fp32']:.2f}   "
                f"ours/ort-tool = {p50['ours'] / p50['ort-tool']:.2f}"
            )


if __name__ == "__main__":
    main()
