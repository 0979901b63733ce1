"""Jobs and their result rows.

A job moves through engine.store.records.JobState. Every state change is a
conditional UPDATE, so a runner that lost its job (cancelled, or declared dead) cannot overwrite it.
A result row is committed the moment its configuration finishes, together with the job's progress.
"""

from __future__ import annotations

import json
import sqlite3
import time

from engine.store.db import transaction
from engine.store.records import ACTIVE_STATES, RESUMABLE_STATES, JobInfo, JobState

QUEUED, RUNNING = JobState.QUEUED.value, JobState.RUNNING.value


def encode_row(row: dict) -> str:
    # NaN and inf stay as JSON's NaN/Infinity tokens so rows round-trip exactly; numpy values become Python's.
    return json.dumps(row, default=lambda value: value.tolist())


def create_job(conn: sqlite3.Connection, job_id: str, kind: str, owner: str, model_id: str, dataset_id: str,
               params: dict, total: int) -> None:
    now = time.time()  # also the first heartbeat: a job whose runner never starts goes stale from here
    with transaction(conn):
        conn.execute(
            """INSERT INTO jobs (id, kind, state, owner, model_id, dataset_id, params, total, message, created,
                                heartbeat)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)""",
            (job_id, kind, QUEUED, owner, model_id, dataset_id, json.dumps(params), total, now, now),
        )


def get_job(conn: sqlite3.Connection, job_id: str) -> JobInfo | None:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else JobInfo.from_row(row)


def list_jobs(conn: sqlite3.Connection, owner: str | None = None) -> list[JobInfo]:
    rows = conn.execute(
        "SELECT * FROM jobs WHERE ? IS NULL OR owner = ? ORDER BY created DESC, rowid DESC", (owner, owner)
    ).fetchall()
    return [JobInfo.from_row(row) for row in rows]


def runner_pid(conn: sqlite3.Connection, job_id: str) -> tuple[int | None, float | None]:
    row = conn.execute("SELECT pid, heartbeat FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return (None, None) if row is None else (row["pid"], row["heartbeat"])


def set_runner(conn: sqlite3.Connection, job_id: str, pid: int) -> None:
    """The launcher records the runner's pid at once, so a runner that dies before it starts is noticed."""
    with transaction(conn):
        conn.execute("UPDATE jobs SET pid = ? WHERE id = ? AND state = ?", (pid, job_id, QUEUED))


def claim(conn: sqlite3.Connection, job_id: str, pid: int) -> bool:
    """The runner takes a queued job; False when it is no longer queued (e.g. cancelled before it started)."""
    now = time.time()
    with transaction(conn):
        return conn.execute(
            """UPDATE jobs SET state = ?, pid = ?, heartbeat = ?, started = coalesce(started, ?),
                              message = 'starting'
               WHERE id = ? AND state = ?""",
            (RUNNING, pid, now, now, job_id, QUEUED),
        ).rowcount == 1


def beat(conn: sqlite3.Connection, job_id: str, pid: int, message: str | None = None, done: int | None = None,
         total: int | None = None) -> bool:
    """The runner's heartbeat, with its progress when given (kinds whose progress is not their committed rows);
    False means the job is no longer this runner's to run."""
    with transaction(conn):
        return conn.execute(
            """UPDATE jobs SET heartbeat = ?, message = coalesce(?, message), done = coalesce(?, done),
                              total = coalesce(?, total)
               WHERE id = ? AND state = ? AND pid = ?""",
            (time.time(), message, done, total, job_id, RUNNING, pid),
        ).rowcount == 1


def finish(conn: sqlite3.Connection, job_id: str, pid: int, state: JobState, message: str,
           error: str | None = None, error_detail: str | None = None) -> bool:
    """The runner's last word: done or failed."""
    with transaction(conn):
        return conn.execute(
            """UPDATE jobs SET state = ?, message = ?, error = ?, error_detail = ?, finished = ?
               WHERE id = ? AND state = ? AND pid = ?""",
            (state.value, message, error, error_detail, time.time(), job_id, RUNNING, pid),
        ).rowcount == 1


def stop(conn: sqlite3.Connection, job_id: str, state: JobState, message: str) -> sqlite3.Row | None:
    """Cancel or interrupt an active job from outside its runner.

    Returns the job's (state, pid) as they were, or None when the job had already ended (or never was).
    """
    with transaction(conn):
        before = conn.execute("SELECT state, pid FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if before is None or before["state"] not in ACTIVE_STATES:
            return None
        conn.execute(
            "UPDATE jobs SET state = ?, message = ?, finished = ? WHERE id = ?",
            (state.value, message, time.time(), job_id),
        )
    return before


def requeue(conn: sqlite3.Connection, job_id: str) -> bool:
    """Make a resumable job (JobState.is_resumable) runnable again: its committed rows stay."""
    resumable = [state.value for state in RESUMABLE_STATES]
    marks = ", ".join("?" for _ in resumable)
    with transaction(conn):
        return conn.execute(
            f"""UPDATE jobs SET state = ?, message = 'resuming', error = NULL, error_detail = NULL,
                               finished = NULL, pid = NULL, heartbeat = ?
                WHERE id = ? AND state IN ({marks})""",
            (QUEUED, time.time(), job_id, *resumable),
        ).rowcount == 1


# -- result rows ---------------------------------------------------------------------------------------------


def committed_keys(conn: sqlite3.Connection, job_id: str) -> set[str]:
    return {row[0] for row in conn.execute("SELECT recipe_key FROM results WHERE job_id = ?", (job_id,))}


def add_result(conn: sqlite3.Connection, job_id: str, recipe_key: str, position: int, row: dict,
               artifact_sha: str | None, cached: bool, error_detail: str | None = None) -> None:
    """Commit one configuration's row and the job's progress. Call inside a transaction."""
    conn.execute(
        """INSERT OR IGNORE INTO results (job_id, recipe_key, position, row, artifact, cached, error_detail, created)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        (job_id, recipe_key, position, encode_row(row), artifact_sha, int(cached), error_detail, time.time()),
    )
    conn.execute(
        "UPDATE jobs SET done = (SELECT count(*) FROM results WHERE job_id = ?) WHERE id = ?", (job_id, job_id)
    )


def update_result(conn: sqlite3.Connection, job_id: str, recipe_key: str, row: dict) -> None:
    """Rewrite a committed row (a curve point once its budget chose it); its artifact and progress stay."""
    conn.execute("UPDATE results SET row = ? WHERE job_id = ? AND recipe_key = ?",
                 (encode_row(row), job_id, recipe_key))


def count_all_done(conn: sqlite3.Connection, job_id: str) -> None:
    """The job's progress complete (done = total), for a kind whose one result row holds all its work. Call inside
    the transaction that commits that row."""
    conn.execute("UPDATE jobs SET done = total WHERE id = ?", (job_id,))


def earlier_result(conn: sqlite3.Connection, kind: str, key: str) -> dict | None:
    """The latest row a job of `kind` committed under `key`: the result cache of kinds whose result is one file
    (a sensitivity table), not an artifact, keyed by their configuration's key (cache.Configuration.key)."""
    found = conn.execute(
        """SELECT r.row FROM results r JOIN jobs j ON j.id = r.job_id
           WHERE j.kind = ? AND r.recipe_key = ? ORDER BY r.created DESC LIMIT 1""", (kind, key)).fetchone()
    return None if found is None else json.loads(found[0])


def result_times(conn: sqlite3.Connection, job_id: str) -> list[float]:
    """When each of the job's rows was committed (unix seconds), in commit order."""
    return [created for (created,) in conn.execute("SELECT created FROM results WHERE job_id = ? ORDER BY created",
                                                   (job_id,))]


def result_rows(conn: sqlite3.Connection, job_id: str) -> list[dict]:
    """The committed rows in recipe order, as stored (artifact paths relative to the workspace)."""
    rows = conn.execute("SELECT row FROM results WHERE job_id = ? ORDER BY position", (job_id,))
    return [json.loads(row[0]) for row in rows]


def artifact_of(conn: sqlite3.Connection, job_id: str, recipe_key: str) -> str | None:
    """The workspace-relative path of the artifact a job's row was measured on, if it has one."""
    found = conn.execute(
        "SELECT a.path FROM results r JOIN artifacts a ON a.sha256 = r.artifact WHERE r.job_id = ? AND r.recipe_key = ?",
        (job_id, recipe_key),
    ).fetchone()
    return None if found is None else found[0]
