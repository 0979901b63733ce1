"""Another git revision's code beside this checkout's, for the benches' `--baseline REV`."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def check_out(revision: str, into: Path) -> Path:
    """The files of `revision` (git archive), without touching this checkout."""
    archive = into / "baseline.tar"
    subprocess.run(["git", "-C", str(REPOSITORY), "archive", "--output", str(archive), revision], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"
