"""The rows callers see, as frozen dataclasses built from database rows."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from enum import StrEnum


class JobState(StrEnum):
    """queued -> running -> done | failed | cancelled | interrupted; resume makes a stopped job queued again."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # its runner died (server stopped, kill -9): resume finishes it

    @property
    def is_active(self) -> bool:
        """Waiting for or held by a runner."""
        return self in (JobState.QUEUED, JobState.RUNNING)

    @property
    def is_terminal(self) -> bool:
        return not self.is_active

    @property
    def is_resumable(self) -> bool:
        """Ended without finishing: resume computes only its configurations without a row."""
        return self in RESUMABLE_STATES


ACTIVE_STATES = tuple(state for state in JobState if state.is_active)
RESUMABLE_STATES = (JobState.INTERRUPTED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class ModelRecord:
    id: str  # sha256 of the model's bytes
    name: str
    owner: str
    shared: bool
    bytes: int
    summary: dict  # ModelSummary.to_dict()
    created: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ModelRecord:
        return cls(row["id"], row["name"], row["owner"], bool(row["shared"]), row["bytes"],
                   json.loads(row["summary"]), row["created"])


@dataclass(frozen=True)
class DatasetRecord:
    id: str  # sha256 of the bytes' hash together with how they are read (model, format, columns)
    sha256: str  # of the file's bytes
    filename: str
    model_id: str
    owner: str
    shared: bool
    label_column: str | None
    slice_column: str | None
    fingerprint: str  # Dataset.fingerprint()
    bytes: int
    summary: dict  # Dataset.summary()
    created: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> DatasetRecord:
        return cls(row["id"], row["sha256"], row["filename"], row["model_id"], row["owner"], bool(row["shared"]),
                   row["label_column"], row["slice_column"], row["fingerprint"], row["bytes"],
                   json.loads(row["summary"]), row["created"])


@dataclass(frozen=True)
class JobInfo:
    id: str
    kind: str
    state: JobState
    done: int  # configurations with a committed row
    total: int
    message: str
    error: str | None  # one line; the traceback is in error_detail
    owner: str
    model_id: str
    dataset_id: str
    created: float  # unix seconds
    started: float | None
    finished: float | None
    error_detail: str | None = None
    params: dict = field(default_factory=dict)  # recipes (JSON), threads, batch, scheduler, workers

    @property
    def is_finished(self) -> bool:
        return self.state.is_terminal

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobInfo:
        return cls(
            id=row["id"], kind=row["kind"], state=JobState(row["state"]), done=row["done"], total=row["total"],
            message=row["message"], error=row["error"], owner=row["owner"], model_id=row["model_id"],
            dataset_id=row["dataset_id"], created=row["created"], started=row["started"],
            finished=row["finished"], error_detail=row["error_detail"], params=json.loads(row["params"]),
        )


@dataclass(frozen=True)
class ExportRecord:
    """One bundle written by engine.export: what it holds (its bundle.json) and where its files are stored."""

    id: str
    owner: str
    job_id: str | None  # the sweep whose row was exported; None when the export measured the recipe itself
    recipe_key: str
    name: str  # the recipe's short name
    recipe: str  # the recipe's JSON
    figures: dict  # the bundle's bundle.json
    model_sha256: str
    files: dict[str, str]  # file name -> sha256, in the bundle's order
    created: float  # unix seconds

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ExportRecord:
        return cls(row["id"], row["owner"], row["job_id"], row["recipe_key"], row["name"], row["recipe"],
                   json.loads(row["figures"]), row["model_sha256"], json.loads(row["files"]), row["created"])
