"""Benchmark: is our int8 artifact really faster? Latency on the compute-bound sample, side by side.

Three artifacts of `wide_cnn`, each in its own onnxruntime session with 1 intra-op thread:
  fp32      the original model
  ours      quantscope's W8A8 static per-channel recipe (the artifact a user downloads)
  ort-tool  onnxruntime's own `quantize_static` called with its defaults (QDQ, per-tensor, s8s8)
Timed together by engine.measure's block protocol (every block a fresh session on each, one run of each in turn)
so that machine noise hits all of them alike. Prints the median (of the block medians) with its 95% interval and
the p95 per artifact, and the ratios int8/fp32 and ours/ort-tool, at batch 1 and 32.
Run: .venv/bin/python bench/int8_latency.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from onnxruntime.quantization import quantize_static

from engine.data import Dataset, load_dataset
from engine.measure import LatencyProtocol, latency_feed, measure_latencies
from engine.model import load_model
from engine.realise import quantize
from engine.realise.calibration import reader_for
from engine.recipe import ActivationSpec, Granularity, Mode, Recipe, WeightSpec
from sample_models.catalog import SAMPLES

PROTOCOL = LatencyProtocol(warmup_runs=10, min_runs=20, target_precision=0.02, cap_seconds=3.0)  # per artifact
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


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths, data = build_artifacts(Path(tmp))
        sizes = {name: path.stat().st_size for name, path in paths.items()}
        print(f"wide_cnn, onnxruntime CPU, {THREADS} thread, timed together: {PROTOCOL.describe()}")
        print("bytes: " + ", ".join(f"{name} {size:,}" for name, size in sizes.items()))
        for batch in (1, 32):
            timed = measure_latencies(paths, latency_feed(data, batch), THREADS, PROTOCOL)
            cells = ", ".join(f"{name} p50 {t.p50_ms:.3f} ms (95% {t.ci_low_ms:.3f}-{t.ci_high_ms:.3f}, {t.blocks} "
                              f"blocks) / p95 {t.p95_ms:.3f} ms" for name, t in timed.items())
            print(f"batch {batch:>2}: {cells}")
            p50 = {name: t.p50_ms for name, t in timed.items()}
            print(
                f"batch {batch:>2}: int8/fp32 = {p50['ours'] / p50['fp32']:.2f}   "
                f"ours/ort-tool = {p50['ours'] / p50['ort-tool']:.2f}"
            )


if __name__ == "__main__":
    main()
