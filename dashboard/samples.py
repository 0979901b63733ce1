"""The sample models as shared library items, each with its standard sweep submitted once and kept.

`make run` (or the app itself, on start) calls `ensure_sample_sweeps`; calling it again is cheap and
never starts a second sweep for a sample whose sweep is waiting, running or finished.
"""

from __future__ import annotations

from engine.sweep import default_grid
from engine.workspace import JobInfo, JobState
from sample_models.catalog import SAMPLES, Sample

SAMPLE_OWNER = "samples"  # owns the shared sample items and jobs; session owners are random hex, never this
KEEP_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.DONE)  # a sample job in one of these needs nothing more
RESUME_STATES = (JobState.INTERRUPTED,)  # the server stopped mid-sweep: carry on where it left off
# Seconds of timing per artifact and batch size for the sample sweeps: a new server runs five of them, and a
# user's own first sweep waits its turn behind them; their rows state the shorter cap and the wider intervals.
SAMPLE_LATENCY_CAP = 0.5


def ensure_sample_sweeps(ws) -> list[str]:
    """Register every sample model and its data as shared, and make sure each has its sweep; returns the job ids."""
    jobs = ws.jobs(SAMPLE_OWNER)
    return [_ensure_sample_sweep(ws, sample, jobs) for sample in SAMPLES.values()]


def _ensure_sample_sweep(ws, sample: Sample, jobs: list[JobInfo]) -> str:
    model = ws.add_model(sample.model_path, name=sample.name, owner=SAMPLE_OWNER, shared=True)
    dataset = ws.add_dataset(
        sample.data_path, filename=sample.data_path.name, model_id=model.id, owner=SAMPLE_OWNER, shared=True
    )
    mine = [job for job in jobs if (job.kind, job.model_id, job.dataset_id) == ("sweep", model.id, dataset.id)]
    if kept := [job for job in mine if job.state in KEEP_STATES]:
        return kept[0].id
    if stopped := [job for job in mine if job.state in RESUME_STATES]:
        ws.resume(stopped[0].id)
        return stopped[0].id
    return ws.submit_sweep(model.id, dataset.id, default_grid(), owner=SAMPLE_OWNER, latency_cap=SAMPLE_LATENCY_CAP)


def sample_description(model_name: str, owner: str) -> str | None:
    """The plain-English description of a sample model, or None for anything a user uploaded."""
    sample = SAMPLES.get(model_name)
    return sample.description if sample and owner == SAMPLE_OWNER else None


if __name__ == "__main__":  # `make run` submits the sample sweeps before the server starts, so they are under way
    from engine.workspace import Workspace

    ensure_sample_sweeps(Workspace.open())
