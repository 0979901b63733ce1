"""Load: two browser sessions and a CLI sweeping at once against one dashboard on loopback; and a bounded soak of
upload, sweep and cancel through the Workspace API that must leak no processes, files or database rows.

The soak runs for SOAK_SECONDS in `make test`; the `slow`-marked variant runs it for minutes (`pytest -m slow`).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from dashboard.samples import SAMPLE_OWNER
from engine.jobs.processes import live_group_members, reap, runner_is_alive
from engine.store.home import HOME_VARIABLE
from engine.sweep import PRESETS
from engine.workspace import Workspace
from sample_models.catalog import SAMPLES
from tests.jobs_helpers import (
    GRID, TIMEOUT, assert_store_is_consistent, comparable, runner_pid, stored_results, undisturbed_table, wait_until,
)
from tests.browser import open_page, upload, wait_for_rerun
from tests.servers import seed_sample_jobs, start_streamlit

MEMORY_BOUND = 3 * 10**9  # bytes of PSS for the server, the runners and their workers together
SOAK_SECONDS = 30
SLOW_SOAK_SECONDS = 240
SOAK_RECIPES = list(GRID.values())  # the default grid: a row comes about two seconds in, the last one seconds later


# -- memory of the processes that work on one workspace -----------------------------------------------------------


def workspace_processes(home: Path) -> list[int]:
    """Every live process started for this workspace: whose environment names it as QUANTSCOPE_HOME (the server,
    the CLI, job runners, their forkservers and workers all inherit it)."""
    marker = f"{HOME_VARIABLE}={home}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (the forkserver's preloaded engine) count once, split among sharers."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Sums the PSS of the workspace's processes every `every` seconds; keeps the peak."""

    def __init__(self, home: Path, every: float = 0.25):
        super().__init__(daemon=True)
        self.home, self.every = home, every
        self.peak, self.peak_processes, self.samples = 0, 0, 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            pids = workspace_processes(self.home)
            total = sum(pss_bytes(pid) for pid in pids)
            if total > self.peak:
                self.peak, self.peak_processes = total, len(pids)
            self.samples += 1
            self.halt.wait(self.every)

    def stop(self) -> None:
        self.halt.set()
        self.join()


# -- two browser sessions and a CLI --------------------------------------------------------------------------------


def start_sweep_in_a_browser(browser, url: str, model: Path, data: Path):
    """A new browser session uploads a model and its data, picks the Smallest goal and starts the sweep."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto(url)
    page.get_by_role("heading", name="Models & data", level=1).wait_for()
    wait_for_rerun(page)
    upload(page, "ONNX model", model, "Add model")
    upload(page, "Validation data", data, "Add data")
    open_page(page, "Sweep")
    page.get_by_test_id("stRadio").get_by_text("Smallest", exact=True).click()
    wait_for_rerun(page)
    return context, page


def jobs_listed(page) -> str:
    """The text of the Sweep page's table of jobs, as this session is shown it (the grid draws on a canvas; its
    cells are in the canvas's accessible fallback content)."""
    open_page(page, "Sweep")
    table = page.get_by_test_id("stDataFrame").filter(has_text="Recipes measured")
    table.wait_for()
    return table.text_content()


def test_two_browser_sessions_and_a_cli_sweeping_at_once_all_finish_see_only_their_own_in_bounded_memory(
        tmp_path, servers, browser):
    home = tmp_path / "home"
    home.mkdir()
    seed_sample_jobs(home)  # the sample sweeps count as done: the three sweeps below are the only work
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    files = {}  # who uploads what, under a file name of their own
    for user, sample in (("alice", "digits_cnn"), ("bob", "breast_cancer_mlp"), ("cli", "digits_cnn")):
        files[user] = (shutil.copy(SAMPLES[sample].model_path, inputs / f"{user}_model.onnx"),
                       shutil.copy(SAMPLES[sample].data_path, inputs / f"{user}_data.npz"))
    sampler = MemorySampler(home)
    servers.append(start_streamlit(home))
    sampler.start()
    contexts = []
    try:
        alice, alice_page = start_sweep_in_a_browser(browser, servers[0].url, *map(Path, files["alice"]))
        contexts.append(alice)
        bob, bob_page = start_sweep_in_a_browser(browser, servers[0].url, *map(Path, files["bob"]))
        contexts.append(bob)
        for page in (alice_page, bob_page):  # one after the other, then the CLI: three sweeps under way at once
            page.get_by_role("button", name="Start sweep").click()
        cli = subprocess.run(
            [sys.executable, "-m", "engine.cli", "sweep", *files["cli"], "--preset", "fastest", "--detach"],
            capture_output=True, text=True, env={**os.environ, HOME_VARIABLE: str(home)}, timeout=TIMEOUT)
        assert cli.returncode == 0, cli.stderr
        ws = Workspace.open(home)
        jobs = wait_until(lambda: len(found := [job for job in ws.jobs() if job.owner != SAMPLE_OWNER]) == 3 and found,
                          what="three sweeps submitted")
        assert any(job.state.is_active for job in ws.jobs())
        finished = [ws.wait(job.id, TIMEOUT) for job in jobs]
        sampler.stop()

        assert [job.state for job in finished] == ["done"] * 3, [(job.error, job.error_detail) for job in finished]
        by_owner = {job.owner: job for job in finished}
        assert len(by_owner) == 3 and cli.stdout.strip() == by_owner["cli"].id
        users = {owner: name for owner in by_owner for name in ("alice", "bob", "cli")
                 if ws.models(owner) and ws.models(owner)[0].name == f"{name}_model.onnx"}
        assert sorted(users.values()) == ["alice", "bob", "cli"]
        for owner, name in users.items():  # each user's table is their own model's, as if swept alone
            sample, preset = {"alice": ("digits_cnn", "smallest"), "bob": ("breast_cancer_mlp", "smallest"),
                              "cli": ("digits_cnn", "fastest")}[name]
            recipes = list(PRESETS[preset].recipes)
            pd.testing.assert_frame_equal(comparable(ws.results(by_owner[owner].id)),
                                          undisturbed_table(sample, recipes, tmp_path))
            assert [job.id for job in ws.jobs(owner)] == [by_owner[owner].id]
            # their own upload, and the shared samples (their upload stands in for the sample with the same bytes)
            assert {model.name for model in ws.models(owner)} == {f"{name}_model.onnx", *(set(SAMPLES) - {sample})}

        for page, me in ((alice_page, "alice"), (bob_page, "bob")):  # what each browser session is shown
            listed = jobs_listed(page)
            assert f"{me}_model.onnx{me}_data.npz4 / 4finished" in listed  # their sweep, all four recipes measured
            for other in {"alice", "bob", "cli"} - {me}:
                assert f"{other}_model.onnx" not in listed and f"{other}_data.npz" not in listed
            assert listed.count("finished") == 1 + len(SAMPLES)  # their one job and the shared samples' only
            assert listed.count("shared sample") == len(SAMPLES)
    finally:
        sampler.stop() if sampler.is_alive() else None
        for context in contexts:
            context.close()
    print(f"\npeak memory (PSS) of server + runners + workers: {sampler.peak / 1e6:.0f} MB over "
          f"{sampler.peak_processes} processes ({sampler.samples} samples)")
    assert sampler.samples > 10 and sampler.peak_processes >= 4  # the server, and a runner with its workers
    assert sampler.peak < MEMORY_BOUND
    assert_store_is_consistent(ws)


# -- the soak ---------------------------------------------------------------------------------------------------


def soak(ws: Workspace, seconds: float, seed: int = 11) -> dict:
    """Upload, sweep and cancel, over and over, for `seconds`; then check that nothing was left behind."""
    rng = random.Random(seed)
    fds_before = len(os.listdir("/proc/self/fd"))
    names = ["breast_cancer_mlp", "digits_cnn"]
    cycles, runners, done_at_cancel = 0, {}, {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sample = SAMPLES[names[cycles % 2]]
        owner = f"user{cycles % 2}"
        model = ws.add_model(sample.model_path.read_bytes(), f"upload-{cycles}.onnx", owner)  # the same bytes again
        data = ws.add_dataset(sample.data_path.read_bytes(), sample.data_path.name, model.id, owner)
        # Another latency batch each time: another configuration, so the cache serves none and each one computes.
        job_id = ws.submit_sweep(model.id, data.id, SOAK_RECIPES, owner, batch=2 + cycles)
        if rng.random() < 0.5:  # cancelled while its runner starts or computes the fp32 reference...
            time.sleep(rng.uniform(0.0, 1.5))
        else:  # ...or once it has committed a row, while it builds and times the others
            wait_until(lambda: ws.job(job_id).done >= 1 or ws.job(job_id).is_finished, what="a committed row")
            time.sleep(rng.uniform(0.0, 0.3))
        runners[job_id] = runner_pid(ws, job_id)
        ws.cancel(job_id)
        done_at_cancel[job_id] = ws.job(job_id).done
        cycles += 1

    time.sleep(1.0)  # a runner that was still writing would have written by now
    reap()
    states = Counter(ws.job(job_id).state.value for job_id in runners)
    assert set(states) <= {"cancelled", "done"}, states
    for job_id, pid in runners.items():  # no process left, no row written after the cancel
        assert not runner_is_alive(pid, job_id) and live_group_members(pid) == []
        assert len(stored_results(ws, job_id)) == ws.job(job_id).done == done_at_cancel[job_id]
    zombies = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
               if _stat_field(pid, 1) == str(os.getpid()) and _stat_field(pid, 0) == "Z"]
    assert zombies == [], "runners left as zombies"
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 3  # connections and log files are closed

    root = ws.root
    assert not list(root.glob("jobs/*/scratch")), "scratch directories left behind"
    assert len(list(root.glob("blobs/*/*"))) == 4  # two models and two data files, however often uploaded
    artifacts = list(root.glob("artifacts/*/*"))
    assert len(artifacts) <= len(SOAK_RECIPES) * len(names)  # built again and again, stored once
    assert sorted(path.name for path in (root / "jobs").iterdir()) == sorted(runners)
    assert all([path.name for path in (root / "jobs" / job_id).iterdir()] == ["runner.log"] for job_id in runners)
    with ws.store.connect() as conn:
        count = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                 for table in ("jobs", "results", "models", "datasets", "artifacts", "result_cache")}
    assert count["jobs"] == cycles
    assert count["results"] == sum(done_at_cancel.values())
    assert count["models"] == count["datasets"] == len(names)  # one row per (item, owner)
    assert count["artifacts"] <= len(artifacts)
    assert count["result_cache"] <= count["results"]
    assert_store_is_consistent(ws)
    return {"cycles": cycles, "states": dict(states), "rows": count["results"], "artifacts": len(artifacts)}


def _stat_field(pid: int, index: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[index]
    except (OSError, IndexError):
        return None


def test_a_bounded_soak_of_upload_sweep_and_cancel_leaks_no_processes_files_or_rows(workspace):
    figures = soak(workspace, SOAK_SECONDS)
    print(f"\nsoak: {figures}")
    assert figures["cycles"] >= 8


@pytest.mark.slow
def test_a_long_soak_of_upload_sweep_and_cancel_leaks_no_processes_files_or_rows(workspace):
    figures = soak(workspace, SLOW_SOAK_SECONDS, seed=12)
    print(f"\nlong soak: {figures}")
    assert figures["cycles"] >= 60
