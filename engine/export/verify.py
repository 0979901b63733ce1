"""`quantscope verify DIR DATA`: does a bundle still hold the model it was measured as, with the same metric?

The model file's sha256 must equal bundle.json's, and its metric (the primary one, and per slice), recomputed in
a fresh process (engine.export.reevaluate) on the same rows of DATA, must equal the bundle's exactly. Latency is
timed too and compared within LATENCY_TOLERANCE: reported, never gating (another machine, another load). Exit 0
when it holds, 1 with a one-line reason when it does not, 2 on bad input (not a bundle, data it was not measured
on, an original model that is not its base).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from engine import results
from engine.errors import BundleError
from engine.export.bundle import read_bundle
from engine.formatting import metric_text
from engine.store.blobs import sha256_file

LATENCY_TOLERANCE = 0.25  # relative: a p50 within +-25% of the bundle's counts as the same; reported only
REEVALUATE_TIMEOUT_SECONDS = 3600

PASSED, FAILED, BAD_INPUT = 0, 1, 2


@dataclass(frozen=True)
class Verification:
    code: int  # PASSED, FAILED or BAD_INPUT
    line: str  # the verdict in one line
    notes: list[str] = field(default_factory=list)  # what else was seen: latency, changed documents


def _file_check(bundle: Path, data: Path, reference: Path | None, figures: dict) -> str | None:
    """Why the model file is not the measured one (a failure), or None; raises BundleError for bad input."""
    model = figures["model"]
    model_path = bundle / model["file"]
    if not model_path.is_file():
        return f"{model['file']} is missing from {bundle}"
    found = sha256_file(model_path)
    if found != model["sha256"]:
        return f"{model['file']} has sha256 {found[:16]}..., not the {model['sha256'][:16]}... it was measured with"
    if not Path(data).is_file():
        raise BundleError(f"no data file at {data}")
    expected = figures["data"]["validation"]
    if sha256_file(data) != expected["sha256"]:
        raise BundleError(f"{data} is not the data the bundle was measured on ({expected['file']}, sha256 "
                          f"{expected['sha256'][:16]}...)")
    if reference is not None:
        if not Path(reference).is_file():
            raise BundleError(f"no model file at {reference}")
        if sha256_file(reference) != figures["base_model"]["sha256"]:
            raise BundleError(f"{reference} is not the original this bundle was quantized from "
                              f"({figures['base_model']['name']})")
    return None


def _changed_documents(bundle: Path, figures: dict) -> list[str]:
    """The bundle's other files that differ from when it was written (a model card edited before publishing)."""
    changed = []
    for name, sha256 in figures.get("files", {}).items():
        if name != figures["model"]["file"] and (not (bundle / name).is_file() or sha256_file(bundle / name) != sha256):
            changed.append(name)
    return [f"changed since export (not checked further): {', '.join(changed)}"] if changed else []


def _metric_mismatch(figures: dict, again: dict) -> str | None:
    metric = figures["metric"]
    name = metric["name"]
    if again["metric"] != metric["value"]:
        return (f"{name} is {metric_text(name, again['metric'])} ({again['metric']!r}) here, but "
                f"{metric_text(name, metric['value'])} ({metric['value']!r}) in the bundle")
    for slice_name, stored in metric["per_slice"].items():
        found = again["per_slice"].get(slice_name, {}).get(name)
        if found != stored["value"]:
            return f"{name} on slice {slice_name} is {found!r} here, but {stored['value']!r} in the bundle"
    if again["fidelity_compared"]:
        for fidelity_name, stored in figures["fidelity"].items():
            if fidelity_name != "counts" and again["scores"].get(fidelity_name) != stored:
                return f"{fidelity_name} is {again['scores'].get(fidelity_name)!r} here, but {stored!r} in the bundle"
    return None


def _latency_note(figures: dict, again: dict) -> str | None:
    stored = figures["latency"]
    timed = again.get("latency")
    if not timed:
        return None
    sizes = (("batch_1", results.SINGLE_EXAMPLE.p50, "batch 1"), ("batch_n", results.BATCH_N.p50, "batch N"))
    for key, column, label in sizes:
        if stored.get(key) and timed.get(column) is not None:
            then, now = stored[key]["p50_ms"], timed[column]
            change = now / then - 1
            verdict = "within" if abs(change) <= LATENCY_TOLERANCE else "outside"
            return (f"latency p50 at {label}: {now:.4g} ms here, {then:.4g} ms in the bundle ({change:+.1%}, {verdict} "
                    f"the +-{LATENCY_TOLERANCE:.0%} tolerance; reported, not gating)")
    return None


def verify(bundle: Path, data: Path, reference: Path | None = None, latency: bool = True) -> Verification:
    """Check a bundle directory against DATA (and, for a metric that compares with the original, the original)."""
    bundle = Path(bundle)
    figures = read_bundle(bundle)
    broken = _file_check(bundle, Path(data), reference, figures)
    if broken:
        return Verification(FAILED, f"verify failed: {broken}")
    command = [sys.executable, "-m", "engine.export.reevaluate", str(bundle), str(data)]
    command += ["--reference", str(reference)] if reference is not None else []
    command += [] if latency else ["--no-latency"]
    # A fresh process: nothing cached in this one (sessions, loaded models) can stand in for the file.
    done = subprocess.run(command, capture_output=True, text=True, timeout=REEVALUATE_TIMEOUT_SECONDS)
    try:
        again = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Verification(FAILED, f"verify failed: re-evaluating the model stopped: {last}")
    if "error" in again:
        if again["bad_input"]:
            raise BundleError(again["error"])
        return Verification(FAILED, f"verify failed: the model no longer runs here: {again['error']}")
    mismatch = _metric_mismatch(figures, again)
    notes = [note for note in [_latency_note(figures, again)] if note] + _changed_documents(bundle, figures)
    if mismatch:
        return Verification(FAILED, f"verify failed: {mismatch}", notes)
    metric = figures["metric"]
    slices = f" and on {len(metric['per_slice'])} slices" if metric["per_slice"] else ""
    return Verification(PASSED, f"verified: {figures['model']['file']} sha256 matches; {metric['name']} "
                                f"{metric_text(metric['name'], again['metric'])} matches exactly{slices}", notes)
