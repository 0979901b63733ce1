"""The files `quantscope mixed` writes in its out directory: curve.json and curve.csv (the curve's results rows,
engine.results' columns, artifact paths relative to the directory), chosen.json (the row the budget chose) and the
artifacts themselves under artifacts/, where the search built them (a mixed job's: copied there from the workspace's
store, export_points)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from engine import results
from engine.errors import DataError
from engine.mixed.search import Curve
from engine.onnx_files import copy_model
from engine.recipe import Recipe
from engine.sensitivity import SensitivityTable

CURVE_STEM = "curve"
CHOSEN_FILE = "chosen.json"


def write_curve(curve: Curve, out_dir: Path) -> list[Path]:
    """curve.json, curve.csv and, when a point meets the budget, chosen.json (an older one is removed otherwise)."""
    return write_points(curve.rows, curve.chosen, out_dir)


def write_points(rows: pd.DataFrame, chosen: pd.Series | None, out_dir: Path) -> list[Path]:
    """The files of write_curve from a curve's rows and its chosen row (None: no point met the budget)."""
    out_dir = Path(out_dir)
    results.write_results(rows, out_dir, CURVE_STEM)
    written = [out_dir / f"{CURVE_STEM}.json", out_dir / f"{CURVE_STEM}.csv"]
    chosen_file = out_dir / CHOSEN_FILE
    if chosen is None:
        chosen_file.unlink(missing_ok=True)
    else:
        chosen_file.write_text(json.dumps(results.row_record(chosen.to_dict(), out_dir), indent=2))
        written.append(chosen_file)
    return written


def export_points(rows: pd.DataFrame, out_dir: Path) -> list[Path]:
    """A mixed job's curve (its artifacts in the workspace's store) as `quantscope mixed` writes it: each artifact
    copied to out_dir/artifacts/ under the name the search builds it as, then the files of write_curve."""
    copied = [str(copy_model(Path(artifact), Path(out_dir) / "artifacts", f"{Recipe.from_json(recipe).slug()}.onnx"))
              if isinstance(artifact, str) else artifact
              for artifact, recipe in zip(rows[results.ARTIFACT], rows[results.RECIPE])]
    rows = rows.assign(**{results.ARTIFACT: copied})
    return write_points(rows, results.chosen_point(rows), out_dir)


def read_table(path: Path) -> SensitivityTable:
    """A sensitivity table `quantscope sensitivity` wrote: its directory or its sensitivity.json."""
    try:
        return SensitivityTable.read(path)
    except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
        raise DataError(f"{path} is not a sensitivity table quantscope wrote ({type(error).__name__})") from None
