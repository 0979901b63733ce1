"""The entry point, load_dataset, and the one registry that maps a file extension to its parser."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from engine.data.checks import conform
from engine.data.dataset import Dataset
from engine.data.images import ImageOptions, parse_image_zip
from engine.data.npz import parse_npz
from engine.data.parsing import Parsed, ParseRequest
from engine.data.tables import parse_csv, parse_parquet
from engine.errors import DataError
from engine.tensors import TensorSpec
from engine.text import size_text

MAX_DATASET_BYTES = 512 * 1024**2  # bounds both the file and what a zip unpacks to

_LOADERS: dict[str, Callable[[ParseRequest], Parsed]] = {
    ".npz": parse_npz,
    ".csv": parse_csv,
    ".parquet": parse_parquet,
    ".pq": parse_parquet,
    ".zip": parse_image_zip,
}
SUPPORTED_EXTENSIONS = tuple(_LOADERS)


def load_dataset(
    source: str | Path | bytes,
    model_inputs: Sequence[TensorSpec],
    *,
    filename: str | None = None,
    label_column: str | None = None,
    slice_column: str | None = None,
    image_options: ImageOptions | None = None,
    max_bytes: int = MAX_DATASET_BYTES,
) -> Dataset:
    """Read validation data from a path or uploaded bytes and check it against the model inputs.

    ``filename`` names the upload (its extension picks the format); for a path it defaults to
    the path's name. ``label_column``/``slice_column`` apply to CSV/Parquet, ``image_options``
    to image-folder zips. Raises DataError for anything that does not fit.
    """
    name = filename or (None if isinstance(source, bytes) else Path(source).name)
    parse = _loader_for(name)
    request = ParseRequest(
        data=require_content(_read_bytes(source, name, max_bytes), name),
        source=name,
        model_inputs=tuple(model_inputs),
        label_column=label_column,
        slice_column=slice_column,
        image_options=image_options or ImageOptions(),
        max_bytes=max_bytes,
    )
    return conform(parse(request), request.model_inputs, request.source)


def _loader_for(name: str | None) -> Callable[[ParseRequest], Parsed]:
    supported = ", ".join(SUPPORTED_EXTENSIONS)
    if name is None:
        raise DataError(f"uploaded bytes need a filename whose extension tells the format ({supported})")
    loader = _LOADERS.get(Path(name).suffix.lower())
    if loader is None:
        raise DataError(f"unsupported data file '{name}': expected one of {supported}")
    return loader


def _read_bytes(source: str | Path | bytes, name: str, max_bytes: int) -> bytes:
    """The raw content, refusing anything over max_bytes before reading it."""
    if isinstance(source, bytes):
        _check_size(len(source), name, max_bytes)
        return source
    path = Path(source)
    if not path.is_file():
        raise DataError(f"no data file at {path}")
    _check_size(path.stat().st_size, name, max_bytes)
    return path.read_bytes()


def require_content(data: bytes, name: str) -> bytes:
    """The bytes, unless there are none: an empty file is said plainly instead of in a parser's words."""
    if not data:
        raise DataError(f"{name} is an empty file (0 bytes): it holds no examples")
    return data


def _check_size(size: int, name: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise DataError(f"{name} is {size_text(size)}, over the {size_text(max_bytes)} limit")
