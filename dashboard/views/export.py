"""Export: one measured recipe as a bundle (engine.export): each file a download, the whole bundle one zip, the
report previewed; below, every bundle made before, each downloadable again."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from dashboard import exports_view, help_text, pickers, report, state
from engine import results
from engine.export import history
from engine.export.bundle import REPORT_FILE

REPORT_HEIGHT = 900
MAX_CACHED_ZIPS = 4


@st.cache_data(max_entries=MAX_CACHED_ZIPS, show_spinner=False)
def _zip(workspace_root: str, export_id: str, owner: str) -> tuple[str, bytes]:
    """A recorded bundle never changes, so its zip is made once."""
    return history.zip_of(state.workspace(), export_id, owner)


def _download(download: report.Download, primary: bool = False) -> None:
    st.download_button(download.label, data=download.data, file_name=download.file_name, mime=download.mime,
                       help=download.help, type="primary" if primary else "secondary", width="stretch",
                       on_click="ignore")  # a download needs no rerun of the page


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

st.markdown(f"**{row[results.NAME]}**: {row[results.DESCRIPTION]}")
if row[results.SIMULATED]:
    instead = results.nearest_real_recipe(table, row)
    st.warning(f"{help_text.SIMULATED_EXPORT} " + (help_text.NOTHING_TO_SHIP_INSTEAD if instead is None
                                                    else help_text.SHIP_INSTEAD.format(name=instead[results.NAME])),
               icon=":material/science:")

made = st.session_state.setdefault(state.MADE_BUNDLES, {})
row_id = (job.id, row[results.RECIPE_KEY])
slot = st.empty()  # the button, until this session has made this row's bundle
if row_id not in made and slot.button(help_text.MAKE_BUNDLE, type="primary", help=help_text.MAKE_BUNDLE_HELP):
    with st.spinner("Writing the bundle..."):
        made[row_id] = history.export_job_row(ws, job.id, row[results.RECIPE_KEY], owner).id
    slot.empty()

if row_id in made:
    record = ws.export(made[row_id], owner)
    name = history.bundle_name(record)
    _download(report.zip_download(*_zip(str(ws.root), record.id, owner)), primary=True)
    files = ws.export_files(record.id, owner)
    downloads = report.file_downloads(files, name)
    for column, download in zip(st.columns(len(downloads)), downloads):
        with column:
            _download(download)
    st.caption(f"Export {record.id}: model sha256 `{record.model_sha256}`")
    st.subheader(help_text.REPORT_PREVIEW)
    # As HTML text: the stored file has no .html name for st.iframe to go by. Our own page, every name escaped.
    st.iframe(files[REPORT_FILE].read_text(encoding="utf-8"), height=REPORT_HEIGHT)

st.subheader(help_text.EXPORT_HISTORY)
past = ws.exports(owner)
if not past:
    st.caption(help_text.NO_EXPORTS)
else:
    st.dataframe(exports_view.history_table(past), hide_index=True, width="stretch")
    labels = {record.id: exports_view.export_label(record) for record in past}
    export_id = state.pick(help_text.PAST_EXPORT, list(labels), state.CHOSEN_EXPORT, format_func=labels.get)
    _download(replace(report.zip_download(*_zip(str(ws.root), export_id, owner)), label=help_text.PAST_ZIP))
