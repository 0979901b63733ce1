"""How numbers read, on the dashboard and in export reports: metric values, ratios, speed-ups and a change
against fp32 (file sizes: engine.text)."""

from __future__ import annotations

import math

from engine.metrics import METRICS
from engine.results import DELTA, DELTA_CI_HIGH, DELTA_CI_LOW, METRIC_NAME, change_is_measurable

# Metrics that are shares of examples (0..1): shown as percentages, which operators read at a glance.
RATE_METRICS = frozenset({"top1", "top5", "macro_f1", "ece", "top1_agreement"})

# A speed ratio this close to 1 is within timing noise: say "about as fast" rather than "1.02x faster".
SAME_SPEED_BAND = 0.05


def metric_text(name: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if name in RATE_METRICS:
        return f"{value:.2%}"
    return f"{value:.4g}"


def metric_axis_title(name: str) -> str:
    info = METRICS[name]
    return f"{info.label} ({'higher' if info.higher_is_better else 'lower'} is better)"


def ratio_text(ratio: float) -> str:
    return f"{ratio:.2f}x"


def speed_text(reference_ms: float, ms: float) -> str | None:
    """'3.1x faster', '1.4x slower' or 'about as fast' than the reference; None when either was not timed."""
    if not (reference_ms > 0 and ms > 0):  # also False for NaN
        return None
    speedup = reference_ms / ms
    if abs(speedup - 1) < SAME_SPEED_BAND:
        return "about as fast"
    return f"{speedup:.1f}x faster" if speedup > 1 else f"{1 / speedup:.1f}x slower"


def change_text(row) -> str:
    """The primary metric's change against the original in words, with its 95% interval: 'no measurable change
    (-0.28 points, 95% interval -0.83 to +0.28)' or 'measurably worse: -1.94 points (...)'."""
    name = row[METRIC_NAME]
    scale, unit = (100, " points") if name in RATE_METRICS else (1, "")
    delta, low, high = (row[column] * scale for column in (DELTA, DELTA_CI_LOW, DELTA_CI_HIGH))
    figures = f"{delta:+.2f}{unit}, 95% interval {low:+.2f} to {high:+.2f}"
    if not change_is_measurable(row):
        return f"no measurable change ({figures})"
    worse = (delta < 0) == METRICS[name].higher_is_better
    return f"measurably {'worse' if worse else 'better'} ({figures})"
