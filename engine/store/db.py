"""SQLite connections configured for several processes at once: runners write, callers read."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _milliseconds(variable: str, default: int) -> int:
    """A wait in milliseconds: `default`, unless the environment variable sets another (tests shorten them)."""
    return int(os.environ.get(variable) or default)


# How long a connection waits for another process's write lock before failing with "database is locked".
BUSY_TIMEOUT_VARIABLE = "QUANTSCOPE_BUSY_TIMEOUT_MS"
BUSY_TIMEOUT_MS = _milliseconds(BUSY_TIMEOUT_VARIABLE, 10_000)  # callers: writers queue behind each other
# A job's runner waits longer: a lock held for a while by another process (a backup, an sqlite3 shell) must not
# cost a long job its work. Shorter than the minute after which a runner that wrote no heartbeat counts as lost.
RUNNER_BUSY_TIMEOUT_VARIABLE = "QUANTSCOPE_RUNNER_BUSY_TIMEOUT_MS"
RUNNER_BUSY_TIMEOUT_MS = _milliseconds(RUNNER_BUSY_TIMEOUT_VARIABLE, 45_000)


def connect(path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    # Autocommit mode: transactions are explicit (see `transaction`), never opened behind our back.
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, and a crash loses no commit
    conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable across process crashes, fast commits
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """All or nothing. IMMEDIATE takes the write lock up front, so two writers queue rather than deadlock.

    A COMMIT that fails (the disk is full) is rolled back too, so the connection never stays inside a
    transaction holding the write lock."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back on its own (e.g. after SQLITE_FULL)
            conn.execute("ROLLBACK")
        raise


def _code(error: BaseException) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF  # the primary code of an extended one


def is_locked(error: BaseException) -> bool:
    """Did SQLite give up waiting for another process's lock ("database is locked")?"""
    return isinstance(error, sqlite3.OperationalError) and _code(error) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def is_full(error: BaseException) -> bool:
    """Could SQLite not write because the disk is full ("database or disk is full")?"""
    return isinstance(error, sqlite3.Error) and _code(error) == sqlite3.SQLITE_FULL
