"""`python -m engine.jobs.runner JOB_ID`: the detached process that runs one job to its end.

`Workspace` starts it (see processes.launch_runner) in a session of its own, so it outlives whoever
started it (a CLI that exits, a dashboard that restarts). It looks up the job's kind (engine.jobs.kinds),
gives it an executor (engine.jobs.executor), and lets it run: the kind writes progress and each finished
result to SQLite and a heartbeat every second. Callers only read the database. The workspace comes from
$QUANTSCOPE_HOME.

Its process group holds every process the job started, so cancelling is one `killpg`.
"""

from __future__ import annotations

import os
import sys
import traceback

from engine.jobs.executor import executor_for
from engine.jobs.kinds import kind_named
from engine.store import Store
from engine.store import jobs
from engine.store.db import RUNNER_BUSY_TIMEOUT_MS, connect
from engine.store.records import JobState
from engine.text import error_line


def main(argv: list[str] | None = None) -> int:
    (job_id,) = sys.argv[1:] if argv is None else argv
    store = Store.open()
    conn = connect(store.db_path, RUNNER_BUSY_TIMEOUT_MS)  # rides out another process's lock on the database
    try:
        if not jobs.claim(conn, job_id, os.getpid()):
            return 0  # cancelled before it started, or another runner has it
        job = jobs.get_job(conn, job_id)
        kind = kind_named(job.kind)
        if kind is None:
            jobs.finish(conn, job_id, os.getpid(), JobState.FAILED, "failed",
                        f"this version of quantscope cannot run jobs of kind {job.kind!r}")
            return 0
        try:
            executor = executor_for(job.params, job_id)
        except Exception as error:  # e.g. no Dask scheduler at the address
            jobs.finish(conn, job_id, os.getpid(), JobState.FAILED, "failed",
                        f"the job's workers could not start: {error_line(error)}", traceback.format_exc())
            return 0
        try:
            kind(store, conn, job, executor).run()
        finally:
            executor.close()
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
