"""The choices several pages share: a model or data set (named so a sample reads as one), a finished sweep, one of its
recipes."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from dashboard import help_text, jobs_view, state
from dashboard.samples import SAMPLE_OWNER
from engine import results
from engine.workspace import DatasetRecord, JobInfo, ModelRecord


def library_label(record: ModelRecord | DatasetRecord, owner: str) -> str:
    """'wide_cnn (sample)' next to 'wide_cnn.onnx (yours, private)': what an item is, and whose."""
    name = record.name if isinstance(record, ModelRecord) else record.filename
    if record.owner == SAMPLE_OWNER:
        whose = "sample"
    elif record.owner == owner:
        whose = "yours, shared" if record.shared else "yours, private"
    else:
        whose = "shared library"
    return f"{name} ({whose})"


def pick_model_and_data(ws, owner: str) -> tuple[str | None, str | None]:
    """Two selectboxes side by side: a model, then validation data checked against it; their ids (None: none)."""
    models = {record.id: record for record in ws.models(owner)}
    model_column, data_column = st.columns(2)
    with model_column:
        model_id = state.pick(
            "Model", list(models), state.CHOSEN_MODEL, help=help_text.MODEL_PICKER,
            format_func=lambda model_id: library_label(models[model_id], owner),
        )
    datasets = {record.id: record for record in ws.datasets(owner, model_id=model_id)} if model_id else {}
    with data_column:
        dataset_id = state.pick(
            "Validation data", list(datasets), state.CHOSEN_DATASET, help=help_text.DATASET_PICKER,
            format_func=lambda dataset_id: library_label(datasets[dataset_id], owner),
        )
    return model_id, dataset_id


def pick_finished_job(ws, owner: str) -> JobInfo | None:
    """A selectbox of the session's sweeps and mixed-precision curves with results (and the samples'); None when
    there are none yet."""
    model_names = {record.id: record.name for record in ws.models(owner)}
    dataset_names = {record.id: record.filename for record in ws.datasets(owner)}
    jobs = jobs_view.visible_jobs(ws, owner, jobs_view.MEASURED_KINDS)
    finished = {job.id: job for job in jobs_view.jobs_with_results(jobs)}
    job_id = state.pick(
        "Sweep",
        list(finished),
        state.CHOSEN_JOB,
        format_func=lambda job_id: jobs_view.job_label(finished[job_id], model_names, dataset_names),
        help=help_text.JOB_PICKER,
    )
    return finished.get(job_id)


def measured_sweep(job: JobInfo | None, ws, on_nothing_measured: Callable[[pd.DataFrame], None] | None = None):
    """The picked sweep's results table; stops the page with a message when there is no sweep or no measured row."""
    if job is None:
        st.info(help_text.NO_FINISHED_SWEEP)
        st.stop()
    table = ws.results(job.id)
    if results.measured_rows(table).empty:
        st.warning(help_text.NOTHING_MEASURED)
        if on_nothing_measured:
            on_nothing_measured(table)
        st.stop()
    return table


def pick_recipe(table: pd.DataFrame) -> pd.Series:
    """A selectbox of the sweep's measured recipes, by name; the chosen row. The table must have one."""
    measured = results.measured_rows(table)
    names = dict(zip(measured[results.RECIPE_KEY], measured[results.NAME]))
    recipe_key = state.pick("Recipe", list(names), state.CHOSEN_RECIPE, format_func=names.get, help=help_text.CHOOSE_RECIPE)
    return results.row_for(table, recipe_key)
