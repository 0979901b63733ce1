"""Files stored once, named by the sha256 of their bytes: <root>/ab/abcdef....

A blob is written to a temporary file in the same directory and renamed into place, so a reader (or a
crash) never sees half a file; storing bytes that are already there does nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from engine.errors import DiskFull, is_disk_full

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class BlobStore:
    root: Path
    suffix: str = ""  # artifacts keep ".onnx" so a downloaded file says what it is

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}{self.suffix}"

    def put_bytes(self, data: bytes) -> str:
        sha256 = sha256_bytes(data)
        self._write(sha256, lambda file: file.write(data))
        return sha256

    def put_copy(self, source: Path) -> str:
        """Copy a file in, leaving `source` as it is; nothing is copied when its bytes are already stored."""
        sha256 = sha256_file(source)

        def copy(file) -> None:
            with open(source, "rb") as original:
                shutil.copyfileobj(original, file, CHUNK)

        self._write(sha256, copy)
        return sha256

    def _write(self, sha256: str, write: Callable[[BinaryIO], object]) -> None:
        """Write the blob `sha256` through `write(file)` into a temporary file, then rename it into place;
        nothing when it is already stored."""
        target = self.path(sha256)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(descriptor, "wb") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException as error:
            Path(temporary).unlink(missing_ok=True)
            if is_disk_full(error):  # an upload on a full disk: one line the dashboard and the CLI can show
                raise DiskFull(f"the disk holding the workspace is full ({self.root}): free some space and try "
                               "again") from error
            raise

    def put_file(self, source: Path) -> str:
        """Move a finished file in (same file system: a rename, no copy); `source` is gone afterwards."""
        sha256 = sha256_file(source)
        target = self.path(sha256)
        if target.exists():
            Path(source).unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        return sha256
