"""Where a workspace lives and what is inside it."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.store.blobs import BlobStore
from engine.store.db import connect
from engine.store.schema import migrate

HOME_VARIABLE = "QUANTSCOPE_HOME"
DEFAULT_HOME = Path("workspace")


def workspace_root(path: Path | str | None = None) -> Path:
    """An explicit path wins, then $QUANTSCOPE_HOME, then ./workspace; always absolute."""
    chosen = path if path is not None else os.environ.get(HOME_VARIABLE) or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class Store:
    """A workspace on disk:

    quantscope.db          the SQLite database (schema.py)
    blobs/ab/abcdef...     uploaded models and datasets, by sha256 of their bytes (a model past 2 GiB: a folder
                           of its .onnx file and external data, by sha256 of its files' names and digests)
    artifacts/ab/ab...onnx quantized artifacts, by sha256 of their bytes (likewise folders past 2 GiB)
    jobs/<job id>/         a job's runner log and scratch space
    incoming/              uploaded model zips being unpacked and checked (temporary directories)
    latency.lock           held while an artifact is timed, so timings never overlap (any job, any process)
    logs/dashboard.log     the dashboard's unexpected errors with their tracebacks (written by dashboard/errors.py)
    """

    root: Path

    @classmethod
    def open(cls, path: Path | str | None = None) -> Store:
        store = cls(workspace_root(path))
        store.root.mkdir(parents=True, exist_ok=True)
        with store.connect() as conn:
            migrate(conn)
        return store

    @property
    def db_path(self) -> Path:
        return self.root / "quantscope.db"

    @property
    def blobs(self) -> BlobStore:
        return BlobStore(self.root / "blobs")

    @property
    def artifacts(self) -> BlobStore:
        return BlobStore(self.root / "artifacts", suffix=".onnx")

    @property
    def incoming(self) -> Path:
        """Where an uploaded model folder is unpacked while it is checked: inside the workspace, on its disk."""
        path = self.root / "incoming"
        path.mkdir(exist_ok=True)
        return path

    @property
    def latency_lock(self) -> Path:
        return self.root / "latency.lock"

    @property
    def compute_lock(self) -> Path:
        """Held by the runner of the one job that computes at a time in this workspace."""
        return self.root / "compute.lock"

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def relative(self, path: Path) -> str:
        """How a file inside the workspace is recorded: relative, so the workspace can move."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    def absolute(self, recorded: str) -> Path:
        return self.root / recorded

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection per use: cheap, and safe for callers that use threads (the dashboard)."""
        conn = connect(self.db_path)
        try:
            yield conn
        finally:
            conn.close()
