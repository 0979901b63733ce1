"""Measure an artifact with onnxruntime: its outputs on the validation set, and its latency.

Latency protocol: one session per artifact with a stated intra-op thread count (inter-op 1, sequential),
`WARMUP_RUNS` discarded runs, then timed runs until at least `MIN_RUNS` and `MIN_SECONDS` (capped at
`MAX_RUNS`); we report the median and the 95th percentile in milliseconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine.data import Dataset
from engine.errors import DataError

WARMUP_RUNS = 5
MIN_RUNS = 20
MAX_RUNS = 400
MIN_SECONDS = 0.3
EVAL_BATCH = 256


@dataclass(frozen=True)
class Latency:
    batch: int
    threads: int
    runs: int
    p50_ms: float
    p95_ms: float


def open_session(path: Path | str, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def batch_is_dynamic(session: ort.InferenceSession) -> bool:
    return all(not isinstance(i.shape[0], int) for i in session.get_inputs() if i.shape)


def predict(session: ort.InferenceSession, dataset: Dataset) -> np.ndarray:
    """The first output of the model over the whole dataset, in dataset order.

    A model with a fixed batch size of 1 is fed row by row; other fixed sizes need the data to fit them.
    """
    if batch_is_dynamic(session):
        batch = EVAL_BATCH
    elif len(dataset) % (batch := session.get_inputs()[0].shape[0]):
        raise DataError(f"the model takes batches of exactly {batch} rows; the data has {len(dataset)} rows")
    output_name = session.get_outputs()[0].name
    parts = [session.run([output_name], feed)[0] for feed in dataset.batches(batch)]
    return np.concatenate(parts, axis=0)


def latency_feed(dataset: Dataset, batch: int) -> dict[str, np.ndarray]:
    """`batch` rows from the dataset, repeating rows when it has fewer."""
    rows = np.arange(batch) % len(dataset)
    return {name: np.ascontiguousarray(values[rows]) for name, values in dataset.inputs.items()}


def measure_latency(session: ort.InferenceSession, feed: dict[str, np.ndarray], threads: int) -> Latency:
    output_names = [session.get_outputs()[0].name]
    for _ in range(WARMUP_RUNS):
        session.run(output_names, feed)
    timings_ns = []
    started = time.perf_counter()
    while len(timings_ns) < MAX_RUNS and (len(timings_ns) < MIN_RUNS or time.perf_counter() - started < MIN_SECONDS):
        begin = time.perf_counter_ns()
        session.run(output_names, feed)
        timings_ns.append(time.perf_counter_ns() - begin)
    timings_ms = np.array(timings_ns) / 1e6
    batch = next(iter(feed.values())).shape[0]
    return Latency(
        batch=batch,
        threads=threads,
        runs=len(timings_ms),
        p50_ms=float(np.median(timings_ms)),
        p95_ms=float(np.percentile(timings_ms, 95)),
    )
