"""The files `quantscope mixed` writes in its out directory: curve.json and curve.csv (the curve's results rows,
engine.results' columns, artifact paths relative to the directory), chosen.json (the row the budget chose) and the
artifacts themselves under artifacts/, where the search built them."""

from __future__ import annotations

import json
from pathlib import Path

from engine import results
from engine.errors import DataError
from engine.mixed.search import Curve
from engine.sensitivity import SensitivityTable

CURVE_STEM = "curve"
CHOSEN_FILE = "chosen.json"


def write_curve(curve: Curve, out_dir: Path) -> list[Path]:
    """curve.json, curve.csv and, when a point meets the budget, chosen.json (an older one is removed otherwise)."""
    out_dir = Path(out_dir)
    results.write_results(curve.rows, out_dir, CURVE_STEM)
    written = [out_dir / f"{CURVE_STEM}.json", out_dir / f"{CURVE_STEM}.csv"]
    chosen = out_dir / CHOSEN_FILE
    if curve.chosen is None:
        chosen.unlink(missing_ok=True)
    else:
        chosen.write_text(json.dumps(results.row_record(curve.chosen.to_dict(), out_dir), indent=2))
        written.append(chosen)
    return written


def read_table(path: Path) -> SensitivityTable:
    """A sensitivity table `quantscope sensitivity` wrote: its directory or its sensitivity.json."""
    try:
        return SensitivityTable.read(path)
    except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
        raise DataError(f"{path} is not a sensitivity table quantscope wrote ({type(error).__name__})") from None
