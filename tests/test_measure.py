"""The latency protocol: the median's distribution-free interval, runs that stop when it is narrow enough, and
blocks of fresh sessions whose interval covers the spread between sessions. Timings come from a fake clock that fake
sessions advance: nothing here is timed for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest

from engine.measure import (
    _T_975, Latency, LatencyProtocol, _median_rank_bounds, latency_of_blocks, latency_ratio,
    measure_latencies, measure_latency, median_interval,
)

ADAPTIVE = LatencyProtocol()  # the code's defaults, whatever QUANTSCOPE_LATENCY_CAP the suite runs under
SINGLE_SESSION = LatencyProtocol(min_blocks=1, max_blocks=1)  # the protocol before blocks: one session's runs


@pytest.mark.parametrize("runs, ranks", [(6, (0, 5)), (10, (1, 8)), (20, (5, 14)), (100, (39, 60))])
def test_the_median_interval_uses_the_textbook_order_statistics(runs, ranks):
    """0-based ranks of the usual 95% interval for the median: x(2)..x(9) of 10 runs, x(40)..x(61) of 100."""
    assert _median_rank_bounds(runs) == ranks


def test_no_interval_exists_under_six_runs():
    assert median_interval(np.ones(5)) is None and median_interval(np.arange(6.0)) == (0.0, 5.0)


@pytest.mark.parametrize("runs", [8, 30, 200])
def test_the_median_interval_covers_the_true_median_at_least_95_percent_of_the_time(runs):
    """Skewed timings (exponential, true median ln 2) in 2000 seeded trials: coverage at or above 95%,
    within what 2000 trials can tell."""
    generator = np.random.default_rng(7)
    true_median = np.log(2)
    covered = 0
    for _ in range(2000):
        low, high = median_interval(generator.exponential(size=runs))
        covered += low <= true_median <= high
    assert covered / 2000 >= 0.94


class _Clock:
    """A nanosecond clock that only moves when a fake session opens or runs."""

    def __init__(self):
        self.now = 0

    def __call__(self) -> int:
        return self.now


class _Session:
    """Stands in for an onnxruntime session: each run takes its session's median, give or take a seeded jitter."""

    def __init__(self, clock: _Clock, median_ms: float, jitter: float, generator: np.random.Generator):
        self.clock, self.median_ms, self.jitter, self.generator = clock, median_ms, jitter, generator

    def get_outputs(self):
        return [type("Output", (), {"name": "y"})()]

    def run(self, names, feed):
        self.clock.now += round(self.median_ms * (1 + self.jitter * self.generator.standard_normal()) * 1e6)


class _Machine:
    """Opens fake sessions whose medians cycle through `medians_ms`, one per session: the spread between sessions
    that one session's runs cannot show. Records what it was asked to open."""

    def __init__(self, medians_ms, jitter=0.005, open_ms=2.0, clock=None):
        self.clock = clock or _Clock()
        self.medians_ms, self.jitter, self.open_ms = list(medians_ms), jitter, open_ms
        self.generator = np.random.default_rng(3)
        self.opened: list[tuple[object, int]] = []

    def open(self, model, threads):
        median = self.medians_ms[len(self.opened) % len(self.medians_ms)]
        self.opened.append((model, threads))
        self.clock.now += round(self.open_ms * 1e6)
        return _Session(self.clock, median, self.jitter, self.generator)

    def latency(self, protocol, feed=None, threads=1) -> Latency:
        return measure_latency("model.onnx", feed or {"x": np.zeros((1, 2))}, threads, protocol, self.open, self.clock)


def test_sessions_that_differ_widen_the_interval_to_cover_where_they_centre():
    """Three kinds of session, 1.0, 1.5 and 2.0 ms, each steady within itself (+-0.5%): one session's interval is
    narrow and misses the centre; the blocks' interval holds it, is as wide as the sessions' spread says, and the
    target is not claimed."""
    one_session = _Machine([1.0, 1.5, 2.0]).latency(SINGLE_SESSION)
    assert one_session.blocks == 1 and one_session.precision <= 0.02 and not one_session.capped
    assert not one_session.ci_low_ms <= 1.5 <= one_session.ci_high_ms

    latency = _Machine([1.0, 1.5, 2.0]).latency(ADAPTIVE)
    assert latency.capped and latency.blocks == ADAPTIVE.max_blocks  # the sessions never agree within +-2%
    assert latency.block_p50s_ms == pytest.approx([1.0, 1.5, 2.0, 1.0, 1.5, 2.0, 1.0, 1.5], rel=0.01)
    assert latency.p50_ms == pytest.approx(1.5, rel=0.01) and latency.ci_low_ms < 1.5 < latency.ci_high_ms
    assert latency.precision > 0.2  # the between-session spread, not the runs' +-0.5%


def test_only_three_blocks_cover_their_extremes():
    """With the fewest blocks, t(0.975, 2) = 4.3 makes the interval reach past every session it saw."""
    latency = _Machine([1.0, 1.5, 2.0]).latency(LatencyProtocol(min_blocks=3, max_blocks=3))
    assert latency.blocks == 3 and latency.ci_low_ms < 1.0 and latency.ci_high_ms > 2.0


def test_sessions_that_agree_stop_at_the_fewest_blocks():
    machine = _Machine([1.0], jitter=0.001)
    latency = machine.latency(ADAPTIVE)
    assert latency.blocks == ADAPTIVE.min_blocks == len(machine.opened) and not latency.capped
    assert latency.precision <= 0.02 and latency.ci_low_ms <= latency.p50_ms <= latency.ci_high_ms
    assert latency.runs >= ADAPTIVE.min_blocks * ADAPTIVE.min_runs


def test_the_cap_bounds_all_blocks_together_and_is_reported():
    """An unreachable target: blocks of cap/max_blocks each until another would not fit; the whole timing, session
    openings and warm-ups included, ends within the cap (give or take the run that crossed a block's share)."""
    protocol = LatencyProtocol(target_precision=1e-9, cap_seconds=0.1)
    machine = _Machine([1.0])
    latency = machine.latency(protocol)
    assert latency.capped and protocol.min_blocks <= latency.blocks <= protocol.max_blocks
    assert machine.clock.now <= 0.1e9 + 1.1e6
    assert machine.clock.now > 0.1e9 - 2 * protocol.block_seconds * 1e9  # and it used the time it had


def test_the_fewest_blocks_of_the_fewest_runs_outlast_a_cap_too_short_for_them():
    protocol = LatencyProtocol(warmup_runs=5, min_runs=5, target_precision=1e-9, cap_seconds=0.1)
    latency = _Machine([100.0]).latency(protocol)  # 100 ms a run: 3 blocks of 10 runs take 3 s
    assert latency.capped and latency.blocks == 3 and latency.runs == 15


def test_a_latency_states_its_batch_threads_blocks_and_runs_as_strict_json():
    machine = _Machine([1.0, 1.02])
    latency = machine.latency(ADAPTIVE, feed={"x": np.zeros((4, 2))}, threads=2)
    assert (latency.batch, latency.threads) == (4, 2) and len(latency.block_p50s_ms) == latency.blocks
    assert machine.opened == [("model.onnx", 2)] * latency.blocks  # a fresh session on the artifact per block
    json.dumps(asdict(latency), allow_nan=False)
    assert "fresh session" in ADAPTIVE.describe() and "median of the block medians" in ADAPTIVE.describe()
    assert SINGLE_SESSION.describe().startswith("one session: ")


def test_models_timed_together_get_fresh_sessions_each_block_and_the_same_rounds():
    clock = _Clock()
    machines = {"fp32.onnx": _Machine([1.0], clock=clock), "int8.onnx": _Machine([0.4], clock=clock)}
    timed = measure_latencies({"fp32": "fp32.onnx", "int8": "int8.onnx"}, {"x": np.zeros((1, 2))}, 1, ADAPTIVE,
                              lambda path, threads: machines[path].open(path, threads), clock)
    assert timed["fp32"].blocks == timed["int8"].blocks == len(machines["int8.onnx"].opened) >= 3
    assert timed["fp32"].runs == timed["int8"].runs
    assert timed["int8"].p50_ms / timed["fp32"].p50_ms == pytest.approx(0.4, rel=0.02)


class _DriftingMachine:
    """Two models on one machine whose speed changes from block to block (host contention, frequency): in block i
    every run of either model takes its own median times speeds[i], give or take a seeded +-0.5% jitter."""

    def __init__(self, medians_ms: dict[str, float], speeds: list[float]):
        self.clock, self.medians_ms, self.speeds = _Clock(), medians_ms, speeds
        self.generator = np.random.default_rng(5)
        self.opened = 0

    def open(self, model, threads):
        speed = self.speeds[(self.opened // len(self.medians_ms)) % len(self.speeds)]  # a block opens each model
        self.opened += 1
        self.clock.now += 2_000_000
        return _Session(self.clock, self.medians_ms[model] * speed, 0.005, self.generator)

    def timed(self, protocol=ADAPTIVE) -> dict[str, Latency]:
        return measure_latencies({"artifact": "int8.onnx", "fp32": "fp32.onnx"}, {"x": np.zeros((1, 2))}, 1,
                                 protocol, self.open, self.clock)


def test_a_drifting_machine_moves_the_latency_but_not_its_ratio_to_fp32():
    """The artifact runs at 0.4x fp32 throughout; the machine's speed wanders over 1-2.7x between blocks. Timed on
    a fast spell and on a slow one, the absolute p50s disagree far beyond their own intervals' agreement, while
    both ratios' intervals hold 0.4 and are narrow: the drift hits both models alike within a block."""
    medians = {"int8.onnx": 0.4, "fp32.onnx": 1.0}
    fast = _DriftingMachine(medians, [1.0, 1.3, 1.1, 1.6, 1.2, 1.4, 1.0, 1.5]).timed()
    slow = _DriftingMachine(medians, [2.2, 2.7, 1.9, 2.5, 2.1, 2.6, 2.3, 2.0]).timed()
    assert slow["artifact"].p50_ms > 1.5 * fast["artifact"].p50_ms
    assert fast["artifact"].capped and fast["artifact"].precision > 0.05  # the drift widens the absolute figure
    for timed in (fast, slow):
        relative = latency_ratio(timed["artifact"], timed["fp32"])
        assert relative.ci_low <= 0.4 <= relative.ci_high and relative.ci_low <= relative.ratio <= relative.ci_high
        assert relative.ci_high / relative.ci_low < 1.05 and relative.blocks == timed["artifact"].blocks
    with pytest.raises(ValueError, match="pairs blocks"):
        latency_ratio(fast["artifact"], latency_of_blocks([np.ones(10)], 1, 1, ADAPTIVE))


@pytest.mark.parametrize("blocks", [2, 3, 8])
def test_the_ratio_interval_covers_the_true_ratio_at_least_95_percent_of_the_time(blocks):
    """Per block a machine speed drawn over 0.5-2x (shared by both models), and for each model its own session
    effect (sd 5%) and 10 runs at +-1%; the true ratio 0.4. In 1000 seeded trials the paired interval holds 0.4 at
    least 95% of the time, within what 1000 trials can tell (0.93 is 3 standard errors below 0.95)."""
    generator = np.random.default_rng(13)
    covered = 0
    for _ in range(1000):
        speeds = np.exp(generator.uniform(np.log(0.5), np.log(2.0), blocks))

        def timed(median):
            sessions = median * speeds * (1 + 0.05 * generator.standard_normal(blocks))
            return latency_of_blocks([s * (1 + 0.01 * generator.standard_normal(10)) for s in sessions], 1, 1,
                                     ADAPTIVE)

        relative = latency_ratio(timed(0.4), timed(1.0))
        covered += relative.ci_low <= 0.4 <= relative.ci_high
    assert covered / 1000 >= 0.93


@pytest.mark.parametrize("blocks", [2, 3, 5, 8])
def test_the_blocks_interval_covers_the_centre_of_normal_sessions_at_least_95_percent_of_the_time(blocks):
    """Each session's median drawn from a normal spread around 1 ms (sd 5%), 20 runs each at +-1%: in 2000 seeded
    trials the interval holds 1 ms at least 95% of the time, within what 2000 trials can tell."""
    generator = np.random.default_rng(11)
    covered = 0
    for _ in range(2000):
        sessions = 1 + 0.05 * generator.standard_normal(blocks)
        runs = [median * (1 + 0.01 * generator.standard_normal(20)) for median in sessions]
        latency = latency_of_blocks(runs, 1, 1, ADAPTIVE)
        covered += latency.ci_low_ms <= 1.0 <= latency.ci_high_ms
    assert covered / 2000 >= 0.94


def test_the_t_quantiles_are_students():
    stats = pytest.importorskip("scipy.stats")
    assert _T_975 == pytest.approx([stats.t.ppf(0.975, df) for df in range(1, len(_T_975) + 1)], abs=6e-4)


def test_a_protocol_with_impossible_blocks_is_refused():
    with pytest.raises(ValueError, match="blocks"):
        LatencyProtocol(min_blocks=4, max_blocks=3)


def test_the_operators_default_cap_comes_from_the_environment_and_is_checked():
    """QUANTSCOPE_LATENCY_CAP sets the cap of every timing that names none; a bad value is refused by name."""
    def default_cap(value: str) -> subprocess.CompletedProcess:
        code = "from engine.measure import ADAPTIVE, capped_at; print(ADAPTIVE.cap_seconds, capped_at(5).warmup_runs)"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "QUANTSCOPE_LATENCY_CAP": value})
    assert default_cap("0.7").stdout.split() == ["0.7", str(LatencyProtocol.warmup_runs)]
    assert default_cap("").stdout.split()[0] == str(LatencyProtocol.cap_seconds)
    refused = default_cap("forever")
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].endswith(
        "QUANTSCOPE_LATENCY_CAP must be seconds above 0 and at most 600; got 'forever'")
