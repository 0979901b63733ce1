"""Jobs as a user sees them: which ones are theirs to see, how each is named, and what its state means."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd

from dashboard.samples import SAMPLE_OWNER
from engine.workspace import JobInfo, JobState

STATE_WORDS = {
    JobState.QUEUED: "waiting to start",
    JobState.RUNNING: "running",
    JobState.DONE: "finished",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
    JobState.INTERRUPTED: "interrupted (the server stopped)",
}


SWEEP, MIXED = "sweep", "mixed"  # engine.jobs.kinds' names of the kinds whose results are rows of recipes
MEASURED_KINDS = (SWEEP, MIXED)


def visible_jobs(ws, owner: str, kind: str | tuple[str, ...] = SWEEP) -> list[JobInfo]:
    """The session's own jobs of `kind` (engine.jobs.kinds; a tuple: any of them), newest first, then the shared
    sample ones."""
    kinds = (kind,) if isinstance(kind, str) else kind
    return [job for job in ws.jobs(owner) + ws.jobs(SAMPLE_OWNER) if job.kind in kinds]


def active_jobs(jobs: list[JobInfo]) -> list[JobInfo]:
    return [job for job in jobs if job.state.is_active]


def jobs_with_results(jobs: list[JobInfo]) -> list[JobInfo]:
    """Jobs with at least one measured recipe: finished ones, and stopped ones that got part of the way."""
    return [job for job in jobs if job.state.is_terminal and job.done > 0]


def job_label(job: JobInfo, model_names: dict[str, str], dataset_names: dict[str, str]) -> str:
    """E.g. 'digits_cnn on digits_cnn.npz, 4 recipes, 14:02:37 (sample)': to the second, as the jobs table says."""
    model = model_names.get(job.model_id, "a model no longer listed")
    data = dataset_names.get(job.dataset_id, "data no longer listed")
    sample = " (sample)" if job.owner == SAMPLE_OWNER else ""
    what = f"{job.total} recipes" if job.kind == SWEEP else f"mixed-precision curve, {job.total} points"
    return f"{model} on {data}, {what}, {started_text(job)}{sample}"


def curve_label(job: JobInfo) -> str:
    """A mixed-precision search among others of the same model and data: e.g. '9 points, 14:02:37'."""
    return f"{job.total} points, {started_text(job)}"


def curve_summary(job: JobInfo) -> str:
    """A finished search's closing line: the chosen point (or the closest), how many points, where its table came
    from (engine.jobs.kinds.mixed's message)."""
    return job.message.removeprefix("done: ").rstrip(".")


def curves_beside(jobs: list[JobInfo], sweep: JobInfo) -> list[JobInfo]:
    """The finished mixed-precision jobs of the sweep's model and data, newest first: curves to draw over it."""
    return [job for job in jobs if job.kind == MIXED and job.state is JobState.DONE
            and (job.model_id, job.dataset_id) == (sweep.model_id, sweep.dataset_id)]


def started_text(job: JobInfo) -> str:
    """The time a job was started, with its date unless that is today."""
    started = datetime.fromtimestamp(job.created)
    return started.strftime("%H:%M:%S" if started.date() == date.today() else "%Y-%m-%d %H:%M:%S")


def watch(jobs: list[JobInfo], watched: dict[str, bool]) -> list[JobInfo]:
    """The watched jobs that have just ended. `watched` (job id -> still active) learns every job seen active."""
    ended = []
    for job in jobs:
        if job.state.is_active:
            watched[job.id] = True
        elif watched.get(job.id):
            watched[job.id] = False
            ended.append(job)
    return ended


def progress_text(job: JobInfo) -> str:
    return f"{job.done} of {job.total} recipes measured — {job.message}"


def jobs_table(jobs: list[JobInfo], model_names: dict[str, str], dataset_names: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "Started": started_text(job),
                "Model": model_names.get(job.model_id, "?"),
                "Data": dataset_names.get(job.dataset_id, "?"),
                "Recipes measured": f"{job.done} / {job.total}",
                "State": STATE_WORDS[job.state],
                "Note": job.error or ("shared sample" if job.owner == SAMPLE_OWNER else ""),
            }
            for job in jobs
        ],
        columns=["Started", "Model", "Data", "Recipes measured", "State", "Note"],
    )
