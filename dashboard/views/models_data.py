"""Models & data: pick or upload a model and its validation data, and see what is in them.

Map: 1. the model (upload form | library picker, then its summary); 2. the data, checked against that model
(upload form | library picker, then its summary). Engine errors arrive as QuantscopeError with a one-line
message, shown as such.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import help_text, pickers, state, summaries
from dashboard.samples import sample_description
from dashboard.uploads import (
    DATASET_TYPES, MODEL_TYPES, PYTORCH_TYPES, is_pytorch_file, is_table, table_columns, upload_limit_mb,
    upload_memory_text,
)
from engine.errors import QuantscopeError

AUTOMATIC = "automatic"  # column picker choice: let the engine find the label/slice column by its name

ws = state.workspace()
owner = state.owner()


def server_file(label: str, key: str) -> Path | None:
    """A file on the server typed in by its path, when the operator allows some folders (QUANTSCOPE_ALLOWED_DIRS);
    None when none are allowed, nothing is typed, or the path is refused (said in one line)."""
    folders = ws.server_directories()
    if not folders:
        return None
    typed = st.text_input(label, key=key, placeholder=f"{folders[0]}/...",
                          help=help_text.SERVER_FILE.format(folders=", ".join(map(str, folders))))
    if not typed.strip():
        return None
    try:
        return ws.server_file(typed)
    except QuantscopeError as error:
        st.error(str(error))
        return None


def upload_caption() -> None:
    limit = upload_limit_mb()
    st.caption(help_text.UPLOAD_LIMIT.format(limit_mb=limit), help=upload_memory_text(limit))


def model_upload_form() -> None:
    st.subheader("Upload your own")
    uploaded = st.file_uploader(
        "ONNX model, or a zip of its folder", type=MODEL_TYPES + PYTORCH_TYPES, help=help_text.MODEL_UPLOAD,
        key="model_file",
    )
    upload_caption()
    pytorch = uploaded is not None and is_pytorch_file(uploaded.name)
    if pytorch:  # accepted by the uploader only to say so; its bytes are never read
        st.warning(help_text.PYTORCH_UPLOAD.format(name=uploaded.name), icon=":material/swap_horiz:")
    on_server = server_file("Or a model on the server (.onnx or .zip)", "model_path")
    if on_server is not None:
        source, name = on_server, on_server.name
    elif uploaded is not None and not pytorch:
        source, name = uploaded.getvalue(), uploaded.name
    else:
        source = name = None
    shared = st.checkbox("Save to the shared library", key="share_model", help=help_text.SHARE_UPLOAD)
    if st.button("Add model", disabled=source is None, type="primary"):
        try:
            with st.spinner(f"Checking {name}..."):
                record = ws.add_model(source, name=name, owner=owner, shared=shared)
        except QuantscopeError as error:
            st.error(str(error))
        else:
            state.choose(state.CHOSEN_MODEL, record.id)
            st.success(f"Added {record.name}.")


def model_summary(model) -> None:
    if description := sample_description(model.name, model.owner):
        st.info(description, icon=":material/info:")
    facts = summaries.model_facts(model.summary)
    for column, (label, value) in zip(st.columns(len(facts)), facts.items()):
        column.metric(label, value, help=help_text.PARAMS if label == "Learned numbers" else None)
    inputs_column, outputs_column = st.columns(2)
    inputs_column.dataframe(summaries.tensors_table(model.summary, "inputs"), hide_index=True, width="stretch")
    outputs_column.dataframe(summaries.tensors_table(model.summary, "outputs"), hide_index=True, width="stretch")
    st.markdown("**Shrinkable layers**", help=help_text.LAYERS_TABLE)
    st.dataframe(summaries.layers_table(model.summary), hide_index=True, width="stretch")
    if model.owner == owner and not model.shared:
        if st.button("Save this model to the shared library", help=help_text.SHARE_EXISTING):
            ws.share_model(model.id, owner)
            st.rerun()


def column_choice(label: str, columns: list[str], help: str) -> str | None:
    choice = st.selectbox(label, [AUTOMATIC, *columns], help=help)
    return None if choice == AUTOMATIC else choice


def data_upload_form(model) -> None:
    st.subheader("Upload your own")
    uploaded = st.file_uploader(
        "Validation data (NPZ, CSV, Parquet or image-folder ZIP)",
        type=DATASET_TYPES,
        help=help_text.DATASET_UPLOAD,
        key="data_file",
    )
    upload_caption()
    on_server = server_file("Or a data file on the server", "data_path")
    if on_server is not None:
        source, filename = on_server, on_server.name
    elif uploaded is not None:
        source, filename = uploaded.getvalue(), uploaded.name
    else:
        source = filename = None
    label_column = slice_column = None
    unreadable = False
    if source is not None and is_table(filename):
        try:
            columns = table_columns(source, filename)
        except QuantscopeError as error:
            st.error(str(error))  # said once: adding this file would only fail the same way again
            unreadable = True
        else:
            label_column = column_choice("Label column", columns, help_text.LABEL_COLUMN)
            slice_column = column_choice("Slice column", columns, help_text.SLICE_COLUMN)
    shared = st.checkbox("Save to the shared library", key="share_data", help=help_text.SHARE_UPLOAD)
    if st.button("Add data", disabled=source is None or unreadable, type="primary"):
        try:
            record = ws.add_dataset(
                source,
                filename=filename,
                model_id=model.id,
                owner=owner,
                label_column=label_column,
                slice_column=slice_column,
                shared=shared,
            )
        except QuantscopeError as error:
            st.error(str(error))
        else:
            state.choose(state.CHOSEN_DATASET, record.id)
            st.success(f"Added {record.filename}: it fits {model.name}.")


def data_summary(dataset) -> None:
    rows_column, labels_column, slices_column = st.columns(3, gap="large")
    rows_column.metric("Examples", f"{dataset.summary['rows']:,}")
    rows_column.caption(summaries.labels_sentence(dataset.summary))
    counts = summaries.label_counts(dataset.summary)
    if counts is not None:
        labels_column.markdown("**Examples per answer**", help=help_text.LABEL_COUNTS)
        labels_column.bar_chart(counts, x="Answer", y="Examples", height=220)
    groups = summaries.slice_counts(dataset.summary)
    if groups is not None:
        slices_column.markdown("**Examples per group (slice)**", help=help_text.SLICE_COUNTS)
        slices_column.dataframe(groups, hide_index=True, width="stretch")
    if dataset.owner == owner and not dataset.shared:
        if st.button("Save this data to the shared library", help=help_text.SHARE_EXISTING):
            ws.share_dataset(dataset.id, owner)
            st.rerun()


st.title("Models & data")
st.caption(help_text.MODELS_DATA_INTRO)

# --- 1. the model ------------------------------------------------------------------------------------------------

st.header("1. Model", divider="gray")
pick_column, upload_column = st.columns(2, gap="large")
with upload_column:
    model_upload_form()  # first, so a model added just now is already in the picker's list
models = {record.id: record for record in ws.models(owner)}
with pick_column:
    st.subheader("Pick from the library")
    model_id = state.pick(
        "Model",
        list(models),
        state.CHOSEN_MODEL,
        format_func=lambda model_id: pickers.library_label(models[model_id], owner),
        help=help_text.MODEL_PICKER,
    )
if model_id is None:
    st.info("No model yet: upload one on the right.")
    st.stop()
model_summary(models[model_id])

# --- 2. the data -------------------------------------------------------------------------------------------------

st.header("2. Validation data", divider="gray")
pick_column, upload_column = st.columns(2, gap="large")
with upload_column:
    data_upload_form(models[model_id])
datasets = {record.id: record for record in ws.datasets(owner, model_id=model_id)}
with pick_column:
    st.subheader("Pick from the library")
    dataset_id = state.pick(
        f"Data checked against {models[model_id].name}",
        list(datasets),
        state.CHOSEN_DATASET,
        format_func=lambda dataset_id: pickers.library_label(datasets[dataset_id], owner),
        help=help_text.DATASET_PICKER,
    )
if dataset_id is None:
    st.info(f"No data for {models[model_id].name} yet: upload some on the right.")
    st.stop()
data_summary(datasets[dataset_id])
st.caption(help_text.NEXT_SWEEP)
