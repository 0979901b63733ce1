"""Jobs: sweeps that run in the background, survive their caller, and can be cancelled or resumed.

Map of this package:

    api.py        Workspace: the Python API for the CLI and the dashboard (library, submit, watch, results)
    processes.py  starting, checking and killing a job's runner process
    runner.py     `python -m engine.jobs.runner JOB_ID`: the detached process that runs one job
    sweep_job.py  what the runner does for a sweep: cache, reference, parallel builds, serial timings
    executor.py   where work runs: one process per task (local) or a Dask cluster (builds)
    tasks.py      the work itself, reusing engine.sweep's building blocks

The state lives in engine.store (SQLite and blobs in the workspace directory).
"""

from engine.jobs.api import JobError, Workspace
from engine.store import DatasetRecord, JobInfo, ModelRecord

__all__ = ["DatasetRecord", "JobError", "JobInfo", "ModelRecord", "Workspace"]
