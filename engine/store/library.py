"""Uploaded models and datasets. Each owner sees their own items plus those in the shared library.

Validation (does the model load, does the data fit it) is the caller's job; this module only records.
"""

from __future__ import annotations

import json
import sqlite3
import time

from engine.store.db import transaction
from engine.store.records import DatasetRecord, ModelRecord


def save_model(conn: sqlite3.Connection, model_id: str, owner: str, name: str, summary: dict,
               size: int, shared: bool) -> ModelRecord:
    """Record the model for this owner; uploading it again keeps the first name and never unshares it."""
    with transaction(conn):
        conn.execute(
            """INSERT INTO models (id, owner, name, summary, bytes, shared, created) VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (id, owner) DO UPDATE SET shared = max(shared, excluded.shared)""",
            (model_id, owner, name, json.dumps(summary), size, int(shared), time.time()),
        )
    row = conn.execute("SELECT * FROM models WHERE id = ? AND owner = ?", (model_id, owner)).fetchone()
    return ModelRecord.from_row(row)


def save_dataset(conn: sqlite3.Connection, record: DatasetRecord) -> DatasetRecord:
    with transaction(conn):
        conn.execute(
            """INSERT INTO datasets (id, owner, sha256, filename, model_id, label_column, slice_column,
                                     fingerprint, summary, bytes, shared, created)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (id, owner) DO UPDATE SET shared = max(shared, excluded.shared)""",
            (record.id, record.owner, record.sha256, record.filename, record.model_id, record.label_column,
             record.slice_column, record.fingerprint, json.dumps(record.summary), record.bytes,
             int(record.shared), record.created),
        )
    row = conn.execute("SELECT * FROM datasets WHERE id = ? AND owner = ?", (record.id, record.owner)).fetchone()
    return DatasetRecord.from_row(row)


# Who may see a row, given the owner parameter twice: the owner (or everyone when None) and the shared library.
VISIBLE_TO_OWNER = "(? IS NULL OR owner = ? OR shared = 1)"


def _visible(rows: list[sqlite3.Row], owner: str | None) -> list[sqlite3.Row]:
    """One row per item: the owner's own row when they have one, else the shared one. Owner None: every row."""
    if owner is None:
        return rows
    chosen: dict[str, sqlite3.Row] = {}
    for row in rows:
        if row["id"] not in chosen or row["owner"] == owner:
            chosen[row["id"]] = row
    return list(chosen.values())


def list_models(conn: sqlite3.Connection, owner: str | None) -> list[ModelRecord]:
    """Newest first: the owner's models and the shared ones (owner None: all)."""
    rows = conn.execute(
        f"SELECT * FROM models WHERE {VISIBLE_TO_OWNER} ORDER BY created DESC", (owner, owner)
    ).fetchall()
    return [ModelRecord.from_row(row) for row in _visible(rows, owner)]


def list_datasets(conn: sqlite3.Connection, owner: str | None, model_id: str | None = None) -> list[DatasetRecord]:
    rows = conn.execute(
        f"""SELECT * FROM datasets WHERE {VISIBLE_TO_OWNER} AND (? IS NULL OR model_id = ?)
           ORDER BY created DESC""",
        (owner, owner, model_id, model_id),
    ).fetchall()
    return [DatasetRecord.from_row(row) for row in _visible(rows, owner)]


def find_model(conn: sqlite3.Connection, model_id: str, owner: str | None = None) -> ModelRecord | None:
    """The model if the owner may use it: their own or a shared one (owner None: anyone's)."""
    row = _find(conn, "models", model_id, owner)
    return None if row is None else ModelRecord.from_row(row)


def find_dataset(conn: sqlite3.Connection, dataset_id: str, owner: str | None = None) -> DatasetRecord | None:
    """The dataset if the owner may use it, as for find_model."""
    row = _find(conn, "datasets", dataset_id, owner)
    return None if row is None else DatasetRecord.from_row(row)


def _find(conn: sqlite3.Connection, table: str, item_id: str, owner: str | None) -> sqlite3.Row | None:
    """The owner's own row of the item when they have one, else a shared one."""
    assert table in ("models", "datasets")
    return conn.execute(
        f"SELECT * FROM {table} WHERE id = ? AND {VISIBLE_TO_OWNER} ORDER BY owner = ? DESC LIMIT 1",
        (item_id, owner, owner, owner),
    ).fetchone()


def share(conn: sqlite3.Connection, table: str, item_id: str, owner: str) -> bool:
    """Put the owner's copy of an item in the shared library; False when the owner has no such item. Another
    owner's copy of the same bytes stays as private as it was, under the name they chose."""
    assert table in ("models", "datasets")
    with transaction(conn):
        return conn.execute(f"UPDATE {table} SET shared = 1 WHERE id = ? AND owner = ?", (item_id, owner)).rowcount > 0
