"""Jobs: work that runs in the background, survives its caller, and can be cancelled or resumed.

Map of this package:

    processes.py  starting, checking and killing a job's runner process
    runner.py     `python -m engine.jobs.runner JOB_ID`: the detached process that runs one job
    run.py        what every kind does alike: heartbeat, last word, one computing job per workspace
    kinds/        one module per job kind, registered by name (sweep.py: cache, reference, builds, timings)
    executor.py   where tasks run: long-lived local worker processes, or a Dask cluster for builds
    tasks.py      the typed tasks themselves, reusing engine.sweep's building blocks

Callers use engine.workspace.Workspace; the state lives in engine.store (SQLite and blobs).
"""
