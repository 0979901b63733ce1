"""Opening an untrusted zip, an image-folder upload or an .npz: bounded member count and unpacked size, safe paths."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import PurePosixPath

from engine.data.parsing import ParseRequest
from engine.errors import DataError
from engine.text import size_text

MAX_ZIP_MEMBERS = 100_000


def open_zip(request: ParseRequest) -> zipfile.ZipFile:
    """Open an untrusted zip after bounding its member count and declared unpacked size.

    zipfile never returns more than a member's declared size, so the sum bounds real memory use.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(request.data))
    # A hostile central directory also raises these: an unsupported zip version, a name flagged UTF-8 that
    # is not, a truncated record.
    except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError) as exc:
        raise DataError(f"{request.source} is not a valid zip archive") from exc
    members = archive.infolist()
    if len(members) > MAX_ZIP_MEMBERS:
        raise DataError(f"{request.source} has {len(members)} members; the limit is {MAX_ZIP_MEMBERS}")
    unpacked = sum(info.file_size for info in members)
    if unpacked > request.max_bytes:
        raise DataError(
            f"{request.source} would unpack to {size_text(unpacked)}, over the {size_text(request.max_bytes)} limit"
        )
    return archive


def safe_member_path(name: str, source: str) -> PurePosixPath:
    """Reject zip-slip names: absolute, drive-letter or '..' paths (also with Windows separators)."""
    if not name:
        raise DataError(f"{source} has a member without a name; refusing the archive")
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    if path.is_absolute() or re.match(r"[A-Za-z]:", normalised) or ".." in path.parts:
        raise DataError(f"{source} has an unsafe member path {name!r} (absolute or with '..'); refusing the archive")
    return path
