"""A user's work lives at their page's link, in a real browser: it survives a reload and a server restart, and a
browser without the link sees none of it.
"""

from __future__ import annotations

import urllib.parse

import pytest

from engine.workspace import Workspace
from sample_models.catalog import SAMPLES
from tests.browser import (
    CHROMIUM, NEEDS_CHROMIUM, chromium, free_port, new_page, open_app, open_page, selected, stop_jobs,
    streamlit_server, submitted_job, upload, wait_for_rerun,
)
from tests.servers import seed_sample_jobs

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=NEEDS_CHROMIUM)

SAMPLE = SAMPLES["breast_cancer_mlp"]  # the smallest model: its sweep is quick
MODEL_LABEL = f"{SAMPLE.model_path.name} (yours, private)"
JOB_LABEL = f"{SAMPLE.model_path.name} on {SAMPLE.data_path.name}"


def workspace_token(page) -> str:
    """The token in the page's link, once the app has written it there."""
    page.wait_for_function("() => new URLSearchParams(location.search).has('workspace')")
    return urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)["workspace"][0]


def jobs_table(page):
    return page.get_by_test_id("stDataFrame").filter(has_text="Recipes measured")


def test_work_survives_a_reload_and_a_restart_and_stays_private(tmp_path_factory):
    home = tmp_path_factory.mktemp("quantscope-home")
    port = free_port()
    seed_sample_jobs(home)  # the shared samples are listed as swept: the user's sweep is the only work
    try:
        with chromium() as browser:
            with streamlit_server(home, port) as url:
                user = new_page(browser)
                open_app(user, url)
                token = workspace_token(user)
                link = user.url
                upload(user, "ONNX model", SAMPLE.model_path, "Add model")
                upload(user, "Validation data", SAMPLE.data_path, "Add data")
                open_page(user, "Sweep")
                assert workspace_token(user) == token  # a page switch keeps the link
                user.get_by_test_id("stRadio").get_by_text("Smallest", exact=True).click()
                wait_for_rerun(user)
                user.get_by_role("button", name="Start sweep").click()
                ws = Workspace.open(home)
                job = submitted_job(ws)
                assert job.owner == token

                # A reload: the model and the sweep are still listed, and a sweep still running shows its progress.
                user.reload()
                user.get_by_role("heading", name="Sweep", level=1).wait_for()
                wait_for_rerun(user)
                assert workspace_token(user) == token
                jobs_table(user).filter(has_text=SAMPLE.model_path.name).wait_for()
                if ws.job(job.id).state.is_active:
                    user.get_by_test_id("stProgress").filter(has_text=JOB_LABEL, has_not_text="(sample)").wait_for()
                open_page(user, "Models & data")
                assert selected(user, "Model") == MODEL_LABEL

                # Another browser, without the link: its own new workspace, with only the shared samples.
                stranger = new_page(browser)
                open_app(stranger, url)
                assert workspace_token(stranger) != token
                assert selected(stranger, "Model") != MODEL_LABEL
                open_page(stranger, "Sweep")
                jobs_table(stranger).filter(has_text="shared sample").wait_for()  # the table's rows are drawn
                assert SAMPLE.model_path.name not in jobs_table(stranger).inner_text()

            # A restarted server on the same workspace and port: the bookmarked link brings everything back.
            with streamlit_server(home, port) as url:
                returning = new_page(browser)
                open_app(returning, link)
                assert workspace_token(returning) == token
                assert selected(returning, "Model") == MODEL_LABEL
                open_page(returning, "Sweep")
                jobs_table(returning).filter(has_text=SAMPLE.model_path.name).wait_for()
    finally:
        stop_jobs(home)
