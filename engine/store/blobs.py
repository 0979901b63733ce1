"""Files stored once, named by the sha256 of their bytes: <root>/ab/abcdef....

A blob is written to a temporary file in the same directory and renamed into place, so a reader (or a
crash) never sees half a file; storing bytes that are already there does nothing.

A model past protobuf's 2 GiB is several files (an .onnx file and the external-data files it names, relative to
it): stored as one folder blob, <root>/ab/abcdef.../, named by the sha256 of its files' names and digests, and
moved into place whole. Its `path` is its one .onnx file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from engine.errors import DiskFull, is_disk_full

CHUNK = 1 << 20
FOLDER_MAIN_SUFFIX = ".onnx"  # a folder blob holds one model: its .onnx file and the files it names


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
        """The blob's file; for a folder blob, the one .onnx file in it."""
        folder = self.folder(sha256)
        if folder.is_dir():
            return next(folder.glob(f"*{FOLDER_MAIN_SUFFIX}"))
        return self.root / sha256[:2] / f"{sha256}{self.suffix}"

    def folder(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put_folder(self, files: list[Path]) -> str:
        """Move a finished model's files in as one folder blob: files[0] its .onnx file, the others the files it
        names, where it names them (relative to it); they are gone from where they were afterwards."""
        main = files[0]
        names = [file.relative_to(main.parent).as_posix() for file in files]
        digest = hashlib.sha256(json.dumps(sorted(zip(names, map(sha256_file, files)))).encode()).hexdigest()
        target = self.folder(digest)
        if target.is_dir():
            for file in files:
                file.unlink()
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        incoming = Path(tempfile.mkdtemp(dir=target.parent, prefix=".incoming-"))
        for name, file in zip(names, files):
            (incoming / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, incoming / name)
        try:
            os.replace(incoming, target)  # a reader sees the whole folder or none of it
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(incoming)  # stored meanwhile by another process: the same files
        return digest

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
            self.raise_if_disk_full(error)
            raise

    def raise_if_disk_full(self, error: BaseException) -> None:
        """An upload on a full disk: one line the dashboard and the CLI can show."""
        if is_disk_full(error):
            raise DiskFull(f"the disk holding the workspace is full ({self.root}): free some space and try "
                           "again") from error

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
