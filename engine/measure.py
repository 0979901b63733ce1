"""Measure an artifact with onnxruntime: its outputs on the validation set, its latency and its peak memory.

Latency protocol (LatencyProtocol, ADAPTIVE by default): one session per artifact with a stated intra-op
thread count (inter-op 1, sequential); `warmup_runs` discarded runs; then timed runs, one after another,
until the 95% confidence interval of the median is within +-`target_precision` of it (at least `min_runs`
runs), or until `cap_seconds` have passed. The interval is distribution-free: two order statistics of the
runs, chosen from the binomial distribution of how many runs fall below the true median. We report the
median, the 95th percentile, the number of runs, the interval and whether the cap stopped the runs.

Peak memory (`peak_memory`): a fresh process opens its own session on the artifact and runs the same feeds;
engine.peak_memory says how and why.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine import peak_memory as probe
from engine.data import Dataset
from engine.errors import DataError
from engine.text import MAX_LINE

EVAL_BATCH = 32  # rows per run when scoring: onnxruntime holds a run's activations, which grow with its rows
CONFIDENCE = 0.95


@dataclass(frozen=True)
class LatencyProtocol:
    warmup_runs: int = 5
    min_runs: int = 5
    target_precision: float | None = 0.02  # relative half-width of the median's interval; None: run to the cap
    cap_seconds: float = 2.0  # per artifact and batch size

    def describe(self) -> str:
        goal = (f"until the median's 95% interval is within +-{self.target_precision * 100:g}% or {self.cap_seconds:g} s"
                if self.target_precision else f"for {self.cap_seconds:g} s")
        return f"{self.warmup_runs} warm-up runs, then at least {self.min_runs} timed runs {goal}"


ADAPTIVE = LatencyProtocol()


@dataclass(frozen=True)
class Latency:
    batch: int
    threads: int
    runs: int
    p50_ms: float
    p95_ms: float
    ci_low_ms: float | None  # the median's 95% interval; None with too few runs for one (under 6)
    ci_high_ms: float | None
    capped: bool  # the time cap ended the runs before the interval was as narrow as asked

    @property
    def precision(self) -> float | None:
        """The interval's larger half-width relative to the median, e.g. 0.013 for +-1.3%."""
        if self.ci_low_ms is None:
            return None
        return max(self.p50_ms - self.ci_low_ms, self.ci_high_ms - self.p50_ms) / self.p50_ms


@cache
def _median_rank_bounds(runs: int) -> tuple[int, int] | None:
    """0-based ranks (lo, hi) of the sorted runs that bound the median with at least 95% confidence: the largest
    j with P(Binomial(runs, 1/2) < j) <= 2.5% gives lo = j - 1 and hi = runs - j. None when no such j >= 1 exists."""
    alpha = (1 - CONFIDENCE) / 2
    if runs > 1000:  # the normal approximation is exact enough here, and the exact sum is slow
        j = math.floor(runs / 2 - 1.959964 * math.sqrt(runs) / 2)
    else:
        total, below, j = 2**runs, 0, 0
        while True:  # below = number of outcomes with fewer than j + 1 runs under the median
            below += math.comb(runs, j)
            if below / total > alpha:
                break
            j += 1
    return None if j < 1 else (j - 1, runs - j)


def median_interval(timings_ms: np.ndarray) -> tuple[float, float] | None:
    """The distribution-free 95% confidence interval of the median of `timings_ms`; None under 6 runs."""
    bounds = _median_rank_bounds(len(timings_ms))
    if bounds is None:
        return None
    ordered = np.sort(timings_ms)
    return float(ordered[bounds[0]]), float(ordered[bounds[1]])


def open_session(model: Path | str | bytes, threads: int = 1) -> ort.InferenceSession:
    """A session on a model file, or on a serialized model held in memory."""
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, probe.session_options(threads), providers=["CPUExecutionProvider"])


def batch_is_dynamic(session: ort.InferenceSession) -> bool:
    return all(not isinstance(i.shape[0], int) for i in session.get_inputs() if i.shape)


def predict(session: ort.InferenceSession, dataset: Dataset) -> np.ndarray:
    """The first output of the model over the whole dataset, in dataset order.

    A model with a fixed batch size of 1 is fed row by row; other fixed sizes need the data to fit them.
    """
    first = [session.get_outputs()[0].name]
    return np.concatenate([outputs[0] for _, outputs in run_batches(session, dataset, first)], axis=0)


def run_batches(session: ort.InferenceSession, dataset: Dataset, output_names: list[str]
                ) -> Iterator[tuple[slice, list[np.ndarray]]]:
    """(rows, outputs) for consecutive batches of the dataset: EVAL_BATCH rows, or the model's fixed batch size."""
    if batch_is_dynamic(session):
        batch = EVAL_BATCH
    elif len(dataset) % (batch := session.get_inputs()[0].shape[0]):
        raise DataError(f"the model takes batches of exactly {batch} rows; the data has {len(dataset)} rows")
    for start in range(0, len(dataset), batch):
        rows = slice(start, start + batch)
        yield rows, session.run(output_names, {name: values[rows] for name, values in dataset.inputs.items()})


def latency_feed(dataset: Dataset, batch: int) -> dict[str, np.ndarray]:
    """`batch` rows from the dataset, repeating rows when it has fewer."""
    rows = np.arange(batch) % len(dataset)
    return {name: np.ascontiguousarray(values[rows]) for name, values in dataset.inputs.items()}


def measure_latency(session: ort.InferenceSession, feed: dict[str, np.ndarray], threads: int,
                    protocol: LatencyProtocol = ADAPTIVE) -> Latency:
    output_names = [session.get_outputs()[0].name]
    for _ in range(protocol.warmup_runs):
        session.run(output_names, feed)
    timings_ns: list[int] = []
    next_check = protocol.min_runs
    started = time.perf_counter()
    while True:
        begin = time.perf_counter_ns()
        session.run(output_names, feed)
        timings_ns.append(time.perf_counter_ns() - begin)
        if time.perf_counter() - started >= protocol.cap_seconds and len(timings_ns) >= protocol.min_runs:
            break
        if protocol.target_precision and len(timings_ns) >= next_check:
            next_check = len(timings_ns) + max(1, len(timings_ns) // 10)  # checking costs a sort: every +10%
            if _precise_enough(np.array(timings_ns) / 1e6, protocol.target_precision):
                break
    return latency_of_runs(np.array(timings_ns) / 1e6, next(iter(feed.values())).shape[0], threads, protocol)


def latency_of_runs(timings_ms: np.ndarray, batch: int, threads: int, protocol: LatencyProtocol) -> Latency:
    """The figures of one model's timed runs; capped unless the median's interval is as narrow as `protocol` asks."""
    interval = median_interval(timings_ms)
    latency = Latency(
        batch=batch,
        threads=threads,
        runs=len(timings_ms),
        p50_ms=float(np.median(timings_ms)),
        p95_ms=float(np.percentile(timings_ms, 95)),
        ci_low_ms=None if interval is None else interval[0],
        ci_high_ms=None if interval is None else interval[1],
        capped=False,
    )
    reached = protocol.target_precision is not None and latency.precision is not None \
        and latency.precision <= protocol.target_precision
    return latency if reached else replace(latency, capped=True)


def _precise_enough(timings_ms: np.ndarray, target: float) -> bool:
    interval = median_interval(timings_ms)
    if interval is None:
        return False
    median = float(np.median(timings_ms))
    return max(median - interval[0], interval[1] - median) <= target * median


PEAK_MEMORY_PROTOCOL = (
    f"peak resident memory (VmHWM) of a fresh process while onnxruntime loads the file and runs each batch "
    f"{probe.RUNS_PER_BATCH} times, minus that process's resident memory before loading (forked from a server that "
    "has only imported onnxruntime, so the library code the session runs counts too)"
)


class MemoryNotMeasured(Exception):
    """The peak-memory process could not measure: not Linux, or it failed; the message says which."""


class _ProbeServer:
    """This process's engine.peak_memory server, started on first use and again if it has died (or belongs to the
    process this one was forked from); it exits when this process does (its stdin closes)."""

    process: subprocess.Popen | None = None
    owner: int | None = None  # the pid that started it

    @classmethod
    def ask(cls, request: dict) -> dict:
        if cls.process is None or cls.process.poll() is not None or cls.owner != os.getpid():
            cls.owner = os.getpid()
            # -I: the server imports what it needs from the interpreter's site-packages and nothing of its environment
            cls.process = subprocess.Popen([sys.executable, "-I", probe.__file__], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            cls.process.stdin.write(json.dumps(request) + "\n")
            cls.process.stdin.flush()
            answer = cls.process.stdout.readline()
        except OSError:  # the server died meanwhile
            answer = ""
        return json.loads(answer) if answer else {"error": "the peak-memory server stopped"}


def peak_memory(artifact_path: Path | str, feeds: list[dict[str, np.ndarray]], threads: int) -> list[int]:
    """Bytes a fresh session on the artifact takes at its peak: after loading and running feeds[0], then also
    feeds[1], and so on (engine.peak_memory, in a process of its own)."""
    if not (Path(probe.STATUS).exists() and Path(probe.PEAK_RESET).exists() and hasattr(os, "fork")):
        raise MemoryNotMeasured("not measured: the peak-memory counter needs Linux's /proc")
    with tempfile.TemporaryDirectory(prefix="quantscope-memory-") as scratch:
        files = []
        for index, feed in enumerate(feeds):
            files.append(str(Path(scratch) / f"feed{index}.npz"))
            np.savez(files[-1], *feed.values())
        answer = _ProbeServer.ask({"artifact": str(artifact_path), "threads": threads,
                                   "names": [list(feed) for feed in feeds], "feeds": files})
    if "error" in answer:
        raise MemoryNotMeasured(f"not measured: the peak-memory process failed ({answer['error'][:MAX_LINE]})")
    return answer["peaks"]
