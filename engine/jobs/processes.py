"""Starting, checking and stopping a job's runner process from the outside."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.jobs.executor import FORKSERVER_PRELOAD
from engine.store import Store
from engine.store.home import HOME_VARIABLE

# Runners this process started. Polling them reaps the ones that ended, so none lingers as a zombie.
_launched: dict[int, subprocess.Popen] = {}

# How a runner starts: its forkserver first, so that the forkserver imports the engine (about a second)
# on one core while the runner imports it on another; then engine.jobs.runner as the main module.
RUNNER_BOOT = (
    "import multiprocessing.forkserver as forkserver; "
    f"forkserver.set_forkserver_preload({FORKSERVER_PRELOAD!r}); forkserver.ensure_running(); "
    "import runpy; runpy.run_module('engine.jobs.runner', run_name='__main__')"
)


def launch_runner(store: Store, job_id: str) -> int:
    """Start the job's runner in a new session (so it outlives us), logging to jobs/<id>/runner.log; its pid."""
    log_dir = store.job_dir(job_id)
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "runner.log", "ab") as log:
        runner = subprocess.Popen(
            [sys.executable, "-c", RUNNER_BOOT, job_id],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, HOME_VARIABLE: str(store.root)},
            start_new_session=True,
        )
    _launched[runner.pid] = runner
    return runner.pid


def reap() -> None:
    for pid, runner in list(_launched.items()):
        if runner.poll() is not None:
            _launched.pop(pid, None)  # pop: another thread (a dashboard session) may reap it too


def runner_is_alive(pid: int | None, job_id: str) -> bool:
    """Is `pid` still this job's runner? A dead, zombie, or reused pid is not."""
    if pid is None:
        return False
    reap()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now has that pid
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():  # no procfs (macOS): the pid is all we can go by
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        command = (proc / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    if state in ("Z", "X"):
        return False
    if not command:  # mid-exec: the kernel has closed Popen's pipe but not yet set up the new argv
        return True  # too early to tell; a pid that stays wrong goes stale and is caught by its heartbeat
    return b"engine.jobs.runner" in command and job_id.encode() in command.split(b"\0")


def live_group_members(group: int) -> list[int]:
    """Processes of a process group that have not yet died (zombies excluded); empty without procfs."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
        if int(pgrp) == group and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def kill_runner(pid: int | None, job_id: str, timeout: float = 2.0) -> None:
    """Kill the runner and every process it started (its process group); return once they are all gone."""
    if not runner_is_alive(pid, job_id):
        return
    try:
        os.killpg(pid, signal.SIGKILL)  # the runner leads its own session: its group is the job's work
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while (runner_is_alive(pid, job_id) or live_group_members(pid)) and time.monotonic() < deadline:
        time.sleep(0.02)
