"""Load a user's validation data and check that it fits the model.

Map of this module:

1. ``load_dataset`` reads the file or uploaded bytes (bounded by ``max_bytes``).
2. ``_LOADERS`` picks a parser by file extension; each parser turns the file into a ``_Parsed``
   (raw arrays, not yet checked against the model):
     .npz          ``_parse_npz``        one array per model input, optional ``labels`` and ``slice``
     .csv          ``_parse_csv``        one row per example, one column per value
     .parquet/.pq  ``_parse_parquet``    same as CSV
     .zip          ``_parse_image_zip``  one folder per class holding images
3. ``_conform`` checks every array against the model (row counts, shapes, NaN/inf, safe dtype
   casts, label kind) and builds the ``Dataset``.

Every problem the user can fix raises ``DataError`` with a one-line message.
Uploads are untrusted: NPZ files are never unpickled and zip members are never written to disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image

from engine.errors import DataError
from engine.tensors import TensorSpec
from engine.text import first_line, shape_text, size_text

MAX_DATASET_BYTES = 512 * 1024**2  # bounds both the file and what a zip unpacks to
MAX_ZIP_MEMBERS = 100_000
MAX_IMAGE_PIXELS = 50_000_000  # per image; a tiny PNG can declare a huge canvas

_NPZ_LABELS = "labels"
_NPZ_SLICES = "slice"
_DEFAULT_LABEL_COLUMNS = ("label", "labels", "target")
_DEFAULT_SLICE_COLUMNS = ("slice",)
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")  # only these decoders ever see upload bytes
_CHANNEL_AXIS = {"NCHW": 1, "NHWC": 3}  # where the channel dim sits in a 4-D image input
# Source dtype kind -> target kinds reached without changing meaning (b=bool, i/u=int, f=float);
# the value range is checked on top, so e.g. 300 never silently becomes a uint8.
_SAFE_CASTS = {"b": "biuf", "i": "iuf", "u": "iuf", "f": "f"}


@dataclass(frozen=True)
class ImageOptions:
    """How image pixels become model input, per channel: x = (pixel * scale - mean) / std.

    ``pixel`` is the 0..255 value after converting the image to grayscale or RGB to match the
    model's channel count. ``mean`` and ``std`` hold one value for all channels or one per channel.
    ``layout`` "auto" takes NCHW when dim 1 is 1 or 3, else NHWC when the last dim is 1 or 3.
    ``resize`` scales each image (PIL bilinear) to the model's fixed height and width.
    """

    layout: Literal["auto", "NCHW", "NHWC"] = "auto"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    resize: bool = True

    def __post_init__(self) -> None:
        if self.layout != "auto" and self.layout not in _CHANNEL_AXIS:
            raise DataError(f"image layout must be auto, NCHW or NHWC; got {self.layout!r}")
        if 0 in np.atleast_1d(self.std):
            raise DataError(f"image std must not contain 0 (it divides the pixels); got {self.std}")


@dataclass(eq=False)  # arrays have no single truth value, so no generated __eq__
class Dataset:
    """Validation data ready for onnxruntime: rows line up across inputs, labels and slices."""

    inputs: dict[str, np.ndarray]  # model input name -> array, batch first, in the model's dtype
    labels: np.ndarray | None  # [N] int64 class ids or float64 regression targets
    slices: np.ndarray | None  # [N] unicode subgroup names
    source: str  # file name, for messages and reports
    label_names: list[str] | None = None  # label_names[i] names class id i, when known

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, n: int) -> Dataset:
        """The first n rows (e.g. a calibration subset); views, not copies."""
        if n < 0:
            raise ValueError(f"take needs n >= 0, got {n}")
        return Dataset(
            inputs={name: array[:n] for name, array in self.inputs.items()},
            labels=None if self.labels is None else self.labels[:n],
            slices=None if self.slices is None else self.slices[:n],
            source=self.source,
            label_names=self.label_names,
        )

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        """Consecutive feeds for ``InferenceSession.run``; the last one may be shorter."""
        if size < 1:
            raise ValueError(f"batch size must be at least 1, got {size}")
        for start in range(0, len(self), size):
            yield {name: array[start : start + size] for name, array in self.inputs.items()}

    def summary(self) -> dict:
        """Plain-Python description for reports: sizes, dtypes, label and slice distributions."""
        return {
            "source": self.source,
            "rows": len(self),
            "inputs": {
                name: {"shape": list(array.shape), "dtype": array.dtype.name}
                for name, array in self.inputs.items()
            },
            "labels": self._label_summary(),
            "slices": None if self.slices is None else _value_counts(self.slices),
        }

    def fingerprint(self) -> str:
        """sha256 of the content (names, dtypes, shapes, bytes); the file name does not count."""
        digest = hashlib.sha256()
        for name, array in self._named_arrays():
            # The header fixes how many bytes follow, so no two datasets share a byte stream.
            header = json.dumps([name, array.dtype.str, list(array.shape)])
            digest.update(header.encode() + b"\n")
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(json.dumps(self.label_names).encode())
        return digest.hexdigest()

    def _named_arrays(self) -> Iterator[tuple[str, np.ndarray]]:
        for name in sorted(self.inputs):
            yield f"input:{name}", self.inputs[name]
        if self.labels is not None:
            yield "labels", self.labels
        if self.slices is not None:
            yield "slices", self.slices

    def _label_summary(self) -> dict:
        if self.labels is None:
            return {"kind": "none"}
        if self.labels.dtype.kind == "f":
            return {
                "kind": "regression",
                "min": float(self.labels.min()),
                "mean": float(self.labels.mean()),
                "max": float(self.labels.max()),
            }
        counts = _value_counts(self.labels)
        if self.label_names is not None:
            counts = {self.label_names[class_id]: n for class_id, n in counts.items()}
        return {"kind": "classes", "counts": counts}


@dataclass(frozen=True)
class _Request:
    """Everything a format parser may need."""

    data: bytes
    source: str
    model_inputs: tuple[TensorSpec, ...]
    label_column: str | None
    slice_column: str | None
    image_options: ImageOptions
    max_bytes: int


@dataclass
class _Parsed:
    """Arrays as read from the file, before any check against the model."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    slices: np.ndarray | None = None
    label_names: list[str] | None = None


# --- NPZ -----------------------------------------------------------------------------------


def _parse_npz(request: _Request) -> _Parsed:
    # An .npz is a zip: refuse bombs, and arrays larger than their member, before numpy allocates anything.
    with _open_zip(request) as archive:
        for info in archive.infolist():
            _check_npy_header(archive, info, request.source)
    try:
        archive = np.load(io.BytesIO(request.data), allow_pickle=False)
    except ValueError as exc:  # bytes before the zip header look like a pickle to numpy
        raise DataError(f"{request.source} is not a valid .npz archive (as written by numpy.savez)") from exc
    with archive:
        _check_npz_keys(archive.files, request)
        arrays = {key: _npz_array(archive, key, request.source) for key in archive.files}
    return _Parsed(
        inputs={spec.name: arrays[spec.name] for spec in request.model_inputs},
        labels=arrays.get(_NPZ_LABELS),
        slices=arrays.get(_NPZ_SLICES),
    )


def _check_npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> None:
    """numpy allocates the array its header declares before reading the data: the data must be there."""
    name = info.filename.removesuffix(".npy")
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
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size:
        raise DataError(f"array '{name}' in {source} declares {size_text(declared)} of data "
                        f"but its member holds {size_text(info.file_size)}")


_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _check_npz_keys(keys: list[str], request: _Request) -> None:
    names = [spec.name for spec in request.model_inputs]
    missing = [name for name in names if name not in keys]
    if missing:
        raise DataError(
            f"{request.source} lacks the array for model input {_listing(missing)}; "
            f"found keys: {_listing(keys) or 'none'}"
        )
    extra = [key for key in keys if key not in names and key not in (_NPZ_LABELS, _NPZ_SLICES)]
    if extra:
        raise DataError(
            f"{request.source} has unexpected array {_listing(extra)}; expected the model inputs "
            f"{_listing(names)} plus optional '{_NPZ_LABELS}' and '{_NPZ_SLICES}'"
        )


def _npz_array(archive: np.lib.npyio.NpzFile, key: str, source: str) -> np.ndarray:
    try:
        return archive[key]
    except Exception as exc:  # corrupt members raise zipfile/zlib/numpy errors; objects raise ValueError
        raise DataError(
            f"array '{key}' in {source} cannot be loaded: {first_line(exc)} "
            "(only plain numeric or string arrays are accepted, never pickled objects)"
        ) from exc


# --- CSV / Parquet -------------------------------------------------------------------------


def _parse_csv(request: _Request) -> _Parsed:
    return _parse_table(_read_frame(pd.read_csv, "CSV", request), request)


def _parse_parquet(request: _Request) -> _Parsed:
    _check_parquet_size(request)
    return _parse_table(_read_frame(pd.read_parquet, "Parquet", request), request)


def _check_parquet_size(request: _Request) -> None:
    """Parquet's run-length and dictionary encodings pack repetitive columns into a few bytes: bound the
    decoded table, from the footer, before reading it (8 bytes a cell, a value or a pointer, plus the data)."""
    import pyarrow.parquet  # only Parquet uploads pay for importing pyarrow

    try:
        metadata = pyarrow.parquet.ParquetFile(io.BytesIO(request.data)).metadata
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{request.source} cannot be read as Parquet: {first_line(exc)}") from exc
    cells = metadata.num_rows * metadata.num_columns
    unpacked = 8 * cells + sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if unpacked > request.max_bytes:
        raise DataError(
            f"{request.source} would unpack to {size_text(unpacked)}, over the {size_text(request.max_bytes)} limit"
        )


def _read_frame(reader: Callable[[io.BytesIO], pd.DataFrame], kind: str, request: _Request) -> pd.DataFrame:
    try:
        return reader(io.BytesIO(request.data))
    except (ValueError, OSError) as exc:  # pandas' ParserError and pyarrow's ArrowInvalid are ValueErrors
        raise DataError(f"{request.source} cannot be read as {kind}: {first_line(exc)}") from exc


def _parse_table(frame: pd.DataFrame, request: _Request) -> _Parsed:
    """One row per example: every column except label and slice is a value, in file order."""
    spec = _tabular_input(request.model_inputs, request.source)
    label = _pick_column(frame, request.label_column, _DEFAULT_LABEL_COLUMNS, "label", request.source)
    slice_ = _pick_column(frame, request.slice_column, _DEFAULT_SLICE_COLUMNS, "slice", request.source)
    features = [column for column in frame.columns if column not in (label, slice_)]
    needed = math.prod(spec.sample_shape)
    if len(features) != needed:
        raise DataError(
            f"{request.source} has {len(features)} feature columns but input {spec.describe()} "
            f"needs {needed} per row (label column: {label or 'none'}, slice column: {slice_ or 'none'})"
        )
    for column in features:
        _require_numeric(frame[column], request.source)
    values = np.column_stack([frame[column].to_numpy() for column in features])
    return _Parsed(
        inputs={spec.name: values.reshape(len(frame), *spec.sample_shape)},
        labels=None if label is None else _label_values(frame[label], request.source),
        slices=None if slice_ is None else _text_values(frame[slice_], request.source),
    )


def _tabular_input(model_inputs: tuple[TensorSpec, ...], source: str) -> TensorSpec:
    if len(model_inputs) != 1 or not all(isinstance(dim, int) for dim in model_inputs[0].sample_shape):
        raise DataError(
            f"{source}: CSV/Parquet fits only a model with one input of fixed sample shape, but the "
            f"model has {_describe(model_inputs)}; use an .npz file with one array per input"
        )
    return model_inputs[0]


def _pick_column(
    frame: pd.DataFrame, requested: str | None, defaults: tuple[str, ...], role: str, source: str
) -> str | None:
    """The requested column (which must exist), else the first default name present, else None."""
    if requested is None:
        return next((name for name in defaults if name in frame.columns), None)
    if requested not in frame.columns:
        raise DataError(f"{role} column '{requested}' not in {source}; columns: {_listing(frame.columns)}")
    return requested


def _require_numeric(column: pd.Series, source: str) -> None:
    if pd.api.types.is_numeric_dtype(column) or column.empty:  # no rows: reported by the row check
        return
    unparsable = column[pd.to_numeric(column, errors="coerce").isna() & column.notna()]
    example = f" (e.g. {unparsable.iloc[0]!r})" if len(unparsable) else ""
    raise DataError(f"feature column '{column.name}' in {source} is not numeric{example}")


def _label_values(column: pd.Series, source: str) -> np.ndarray:
    # Numeric labels keep NaN so the common check reports them; text labels become class names.
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy()
    return _text_values(column, source)


def _text_values(column: pd.Series, source: str) -> np.ndarray:
    missing = int(column.isna().sum())
    if missing:
        raise DataError(f"column '{column.name}' in {source} is empty in {missing} of {len(column)} rows")
    # Via object: pandas' own str conversion can size the numpy string dtype too small.
    return column.to_numpy(dtype=object).astype(str)


# --- Image-folder ZIP ----------------------------------------------------------------------


def _parse_image_zip(request: _Request) -> _Parsed:
    """<class>/<image> members (optionally under one top folder), like torchvision's ImageFolder."""
    spec = _image_input(request.model_inputs, request.source)
    options = request.image_options
    channel_axis = _channel_axis(spec, options.layout)
    channels = spec.shape[channel_axis]
    # The two dims after batch that are not channels: [N, C, H, W] or [N, H, W, C].
    height, width = [dim for axis, dim in enumerate(spec.shape[1:], start=1) if axis != channel_axis]
    size = (width, height) if options.resize and isinstance(height, int) and isinstance(width, int) else None

    with _open_zip(request) as archive:
        members = _class_members(archive, request.source)
        class_ids, label_names = _class_ids({class_name for class_name, _ in members})
        members.sort(key=lambda member: (class_ids[member[0]], member[1].filename))
        mode = "L" if channels == 1 else "RGB"
        pixels = [_decode_image(archive, info, mode, size, request.source) for _, info in members]

    _require_same_size(pixels, members, request.source)
    images = np.stack(pixels).reshape(len(pixels), *pixels[0].shape[:2], channels)  # [N, H, W, C]
    mean = _per_channel(options.mean, channels, "mean")
    std = _per_channel(options.std, channels, "std")
    images = (images * np.float32(options.scale) - mean) / std
    if channel_axis == 1:
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    labels = np.array([class_ids[class_name] for class_name, _ in members], dtype=np.int64)
    return _Parsed(inputs={spec.name: images}, labels=labels, label_names=label_names)


def _image_input(model_inputs: tuple[TensorSpec, ...], source: str) -> TensorSpec:
    if len(model_inputs) != 1 or len(model_inputs[0].shape) != 4:
        raise DataError(
            f"{source}: an image-folder zip needs a model with one input [batch, C, H, W] or "
            f"[batch, H, W, C], but the model has {_describe(model_inputs)}"
        )
    return model_inputs[0]


def _channel_axis(spec: TensorSpec, layout: str) -> int:
    if layout == "auto":
        layout = next((name for name, axis in _CHANNEL_AXIS.items() if spec.shape[axis] in (1, 3)), "")
        if not layout:
            raise DataError(f"cannot tell the channel axis of {spec.describe()}; set the image layout to NCHW or NHWC")
    axis = _CHANNEL_AXIS[layout]
    if spec.shape[axis] not in (1, 3):
        raise DataError(f"{layout} input {spec.describe()} needs 1 or 3 channels at dim {axis}")
    return axis


def _class_members(archive: zipfile.ZipFile, source: str) -> list[tuple[str, zipfile.ZipInfo]]:
    """(class folder name, member) for every image; every member path is vetted, used or not."""
    images = []
    for info in archive.infolist():
        path = _safe_member_path(info.filename, source)
        if info.is_dir() or _is_ignored(path) or path.suffix.lower() not in _IMAGE_EXTENSIONS:
            continue
        images.append((path.parts, info))
    if not images:
        raise DataError(f"{source} contains no images ({', '.join(_IMAGE_EXTENSIONS)}) in class folders")
    # Zipping a folder wraps everything in it: top/<class>/<image>.
    if len({parts[0] for parts, _ in images}) == 1 and all(len(parts) == 3 for parts, _ in images):
        images = [(parts[1:], info) for parts, info in images]
    for parts, info in images:
        if len(parts) != 2:
            raise DataError(
                f"image '{info.filename}' in {source} is not directly inside a class folder; "
                "expected <class>/<image>, optionally inside one top folder"
            )
    return [(parts[0], info) for parts, info in images]


def _safe_member_path(name: str, source: str) -> PurePosixPath:
    """Reject zip-slip names: absolute, drive-letter or '..' paths (also with Windows separators)."""
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    if path.is_absolute() or re.match(r"[A-Za-z]:", normalised) or ".." in path.parts:
        raise DataError(f"{source} has an unsafe member path {name!r} (absolute or with '..'); refusing the archive")
    return path


def _is_ignored(path: PurePosixPath) -> bool:
    # macOS Finder adds __MACOSX/ and .DS_Store; dot-files are never data.
    return path.parts[:1] == ("__MACOSX",) or any(part.startswith(".") for part in path.parts)


def _class_ids(class_names: set[str]) -> tuple[dict[str, int], list[str]]:
    """Sorted folder names get ids 0..K-1; if all are integers, folder '7' is class 7.

    Returns the id of each folder and label_names, where label_names[i] names class i.
    """
    if all(name.isdecimal() for name in class_names):
        ids = {name: int(name) for name in class_names}
        return ids, [str(class_id) for class_id in range(max(ids.values()) + 1)]
    ordered = sorted(class_names)
    return {name: class_id for class_id, name in enumerate(ordered)}, ordered


def _decode_image(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, mode: str, size: tuple[int, int] | None, source: str
) -> np.ndarray:
    """One member, decoded in memory, as float32 [H, W] (mode L) or [H, W, 3] (mode RGB).

    Steps: read the header, bound the pixel count, then decode (convert) and resize.
    """
    try:
        image = Image.open(io.BytesIO(archive.read(info)), formats=_PIL_FORMATS)
    except Exception as exc:  # corrupt input raises many types in PIL, zipfile and zlib
        raise _undecodable(info, source, exc) from exc
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"image '{info.filename}' in {source} is {image.width}x{image.height} pixels, "
            f"over the {MAX_IMAGE_PIXELS} pixel limit"
        )
    try:
        image = image.convert(mode)
        if size is not None and image.size != size:
            image = image.resize(size, Image.Resampling.BILINEAR)
    except Exception as exc:  # truncated or corrupt pixel data only fails while decoding
        raise _undecodable(info, source, exc) from exc
    return np.asarray(image, dtype=np.float32)


def _undecodable(info: zipfile.ZipInfo, source: str, exc: Exception) -> DataError:
    return DataError(f"image '{info.filename}' in {source} cannot be decoded ({type(exc).__name__})")


def _require_same_size(pixels: list[np.ndarray], members: list[tuple[str, zipfile.ZipInfo]], source: str) -> None:
    for array, (_, info) in zip(pixels, members):
        if array.shape != pixels[0].shape:
            raise DataError(
                f"images in {source} differ in size ({members[0][1].filename} is {_hw(pixels[0])}, "
                f"{info.filename} is {_hw(array)}) and are not resized to a fixed model height and width"
            )


def _hw(pixels: np.ndarray) -> str:
    return f"{pixels.shape[0]}x{pixels.shape[1]}"


def _per_channel(values: float | Sequence[float], channels: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32).reshape(-1)
    if array.size not in (1, channels):
        raise DataError(f"image {name} has {array.size} values; the model has {channels} channels")
    return array


def _open_zip(request: _Request) -> zipfile.ZipFile:
    """Open an untrusted zip after bounding its member count and declared unpacked size.

    zipfile never returns more than a member's declared size, so the sum bounds real memory use.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(request.data))
    except zipfile.BadZipFile as exc:
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


# --- Format registry and entry point -------------------------------------------------------

_LOADERS: dict[str, Callable[[_Request], _Parsed]] = {
    ".npz": _parse_npz,
    ".csv": _parse_csv,
    ".parquet": _parse_parquet,
    ".pq": _parse_parquet,
    ".zip": _parse_image_zip,
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
    request = _Request(
        data=_read_bytes(source, name, max_bytes),
        source=name,
        model_inputs=tuple(model_inputs),
        label_column=label_column,
        slice_column=slice_column,
        image_options=image_options or ImageOptions(),
        max_bytes=max_bytes,
    )
    return _conform(parse(request), request.model_inputs, request.source)


def _loader_for(name: str | None) -> Callable[[_Request], _Parsed]:
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


def _check_size(size: int, name: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise DataError(f"{name} is {size_text(size)}, over the {size_text(max_bytes)} limit")


# --- Checks against the model, shared by every format --------------------------------------


def _conform(parsed: _Parsed, model_inputs: tuple[TensorSpec, ...], source: str) -> Dataset:
    _check_row_counts(parsed, source)
    inputs = {spec.name: _conform_input(parsed.inputs[spec.name], spec, source) for spec in model_inputs}
    labels, label_names = _conform_labels(parsed.labels, parsed.label_names, source)
    slices = None if parsed.slices is None else _one_per_row(parsed.slices, "slice", source).astype(str)
    return Dataset(inputs, labels, slices, source, label_names)


def _check_row_counts(parsed: _Parsed, source: str) -> None:
    arrays = {f"input '{name}'": array for name, array in parsed.inputs.items()}
    arrays.update({"labels": parsed.labels, "slice": parsed.slices})
    counts = {}
    for what, array in arrays.items():
        if array is None:
            continue
        if array.ndim == 0:
            raise DataError(f"{what} in {source} is a single value; expected one row per example")
        counts[what] = len(array)
    if len(set(counts.values())) > 1:
        found = ", ".join(f"{what} has {rows}" for what, rows in counts.items())
        raise DataError(f"row counts differ in {source}: {found}")
    if max(counts.values(), default=0) == 0:
        raise DataError(f"{source} has no rows")


def _conform_input(array: np.ndarray, spec: TensorSpec, source: str) -> np.ndarray:
    what = f"input '{spec.name}'"
    fits = array.ndim == len(spec.shape) and all(
        not isinstance(want, int) or want == got for want, got in zip(spec.sample_shape, array.shape[1:])
    )
    if not fits:
        raise DataError(f"{what} expects shape {shape_text(spec.shape)} but {source} has {shape_text(array.shape)}")
    if array.dtype.kind == "f":
        _reject_non_finite(array, what, source)
    return _cast(array, np.dtype(spec.dtype), what, source)


def _cast(array: np.ndarray, target: np.dtype, what: str, source: str) -> np.ndarray:
    if array.dtype == target:
        return array
    if target.kind not in _SAFE_CASTS.get(array.dtype.kind, ""):
        raise DataError(
            f"{what} in {source} holds {array.dtype} values but the model needs {target}; "
            "only lossless conversions are made (e.g. float64 to float32, int to float)"
        )
    limits = np.iinfo(target) if target.kind in "iu" else np.finfo(target)
    if array.size and array.dtype.kind != "b" and (array.min() < limits.min or array.max() > limits.max):
        raise DataError(f"{what} in {source} has values outside the range of the model's {target}")
    return array.astype(target)


def _conform_labels(
    labels: np.ndarray | None, label_names: list[str] | None, source: str
) -> tuple[np.ndarray | None, list[str] | None]:
    """int64 class ids (integers, integer-valued floats, strings) or float64 regression targets."""
    if labels is None:
        return None, label_names
    kind = _one_per_row(labels, "labels", source).dtype.kind
    if kind in "US":
        names, ids = np.unique(labels.astype(str), return_inverse=True)
        return ids.astype(np.int64), names.tolist()
    if kind in "biu":
        return labels.astype(np.int64), label_names
    if kind == "f":
        _reject_non_finite(labels, "labels", source)
        is_integral = bool(np.all(labels == np.round(labels)))
        return labels.astype(np.int64 if is_integral else np.float64), label_names
    raise DataError(f"labels in {source} have unsupported dtype {labels.dtype}; use integers, floats or strings")


def _one_per_row(array: np.ndarray, what: str, source: str) -> np.ndarray:
    if array.ndim != 1:
        raise DataError(f"{what} in {source} must hold one value per row, shape [N]; found {shape_text(array.shape)}")
    return array


def _reject_non_finite(array: np.ndarray, what: str, source: str) -> None:
    bad_rows = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    if bad_rows.any():
        raise DataError(
            f"{what} in {source} has NaN or inf in {int(bad_rows.sum())} of {len(array)} rows "
            f"(first at row {int(np.argmax(bad_rows))})"
        )


# --- Small formatting helpers --------------------------------------------------------------


def _value_counts(values: np.ndarray) -> dict:
    uniques, counts = np.unique(values, return_counts=True)
    return {value.item(): int(count) for value, count in zip(uniques, counts)}


def _describe(specs: Sequence[TensorSpec]) -> str:
    return "; ".join(spec.describe() for spec in specs) or "no inputs"


def _listing(names: Sequence[object], limit: int = 10) -> str:
    quoted = [f"'{name}'" for name in list(names)[:limit]]
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(quoted) + more
