"""NPZ files: one array per model input, plus optional 'labels' and 'slice'; never unpickled."""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np

from engine.data.parsing import Parsed, ParseRequest, quoted_names
from engine.data.zips import open_zip
from engine.errors import DataError
from engine.text import first_line, size_text

_NPZ_LABELS = "labels"
_NPZ_SLICES = "slice"


def parse_npz(request: ParseRequest) -> Parsed:
    # An .npz is a zip: refuse bombs, and arrays larger than their member, before numpy allocates anything.
    with open_zip(request) as archive:
        for info in archive.infolist():
            _check_npy_header(archive, info, request.source)
    try:
        archive = np.load(io.BytesIO(request.data), allow_pickle=False)
    except ValueError as exc:  # bytes before the zip header look like a pickle to numpy
        raise DataError(f"{request.source} is not a valid .npz archive (as written by numpy.savez)") from exc
    with archive:
        _check_npz_keys(archive.files, request)
        arrays = {key: _npz_array(archive, key, request.source) for key in archive.files}
    return Parsed(
        inputs={spec.name: arrays[spec.name] for spec in request.model_inputs},
        labels=arrays.get(_NPZ_LABELS),
        slices=arrays.get(_NPZ_SLICES),
    )


def _check_npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> None:
    """numpy allocates the array its header declares before reading the data: the data must be there."""
    name = info.filename.removesuffix(".npy")
    try:
        with archive.open(info) as member:
            try:
                version = np.lib.format.read_magic(member)
            except ValueError:
                return  # not an .npy member: numpy's loader names the problem
            read_header = _NPY_HEADER_READERS.get(version)
            if read_header is None:
                raise DataError(f"array '{name}' in {source} uses .npy format {version}; save it with numpy.savez")
            try:
                shape, _, dtype = read_header(member)
            except ValueError as exc:
                raise DataError(f"array '{name}' in {source} has a malformed header: {first_line(exc)}") from exc
    except DataError:
        raise
    except Exception as exc:  # a damaged member: bad local header, CRC, compressed stream, seek
        raise DataError(f"array '{name}' in {source} cannot be read: {first_line(exc)}") from exc
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size:
        raise DataError(f"array '{name}' in {source} declares {size_text(declared)} of data "
                        f"but its member holds {size_text(info.file_size)}")


_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _check_npz_keys(keys: list[str], request: ParseRequest) -> None:
    names = [spec.name for spec in request.model_inputs]
    missing = [name for name in names if name not in keys]
    if missing:
        raise DataError(
            f"{request.source} lacks the array for model input {quoted_names(missing)}; "
            f"found keys: {quoted_names(keys) or 'none'}"
        )
    extra = [key for key in keys if key not in names and key not in (_NPZ_LABELS, _NPZ_SLICES)]
    if extra:
        raise DataError(
            f"{request.source} has unexpected array {quoted_names(extra)}; expected the model inputs "
            f"{quoted_names(names)} plus optional '{_NPZ_LABELS}' and '{_NPZ_SLICES}'"
        )


def _npz_array(archive: np.lib.npyio.NpzFile, key: str, source: str) -> np.ndarray:
    try:
        return archive[key]
    except Exception as exc:  # corrupt members raise zipfile/zlib/numpy errors; objects raise ValueError
        raise DataError(
            f"array '{key}' in {source} cannot be loaded: {first_line(exc)} "
            "(only plain numeric or string arrays are accepted, never pickled objects)"
        ) from exc
