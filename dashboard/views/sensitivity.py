"""Sensitivity: which parts of a model a way of shrinking breaks, and a recipe that keeps those parts precise.

Map: model and data, candidates -> start (a background job; its progress while it runs) -> a finished table ->
heat map of points x candidates -> the points by harm -> one point's values with the grid over them, and buttons
that add "keep float" / "16 bits" for it to the working recipe -> measure that recipe as a sweep job -> or let the
mixed-precision search pick the parts (a background job on the table's candidates; its curve goes to Trade-offs).
"""

from __future__ import annotations

import streamlit as st

from dashboard import help_text, jobs_view, pickers, sensitivity_charts, state
from dashboard import sensitivity_view as view
from dashboard.errors import reported_in_one_line
from dashboard.sweep_form import activation_label, weight_label
from engine.errors import QuantscopeError
from engine.mixed import point_nodes
from engine.model import load_model
from engine.recipe import LayerOverride, Recipe
from engine.sensitivity import DYNAMIC
from engine.sensitivity import table as columns
from engine.workspace import JobState

PROGRESS_REFRESH_SECONDS = 1.0
WEIGHT_CHOICES = [8, 4, 3, 2]
ACTIVATION_CHOICES = [8, 16, None, DYNAMIC]

ws = state.workspace()
owner = state.owner()
model_names = {record.id: record.name for record in ws.models(owner)}
dataset_names = {record.id: record.filename for record in ws.datasets(owner)}


@st.cache_resource(show_spinner=False, max_entries=8)
def _nodes_of(model_file: str):
    """(layer, tensor) -> the nodes whose override reverts that point (engine.mixed.point_nodes), per model file."""
    return point_nodes(load_model(model_file))


def start_form(model_id: str | None, dataset_id: str | None) -> None:
    bits_column, activations_column = st.columns(2)
    bits = bits_column.multiselect("Weight bits", WEIGHT_CHOICES, [8], format_func=weight_label,
                                   help=help_text.SENSITIVITY_CANDIDATES)
    activations = activations_column.multiselect(
        "Activations", ACTIVATION_CHOICES, [8], help=help_text.SENSITIVITY_CANDIDATES,
        format_func=lambda a: "shrunk as the model runs (dynamic)" if a == DYNAMIC else activation_label(a))
    ready = model_id is not None and dataset_id is not None and bits and activations
    if st.button("Find sensitive parts", type="primary", disabled=not ready, help=help_text.START_SENSITIVITY):
        try:
            state.choose(state.CHOSEN_TABLE, ws.submit_sensitivity(model_id, dataset_id, owner, bits=tuple(bits),
                                                                   activations=tuple(activations)))
        except QuantscopeError as error:
            st.error(str(error))


@reported_in_one_line()  # the fragment's own reruns happen outside the guard that app.py puts around the page
def running_section() -> None:
    """The session's running analyses, each in a status box with its progress and a cancel button."""
    active = [job for job in view.sensitivity_jobs(ws, owner) + view.mixed_jobs(ws, owner)
              if job.state.is_active and job.owner == owner]
    for job in active:
        doing = help_text.SENSITIVITY_RUNNING if job.kind == view.KIND else help_text.MIXED_RUNNING
        with st.status(f"{doing}: {view.table_label(job, model_names, dataset_names)}", expanded=True):
            st.progress(job.done / max(job.total, 1), text=view.progress_text(job))
            st.button("Cancel", key=f"cancel-{job.id}", on_click=ws.cancel, args=(job.id,), help=help_text.CANCEL)
    if live and not active:
        st.rerun()  # the last one ended: one full rerun shows its table and stops the refreshing


def pick_from(widget_key: str, rows_of) -> None:
    """A click on the heat map or a row of the table picks that point."""
    selection = st.session_state[widget_key].selection
    picked = rows_of(selection)
    if picked is not None:
        state.choose(state.CHOSEN_POINT, picked)


def heat_map(measured, order: list[str]) -> None:
    st.subheader("Where it hurts")
    st.plotly_chart(
        sensitivity_charts.heat_map_figure(measured, order), key="heat_map",
        on_select=lambda: pick_from("heat_map", lambda s: view.point_key(s.points[0]["customdata"])
                                    if s.points else None),
        selection_mode="points", width="stretch")
    st.caption(help_text.HEAT_MAP)


def by_harm(rows) -> None:
    st.subheader("The parts, most harmful first")
    measured = rows[rows[columns.ERROR].isna()]
    keys = [view.point_key(row) for _, row in measured.iterrows()]
    st.dataframe(view.harm_view(measured), hide_index=True, width="stretch", key="by_harm",
                 on_select=lambda: pick_from("by_harm", lambda s: keys[s.rows[0]] if s.rows else None),
                 selection_mode="single-row")
    st.caption(help_text.BY_HARM)
    for _, failed in rows[rows[columns.ERROR].notna()].iterrows():
        st.error(f"{failed[columns.LAYER]} ({failed[columns.KIND]}) could not be measured: {failed[columns.ERROR]}")


def one_point(table, candidate: str, base: Recipe, rows) -> None:
    st.subheader("One part in detail")
    keys = [view.point_key(row) for _, row in rows.iterrows()]
    key = state.pick("Part", keys, state.CHOSEN_POINT, help=help_text.POINT_PICKER, format_func=view.point_text)
    if key is None:
        return
    kind, layer, tensor = view.point_of(key)
    row = rows.iloc[keys.index(key)]
    if row[columns.NOTE]:
        st.caption(row[columns.NOTE])
    try:
        histogram = table.histogram(kind, layer, tensor)
    except StopIteration:  # an activation the table did not collect values of
        st.info(help_text.NO_HISTOGRAM)
    else:
        grid = table.grid(kind, layer, tensor, candidate)
        st.plotly_chart(sensitivity_charts.values_figure(histogram, grid, f"{tensor} under {candidate}"),
                        key="values_chart", width="stretch")
        st.caption(help_text.VALUES_CHART if grid is not None else help_text.NO_GRID)
    nodes = _nodes_of(str(ws.model_file(job.model_id)))(layer, tensor)
    if nodes != [layer]:
        st.caption(help_text.GRAPH_INPUT_NO_NODE)
    float_column, sixteen_column = st.columns(2)
    float_column.button(help_text.KEEP_FLOAT, key="keep_float", help=help_text.KEEP_FLOAT_HELP, disabled=not nodes,
                        on_click=add, args=(base, nodes, view.KEEP_FLOAT))
    if view.can_take_16_bits(base, kind):
        sixteen_column.button(help_text.KEEP_16_BITS, key="keep_16", help=help_text.KEEP_16_BITS_HELP,
                              disabled=not nodes, on_click=add, args=(base, nodes, view.SIXTEEN_BITS))


def add(base: Recipe, nodes: list[str], override: LayerOverride) -> None:
    try:
        view.add_override(base, nodes, override)
    except QuantscopeError as error:
        st.session_state["override_error"] = str(error)


def working_recipe_section(base: Recipe) -> None:
    st.subheader("Your recipe")
    if message := st.session_state.pop("override_error", None):
        st.error(message)
    recipe = view.working_recipe(base)
    st.markdown(f"**{recipe.short_name()}**: {recipe.describe()}", help=help_text.WORKING_RECIPE)
    if recipe.overrides:
        st.markdown("\n".join(f"- {line}" for line in view.override_lines(recipe)))
    measure_column, clear_column = st.columns([3, 1])
    if measure_column.button("Measure this recipe", type="primary", help=help_text.MEASURE_RECIPE):
        try:
            sweep = ws.submit_sweep(job.model_id, job.dataset_id, [Recipe.fp32(), recipe], owner)
        except QuantscopeError as error:
            st.error(str(error))
        else:
            state.choose(state.CHOSEN_JOB, sweep)
            state.choose(state.CHOSEN_RECIPE, recipe.key())
            st.success(help_text.RECIPE_MEASURING, icon=":material/check_circle:")
    clear_column.button("Clear", disabled=not recipe.overrides, help=help_text.CLEAR_RECIPE,
                        on_click=view.clear_overrides, args=(base,))


def mixed_section(table_job) -> None:
    """The mixed-precision search on the table's candidates: a budget, a start button, and the latest search's end."""
    st.subheader("Search mixed precision")
    st.caption(help_text.MIXED_SEARCH)
    kind_column, value_column = st.columns(2)
    kind = kind_column.radio(help_text.MIXED_BUDGET, list(view.BUDGETS), key="mixed_budget", horizontal=True,
                             format_func=lambda name: view.BUDGETS[name][0])
    label, default, step = view.BUDGETS[kind]
    value = value_column.number_input(label, min_value=0.0, value=default, step=step, format="%g",
                                      key=f"mixed_{kind}", help=help_text.MIXED_BUDGET_HELP[kind])
    if st.button("Search mixed precision", type="primary", help=help_text.START_MIXED):
        try:
            state.choose(state.CHOSEN_CURVE, ws.submit_mixed_on_table(table_job.id, owner, **{kind: value}))
        except QuantscopeError as error:
            st.error(str(error))
    latest = next(iter(view.curves_of(ws, owner, table_job)), None)
    if latest is None or latest.state.is_active:
        return  # a running search shows in the status boxes above
    if latest.state is JobState.DONE:
        st.success(help_text.MIXED_DONE.format(summary=jobs_view.curve_summary(latest)), icon=":material/check_circle:")
    else:
        st.error(help_text.MIXED_FAILED.format(error=latest.error or latest.message))


st.title("Sensitivity")
st.caption(help_text.SENSITIVITY_INTRO)
model_id, dataset_id = pickers.pick_model_and_data(ws, owner)
start_form(model_id, dataset_id)

jobs = view.sensitivity_jobs(ws, owner)
live = any(job.state.is_active and job.owner == owner for job in jobs + view.mixed_jobs(ws, owner))
st.fragment(running_section, run_every=PROGRESS_REFRESH_SECONDS if live else None)()

finished = {job.id: job for job in view.finished_tables(jobs)}
job_id = state.pick("Analysis", list(finished), state.CHOSEN_TABLE, help=help_text.SENSITIVITY_PICKER,
                    format_func=lambda job_id: view.table_label(finished[job_id], model_names, dataset_names))
if job_id is None:
    st.info(help_text.NO_SENSITIVITY_TABLE)
    st.stop()
job = finished[job_id]
table = ws.sensitivity(job_id)
st.caption(table.describe())
names = [c["candidate"] for c in table.candidates if not c.get("error")]
candidate = state.pick("Way of shrinking", names, state.CHOSEN_CANDIDATE, help=help_text.CANDIDATE_PICKER)
base = view.candidate_recipe(table, candidate)
rows = table.by_harm(candidate)
measured = table.rows[table.rows[columns.ERROR].isna()]
order = list(dict.fromkeys(sensitivity_charts.point_label(row) for _, row in  # the candidate's points by harm first
                           [*rows[rows[columns.ERROR].isna()].iterrows(), *measured.iterrows()]))
heat_map(measured, order)
by_harm(rows)
one_point(table, candidate, base, rows[rows[columns.ERROR].isna()])
working_recipe_section(base)
mixed_section(job)
