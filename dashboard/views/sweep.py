"""Sweep: choose recipes (a preset, or an Advanced grid), start them as a background job, follow its progress.

Map: what to sweep (model, data) -> which recipes (goal preset, or the Advanced grid) -> how to measure
(calibration data, other data, timing) -> start -> jobs (live progress with cancel, then every job in a table).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import help_text, jobs_view, pickers, state
from dashboard.errors import reported_in_one_line
from dashboard.sweep_form import (
    ACTIVATION_CHOICES,
    GROUP_SIZE_CHOICES,
    SHIFT_CHOICES,
    THREAD_CHOICES,
    WEIGHT_BIT_CHOICES,
    GridChoice,
    MeasureChoice,
    activation_label,
    set_names,
    threads_label,
    weight_label,
)
from engine.sweep import DEFAULT_LATENCY_BATCH
from engine.errors import QuantscopeError
from engine.measure import ADAPTIVE, MAX_LATENCY_CAP_SECONDS
from engine.recipe import Calibration, Granularity, Recipe
from engine.sweep import PRESETS
from engine.workspace import JobInfo, JobState

PROGRESS_REFRESH_SECONDS = 1.0
TRADE_OFFS_PAGE = Path(__file__).with_name("tradeoffs.py")

ws = state.workspace()
owner = state.owner()
models = {record.id: record for record in ws.models(owner)}
model_names = {model_id: record.name for model_id, record in models.items()}
dataset_names = {record.id: record.filename for record in ws.datasets(owner)}


def advanced_grid() -> GridChoice:
    """The developer's grid, as the Advanced form holds it."""
    first, second, third = st.columns(3)
    defaults = GridChoice()
    weight_bits = first.multiselect(
        "Weight bits", WEIGHT_BIT_CHOICES, defaults.weight_bits, format_func=weight_label, help=help_text.WEIGHT_BITS
    )
    activation_bits = first.multiselect(
        "Activation bits", ACTIVATION_CHOICES, defaults.activation_bits, format_func=activation_label,
        help=help_text.ACTIVATION_BITS,
    )
    granularities = second.multiselect(
        "Granularity", list(Granularity), defaults.granularities, format_func=lambda g: g.value,
        help=help_text.GRANULARITY,
    )
    calibrations = second.multiselect(
        "Calibration", list(Calibration), defaults.calibrations, format_func=lambda c: c.value,
        help=help_text.CALIBRATION,
    )
    group_size = third.select_slider("Group size", GROUP_SIZE_CHOICES, defaults.group_size, help=help_text.GROUP_SIZE)
    return GridChoice(tuple(weight_bits), tuple(granularities), group_size, tuple(activation_bits), tuple(calibrations))


def choose_recipes() -> list[Recipe]:
    """The goal's preset, unless the Advanced grid is switched on."""
    preset_name = st.radio(
        "Goal",
        list(PRESETS),
        format_func=lambda name: PRESETS[name].title,
        captions=[preset.explanation for preset in PRESETS.values()],
        help=help_text.PRESET,
        key="preset",
    )
    with st.expander("Advanced: build your own grid"):
        use_grid = st.toggle("Use this grid instead of the goal above", key="use_grid", help=help_text.USE_GRID)
        choice = advanced_grid()
    if not use_grid:
        return list(PRESETS[preset_name].recipes)
    try:
        return choice.recipes()
    except QuantscopeError as error:
        st.error(str(error))
        return []


def choose_measuring(model_id: str | None, dataset_id: str | None) -> MeasureChoice:
    """What calibrates, what else to score on, and how to time: defaults that suit most users, in an expander."""
    others = {record.id: record for record in ws.datasets(owner, model_id=model_id) if record.id != dataset_id} \
        if model_id else {}
    with st.expander("How to measure: calibration data, other data to check, timing"):
        calibration_column, other_column, timing_column = st.columns(3)
        calibration = calibration_column.selectbox(
            "Calibration data", [None, *others], key="calibration_data", help=help_text.CALIBRATION_DATA,
            format_func=lambda data_id: help_text.HELD_OUT_ROWS if data_id is None
            else pickers.library_label(others[data_id], owner),
        )
        extra_ids = other_column.multiselect(
            "Also check on", list(others), key="extra_sets", help=help_text.EXTRA_SETS,
            format_func=lambda data_id: pickers.library_label(others[data_id], owner),
        )
        shifts = other_column.multiselect("Also check on shifted copies of your data", SHIFT_CHOICES, key="shifts",
                                          help=help_text.SHIFTS)
        threads = timing_column.radio("Timing threads", THREAD_CHOICES, format_func=threads_label, key="threads",
                                      help=help_text.THREADS)
        batches = timing_column.checkbox(f"Also time batches of {DEFAULT_LATENCY_BATCH}", value=True,
                                         key="time_batches", help=help_text.TIME_BATCHES)
        latency_cap = timing_column.number_input("Seconds of timing per recipe", min_value=0.1,
                                                 max_value=MAX_LATENCY_CAP_SECONDS, value=ADAPTIVE.cap_seconds,
                                                 step=0.5, key="latency_cap", help=help_text.LATENCY_CAP)
    names = set_names([others[data_id].filename for data_id in extra_ids])
    return MeasureChoice(calibration, tuple(zip(names, extra_ids)), tuple(shifts), threads,
                         DEFAULT_LATENCY_BATCH if batches else None, float(latency_cap))


def recipe_list(recipes: list[Recipe]) -> None:
    st.markdown(f"**{len(recipes)} recipes** will be measured:", help=help_text.RECIPE_COUNT)
    st.dataframe(
        pd.DataFrame({"Recipe": [r.short_name() for r in recipes], "What it does": [r.describe() for r in recipes]}),
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * len(recipes), 300),  # header plus one line per recipe, scrolling beyond eight
    )


def announce_ended(jobs: list[JobInfo]) -> None:
    """A line for each of the user's jobs this session saw running and that has ended since; a finished one links to
    its trade-offs."""
    watched = st.session_state.setdefault(state.WATCHED_JOBS, {})
    for job in jobs_view.watch([job for job in jobs if job.owner == owner], watched):
        if job.state is JobState.DONE:
            state.choose(state.CHOSEN_JOB, job.id)  # the Trade-offs page opens at this sweep
    for job in jobs:
        if watched.get(job.id) is not False:  # not watched, or still active
            continue
        label = jobs_view.job_label(job, model_names, dataset_names)
        if job.state is JobState.DONE:
            st.success(help_text.SWEEP_FINISHED.format(label=label), icon=":material/check_circle:")
            st.page_link(TRADE_OFFS_PAGE, label=help_text.SEE_TRADE_OFFS, icon=":material/scatter_plot:",
                         query_params={state.WORKSPACE_PARAM: owner})
        else:
            ended = help_text.SWEEP_ENDED.format(label=label, state=jobs_view.STATE_WORDS[job.state])
            st.warning(f"{ended} {job.error}" if job.error else ended)


@reported_in_one_line()  # the fragment's own reruns happen outside the guard that app.py puts around the page
def jobs_section() -> None:
    """Progress of the active jobs, with a cancel button for the session's own, then every job in a table."""
    jobs = jobs_view.visible_jobs(ws, owner)
    announce_ended(jobs)
    active = jobs_view.active_jobs(jobs)
    for job in active:
        label = jobs_view.job_label(job, model_names, dataset_names)
        bar_column, button_column = st.columns([6, 1], vertical_alignment="bottom")
        bar_column.progress(job.done / max(job.total, 1), text=f"**{label}**: {jobs_view.progress_text(job)}")
        if job.owner == owner:
            button_column.button(
                "Cancel", key=f"cancel-{job.id}", on_click=ws.cancel, args=(job.id,), help=help_text.CANCEL
            )
    st.markdown("**All jobs**", help=help_text.JOB_LIST)
    st.dataframe(jobs_view.jobs_table(jobs, model_names, dataset_names), hide_index=True, width="stretch")
    if any(job.state is JobState.DONE for job in jobs):
        st.caption(help_text.NEXT_TRADE_OFFS)
    if live and not active:
        st.rerun()  # the last job ended: one full rerun, which stops the refreshing


st.title("Sweep")
st.caption(help_text.SWEEP_INTRO)
model_id, dataset_id = pickers.pick_model_and_data(ws, owner)
recipes = choose_recipes()
recipe_list(recipes)
measuring = choose_measuring(model_id, dataset_id)

if model_id is None or dataset_id is None:
    st.info("Pick a model and its validation data on the Models & data page first.")
ready = model_id is not None and dataset_id is not None and bool(recipes)
if st.button("Start sweep", type="primary", disabled=not ready, help=help_text.START_SWEEP):
    try:
        state.choose(state.CHOSEN_JOB, ws.submit_sweep(
            model_id, dataset_id, recipes, owner=owner, threads=measuring.threads, batch=measuring.batch,
            calibration_dataset_id=measuring.calibration_dataset, extra_sets=measuring.extra_sets,
            shifts=measuring.shifts, latency_cap=measuring.latency_cap))
    except QuantscopeError as error:
        st.error(str(error))

st.header("Jobs", divider="gray")
# While a job is active the section redraws itself every second; otherwise it is drawn once.
live = bool(jobs_view.active_jobs(jobs_view.visible_jobs(ws, owner)))
st.fragment(jobs_section, run_every=PROGRESS_REFRESH_SECONDS if live else None)()
