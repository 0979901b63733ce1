"""What the Sensitivity page shows and keeps, apart from drawing it: its jobs, the table by harm, the working recipe.

The working recipe is a candidate's recipe with the overrides the user added point by point (engine.recipe's
LayerOverride), kept in the session as JSON; choosing another candidate starts it again from that candidate.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pandas as pd

from dashboard import jobs_view, state
from engine.recipe import LayerOverride, Mode, Recipe
from engine.sensitivity import SensitivityTable
from engine.sensitivity import table as columns
from engine.sensitivity.points import ACTIVATIONS
from engine.workspace import JobInfo, JobState

KIND = "sensitivity"  # engine.jobs.kinds.sensitivity's name
# The mixed-precision search's budgets, as engine.jobs.kinds.mixed.MixedParams names them: (label, default, step)
BUDGETS = {
    "max_drop": ("Largest drop of the score", 0.01, 0.005),
    "max_size_ratio": ("Largest size, as a share of the original's", 0.5, 0.05),
    "max_latency_ms": ("Largest time per example (ms)", 1.0, 0.1),
}
KEEP_FLOAT = LayerOverride(keep_fp32=True)
SIXTEEN_BITS = LayerOverride(activation_bits=16)
PointKey = str  # JSON [kind, layer, tensor], as the table's points name them (a selectbox option must be plain)


def sensitivity_jobs(ws, owner: str) -> list[JobInfo]:
    return jobs_view.visible_jobs(ws, owner, kind=KIND)


def mixed_jobs(ws, owner: str) -> list[JobInfo]:
    return jobs_view.visible_jobs(ws, owner, kind=jobs_view.MIXED)


def curves_of(ws, owner: str, table: JobInfo) -> list[JobInfo]:
    """The session's mixed-precision searches on the table's model and data, newest first."""
    return [job for job in mixed_jobs(ws, owner)
            if (job.model_id, job.dataset_id) == (table.model_id, table.dataset_id) and job.owner == owner]


def finished_tables(jobs: list[JobInfo]) -> list[JobInfo]:
    return [job for job in jobs if job.state is JobState.DONE]


def table_label(job: JobInfo, model_names: dict[str, str], dataset_names: dict[str, str]) -> str:
    """E.g. 'digits_cnn on digits_cnn.npz, W8 / A8, 14:02:37'."""
    model = model_names.get(job.model_id, "a model no longer listed")
    data = dataset_names.get(job.dataset_id, "data no longer listed")
    bits = "/".join(f"W{b}" for b in job.params.get("bits", ()))
    activations = "/".join("float" if a is None else f"A{a}" if isinstance(a, int) else str(a)
                           for a in job.params.get("activations", ()))
    return f"{model} on {data}, {bits} with {activations} activations, {jobs_view.started_text(job)}"


def progress_text(job: JobInfo) -> str:
    counted = f"{job.done} of {job.total} measurements" if job.total > 1 else "preparing"
    return f"{counted} — {job.message}"


def point_key(row: pd.Series | dict | list) -> PointKey:
    if isinstance(row, list):  # a chart's customdata: [kind, layer, tensor, ...]
        return json.dumps(row[:3])
    return json.dumps([row[columns.KIND], row[columns.LAYER], row[columns.TENSOR]])


def point_of(key: PointKey) -> tuple[str, str, str]:
    """(kind, layer, tensor) of a point key."""
    kind, layer, tensor = json.loads(key)
    return kind, layer, tensor


def point_text(key: PointKey) -> str:
    """'layer · kind', with the tensor where it is not named after its node."""
    kind, layer, tensor = point_of(key)
    return f"{layer} · {kind}" + (f" ({tensor})" if tensor != layer else "")


def harm_view(rows: pd.DataFrame) -> pd.DataFrame:
    """A candidate's measured rows (by_harm's order) as the page's table shows them."""
    return pd.DataFrame({
        "Part": rows[columns.LAYER], "Kind": rows[columns.KIND], "Operation": rows[columns.OP_TYPE],
        "Drop": rows[columns.DROP], "Recovery": rows[columns.RECOVERY], "Output SQNR (dB)": rows[columns.OUTPUT_SQNR_DB],
        "Outliers (max / p99.9)": rows[columns.OUTLIER_RATIO], "How": rows[columns.METHOD],
    }).reset_index(drop=True)


def candidate_recipe(table: SensitivityTable, name: str) -> Recipe:
    summary = next(c for c in table.candidates if c["candidate"] == name)
    return Recipe.from_dict(summary["recipe"])


def working_recipe(base: Recipe) -> Recipe:
    """The session's working recipe if it grew from `base`, else `base` itself."""
    kept = state.chosen(state.WORKING_RECIPE)
    recipe = Recipe.from_json(kept) if kept else None
    return recipe if recipe is not None and replace(recipe, overrides={}).key() == base.key() else base


def add_override(base: Recipe, nodes: list[str], override: LayerOverride) -> Recipe:
    """The working recipe with `override` on each of `nodes`, kept in the session; raises RecipeError when the
    recipe cannot take it."""
    recipe = working_recipe(base)
    recipe = replace(recipe, overrides={**recipe.overrides, **{node: override for node in nodes}})
    state.choose(state.WORKING_RECIPE, recipe.to_json())
    return recipe


def clear_overrides(base: Recipe) -> None:
    state.choose(state.WORKING_RECIPE, base.to_json())


def can_take_16_bits(recipe: Recipe, kind: str) -> bool:
    """A 16-bit activation override: only for activation points of a static recipe whose width is not 16."""
    return kind == ACTIVATIONS and recipe.mode is Mode.STATIC and recipe.activations.bits != 16


def override_lines(recipe: Recipe) -> list[str]:
    return [f"`{name}`: " + ("kept float" if o.keep_fp32 else f"{o.activation_bits}-bit activations"
                             if o.activation_bits else f"{o.weights.bits}-bit weights")
            for name, o in recipe.overrides.items()]
