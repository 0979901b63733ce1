"""A model folder packed as one zip (its .onnx file and the external-data files it names), unpacked safely.

The zip is untrusted, like every zip (docs/security.md): its member count and the sum of its members' declared
sizes are bounded before anything is written (engine.data.zips.bounded_zip), and so is the disk they will take.
Every member path is vetted (no absolute, drive-letter or '..' path) and written as a plain new file inside the
target directory: zipfile's extract is not used, and an entry marked as a symlink becomes a file holding its
target's name. A member is read no further than its declared size, which zipfile enforces with its CRC. The folder
must hold exactly one .onnx file; engine.model.load_model then reads external data from that file's directory only.
"""

from __future__ import annotations

import io
import shutil
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from engine.data.zips import bounded_zip, safe_member_path
from engine.errors import DiskFull, ModelError, is_disk_full
from engine.text import pytorch_refusal, size_text

ZIP_MAGIC = b"PK\x03\x04"
# Unpacked: a model past protobuf's 2 GiB keeps its weights in files beside it, so this is far above MAX_MODEL_BYTES.
MAX_MODEL_FOLDER_BYTES = 32 * 1024**3
IGNORED_FOLDERS = ("__MACOSX",)  # macOS's resource forks, e.g. __MACOSX/bert/._model.onnx
CHUNK = 1 << 20


def is_zip(source: Path | bytes) -> bool:
    """Whether the file or the bytes start like a zip archive."""
    if isinstance(source, bytes | bytearray):
        return bytes(source[:4]) == ZIP_MAGIC
    with open(source, "rb") as file:
        return file.read(4) == ZIP_MAGIC


def unpack_model_zip(source: Path | bytes, into: Path, label: str, max_bytes: int | None = None) -> Path:
    """Write the zip's members into the empty directory `into`; the path of its one .onnx file there."""
    with _opened(source, label, max_bytes) as archive:
        members, model = _members(archive, label)
        _check_room(into, sum(info.file_size for info, _ in members), label)
        for info, path in members:
            _write_member(archive, info, into.joinpath(*path.parts), label)
    return into.joinpath(*model.parts)


def check_model_zip(source: Path | bytes, label: str) -> None:
    """Raise the ModelError unpacking would raise before writing anything: from the zip's directory alone."""
    with _opened(source, label, None) as archive:
        _members(archive, label)


@contextmanager
def _opened(source: Path | bytes, label: str, max_bytes: int | None) -> Iterator[zipfile.ZipFile]:
    file = io.BytesIO(source) if isinstance(source, bytes | bytearray) else open(source, "rb")
    with file, bounded_zip(file, label, max_bytes or MAX_MODEL_FOLDER_BYTES, ModelError) as archive:
        yield archive


def _members(archive: zipfile.ZipFile, label: str) -> tuple[list[tuple[zipfile.ZipInfo, PurePosixPath]], PurePosixPath]:
    """The members to write, each with its vetted path, and the path of the one .onnx file among them."""
    members = [(info, safe_member_path(info.filename, label, ModelError)) for info in archive.infolist()
               if not info.is_dir()]
    members = [(info, path) for info, path in members if path.parts[0] not in IGNORED_FOLDERS]
    if any(path.suffix.lower() == ".pkl" for _, path in members):  # what torch.save writes; never unpickled
        raise ModelError(pytorch_refusal(label))
    models = [path for _, path in members if path.suffix.lower() == ".onnx"]
    if len(models) != 1:
        raise ModelError(f"{label} is not an ONNX model: a model zip holds exactly one .onnx file (and the "
                         f"external-data files it names); this one holds {len(models)}")
    return members, models[0]


def _check_room(into: Path, needed: int, label: str) -> None:
    free = shutil.disk_usage(into).free
    if needed > free:
        raise DiskFull(f"{label} unpacks to {size_text(needed)}, but the disk holding {into} has {size_text(free)} "
                       "free: free some space and try again")


def _write_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, label: str) -> None:
    shown = repr(info.filename if len(info.filename) <= 80 else info.filename[:77] + "...")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as member, open(target, "xb") as out:  # "x": a name twice is refused, not merged
            shutil.copyfileobj(member, out, CHUNK)
    except OSError as error:
        if is_disk_full(error):
            raise DiskFull(f"the disk filled up while unpacking {label}: free some space and try again") from error
        # a name twice, a file where a folder should be, a name the file system cannot hold
        raise ModelError(f"{label}: member {shown} cannot be written ({type(error).__name__})") from None
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, ValueError) as error:
        raise ModelError(f"{label}: member {shown} cannot be read ({type(error).__name__})") from None
