"""The dashboard as a real server for tests: `streamlit run dashboard/app.py` on a free loopback port with a workspace
of the test's own, Debian's Chromium to look at it, and stopping all of it again.

Used by tests/test_e2e_browser.py and the fault and load tests in tests/faults/.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from dashboard.samples import SAMPLE_OWNER
from engine.jobs.kinds.sweep import SweepParams, SweepRun
from engine.store import jobs as job_rows
from engine.store.home import HOME_VARIABLE
from engine.store.records import JobState
from engine.sweep import default_grid
from engine.workspace import Workspace
from sample_models.catalog import SAMPLES

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode}")
        if is_healthy(url):
            return
        time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer at {url} within {SERVER_START_SECONDS}s")


@dataclass
class Streamlit:
    """A running `streamlit run dashboard/app.py`, leading a process group of its own."""

    process: subprocess.Popen
    url: str
    home: Path
    log: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL the server's process group, as the OOM killer or a lost machine would; job runners live on."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s); nothing when it is gone already."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                self.process.wait()
        self.log.close()


def start_streamlit(home: Path, env: dict[str, str] | None = None) -> Streamlit:
    """A dashboard server on a free 127.0.0.1 port over the workspace at `home`, once it answers its health check;
    it logs to home/streamlit-<port>.log. `env`: more environment for it (and the job runners it starts)."""
    port = free_port()
    log = open(home / f"streamlit-{port}.log", "wb")
    process = subprocess.Popen(
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
        start_new_session=True,  # its own process group, so stopping it cannot touch pytest
    )
    server = Streamlit(process, f"http://127.0.0.1:{port}", home, log)
    try:
        wait_until_healthy(server.url, process)
    except BaseException:
        server.stop()
        raise
    return server


def stop_jobs(home: Path) -> None:
    """Job runners are detached so they outlive the server; cancel the ones still going in this workspace."""
    ws = Workspace.open(home)
    for job in ws.jobs():
        if not job.is_finished:
            ws.cancel(job.id)


def seed_sample_jobs(home: Path, sweep_for_real: tuple[str, ...] = ()) -> None:
    """Register the sample models as the dashboard does, with their sweeps recorded as done (and empty) except for
    the samples in `sweep_for_real`: a server's first session then starts only those, not four default sweeps."""
    ws = Workspace.open(home)
    params = SweepParams(tuple(default_grid())).to_dict()
    for name, sample in SAMPLES.items():
        model = ws.add_model(sample.model_path, name=name, owner=SAMPLE_OWNER, shared=True)
        dataset = ws.add_dataset(sample.data_path, sample.data_path.name, model.id, SAMPLE_OWNER, shared=True)
        if name in sweep_for_real:
            continue
        job_id = uuid.uuid4().hex[:12]
        with ws.store.connect() as conn:
            job_rows.create_job(conn, job_id, SweepRun.name, SAMPLE_OWNER, model.id, dataset.id, params,
                                total=len(params["recipes"]))
            assert job_rows.claim(conn, job_id, os.getpid())
            assert job_rows.finish(conn, job_id, os.getpid(), JobState.DONE, "done: seeded by the test, not swept")


# --- Streamlit as a browser sees it (Playwright pages) ------------------------------------------------------------


def wait_for_rerun(page) -> None:
    """Until Streamlit has finished running the script (its status widget says 'Running...' meanwhile)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=stStatusWidget]')"
        " || !document.querySelector('[data-testid=stStatusWidget]').innerText.includes('Running')"
    )
    page.wait_for_timeout(300)


def open_page(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title, level=1).wait_for()
    wait_for_rerun(page)


def upload(page, uploader_label: str, path: Path, button: str) -> None:
    uploader = page.get_by_test_id("stFileUploader").filter(has_text=uploader_label)
    uploader.locator("input[type=file]").set_input_files(path)
    uploader.get_by_text(path.name).wait_for()
    add = page.get_by_role("button", name=button)
    add.wait_for()
    page.wait_for_function(f"() => [...document.querySelectorAll('button')].some(b => b.innerText === '{button}' && !b.disabled)")
    add.click()
    page.get_by_text(f"Added {path.name}").wait_for()
    wait_for_rerun(page)
