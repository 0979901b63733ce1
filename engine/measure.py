"""Measure an artifact with onnxruntime: its outputs on the validation set, its latency and its peak memory.

Latency protocol (LatencyProtocol, ADAPTIVE by default). One timing in one session says how fast that session
is: two sessions on the same file, in one process or two, differ by more than either's runs spread (where the
allocator put the buffers, cache and frequency state), by up to 2x on a shared machine. So a latency is timed in
blocks, each a fresh session with a stated intra-op thread count (inter-op 1, sequential):
- a block: open the session, `warmup_runs` discarded runs, then timed runs one after another until the 95%
  interval of the block's median is within +-`target_precision` (at least `min_runs` runs) or the block has had
  its share of the cap, `cap_seconds / max_blocks` (opening and warm-up included);
- blocks are added (at least `min_blocks`, at most `max_blocks`) until the 95% interval below is within
  +-`target_precision` of the latency, or until another full block would not fit in `cap_seconds`: the total
  cap per artifact and batch size, session openings and warm-ups included. Only the minimum (`min_blocks`
  blocks of `warmup_runs + min_runs` runs) can outlast the cap, for a model whose runs are that slow.

What is reported (Latency): p50 is the median of the block medians. The session is the unit that repeats: a
block's median stands for one session, and the median of those is robust to one odd session (the 2x above),
where pooling the runs would weigh each session by how many runs it happened to need (a fast session fits more
runs in its share). p95 likewise is the median of the blocks' 95th percentiles, so it is never below p50.
The interval is p50 +- h, h = max(between, within):
- between = t(0.975, n - 1) * sqrt(pi / 2) * s / sqrt(n), s the standard deviation of the n block medians: a
  t interval, which is what 3-5 blocks allow (a distribution-free interval for a median needs 6 values for
  95%: the range of 5 covers it 94% of the time, of 3 only 75%). It assumes the block medians spread about
  normally (a block median is a median of many runs; the session effects are what they are, and with 3 blocks
  t = 4.3 makes the interval wide unless the sessions agree). sqrt(pi / 2) is the most the median of n normal
  values can lose against their mean (its variance is below (pi / 2) sigma^2 / n); in seeded simulations this
  covers the true center at least 95% of the time for 2 to 8 normal blocks.
- within = sqrt(pi / 2) * rms(w) / sqrt(n), w each block's own interval half-width (distribution-free, from two
  order statistics of its runs, chosen from the binomial distribution of how many fall below its median): a
  floor, so that blocks agreeing by chance (or by a coarse clock) never claim more than their runs can show.
The between term already contains the within-block noise (each block median carries it), so the two are not
added. With one block (`max_blocks` 1: the single-session protocol this replaced) the interval is that block's
own and covers the spread within the session only. The latency says how many blocks and runs it took and
whether the cap (or `max_blocks`) ended it before its interval was as narrow as asked.

Relative to a reference (`latency_ratio`). The machine's speed drifts over seconds to minutes (host contention,
frequency): one artifact timed in consecutive processes read anywhere from 0.23 to 0.62 ms while each process's own
blocks agreed within +-5%. So two models timed at different moments cannot be compared in milliseconds; timed
together (`measure_latencies`: each block a fresh session on each, runs interleaved) a slow spell hits both alike,
and their ratio is what holds. Block i gives the paired ratio r_i of the two block medians; the ratio is the median
of the r_i, its interval ratio * exp(+-h) with h = max(between, within) as above but on log r_i: between from the
standard deviation of the log r_i, within from each block's log-ratio half-width sqrt(a^2 + b^2), a and b the two
block medians' own relative half-widths (independent sessions).

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
from collections.abc import Callable, Iterator
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


# The 97.5th percentile of Student's t with 1, 2, ... degrees of freedom (the engine does without scipy).
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
          2.120, 2.110, 2.101, 2.093, 2.086)
_MEDIAN_SPREAD = math.sqrt(math.pi / 2)  # the median's standard error over the mean's, at most (normal values)


@dataclass(frozen=True)
class LatencyProtocol:
    warmup_runs: int = 5  # per block: a fresh session's first runs allocate and fill caches
    min_runs: int = 5  # per block
    target_precision: float | None = 0.02  # relative half-width of the latency's interval; None: run to the cap
    cap_seconds: float = 2.0  # per artifact and batch size, all blocks with their sessions' opening and warm-up
    min_blocks: int = 3
    max_blocks: int = 8

    def __post_init__(self):
        if not 1 <= self.min_blocks <= self.max_blocks <= len(_T_975) + 1:
            raise ValueError(f"blocks: need 1 <= min_blocks <= max_blocks <= {len(_T_975) + 1}")
        if self.min_runs < 1 or self.warmup_runs < 0 or self.cap_seconds <= 0:
            raise ValueError("a latency protocol needs min_runs >= 1, warmup_runs >= 0 and a positive cap")

    @property
    def block_seconds(self) -> float:
        """The most one block may take, its session's opening and warm-up included (unless min_runs take longer)."""
        return self.cap_seconds / self.max_blocks

    def describe(self) -> str:
        target = f"+-{self.target_precision * 100:g}%" if self.target_precision else None
        runs = f"{self.warmup_runs} warm-up runs, then at least {self.min_runs} timed runs"
        if self.max_blocks == 1:
            goal = f"until the median's 95% interval is within {target} or {self.cap_seconds:g} s" if target \
                else f"for {self.cap_seconds:g} s"
            return f"one session: {runs} {goal}"
        block_goal = f"until its median's 95% interval is within {target} or {self.block_seconds:g} s" if target \
            else f"for {self.block_seconds:g} s"
        goal = f"until the 95% interval over the block medians is within {target} or {self.cap_seconds:g} s in all" \
            if target else f"until {self.cap_seconds:g} s in all"
        return (f"{self.min_blocks} to {self.max_blocks} blocks, each a fresh session: {runs} {block_goal}; "
                f"p50 = median of the block medians, blocks added {goal}")


MAX_LATENCY_CAP_SECONDS = 600.0
# The operator's default cap in seconds, for every timing that names none (unset: LatencyProtocol's 2 s);
# --latency-cap and the dashboard's seconds of timing override it per sweep.
LATENCY_CAP_VARIABLE = "QUANTSCOPE_LATENCY_CAP"


def _checked_cap(seconds: float) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= MAX_LATENCY_CAP_SECONDS:
        raise ValueError(f"a latency cap is seconds per artifact and batch size, above 0 and at most "
                         f"{MAX_LATENCY_CAP_SECONDS:g}; got {seconds!r}")
    return float(seconds)


def _operator_cap() -> float:
    text = os.environ.get(LATENCY_CAP_VARIABLE, "").strip()
    if not text:
        return LatencyProtocol.cap_seconds
    try:
        return _checked_cap(float(text))
    except ValueError:
        raise ValueError(f"{LATENCY_CAP_VARIABLE} must be seconds above 0 and at most {MAX_LATENCY_CAP_SECONDS:g}; "
                         f"got {text!r}") from None


ADAPTIVE = LatencyProtocol(cap_seconds=_operator_cap())


def capped_at(seconds: float) -> LatencyProtocol:
    """The default protocol with its time cap set to `seconds` per artifact and batch size (--latency-cap): a
    shorter cap finishes sooner with a wider interval, which the row states."""
    return replace(ADAPTIVE, cap_seconds=_checked_cap(seconds))


@dataclass(frozen=True)
class Latency:
    batch: int
    threads: int
    runs: int  # timed runs, over all blocks
    p50_ms: float  # the median of the block medians
    p95_ms: float  # the median of the blocks' 95th percentiles
    ci_low_ms: float | None  # p50's 95% interval; None only for a single block under 6 runs
    ci_high_ms: float | None
    capped: bool  # the time cap (or the most blocks) ended the timing before the interval was as narrow as asked
    blocks: int  # fresh sessions timed
    block_p50s_ms: tuple[float, ...]  # each block's median, in the order timed
    block_half_widths_ms: tuple[float | None, ...] = ()  # each block median's own 95% half-width (None: < 6 runs)

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


Model = Path | str | bytes  # what open_session opens: a file, or a serialized model
Clock = Callable[[], int]  # nanoseconds


def measure_latency(model: Model, feed: dict[str, np.ndarray], threads: int, protocol: LatencyProtocol = ADAPTIVE,
                    opener: Callable[[Model, int], ort.InferenceSession] = open_session,
                    clock: Clock = time.perf_counter_ns) -> Latency:
    """The model's latency on `feed` by `protocol`: blocks of runs, each in a fresh session from `opener`."""
    return measure_latencies({"model": model}, feed, threads, protocol, opener, clock)["model"]


def measure_latencies(models: dict[str, Model], feed: dict[str, np.ndarray], threads: int,
                      protocol: LatencyProtocol = ADAPTIVE,
                      opener: Callable[[Model, int], ort.InferenceSession] = open_session,
                      clock: Clock = time.perf_counter_ns) -> dict[str, Latency]:
    """Each model's latency on `feed`, timed together so that a slow spell of the machine hits all alike: every
    block opens a fresh session on each model and runs them in turn (the order reversed every round). The cap and
    a block's share of it are per model: with two models, a block may take twice as long."""
    timings: dict[str, list[np.ndarray]] = {name: [] for name in models}
    cap_ns = protocol.cap_seconds * 1e9 * len(models)
    block_ns = protocol.block_seconds * 1e9 * len(models)
    started = clock()
    while True:
        for name, runs in _timed_block(models, feed, threads, protocol, opener, clock, block_ns).items():
            timings[name].append(runs)
        blocks = len(next(iter(timings.values())))
        if blocks < protocol.min_blocks:
            continue
        latencies = {name: latency_of_blocks(runs, _batch(feed), threads, protocol) for name, runs in timings.items()}
        if (blocks >= protocol.max_blocks or clock() - started + block_ns > cap_ns
                or not any(latency.capped for latency in latencies.values())):
            return latencies


def _timed_block(models: dict[str, Model], feed: dict[str, np.ndarray], threads: int, protocol: LatencyProtocol,
                 opener: Callable[[Model, int], ort.InferenceSession], clock: Clock, block_ns: float
                 ) -> dict[str, np.ndarray]:
    """One block: a fresh session on each model, warmed up, then rounds of one run each until every block
    median's interval is within the target (after min_runs rounds) or `block_ns` have passed; milliseconds."""
    started = clock()
    sessions = {name: opener(model, threads) for name, model in models.items()}
    outputs = {name: [session.get_outputs()[0].name] for name, session in sessions.items()}
    for name, session in sessions.items():
        for _ in range(protocol.warmup_runs):
            session.run(outputs[name], feed)
    timings_ns: dict[str, list[int]] = {name: [] for name in sessions}
    order = list(sessions)
    rounds, next_check = 0, protocol.min_runs
    while True:
        for name in order if rounds % 2 == 0 else reversed(order):
            begin = clock()
            sessions[name].run(outputs[name], feed)
            timings_ns[name].append(clock() - begin)
        rounds += 1
        if rounds < protocol.min_runs:
            continue
        if clock() - started >= block_ns:
            break
        if protocol.target_precision and rounds >= next_check:
            next_check = rounds + max(1, rounds // 10)  # checking costs a sort: every +10%
            if all(_precise_enough(np.array(runs) / 1e6, protocol.target_precision) for runs in timings_ns.values()):
                break
    return {name: np.array(runs) / 1e6 for name, runs in timings_ns.items()}


def _batch(feed: dict[str, np.ndarray]) -> int:
    return next(iter(feed.values())).shape[0]


def latency_of_blocks(blocks: list[np.ndarray], batch: int, threads: int, protocol: LatencyProtocol) -> Latency:
    """The figures of one model's timed blocks (milliseconds per run, one array per session), as the module's
    docstring says; capped unless the interval is as narrow as `protocol` asks."""
    block_p50s = [float(np.median(runs)) for runs in blocks]
    half_widths = [_half_width(runs) for runs in blocks]
    if len(blocks) == 1:
        p50, interval = block_p50s[0], median_interval(blocks[0])
    else:
        p50 = float(np.median(block_p50s))
        half = _blocks_half_width(np.array(block_p50s), half_widths)  # h = max(between, within) of the docstring
        interval = (max(p50 - half, 0.0), p50 + half)
    latency = Latency(
        batch=batch,
        threads=threads,
        runs=sum(len(runs) for runs in blocks),
        p50_ms=p50,
        p95_ms=float(np.median([np.percentile(runs, 95) for runs in blocks])),
        ci_low_ms=None if interval is None else interval[0],
        ci_high_ms=None if interval is None else interval[1],
        capped=False,
        blocks=len(blocks),
        block_p50s_ms=tuple(block_p50s),
        block_half_widths_ms=tuple(half_widths),
    )
    reached = protocol.target_precision is not None and latency.precision is not None \
        and latency.precision <= protocol.target_precision
    return latency if reached else replace(latency, capped=True)


def _blocks_half_width(block_values: np.ndarray, own_half_widths: list[float | None]) -> float:
    """max(between, within) over n >= 2 block values, given each block's own half-width (None: unknown)."""
    n = len(block_values)
    between = _T_975[n - 2] * _MEDIAN_SPREAD * float(np.std(block_values, ddof=1)) / math.sqrt(n)
    own = [width for width in own_half_widths if width is not None]
    within = _MEDIAN_SPREAD * math.sqrt(float(np.mean(np.square(own))) / n) if own else 0.0
    return max(between, within)


@dataclass(frozen=True)
class LatencyRatio:
    """One latency over another's, the two timed in the same blocks: the median of the per-block ratios and its
    95% interval (None where a single block has too few runs to bound its medians)."""

    ratio: float
    ci_low: float | None
    ci_high: float | None
    blocks: int


SAME_AS_REFERENCE = LatencyRatio(1.0, 1.0, 1.0, 0)  # the reference against itself: exactly 1, nothing timed


def latency_ratio(latency: Latency, reference: Latency) -> LatencyRatio:
    """`latency` over `reference`, both from one measure_latencies call (block i of each timed at the same
    moment), as the module's docstring says: paired per block, so the machine's drift between blocks cancels."""
    if latency.blocks != reference.blocks or latency.blocks < 1:
        raise ValueError(f"a latency ratio pairs blocks timed together; got {latency.blocks} and "
                         f"{reference.blocks} blocks")
    logs = np.log(np.array(latency.block_p50s_ms)) - np.log(np.array(reference.block_p50s_ms))
    ratio = float(np.median(np.exp(logs)))
    own = [None if a is None or b is None else math.hypot(a / p, b / q) for a, b, p, q in
           zip(latency.block_half_widths_ms, reference.block_half_widths_ms, latency.block_p50s_ms,
               reference.block_p50s_ms)]
    if latency.blocks == 1:
        half = own[0] if own else None
    else:
        half = _blocks_half_width(logs, own)
    if half is None:
        return LatencyRatio(ratio, None, None, latency.blocks)
    return LatencyRatio(ratio, ratio * math.exp(-half), ratio * math.exp(half), latency.blocks)


def _half_width(timings_ms: np.ndarray) -> float | None:
    """The larger side of the median's own interval; None under 6 runs."""
    interval = median_interval(timings_ms)
    if interval is None:
        return None
    median = float(np.median(timings_ms))
    return max(median - interval[0], interval[1] - median)


def _precise_enough(timings_ms: np.ndarray, target: float) -> bool:
    half = _half_width(timings_ms)
    return half is not None and half <= target * float(np.median(timings_ms))


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
