"""The export history: one row per bundle written, with its figures and the addresses of its files.

A bundle's model file is stored among the artifacts (where a sweep's exported row already has it) and its other
files as blobs, so listing the history reads only this table and a past bundle can be rebuilt byte for byte.
"""

from __future__ import annotations

import json
import sqlite3
import time

from engine.store.db import transaction
from engine.store.records import ExportRecord


def add_export(conn: sqlite3.Connection, export_id: str, owner: str, job_id: str | None, recipe_key: str, name: str,
               recipe: str, figures: dict, model_sha256: str, files: dict[str, str]) -> ExportRecord:
    with transaction(conn):
        conn.execute(
            """INSERT INTO exports (id, owner, job_id, recipe_key, name, recipe, figures, model_sha256, files, created)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (export_id, owner, job_id, recipe_key, name, recipe, json.dumps(figures), model_sha256, json.dumps(files),
             time.time()),
        )
    return get_export(conn, export_id)


def get_export(conn: sqlite3.Connection, export_id: str, owner: str | None = None) -> ExportRecord | None:
    """The export if it is the owner's (owner None: anyone's)."""
    row = conn.execute("SELECT * FROM exports WHERE id = ? AND (? IS NULL OR owner = ?)",
                       (export_id, owner, owner)).fetchone()
    return None if row is None else ExportRecord.from_row(row)


def list_exports(conn: sqlite3.Connection, owner: str | None = None) -> list[ExportRecord]:
    """Newest first: the owner's exports (owner None: everyone's)."""
    rows = conn.execute("SELECT * FROM exports WHERE ? IS NULL OR owner = ? ORDER BY created DESC, rowid DESC",
                        (owner, owner)).fetchall()
    return [ExportRecord.from_row(row) for row in rows]
