"""Fixtures of the fault and load tests: a workspace, a small real tmpfs, a dashboard server, a browser, and the
tally of faults survived that the session prints at its end.

Every process a test starts is stopped when it ends, pass or fail: servers (their process group), job runners
(cancelled, which kills their process group), the browser, and the tmpfs is unmounted.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.workspace import Workspace
from tests.browser import CHROMIUM, chromium, stop_jobs
from tests.servers import Streamlit

_survived: list[tuple[str, int]] = []  # (the fault, rows committed before it and found unchanged after)


@pytest.fixture
def survived():
    """Call `survived(fault, rows_kept)` at the end of a fault test, once everything about it has been checked."""
    return lambda fault, rows_kept: _survived.append((fault, rows_kept))


def pytest_terminal_summary(terminalreporter):
    if _survived:
        rows = sum(kept for _, kept in _survived)
        terminalreporter.write_line(
            f"faults survived: {len(_survived)} ({', '.join(fault for fault, _ in _survived)}); rows committed before "
            f"them: {rows}; results lost: 0")


@pytest.fixture
def workspace(tmp_path) -> Iterator[Workspace]:
    ws = Workspace.open(tmp_path / "ws")
    try:
        yield ws
    finally:
        stop_jobs(ws.root)


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Path]:
    """A real 16 MB tmpfs mounted for this test (root only: skipped where mounting is not allowed)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16M,mode=0755", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mount_point
    finally:
        try:
            for ballast in mount_point.glob("ballast-*"):  # what a test filled the disk with, if it failed meanwhile
                ballast.unlink()
            if (mount_point / "ws" / "quantscope.db").exists():
                stop_jobs(mount_point / "ws")
        finally:
            if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(mount_point)], check=True)  # a process still had a file open


@pytest.fixture
def servers(tmp_path) -> Iterator[list[Streamlit]]:
    """Start servers with `servers.append(start_streamlit(home))`; all are stopped, and their jobs cancelled, after."""
    started: list[Streamlit] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()
        for home in {server.home for server in started}:
            stop_jobs(home)


@pytest.fixture
def browser():
    """Debian's Chromium, one per test."""
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)")
    with chromium() as browser:
        yield browser

