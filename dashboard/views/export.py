"""Export: download one measured recipe's model file, its recipe JSON and a short report."""

from __future__ import annotations

import streamlit as st

from dashboard import help_text, pickers, report, state
from engine import results

ws = state.workspace()
owner = state.owner()

st.title("Export")
st.caption(help_text.EXPORT_INTRO)

job_column, recipe_column = st.columns(2)
with job_column:
    job = pickers.pick_finished_job(ws, owner)
table = pickers.measured_sweep(job, ws)
with recipe_column:
    row = pickers.pick_recipe(table)

reference = results.reference_row(table)
model_name = {record.id: record.name for record in ws.models(owner)}.get(job.model_id, "model")
dataset_name = {record.id: record.filename for record in ws.datasets(owner)}.get(job.dataset_id, "validation data")
st.markdown(f"**{row[results.NAME]}**: {row[results.DESCRIPTION]}")
if row[results.SIMULATED]:
    st.warning(help_text.SIMULATED_EXPORT, icon=":material/science:")

downloads = (
    report.artifact_download(row, ws.artifact_path(job.id, row[results.RECIPE_KEY]), model_name),
    report.recipe_download(row, model_name),
    report.report_download(row, reference, model_name, dataset_name),
)
for column, download in zip(st.columns(len(downloads)), downloads):
    column.download_button(
        download.label,
        data=download.data,
        file_name=download.file_name,
        mime=download.mime,
        help=download.help,
        width="stretch",
        on_click="ignore",  # a download needs no rerun of the page
    )

st.subheader("Report preview")
with st.container(border=True):
    st.markdown(downloads[-1].data.decode())
