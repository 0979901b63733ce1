"""The dashboard as a server process the fault and load tests (tests/faults/) can kill, restart and seed: what
tests/browser.py's context manager does not offer. Ports, Chromium and page helpers are tests/browser.py's."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from dashboard.samples import SAMPLE_OWNER
from engine.jobs.kinds.sweep import SweepParams, SweepRun
from engine.store import jobs as job_rows
from engine.store.records import JobState
from engine.sweep import default_grid
from engine.workspace import Workspace
from sample_models.catalog import SAMPLES
from tests.browser import free_port, launch_streamlit, wait_until_healthy

def is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


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
    process = launch_streamlit(home, port, log, env)
    server = Streamlit(process, f"http://127.0.0.1:{port}", home, log)
    try:
        wait_until_healthy(server.url, process)
    except BaseException:
        server.stop()
        raise
    return server


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
