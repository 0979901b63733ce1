"""`quantscope gate`: build and measure a recipe, then pass or fail it against limits, for CI.

    quantscope gate MODEL DATA --recipe R.json --max-drop D [--metric M] [--max-size-ratio X]
                    [--max-latency-ratio Y] [--verdict FILE]

The recipe and fp32 are built and scored the way a sweep does (engine.export.sources). Checks:
- metric: its drop against fp32 on the same examples (engine.results.loss: positive when worse, whichever way the
  metric points) is at most D, in the metric's own units (0.01 = one point of accuracy);
- size: the artifact's bytes over fp32's are at most X;
- latency, noise-aware: fp32 and the artifact are timed in the same run by engine.measure's block protocol: each
  block a fresh session on both, interleaved (one run of each in turn, the order alternating, so a slow spell of
  the machine hits both alike); blocks until both medians' 95% intervals (which cover the spread between
  sessions) are within +-2% or GATE_PROTOCOL's time cap; the ratio (engine.measure.latency_ratio: paired per
  block, so the machine's drift between blocks cancels) fails only when its 95% interval lies wholly above Y.
  The margin used (how far the ratio's interval reaches below it) is reported with the verdict.
Exit 0 pass, 1 fail, 2 error (bad input, a recipe that cannot be built, or a simulated recipe: nothing deployable
to gate); one line on stdout, and with --verdict the same as JSON.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from engine import results
from engine.data import Dataset
from engine.errors import QuantscopeError, RecipeError
from engine.export.sources import MeasureOptions, measure_for_export
from engine.measure import (
    Latency, LatencyProtocol, batch_is_dynamic, latency_feed, latency_ratio, measure_latencies, open_session,
)
from engine.metrics import METRICS
from engine.provenance import machine, software
from engine.recipe import Recipe
from engine.store.blobs import sha256_file
from engine.text import error_line

PASS, FAIL, ERROR = 0, 1, 2
VERDICT_WORDS = {PASS: "pass", FAIL: "fail", ERROR: "error"}
# Per model timed: fp32 and the artifact each get up to cap_seconds, in alternation, over 3 to 8 blocks.
GATE_PROTOCOL = LatencyProtocol(warmup_runs=5, min_runs=20, target_precision=0.02, cap_seconds=3.0)


@dataclass(frozen=True)
class Limits:
    max_drop: float
    metric: str | None = None  # None: the row's primary metric
    max_size_ratio: float | None = None
    max_latency_ratio: float | None = None


@dataclass(frozen=True)
class Check:
    name: str  # "metric", "size" or "latency"
    passed: bool
    text: str  # e.g. "top1 drop 0.0019 <= 0.01"
    figures: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    code: int  # PASS, FAIL or ERROR
    line: str
    checks: tuple[Check, ...] = ()
    recipe: dict | None = None
    inputs: dict | None = None

    def to_dict(self) -> dict:
        return results.json_value({
            "verdict": VERDICT_WORDS[self.code], "exit_code": self.code, "line": self.line,
            "checks": [asdict(check) for check in self.checks], "recipe": self.recipe, "inputs": self.inputs,
            "versions": software(), "machine": machine(),
        })


def interleaved_latency(paths: dict[str, Path], dataset: Dataset, threads: int = 1,
                        protocol: LatencyProtocol = GATE_PROTOCOL) -> dict[str, Latency]:
    """Each model's latency at batch 1 (or its fixed batch size) by engine.measure's block protocol, the models
    timed together: in every block a fresh session on each, a run of each in turn, the order reversed every round."""
    first = open_session(next(iter(paths.values())), threads)
    batch = 1 if batch_is_dynamic(first) else first.get_inputs()[0].shape[0]
    del first
    return measure_latencies(paths, latency_feed(dataset, batch), threads, protocol)


def _metric_check(row: pd.Series, reference: pd.Series, limits: Limits) -> Check:
    name = limits.metric or row[results.METRIC_NAME]
    measured = [metric for metric in METRICS if not pd.isna(row.get(metric, np.nan))]
    if name not in measured:
        raise RecipeError(f"no metric {name!r} was measured for this model and data; measured: {', '.join(measured)}")
    drop = results.loss(float(row[name]) - float(reference[name]), name) + 0.0  # + 0.0: no "-0"
    passed = drop <= limits.max_drop
    text = f"{name} drop {drop:.4g} {'<=' if passed else '>'} {limits.max_drop:g}"
    return Check("metric", passed, text, {"metric": name, "fp32": float(reference[name]), "recipe": float(row[name]),
                                          "drop": drop, "max_drop": limits.max_drop})


def _size_check(row: pd.Series, limit: float) -> Check:
    ratio = float(row[results.SIZE_RATIO])
    passed = ratio <= limit
    return Check("size", passed, f"size {ratio:.3f}x fp32 {'<=' if passed else '>'} {limit:g}x",
                 {"size_bytes": int(row[results.SIZE_BYTES]), "ratio": ratio, "max_ratio": limit})


def _latency_check(reference: pd.Series, row: pd.Series, data: Dataset, threads: int, limit: float) -> Check:
    timed = interleaved_latency({"fp32": Path(reference[results.ARTIFACT]), "recipe": Path(row[results.ARTIFACT])},
                                data, threads)
    fp32, recipe = timed["fp32"], timed["recipe"]
    relative = latency_ratio(recipe, fp32)
    ratio, low, high = relative.ratio, relative.ci_low, relative.ci_high
    margin = (ratio - low) / ratio
    passed = low <= limit  # fails only when the whole interval is above the limit: slower beyond the noise
    text = (f"latency {ratio:.3f}x fp32 (95% interval {low:.3f}-{high:.3f}, noise margin {margin:.1%}) "
            f"{'<=' if passed else '>'} {limit:g}x")
    return Check("latency", passed, text, {
        "ratio": ratio, "ratio_ci_low": low, "ratio_ci_high": high, "margin": margin, "max_ratio": limit,
        "batch": recipe.batch, "threads": threads, "fp32": asdict(fp32), "recipe": asdict(recipe),
        "method": "fp32 and the recipe timed in one run, interleaved in every block (order alternating each round); "
                  f"{GATE_PROTOCOL.describe()} each; the ratio is the median of the per-block ratios, its 95% interval "
                  "from their spread; fails only when that interval lies wholly above the limit"})


def gate(model: Path, data: Path, recipe: Recipe, limits: Limits, options: MeasureOptions = MeasureOptions(),
         progress: bool = False) -> Verdict:
    """Build and measure `recipe` beside fp32 and check it against `limits`; never raises for bad input (an error
    verdict instead)."""
    description = {"name": recipe.short_name(), "key": recipe.key(), "settings": recipe.to_dict()}
    try:
        inputs = {"model": {"file": Path(model).name, "sha256": sha256_file(model)},
                  "data": {"file": Path(data).name, "sha256": sha256_file(data)}}
        with tempfile.TemporaryDirectory(prefix="quantscope-gate-") as workdir:
            measured = measure_for_export(model, data, recipe, Path(workdir), options, timed=False, progress=progress)
            row, reference = measured.source.row, measured.source.reference
            if measured.source.simulated:
                raise RecipeError(f"{recipe.short_name()} is simulated (onnxruntime has no kernel for it): there is no "
                                  "deployable model to gate")
            checks = [_metric_check(row, reference, limits)]
            if limits.max_size_ratio is not None:
                checks.append(_size_check(row, limits.max_size_ratio))
            if limits.max_latency_ratio is not None:
                checks.append(_latency_check(reference, row, measured.data, options.threads, limits.max_latency_ratio))
    except (QuantscopeError, OSError) as error:
        message = str(error) if isinstance(error, QuantscopeError) else error_line(error)
        return Verdict(ERROR, f"ERROR {recipe.short_name()}: {message}", recipe=description)
    except Exception as error:  # onnxruntime failing on the model: the gate cannot judge it
        return Verdict(ERROR, f"ERROR {recipe.short_name()}: {error_line(error)}", recipe=description)
    code = PASS if all(check.passed for check in checks) else FAIL
    shown = [check.text for check in checks if not check.passed] if code == FAIL else [c.text for c in checks]
    return Verdict(code, f"{VERDICT_WORDS[code].upper()} {recipe.short_name()}: {'; '.join(shown)}", tuple(checks),
                   description, inputs)


def write_verdict(verdict: Verdict, path: Path) -> None:
    Path(path).write_text(json.dumps(verdict.to_dict(), indent=2) + "\n")
