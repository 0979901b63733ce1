"""The latency protocol: the median's distribution-free interval, and runs that stop when it is narrow enough."""

from __future__ import annotations

import numpy as np
import pytest

from engine.measure import LatencyProtocol, _median_rank_bounds, measure_latency, median_interval


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


class _Session:
    """Stands in for an onnxruntime session: each run costs a fixed amount of busy work."""

    def __init__(self, work: int):
        self.work = work

    def get_outputs(self):
        return [type("Output", (), {"name": "y"})()]

    def run(self, names, feed):
        return [sum(range(self.work))]


def test_runs_stop_once_the_interval_is_narrow_enough_and_say_so():
    latency = measure_latency(_Session(20_000), {"x": np.zeros((1, 2))}, threads=1,
                              protocol=LatencyProtocol(warmup_runs=2, min_runs=5, target_precision=0.5, cap_seconds=30))
    assert latency.runs >= 6 and not latency.capped  # a +-50% target is met long before 30 s
    assert latency.precision <= 0.5 and latency.ci_low_ms <= latency.p50_ms <= latency.ci_high_ms


def test_the_time_cap_ends_the_runs_and_is_reported():
    protocol = LatencyProtocol(warmup_runs=1, min_runs=5, target_precision=1e-9, cap_seconds=0.05)
    latency = measure_latency(_Session(20_000), {"x": np.zeros((1, 2))}, threads=1, protocol=protocol)
    assert latency.capped and latency.runs >= 5
    assert protocol.describe().endswith("or 0.05 s")
