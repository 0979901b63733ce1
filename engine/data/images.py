"""Image-folder zips, one folder per class holding images, and ImageOptions: how pixels become model input."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

import numpy as np
from PIL import Image

from engine.data.parsing import Parsed, ParseRequest, describe_inputs
from engine.data.zips import open_zip, safe_member_path
from engine.errors import DataError
from engine.tensors import TensorSpec

MAX_IMAGE_PIXELS = 50_000_000  # per image; a tiny PNG can declare a huge canvas

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")  # only these decoders ever see upload bytes
_CHANNEL_AXIS = {"NCHW": 1, "NHWC": 3}  # where the channel dim sits in a 4-D image input


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


def parse_image_zip(request: ParseRequest) -> Parsed:
    """<class>/<image> members (optionally under one top folder), like torchvision's ImageFolder."""
    spec = _image_input(request.model_inputs, request.source)
    options = request.image_options
    channel_axis = _channel_axis(spec, options.layout)
    channels = spec.shape[channel_axis]
    # The two dims after batch that are not channels: [N, C, H, W] or [N, H, W, C].
    height, width = [dim for axis, dim in enumerate(spec.shape[1:], start=1) if axis != channel_axis]
    size = (width, height) if options.resize and isinstance(height, int) and isinstance(width, int) else None

    with open_zip(request) as archive:
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
    return Parsed(inputs={spec.name: images}, labels=labels, label_names=label_names)


def _image_input(model_inputs: tuple[TensorSpec, ...], source: str) -> TensorSpec:
    if len(model_inputs) != 1 or len(model_inputs[0].shape) != 4:
        raise DataError(
            f"{source}: an image-folder zip needs a model with one input [batch, C, H, W] or "
            f"[batch, H, W, C], but the model has {describe_inputs(model_inputs)}"
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
        path = safe_member_path(info.filename, source)
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
        # Read no more than the declared size: archive.read inflates a member's whole stream first, so a member
        # that understates its size would get past the zip bomb check.
        with archive.open(info) as member:
            encoded = member.read(info.file_size)
        image = Image.open(io.BytesIO(encoded), formats=_PIL_FORMATS)
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
