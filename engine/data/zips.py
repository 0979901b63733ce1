"""Opening an untrusted zip (an image-folder upload, an .npz, a model folder): bounded member count and unpacked
size, safe paths."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import PurePosixPath
from typing import BinaryIO

from engine.data.parsing import ParseRequest
from engine.errors import DataError, QuantscopeError
from engine.text import size_text

MAX_ZIP_MEMBERS = 100_000


def open_zip(request: ParseRequest) -> zipfile.ZipFile:
    """Open an uploaded data zip (an .npz or an image folder) within the request's byte bound."""
    return bounded_zip(io.BytesIO(request.data), request.source, request.max_bytes)


def bounded_zip(file: BinaryIO, source: str, max_bytes: int, error: type[QuantscopeError] = DataError) -> zipfile.ZipFile:
    """Open an untrusted zip after bounding its member count and declared unpacked size; refusals raise `error`.

    zipfile never returns more than a member's declared size, so the sum bounds real memory (or disk) use.
    """
    try:
        archive = zipfile.ZipFile(file)
    # A hostile central directory also raises these: an unsupported zip version, a name flagged UTF-8 that
    # is not, a truncated record.
    except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError) as exc:
        raise error(f"{source} is not a valid zip archive") from exc
    members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise error(f"{source} has {len(members)} members; the limit is {MAX_ZIP_MEMBERS}")
    unpacked = sum(info.file_size for info in members)
    if unpacked > max_bytes:
        raise error(f"{source} would unpack to {size_text(unpacked)}, over the {size_text(max_bytes)} limit")
    return archive


def safe_member_path(name: str, source: str, error: type[QuantscopeError] = DataError) -> PurePosixPath:
    """Reject zip-slip names: absolute, drive-letter or '..' paths (also with Windows separators)."""
    if not name:
        raise error(f"{source} has a member without a name; refusing the archive")
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    if path.is_absolute() or re.match(r"[A-Za-z]:", normalised) or ".." in path.parts:
        raise error(f"{source} has an unsafe member path {name!r} (absolute or with '..'); refusing the archive")
    return path
