"""Fault: the dashboard server killed (SIGKILL) with a job running; then also the job runners; then a new server.

The server is `streamlit run dashboard/app.py` on a loopback port over a workspace of the test's own. Its first
browser session opens the workspace and submits the sample sweeps; all samples but digits_cnn are recorded as
swept already (tests/servers.seed_sample_jobs), so the server runs one default sweep of digits_cnn, from its own
process, as it does after `make run`. A user's sweep of breast_cancer_mlp goes in through the Workspace API.
The sample sweep's last recipe (W2) is held in its build (HANG_VARIABLE) so that the faults land mid-job however
fast the machine is.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pandas as pd

from dashboard.samples import SAMPLE_OWNER
from engine.jobs.processes import runner_is_alive
from engine.jobs.tasks import HANG_UNTIL_VARIABLE, HANG_VARIABLE
from engine.store import jobs as job_rows
from engine.workspace import JobInfo, Workspace
from tests.jobs_helpers import (
    FP32, GRID, OWNER, TIMEOUT, W2, W3, W8_STATIC, add_sample, assert_rows_kept, assert_store_is_consistent,
    committed_rows, comparable, runner_pid, undisturbed_table, wait_for_group_to_exit, wait_until,
)
from tests.browser import wait_for_rerun
from tests.servers import is_healthy, seed_sample_jobs, start_streamlit

SAMPLE_RECIPES = list(GRID.values())  # the default grid, which the server sweeps for each sample
USER_RECIPES = [FP32, W8_STATIC, W3]


def visit(browser, url: str) -> None:
    """One browser session loads the dashboard's first page: the server opens the workspace (which recovers jobs
    whose runner is gone) and makes sure every sample has its sweep (resuming an interrupted one)."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        page.get_by_role("heading", name="Models & data", level=1).wait_for()
        wait_for_rerun(page)
    finally:
        context.close()


def digits_sample_job(ws: Workspace) -> JobInfo | None:
    digits = {model.id for model in ws.models(SAMPLE_OWNER) if model.name == "digits_cnn"}
    found = [job for job in ws.jobs(SAMPLE_OWNER) if job.model_id in digits]
    assert len(found) <= 1, "a second sweep of the same sample"
    return found[0] if found else None


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def as_recorded(ws: Workspace, job_id: str) -> JobInfo:
    """The job's row as stored, without noticing a lost runner (which Workspace.job would do)."""
    with ws.store.connect() as conn:
        return job_rows.get_job(conn, job_id)


def test_a_server_killed_mid_job_leaves_the_job_running_to_its_end_and_a_new_server_serves_it(
        tmp_path, servers, browser, survived):
    home = tmp_path / "home"
    home.mkdir()
    seed_sample_jobs(home, sweep_for_real=("digits_cnn",))
    release = tmp_path / "release-W2"  # W2's build waits for this file
    servers.append(start_streamlit(home, env={HANG_VARIABLE: W2.key(), HANG_UNTIL_VARIABLE: str(release)}))
    visit(browser, servers[0].url)
    ws = Workspace.open(home)
    job = wait_until(lambda: (found := digits_sample_job(ws)) and found.done >= 2 and found,
                     what="the server's sample sweep to commit two rows")
    runner = runner_pid(ws, job.id)
    assert parent_of(runner) == servers[0].pid  # the server started it
    before = committed_rows(ws, job.id)

    servers[0].kill()
    killed_at = time.time()
    assert runner_is_alive(runner, job.id)  # the runner leads a session of its own: the server's death spares it
    with ws.store.connect() as conn:  # and it goes on working and beating as if nothing happened
        wait_until(lambda: job_rows.runner_pid(conn, job.id)[1] > killed_at + 1, what="a heartbeat after the kill")
    assert ws.job(job.id).state == "running"
    # W2's build held the job mid-run (timings run alone, so the rows waiting to be timed wait for it too).
    release.touch()
    job = ws.wait(job.id, TIMEOUT)
    assert max(ws.result_times(job.id)) > killed_at  # rows committed after the server died
    assert job.state == "done", (job.error, job.error_detail)
    assert_rows_kept(ws, job.id, before)
    assert_store_is_consistent(ws)
    pd.testing.assert_frame_equal(comparable(ws.results(job.id)),
                                  undisturbed_table("digits_cnn", SAMPLE_RECIPES, tmp_path))
    finished = committed_rows(ws, job.id)

    servers.append(start_streamlit(home))  # on the same workspace
    assert is_healthy(servers[1].url)
    visit(browser, servers[1].url)
    assert digits_sample_job(ws).id == job.id  # the sample's sweep is found done: not started again
    assert ws.job(job.id).state == "done" and committed_rows(ws, job.id) == finished
    survived("server SIGKILLed mid-job", len(before))


def test_server_and_runners_killed_mid_job_a_new_server_recovers_both_jobs_resumes_its_own_and_the_user_resumes_theirs(
        tmp_path, servers, browser, survived):
    home = tmp_path / "home"
    home.mkdir()
    seed_sample_jobs(home, sweep_for_real=("digits_cnn",))
    servers.append(start_streamlit(home, env={HANG_VARIABLE: W2.key()}))  # W2's build never ends: killed below
    visit(browser, servers[0].url)
    ws = Workspace.open(home)
    sample = wait_until(lambda: (found := digits_sample_job(ws)) and found.done >= 1 and found,
                        what="the server's sample sweep to compute")
    user = ws.submit_sweep(*add_sample(ws, "breast_cancer_mlp"), USER_RECIPES, OWNER)  # waits for its turn
    wait_until(lambda: ws.job(sample.id).done >= 2 and ws.job(user).message.startswith("waiting for another sweep"),
               what="two sample rows, and the user's runner waiting for its turn")
    before = {job_id: committed_rows(ws, job_id) for job_id in (sample.id, user)}
    runners = {job_id: runner_pid(ws, job_id) for job_id in (sample.id, user)}

    servers[0].kill()  # everything goes at once, as when the machine's processes are all lost
    for runner in runners.values():
        os.killpg(runner, signal.SIGKILL)
    for runner in runners.values():
        wait_for_group_to_exit(runner)
    for job_id in runners:  # until someone looks, the jobs say they run, and their half-built work is there
        assert as_recorded(ws, job_id).state == "running"
        assert (ws.store.job_dir(job_id) / "scratch").is_dir()

    servers.append(start_streamlit(home))  # without the hang: the resumed sweep builds W2 like any other
    assert is_healthy(servers[1].url)
    visit(browser, servers[1].url)  # its Workspace.open() recovers both; its sample set-up resumes the sample sweep
    stopped = as_recorded(ws, user)
    assert stopped.state == "interrupted" and "resume" in stopped.message
    assert stopped.done == len(before[user])
    assert not (ws.store.job_dir(user) / "scratch").exists()
    assert_rows_kept(ws, user, before[user])

    job = ws.wait(sample.id, TIMEOUT)
    assert job.state == "done", (job.error, job.error_detail)
    assert runner_pid(ws, sample.id) != runners[sample.id]  # a new runner finished it
    ws.resume(user)  # what the user does on seeing "interrupted ... resume to finish"
    assert ws.wait(user, TIMEOUT).state == "done"

    for job_id, recipes, name in ((sample.id, SAMPLE_RECIPES, "digits_cnn"), (user, USER_RECIPES, "breast_cancer_mlp")):
        assert_rows_kept(ws, job_id, before[job_id])
        pd.testing.assert_frame_equal(comparable(ws.results(job_id)), undisturbed_table(name, recipes, tmp_path))
    assert_store_is_consistent(ws)
    survived("server and both runners SIGKILLed mid-job", sum(map(len, before.values())))
