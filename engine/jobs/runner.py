"""`python -m engine.jobs.runner JOB_ID`: the detached process that runs one job to its end.

`Workspace.submit_sweep` and `Workspace.resume` start it (see processes.launch_runner) in a session of its
own, so it outlives whoever started it (a CLI that exits, a dashboard that restarts). It owns all the
job's work (its task processes, or a Dask client), writes progress and each finished row to SQLite,
writes a heartbeat every second, and exits when the job ends. Callers only read the database.
The workspace comes from $QUANTSCOPE_HOME.

Its process group holds every process the job started, so cancelling is one `killpg`.
"""

from __future__ import annotations

import os
import sys

from engine.jobs.sweep_job import SweepRun
from engine.store import Store
from engine.store import jobs
from engine.store.db import connect


def main(argv: list[str] | None = None) -> int:
    (job_id,) = sys.argv[1:] if argv is None else argv
    store = Store.open()
    conn = connect(store.db_path)
    try:
        if not jobs.claim(conn, job_id, os.getpid()):
            return 0  # cancelled before it started, or another runner has it
        SweepRun(store, conn, job_id).run()
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
