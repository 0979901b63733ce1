"""Opening a model or data file by its path on the server, from directories the operator allows.

A model of a few GB may already sit on the server's disk: sending it through the browser would only copy it
through the server's memory. So the operator may list directories in QUANTSCOPE_ALLOWED_DIRS (separated by
os.pathsep, ':' on Linux); unset or empty, the feature is off. A path must be absolute. It is resolved with
os.path.realpath, which follows '..' and every symlink, and must then lie inside one of the allowed directories,
themselves resolved the same way: a symlink inside an allowed directory that points outside it is refused. Whether
a refused path exists is never said.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import WorkspaceError

ALLOWED_DIRS_VARIABLE = "QUANTSCOPE_ALLOWED_DIRS"


def allowed_dirs() -> list[Path]:
    """The directories files may be opened from by path, resolved; none when the feature is off."""
    listed = os.environ.get(ALLOWED_DIRS_VARIABLE, "").split(os.pathsep)
    return [Path(os.path.realpath(entry)) for entry in listed if entry.strip()]


def allowed_file(text: str) -> Path:
    """The file `text` names, resolved, if it lies inside an allowed directory; else a one-line WorkspaceError."""
    allowed = allowed_dirs()
    if not allowed:
        raise WorkspaceError(f"opening files by path is off on this server: its operator can allow directories "
                             f"with {ALLOWED_DIRS_VARIABLE}")
    text = text.strip()
    if "\0" in text or not os.path.isabs(text):
        raise WorkspaceError(f"give the file's full path, starting with / (inside {_listed(allowed)}); got {text!r}")
    try:
        resolved = Path(os.path.realpath(text))
        inside = any(resolved.is_relative_to(directory) for directory in allowed)
        present = inside and resolved.is_file()
    except (OSError, ValueError):  # a name longer than the file system allows
        raise WorkspaceError(f"{text[:80]}... is not a usable path") from None
    if not inside:
        raise WorkspaceError(f"{text} is outside the directories this server allows ({_listed(allowed)})")
    if not present:
        raise WorkspaceError(f"no file at {text}")
    return resolved


def _listed(directories: list[Path]) -> str:
    return ", ".join(str(directory) for directory in directories)
