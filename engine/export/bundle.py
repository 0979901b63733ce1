"""An export bundle: one measured recipe as files a user ships, with the figures it was measured at.

    model.onnx      the exact bytes that were measured (a simulated recipe's file is model-fp32-simulation.onnx:
                    not offered as deployable)
    recipe.json     the recipe (engine.recipe), to rebuild it
    bundle.json     the figures as measured (BUNDLE_SCHEMA_VERSION; `bundle_figures`), and the sha256 of every
                    other file
    report.html     a self-contained report (engine.export.report)
    MODEL_CARD.md   a Hugging Face model card (engine.export.card)

A bundle is made from an `ExportSource`: a results table, the row to ship and what its figures rest on
(engine.export.sources makes one from a sweep job's row or by measuring a recipe the way a sweep does).
"""

from __future__ import annotations

import io
import json
import math
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine import results
from engine.errors import BundleError
from engine.export.card import model_card
from engine.export.report import render_report
from engine.formatting import change_text
from engine.metrics import METRICS
from engine.onnx_files import DATA_SUFFIX, model_files
from engine.recipe import Recipe
from engine.store.blobs import sha256_file

BUNDLE_SCHEMA_VERSION = 1
BUNDLE_FORMAT = "quantscope export bundle"
MODEL_FILE = "model.onnx"
SIMULATION_FILE = "model-fp32-simulation.onnx"  # the name says it: no real kernel, full precision
RECIPE_FILE = "recipe.json"
BUNDLE_FILE = "bundle.json"
REPORT_FILE = "report.html"
CARD_FILE = "MODEL_CARD.md"
ZIP_DATE = (2000, 1, 1, 0, 0, 0)  # every member's time stamp: the same bundle always zips to the same bytes

NOT_DEPLOYABLE = (
    "simulated: onnxruntime has no kernel for this recipe, so its file is the fp32 model with weights (and "
    "activations) rounded to the recipe's grid and back; it shows what the recipe would score, but it is as big "
    "and as slow as the original, and its size is an estimate of packed integers"
)


@dataclass(frozen=True)
class DataFile:
    """A data file the figures rest on, as the sweep read it."""

    role: str  # "validation", "calibration", or an extra evaluation set's name
    file: str
    sha256: str
    bytes: int
    rows: int
    label_column: str | None = None
    slice_column: str | None = None

    def to_dict(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes, "rows": self.rows,
                "label_column": self.label_column, "slice_column": self.slice_column}


@dataclass(frozen=True)
class ExportSource:
    """What a bundle is made of: a measured table, the row to ship, its artifact, and what the figures rest on."""

    table: pd.DataFrame  # engine.results.results_table: the sweep's rows, or fp32 and the recipe measured for export
    row: pd.Series
    artifact: Path  # the file that was measured
    model_name: str
    model_sha256: str
    model_bytes: int
    data: tuple[DataFile, ...]  # the validation set first
    mask: str  # the fidelity mask asked for (engine.masking: AUTO, NO_MASK or an input's name)
    shifts: tuple[str, ...] = ()  # synthetic shifts also scored (engine.shifts)
    job_id: str | None = None
    measured_at: float | None = None  # unix seconds

    @property
    def recipe(self) -> Recipe:
        return Recipe.from_json(self.row[results.RECIPE])

    @property
    def reference(self) -> pd.Series | None:
        return results.reference_row(self.table)

    @property
    def simulated(self) -> bool:
        return bool(self.row[results.SIMULATED])


def _number(value):
    """A row's value as JSON writes it: None where not measured (NaN), "inf" for infinity, plain Python numbers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return results.json_value(value.item() if hasattr(value, "item") else value)


def _json_column(row: pd.Series, column: str) -> dict | None:
    value = row.get(column)
    return json.loads(value) if isinstance(value, str) else None


def _latency_figures(row: pd.Series | None) -> dict | None:
    """Batch-1 and batch-N timings of a row: median, 95th percentile, runs, the median's interval, blocks (None on a
    row timed before blocks); None untimed."""
    if row is None or pd.isna(row.get(results.THREADS)):
        return None
    timings = {}
    for key, names in (("batch_1", results.SINGLE_EXAMPLE), ("batch_n", results.BATCH_N)):
        if pd.isna(row.get(names.p50)):
            timings[key] = None
            continue
        timings[key] = {"p50_ms": _number(row[names.p50]), "p95_ms": _number(row[names.p95]),
                        "runs": int(row[names.runs]), "ci_low_ms": _number(row.get(names.ci_low)),
                        "ci_high_ms": _number(row.get(names.ci_high)), "capped": bool(row.get(names.capped)),
                        "blocks": None if pd.isna(row.get(names.blocks)) else int(row[names.blocks]),
                        "vs_fp32": _number(row.get(names.vs_fp32)),
                        "vs_fp32_ci_low": _number(row.get(names.vs_fp32_ci_low)),
                        "vs_fp32_ci_high": _number(row.get(names.vs_fp32_ci_high))}
    if timings["batch_n"] is not None:
        timings["batch_n"]["batch"] = int(row[results.LATENCY_BATCH])
    return timings


def _scores(row: pd.Series | None) -> dict:
    """Every metric of METRICS the row has, by name."""
    if row is None:
        return {}
    return {name: _number(row[name]) for name in METRICS if name in row and _number(row[name]) is not None}


def _slices(row: pd.Series, reference: pd.Series | None) -> dict:
    """{slice: {"rows": n, "value": primary metric, "fp32": the original's, "metrics": every metric there}}."""
    per_slice = row.get(results.PER_SLICE)
    if not isinstance(per_slice, dict):
        return {}
    original = reference.get(results.PER_SLICE) if reference is not None else None
    original = original if isinstance(original, dict) else {}
    name = row[results.METRIC_NAME]
    return {
        slice_name: {"rows": int(scores.get("rows", 0)), "value": _number(scores.get(name)),
                     "fp32": _number(original.get(slice_name, {}).get(name)),
                     "metrics": {key: _number(value) for key, value in scores.items() if key != "rows"}}
        for slice_name, scores in per_slice.items()
    }


def nearest_real(source: ExportSource) -> dict | None:
    """For a simulated row: the real recipe to deploy instead (engine.results.nearest_real_recipe)."""
    if not source.simulated:
        return None
    found = results.nearest_real_recipe(source.table, source.row)
    if found is None:
        return {"name": None, "why": "no real recipe was measured beside it: run a sweep to find one"}
    return {"name": found[results.NAME], "description": found[results.DESCRIPTION],
            "recipe_key": found[results.RECIPE_KEY], "metric": _number(found[results.METRIC]),
            "size_bytes": _number(found[results.SIZE_BYTES]), "recipe": json.loads(found[results.RECIPE])}


def bundle_figures(source: ExportSource) -> dict:
    """bundle.json without its `files`: the figures of the row as measured, and what they rest on."""
    row, reference = source.row, source.reference
    metric = row[results.METRIC_NAME]
    info = METRICS[metric]
    validation = source.data[0]
    timing = _latency_figures(row)
    if timing is not None:
        timing = {"method": row[results.LATENCY_PROTOCOL], "threads": int(row[results.THREADS]), **timing,
                  "fp32": _latency_figures(reference), "machine": _json_column(row, results.MACHINE)}
    else:
        timing = {"not_timed_because": "simulated recipes are never timed: their file is an fp32 simulation"
                  if source.simulated else "the row was not timed"}
    return {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "format": BUNDLE_FORMAT,
        "recipe": {"file": RECIPE_FILE, "name": row[results.NAME], "description": row[results.DESCRIPTION],
                   "key": row[results.RECIPE_KEY], "settings": source.recipe.to_dict()},
        "model": {
            "file": SIMULATION_FILE if source.simulated else MODEL_FILE,
            "sha256": sha256_file(source.artifact),
            "file_bytes": source.artifact.stat().st_size,
            "size_bytes": _number(row[results.SIZE_BYTES]),  # what the sweep compared; an estimate when simulated
            "size_is_estimate": bool(row.get(results.SIZE_IS_ESTIMATE)),
            "size_ratio": _number(row[results.SIZE_RATIO]),
            "realiser": row[results.REALISER],
            "float_layers": list(row[results.FLOAT_LAYERS]) if isinstance(row[results.FLOAT_LAYERS], list) else [],
            "deployable": not source.simulated,
            "not_deployable_because": NOT_DEPLOYABLE if source.simulated else None,
            "nearest_real_recipe": nearest_real(source),
        },
        "base_model": {"name": source.model_name, "sha256": source.model_sha256, "size_bytes": source.model_bytes},
        "metric": {
            "task": row[results.TASK], "name": metric, "label": info.label, "higher_is_better": info.higher_is_better,
            "value": _number(row[results.METRIC]),
            "ci_low": _number(row[results.METRIC_CI_LOW]), "ci_high": _number(row[results.METRIC_CI_HIGH]),
            "fp32": None if reference is None else _number(reference[results.METRIC]),
            "delta": _number(row[results.DELTA]),
            "delta_ci_low": _number(row[results.DELTA_CI_LOW]), "delta_ci_high": _number(row[results.DELTA_CI_HIGH]),
            "change": change_text(row),
            "all": _scores(row), "all_fp32": _scores(reference),
            "per_slice": _slices(row, reference),
        },
        "fidelity": {**{name: _number(row.get(name)) for name in ("top1_agreement", "cosine", "sqnr_db")
                        if _number(row.get(name)) is not None},
                     "counts": row.get(results.FIDELITY_MASK)},
        "scoring": {
            "rows_scored": int(row[results.ROWS_SCORED]),
            "first_scored_row": validation.rows - int(row[results.ROWS_SCORED]) + 1,  # counted from 1
            "scored_rows": row[results.SCORED_ROWS],
            "calibration_source": row.get(results.CALIBRATION_SOURCE) if isinstance(
                row.get(results.CALIBRATION_SOURCE), str) else None,
            "calibration_note": row.get(results.CALIBRATION_NOTE) if isinstance(
                row.get(results.CALIBRATION_NOTE), str) else None,
            "mask": source.mask,
        },
        "latency": timing,
        "versions": _json_column(row, results.MEASURED_WITH),
        "data": {"validation": validation.to_dict(),
                 "calibration": next((file.to_dict() for file in source.data if file.role == "calibration"), None),
                 "extra_sets": {file.role: file.to_dict() for file in source.data[1:] if file.role != "calibration"},
                 "shifts": list(source.shifts)},
        "measured": {"job_id": source.job_id, "at": source.measured_at},
    }


def write_bundle(source: ExportSource, out: Path) -> dict:
    """Write the bundle's files into `out` (created; files of an earlier bundle there are replaced); its
    bundle.json. The model file is a copy of the measured artifact's bytes, never a rebuild."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, SIMULATION_FILE):  # an earlier bundle's model there, real or simulated, goes
        (out / name).unlink(missing_ok=True)
    figures = bundle_figures(source)
    shutil.copyfile(source.artifact, out / figures["model"]["file"])
    # a model past 2 GB keeps its weights beside it, in the files it names (engine.onnx_files): they come along
    weights = [path.relative_to(Path(source.artifact).parent).as_posix() for path in model_files(source.artifact)[1:]]
    for name in weights:
        shutil.copyfile(Path(source.artifact).parent / name, out / name)
    (out / RECIPE_FILE).write_text(json.dumps(source.recipe.to_dict(), indent=2) + "\n")
    (out / REPORT_FILE).write_text(render_report(figures, source.table), encoding="utf-8")
    (out / CARD_FILE).write_text(model_card(figures), encoding="utf-8")
    names = [figures["model"]["file"], *weights, RECIPE_FILE, REPORT_FILE, CARD_FILE]
    figures["files"] = {name: sha256_file(out / name) for name in names}
    (out / BUNDLE_FILE).write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def bundle_files(figures: dict) -> list[str]:
    """The bundle's file names, model first, bundle.json last."""
    return [*figures["files"], BUNDLE_FILE]


def read_bundle(directory: Path) -> dict:
    """A bundle directory's bundle.json, checked to be one this quantscope reads."""
    path = Path(directory) / BUNDLE_FILE
    if not path.is_file():
        raise BundleError(f"{directory} is not an export bundle: it has no {BUNDLE_FILE}")
    try:
        figures = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(figures, dict) or figures.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not a quantscope bundle's figures")
    if figures.get("schema_version") != BUNDLE_SCHEMA_VERSION:
        raise BundleError(f"{path} has schema version {figures.get('schema_version')!r}; this quantscope reads "
                          f"{BUNDLE_SCHEMA_VERSION}")
    return figures


def bundle_zip(files: dict[str, Path], folder: str) -> bytes:
    """The files as one zip, inside `folder`; the same files always give the same bytes. Models are stored as they
    are (their weights hardly compress, and a big one would take long), the text files compressed."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, path in files.items():
            member = zipfile.ZipInfo(f"{folder}/{name}", date_time=ZIP_DATE)
            member.compress_type = zipfile.ZIP_STORED if name.endswith((".onnx", DATA_SUFFIX)) else zipfile.ZIP_DEFLATED
            member.external_attr = 0o644 << 16
            with open(path, "rb") as source, archive.open(member, "w", force_zip64=True) as target:
                shutil.copyfileobj(source, target)
    return buffer.getvalue()
