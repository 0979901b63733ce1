"""The database's tables, built by an ordered list of migrations.

`PRAGMA user_version` counts the migrations applied. Opening a workspace applies the missing ones, each
in its own transaction, so an older workspace is upgraded in place and a current one is left alone.
Append new migrations at the end; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3

from engine.store.db import transaction

# The job states as migration 2 wrote them into its CHECK; it has shipped, so this stays as it is even if
# engine.store.records.JobState grows (a new state needs a new migration; tests/test_store.py checks they agree).
MIGRATION_2_JOB_STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
_STATE_CHECK = ", ".join(f"'{state}'" for state in MIGRATION_2_JOB_STATES)

MIGRATIONS: list[tuple[str, ...]] = [
    # 1. The library: uploaded models and datasets. One row per (item, owner): identical bytes uploaded by
    #    two owners are stored once as a blob but listed for each. `shared` puts an item in everyone's list.
    (
        """CREATE TABLE models (
            id TEXT NOT NULL,             -- sha256 of the model's bytes, also its blob address
            owner TEXT NOT NULL,          -- opaque: a dashboard session, or "cli"
            name TEXT NOT NULL,
            summary TEXT NOT NULL,        -- ModelSummary as JSON
            bytes INTEGER NOT NULL,
            shared INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL,
            PRIMARY KEY (id, owner)
        )""",
        """CREATE TABLE datasets (
            id TEXT NOT NULL,             -- sha256 of (bytes' sha256, model, format, label and slice columns)
            owner TEXT NOT NULL,
            sha256 TEXT NOT NULL,         -- of the file's bytes, its blob address
            filename TEXT NOT NULL,       -- its extension tells the format
            model_id TEXT NOT NULL,       -- the model it was checked against
            label_column TEXT,
            slice_column TEXT,
            fingerprint TEXT NOT NULL,    -- Dataset.fingerprint(): the content as the model sees it
            summary TEXT NOT NULL,        -- Dataset.summary() as JSON
            bytes INTEGER NOT NULL,
            shared INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL,
            PRIMARY KEY (id, owner)
        )""",
        "CREATE INDEX datasets_by_model ON datasets (model_id)",
    ),
    # 2. Jobs, the artifacts they produce, and their result rows, committed one configuration at a time.
    (
        f"""CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ({_STATE_CHECK})),
            owner TEXT NOT NULL,
            model_id TEXT NOT NULL,
            dataset_id TEXT NOT NULL,
            params TEXT NOT NULL,         -- JSON: recipes, threads, batch, scheduler, workers
            done INTEGER NOT NULL DEFAULT 0,
            total INTEGER NOT NULL,
            message TEXT NOT NULL DEFAULT '',
            error TEXT,                   -- one line
            error_detail TEXT,            -- the traceback
            created REAL NOT NULL,
            started REAL,
            finished REAL,
            pid INTEGER,                  -- the runner process; its process group holds all the job's work
            heartbeat REAL                -- set when queued, then by the runner every second while it lives
        )""",
        "CREATE INDEX jobs_by_owner ON jobs (owner, created)",
        """CREATE TABLE artifacts (
            sha256 TEXT PRIMARY KEY,
            path TEXT NOT NULL,           -- relative to the workspace
            bytes INTEGER NOT NULL
        )""",
        """CREATE TABLE results (
            job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
            recipe_key TEXT NOT NULL,
            position INTEGER NOT NULL,    -- the recipe's place in the job's list
            row TEXT NOT NULL,            -- the sweep row as JSON; its artifact path is workspace-relative
            artifact TEXT REFERENCES artifacts (sha256),
            cached INTEGER NOT NULL DEFAULT 0,  -- 1 when copied from the result cache, not computed
            error_detail TEXT,            -- the traceback of a failed row (its one-line error is in the row)
            created REAL NOT NULL,
            PRIMARY KEY (job_id, recipe_key)
        )""",
    ),
    # 3. The result cache: the same configuration is computed once, whichever job asks for it again.
    (
        """CREATE TABLE result_cache (
            key TEXT PRIMARY KEY,         -- sha256 of every column below but row/artifact/created
            model_id TEXT NOT NULL,
            dataset_fingerprint TEXT NOT NULL,
            recipe_key TEXT NOT NULL,
            engine_version TEXT NOT NULL,
            threads INTEGER NOT NULL,
            batch INTEGER NOT NULL,
            row TEXT NOT NULL,
            artifact TEXT NOT NULL REFERENCES artifacts (sha256),
            created REAL NOT NULL
        )""",
    ),
    # 4. Export history: every bundle written (engine.export), what it holds and where its files are stored, so
    #    what was shipped before can be listed and downloaded again.
    (
        """CREATE TABLE exports (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            job_id TEXT,                  -- the sweep whose row was exported; NULL when measured for the export
            recipe_key TEXT NOT NULL,
            name TEXT NOT NULL,           -- the recipe's short name
            recipe TEXT NOT NULL,         -- the recipe's JSON
            figures TEXT NOT NULL,        -- the bundle's bundle.json
            model_sha256 TEXT NOT NULL,   -- of the bundle's model file, also its address among the artifacts
            files TEXT NOT NULL,          -- JSON {file name: sha256}: the model among the artifacts, the rest blobs
            created REAL NOT NULL
        )""",
        "CREATE INDEX exports_by_owner ON exports (owner, created)",
    ),
]


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database lacks; returns its version. Safe when processes open it at once.

    A current database is only read, so opening a workspace needs no write lock: it works while another
    process holds one (a running job's commit, or a long lock from outside)."""
    for version, statements in enumerate(MIGRATIONS, start=1):
        if schema_version(conn) >= version:
            continue
        with transaction(conn):  # re-read inside the write lock: another process may have just migrated
            if schema_version(conn) >= version:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
    return schema_version(conn)
