"""Stored artifacts and the result cache.

A configuration is (model bytes, dataset content, recipe, engine version, latency threads, latency batch,
and what is scored: which rows score, what calibrates, which output positions count). Its measured row and artifact are remembered under the hash of
those seven things, so any later job that asks for the same configuration copies the row instead of
computing it again.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from functools import cache

from engine.provenance import ROW_SHAPING_PACKAGES, software
from engine.store.jobs import encode_row



@cache
def engine_version() -> str:
    """Versions of everything that shapes a row, plus a digest of the engine's source (engine.provenance)."""
    versions = software()
    packages = " ".join(f"{name} {versions[name]}" for name in ROW_SHAPING_PACKAGES)
    return f"{packages} source {versions['engine_source']}"


@dataclass(frozen=True)
class Configuration:
    model_id: str
    dataset_fingerprint: str
    recipe_key: str
    threads: int
    batch: int | None  # None: not timed at batch N
    scoring: str  # which rows score, what calibrates and which output positions count

    def key(self) -> str:
        fields = [self.model_id, self.dataset_fingerprint, self.recipe_key, engine_version(), self.threads, self.batch,
                  self.scoring]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def record_artifact(conn: sqlite3.Connection, sha256: str, path: str, size: int) -> None:
    """Call inside a transaction, with the file already in place."""
    conn.execute("INSERT OR IGNORE INTO artifacts (sha256, path, bytes) VALUES (?, ?, ?)", (sha256, path, size))


def artifact_path(conn: sqlite3.Connection, sha256: str) -> str | None:
    row = conn.execute("SELECT path FROM artifacts WHERE sha256 = ?", (sha256,)).fetchone()
    return None if row is None else row[0]


def remember(conn: sqlite3.Connection, configuration: Configuration, row: dict, artifact_sha: str) -> None:
    """Call inside the transaction that commits the row, so the cache never holds a row its job lacks."""
    conn.execute(
        """INSERT OR REPLACE INTO result_cache (key, model_id, dataset_fingerprint, recipe_key, engine_version,
                                                threads, batch, row, artifact, created)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (configuration.key(), configuration.model_id, configuration.dataset_fingerprint, configuration.recipe_key,
         engine_version(), configuration.threads, configuration.batch or 0, encode_row(row), artifact_sha, time.time()),
    )


def lookup(conn: sqlite3.Connection, configuration: Configuration) -> tuple[dict, str] | None:
    """(row, artifact sha256) of an earlier computation of this configuration, if any."""
    found = conn.execute("SELECT row, artifact FROM result_cache WHERE key = ?", (configuration.key(),)).fetchone()
    return None if found is None else (json.loads(found["row"]), found["artifact"])
