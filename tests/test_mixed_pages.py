"""The dashboard's side of mixed precision, with AppTest: the Sensitivity page's form starts a search on the table's
candidates and says what it chose; Trade-offs draws the search's points with their own marker over a sweep of the
same model and data; Export lists the search's points.

Real jobs on digits_cnn in a temp workspace.
"""

from __future__ import annotations

import pytest

from dashboard import help_text, state
from engine import results
from engine.recipe import Recipe
from engine.store.home import HOME_VARIABLE
from engine.workspace import Workspace
from tests.jobs_helpers import W8_STATIC
from tests.test_dashboard_pages import (
    DIGITS, OWNER, assert_no_exception, button, figures, finished, marker_keys, page, selectbox,
)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("quantscope-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOME_VARIABLE, str(root))  # what state.workspace() and the job runners read
        yield Workspace.open(root)


@pytest.fixture(scope="module")
def digits(ws):
    model = ws.add_model(DIGITS.model_path, name="digits_cnn.onnx", owner=OWNER)
    dataset = ws.add_dataset(DIGITS.data_path, filename="digits_cnn.npz", model_id=model.id, owner=OWNER)
    return model, dataset


@pytest.fixture(scope="module")
def table_job(ws, digits) -> str:
    model, dataset = digits
    job_id = ws.submit_sensitivity(model.id, dataset.id, OWNER, bits=(8, 4), activations=(8,))
    assert finished(ws, job_id).state == "done"
    return job_id


@pytest.fixture(scope="module")
def curve_job(ws, table_job) -> str:
    """A whole curve (a drop of 0 walks every move), untimed at batch N to be quick."""
    job_id = ws.submit_mixed_on_table(table_job, OWNER, max_drop=0.0, batch=None)
    assert finished(ws, job_id).state == "done", ws.job(job_id).error
    return job_id


@pytest.fixture(scope="module")
def sweep_job(ws, digits) -> str:
    model, dataset = digits
    job_id = ws.submit_sweep(model.id, dataset.id, [Recipe.fp32(), W8_STATIC], OWNER, batch=None)
    assert finished(ws, job_id).state == "done"
    return job_id


def test_the_sensitivity_pages_form_searches_on_the_tables_candidates_and_says_what_it_chose(ws, table_job):
    at = page("sensitivity", **{state.CHOSEN_TABLE: table_job})
    assert_no_exception(at)
    at.radio(key="mixed_budget").set_value("max_size_ratio").run()
    at.number_input(key="mixed_max_size_ratio").set_value(0.25).run()
    before = {job.id for job in ws.jobs(OWNER)}
    at = button(at, "Search mixed precision").click().run()
    assert_no_exception(at)
    (job,) = [job for job in ws.jobs(OWNER) if job.id not in before]
    table = ws.job(table_job).params
    assert job.kind == "mixed" and job.params["max_size_ratio"] == 0.25 and job.params["max_drop"] is None
    assert (job.params["bits"], job.params["activations"]) == (table["bits"], table["activations"])
    assert at.session_state[state.CHOSEN_CURVE] == job.id
    assert finished(ws, job.id).state == "done", ws.job(job.id).error
    assert "from an earlier sensitivity job" in ws.job(job.id).message  # the page's table, not computed again

    at = page("sensitivity", **{state.CHOSEN_TABLE: table_job})
    chosen = results.chosen_point(ws.results(job.id))
    (line,) = [success.value for success in at.success if "Trade-offs" in success.value]
    assert f"chosen: {chosen[results.NAME]}" in line


def test_trade_offs_draws_the_curves_points_with_their_marker_over_the_sweep(ws, sweep_job, curve_job):
    at = page("tradeoffs", **{state.CHOSEN_JOB: sweep_job, state.CHOSEN_CURVE: curve_job})
    assert_no_exception(at)
    mixed = results.mixed_precision_rows(ws.results(curve_job))
    assert not mixed.empty
    size_chart = figures(at)[0]
    (marked,) = [trace for trace in size_chart["data"] if trace.get("name") == help_text.MIXED_LEGEND]
    assert sorted(point[0] for point in marked["customdata"]) == sorted(mixed[results.RECIPE_KEY])
    drawn = marker_keys(size_chart)
    assert set(results.measured_rows(ws.results(sweep_job))[results.RECIPE_KEY]) <= set(drawn)
    assert len(drawn) == len(set(drawn))  # the curve's fp32 row is the sweep's: drawn once

    at = selectbox(at, "Mixed-precision curve").set_value("none").run()
    assert_no_exception(at)
    assert not [trace for trace in figures(at)[0]["data"] if trace.get("name") == help_text.MIXED_LEGEND]


def test_export_lists_a_curves_points(ws, curve_job):
    at = page("export", **{state.CHOSEN_JOB: curve_job})
    assert_no_exception(at)
    chosen = results.chosen_point(ws.results(curve_job))
    assert selectbox(at, "Recipe").value == results.measured_rows(ws.results(curve_job))[results.RECIPE_KEY].iloc[0]
    at = selectbox(at, "Recipe").set_value(chosen[results.RECIPE_KEY]).run()
    assert_no_exception(at)
    assert any(chosen[results.NAME] in markdown.value for markdown in at.markdown)
