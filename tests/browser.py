"""Driving the dashboard in a real browser: a `streamlit run` server on a free loopback port, Debian's Chromium
through Playwright, and Streamlit as a browser sees it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dashboard.samples import SAMPLE_OWNER
from engine.store.home import HOME_VARIABLE
from engine.workspace import Workspace

CHROMIUM = Path("/usr/bin/chromium")
NEEDS_CHROMIUM = "needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"
REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}
SERVER_START_SECONDS = 60
SERVER_STOP_SECONDS = 10
UI_TIMEOUT_MS = 60_000  # one Streamlit rerun; the first one imports onnxruntime and plotly


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer at {url} within {SERVER_START_SECONDS}s")


def launch_streamlit(home: Path, port: int, log, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`streamlit run dashboard/app.py` on 127.0.0.1:port over the workspace at `home`, logging to `log`, in a
    process group of its own (so stopping it cannot touch pytest); `env`: more environment for it and its runners."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "streamlit", "run", "dashboard/app.py",
            "--server.address", "127.0.0.1",
            "--server.port", str(port),
            "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
        ],
        cwd=REPO,
        env={**os.environ, **(env or {}), HOME_VARIABLE: str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@contextmanager
def streamlit_server(home: Path, port: int) -> Iterator[str]:
    """`streamlit run dashboard/app.py` on 127.0.0.1:port with the workspace at `home`; its URL. Stopped on exit;
    the job runners it started are detached and go on (stop_jobs ends them)."""
    log = open(home / f"streamlit-{port}-{time.monotonic_ns()}.log", "wb")
    process = launch_streamlit(home, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=SERVER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def stop_jobs(home: Path) -> None:
    """Job runners are detached so they outlive the server; cancel the ones a test's app started."""
    ws = Workspace.open(home)
    for job in ws.jobs():
        if not job.is_finished:
            ws.cancel(job.id)


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium; `browser.new_context()` is a browser profile of its own (no shared cookies or tabs)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser):
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(UI_TIMEOUT_MS)
    return context.new_page()


def wait_for_rerun(page) -> None:
    """Until Streamlit has finished running the script (meanwhile its status widget says 'Running...' or offers
    'Stop', depending on the version)."""
    page.wait_for_function(
        "() => { const status = document.querySelector('[data-testid=stStatusWidget]');"
        " return !status || !/Running|Stop/.test(status.innerText); }"
    )
    page.wait_for_timeout(300)


def open_app(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name="Models & data", level=1).wait_for()
    wait_for_rerun(page)


def open_page(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title, level=1).wait_for()
    wait_for_rerun(page)


def upload(page, uploader_label: str, path: Path, button: str) -> None:
    uploader = page.get_by_test_id("stFileUploader").filter(has_text=uploader_label)
    uploader.locator("input[type=file]").set_input_files(path)
    uploader.get_by_title(path.name).wait_for()  # the file's chip shortens a long name; its title has it all
    add = page.get_by_role("button", name=button)
    add.wait_for()
    page.wait_for_function(f"() => [...document.querySelectorAll('button')].some(b => b.innerText === '{button}' && !b.disabled)")
    add.click()
    page.get_by_text(f"Added {path.name}").wait_for()
    wait_for_rerun(page)


def selected(page, label: str) -> str:
    return page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True)).get_by_role("combobox").input_value()


def submitted_job(ws: Workspace):
    """The one job a user (not the sample set-up) submitted, once the click's rerun has recorded it."""
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        if jobs := [job for job in ws.jobs() if job.owner != SAMPLE_OWNER]:
            (job,) = jobs
            return job
        time.sleep(0.2)
    raise TimeoutError("no job was submitted")
