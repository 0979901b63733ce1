"""The dashboard end to end in a real browser: upload, sweep, trade-off chart, export bundle, sensitivity heat map.

Starts `streamlit run dashboard/app.py` on a free loopback port with a fresh workspace, drives Debian's
Chromium through Playwright, and writes a full-page screenshot of each page to docs/screenshots/.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from engine.workspace import Workspace
from sample_models.catalog import SAMPLES
from tests.browser import (
    CHROMIUM, NEEDS_CHROMIUM, REPO, VIEWPORT, chromium, free_port, new_page, open_app, open_page, selected, stop_jobs,
    streamlit_server, submitted_job, upload, wait_for_rerun,
)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=NEEDS_CHROMIUM)

SCREENSHOTS = REPO / "docs" / "screenshots"
SWEEP_TIMEOUT_MS = 240_000  # the sample sweeps started by the app share the two cores with ours
PRESET = "Smallest"
SHIFT = "noise:0.3"
EXPORTED_RECIPE = "W8A8 static channel minmax"  # in the Smallest preset, real (not simulated)
DIGITS = SAMPLES["digits_cnn"]


@dataclass(frozen=True)
class Server:
    url: str
    home: Path
    ws: Workspace  # opened before any job exists: opening a workspace also recovers (and stops) lost jobs


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("quantscope-home")
    try:
        with streamlit_server(home, free_port()) as url:
            yield Server(url, home, Workspace.open(home))
    finally:
        stop_jobs(home)


@pytest.fixture
def page(server):
    with chromium() as browser:
        yield new_page(browser)


# --- helpers: Streamlit as a browser sees it ---------------------------------------------------------------------


def screenshot(page, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main area, so grow the viewport to the content first."""
    page.mouse.move(0, 0)  # no tooltip left open by the last click...
    page.evaluate("() => document.activeElement && document.activeElement.blur()")  # ...and no focus ring
    height = 0
    while (content := page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")) > height:
        height = content  # charts re-lay themselves out for the new size, which can change the height again
        page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], height)})
        page.wait_for_timeout(800)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
    page.set_viewport_size(VIEWPORT)


def click_point(page, chart_index: int, recipe_name: str) -> None:
    """Click the marker of one recipe, found through the figure Plotly keeps on its element (customdata[1] = name)."""
    trace, point = page.evaluate(
        """([chartIndex, name]) => {
            const figure = document.querySelectorAll('.js-plotly-plot')[chartIndex];
            for (let t = 0; t < figure.data.length; t++) {
                const points = figure.data[t].customdata || [];
                for (let i = 0; i < points.length; i++) if (points[i][1] === name) return [t, i];
            }
            return null;
        }""",
        [chart_index, recipe_name],
    )
    marker = page.locator(".js-plotly-plot").nth(chart_index).locator(".scatterlayer .trace").nth(trace)
    box = marker.locator(".point").nth(point).bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    wait_for_rerun(page)


def choose_option(page, multiselect, option_text: str, attempts: int = 6) -> None:
    """Pick an option of a multiselect. The list does not always open on the first click, and a rerun of the page
    can close it as it opens, so try again until the choice shows in the widget."""
    chosen = multiselect.get_by_text(option_text, exact=True)
    for _ in range(attempts):
        multiselect.get_by_role("combobox").click()
        option = page.get_by_role("option").filter(has_text=option_text).first
        try:
            option.click(timeout=2000)
            chosen.wait_for(timeout=3000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
            wait_for_rerun(page)
    chosen.wait_for(timeout=1000)  # fails, saying what was not found


def chart_points(page, index: int) -> int:
    """Markers Plotly drew in the index-th chart; the Pareto line and the whiskers draw none."""
    return page.locator(".js-plotly-plot").nth(index).locator(".scatterlayer .point").count()


def finished(ws: Workspace, job_id: str):
    """The job once it has ended. Polls the state rather than `ws.wait`, which may take a runner that has not
    yet exec'd for a dead one."""
    deadline = time.monotonic() + SWEEP_TIMEOUT_MS / 1000
    while not (job := ws.job(job_id)).is_finished and time.monotonic() < deadline:
        time.sleep(0.2)
    return job


# --- the test ----------------------------------------------------------------------------------------------------


def test_upload_sweep_chart_and_export(server, page, tmp_path):
    open_app(page, server.url)

    # Models & data: the digits sample, uploaded as a user would.
    upload(page, "ONNX model", DIGITS.model_path, "Add model")
    upload(page, "Validation data", DIGITS.data_path, "Add data")
    page.get_by_text("540", exact=True).wait_for()  # the dataset summary: rows
    screenshot(page, "models_data")

    # Sweep: a preset of four recipes, as a background job.
    open_page(page, "Sweep")
    page.get_by_test_id("stRadio").get_by_text(PRESET, exact=True).click()
    wait_for_rerun(page)
    page.get_by_text("How to measure: calibration data, other data to check, timing").click()
    shifts = page.get_by_test_id("stMultiSelect").filter(has_text="Also check on shifted copies")
    shifts.wait_for()
    wait_for_rerun(page)  # a rerun redrawing the form would close the list as it opens
    choose_option(page, shifts, SHIFT)
    page.keyboard.press("Escape")
    wait_for_rerun(page)
    page.get_by_role("button", name="Start sweep").click()
    ws = server.ws
    job = finished(ws, submitted_job(ws).id)
    assert job.state == "done", job.error
    page.get_by_test_id("stDataFrame").filter(has_text="Recipes measured").wait_for()
    page.wait_for_timeout(2500)  # the progress fragment notices within a second and reruns the page
    wait_for_rerun(page)
    screenshot(page, "sweep")

    # Trade-offs: one marker per measured recipe on each chart.
    table = ws.results(job.id)
    open_page(page, "Trade-offs")
    page.locator(".js-plotly-plot .scatterlayer .point").first.wait_for()
    assert chart_points(page, 0) == len(table)
    assert chart_points(page, 1) == int(table["latency_b1_p50_ms"].notna().sum())
    page.get_by_text("Smallest model within 1% of the original").wait_for()
    click_point(page, 0, EXPORTED_RECIPE)  # a click on a dot picks that recipe for the detail card
    page.get_by_text(f"{EXPORTED_RECIPE}:").first.wait_for()
    assert selected(page, "Recipe") == EXPORTED_RECIPE
    page.get_by_text("All three at once (3-D)").click()
    page.locator(".js-plotly-plot").nth(2).wait_for()
    page.get_by_text("On other data", exact=True).wait_for()  # each recipe's loss on the shifted copy beside clean data
    assert page.get_by_test_id("stDataFrame").filter(has_text="Much worse on").count() == 1
    assert ws.job(job.id).params["shifts"] == [SHIFT]
    screenshot(page, "tradeoffs")

    # Export: the bundle's zip holds the measured artifact, byte for byte, and the report is previewed.
    open_page(page, "Export")
    page.get_by_text(f"{EXPORTED_RECIPE}:").first.wait_for()  # the choice carried over from Trade-offs
    page.get_by_role("button", name="Make the bundle").click()
    bundle = page.get_by_role("button", name="Download the bundle (.zip)")
    bundle.wait_for()
    with page.expect_download() as download_info:
        bundle.click()
    saved = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(saved)
    row = table[table["name"] == EXPORTED_RECIPE].iloc[0]
    with zipfile.ZipFile(saved) as archive:
        model = archive.read(next(name for name in archive.namelist() if name.endswith("/model.onnx")))
    assert model == ws.artifact_path(job.id, row["recipe_key"]).read_bytes()
    preview = page.locator("iframe")  # the report, previewed; Chromium draws a frame only once it is on screen
    preview.scroll_into_view_if_needed()
    preview.content_frame.locator(".js-plotly-plot .point").first.wait_for()
    wait_for_rerun(page)
    screenshot(page, "export")

    # Sensitivity: a table of the same model (chosen already) as a job; its heat map has one square per cell.
    open_page(page, "Sensitivity")
    page.get_by_role("button", name="Find sensitive parts").click()
    deadline = time.monotonic() + SWEEP_TIMEOUT_MS / 1000
    while not (tables := [j for j in ws.jobs() if j.kind == "sensitivity"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    (analysis,) = tables
    assert finished(ws, analysis.id).state == "done", analysis.error
    cells = ws.sensitivity(analysis.id).rows
    page.get_by_role("heading", name="Where it hurts").wait_for()
    page.locator(".js-plotly-plot .scatterlayer .point").first.wait_for()
    assert chart_points(page, 0) == int(cells["error"].isna().sum())
    wait_for_rerun(page)
    screenshot(page, "sensitivity")
