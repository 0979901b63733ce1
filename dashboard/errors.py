"""How a page reports what went wrong, never as a traceback.

A QuantscopeError is the user's to fix and already one line: it is shown as it is. Anything else is a fault of the
dashboard: its traceback goes to the workspace's log (rotating, bounded) and the user reads one line and where the
log is. Streamlit's own stop and rerun signals are not Exceptions, so they pass through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from logging.handlers import RotatingFileHandler
from pathlib import Path

import streamlit as st

from dashboard import help_text
from engine.errors import QuantscopeError
from engine.text import first_line
from engine.workspace import workspace_root

LOG_FILE = Path("logs") / "dashboard.log"  # inside the workspace
LOG_BYTES = 1_000_000  # per file; with LOG_BACKUPS older files, the log never holds more than 4 MB
LOG_BACKUPS = 3


@contextmanager
def reported_in_one_line() -> Iterator[None]:
    try:
        yield
    except QuantscopeError as error:
        st.error(str(error))
    except Exception as error:
        path = log_path()
        _log(path).error("unexpected error in the dashboard", exc_info=error)
        st.error(help_text.UNEXPECTED_ERROR.format(problem=first_line(error).rstrip("."), log=path))


def log_path() -> Path:
    return workspace_root() / LOG_FILE


def _log(path: Path) -> logging.Logger:
    """One logger per log file, with its handler added once however many page runs report to it."""
    logger = logging.getLogger(f"quantscope.dashboard.{path}")
    if not logger.handlers:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False  # the log file has it; Streamlit's console handler would print it again
    return logger
