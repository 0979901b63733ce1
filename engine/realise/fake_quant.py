"""Quantize-dequantize in NumPy: the simulation of bit-widths onnxruntime has no kernels for.

The weight is viewed as [channels, elements]: one row per output channel, the reduction elements
along the row. Granularity decides how many elements share a scale: the whole tensor, one row,
or consecutive blocks of `group_size` elements of a row (the last block may be shorter).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.recipe import Granularity, WeightSpec

SCALE_BYTES = 4  # scales are stored as float32


def integer_range(bits: int, symmetric: bool) -> tuple[int, int]:
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _as_rows(weight: np.ndarray, channel_axis: int) -> np.ndarray:
    moved = np.moveaxis(weight, channel_axis, 0)
    return moved.reshape(moved.shape[0], -1)


def _from_rows(rows: np.ndarray, like: np.ndarray, channel_axis: int) -> np.ndarray:
    moved_shape = np.moveaxis(like, channel_axis, 0).shape
    return np.moveaxis(rows.reshape(moved_shape), 0, channel_axis)


def _quantize_dequantize_blocks(blocks: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    """Quantize-dequantize each row of `blocks` ([n_blocks, block_len]) with its own scale."""
    qmin, qmax = integer_range(bits, symmetric)
    if symmetric:
        scale = np.max(np.abs(blocks), axis=1, keepdims=True) / qmax
        zero_point = np.zeros_like(scale)
    else:
        low = np.minimum(blocks.min(axis=1, keepdims=True), 0.0)
        high = np.maximum(blocks.max(axis=1, keepdims=True), 0.0)
        scale = (high - low) / (qmax - qmin)
        zero_point = np.round(qmin - low / np.where(scale == 0, 1.0, scale))
    scale = np.where(scale == 0, 1.0, scale)  # an all-zero block stays exactly zero
    quantized = np.clip(np.round(blocks / scale) + zero_point, qmin, qmax)
    return (quantized - zero_point) * scale


def quantize_dequantize(weight: np.ndarray, spec: WeightSpec, channel_axis: int) -> np.ndarray:
    """Return `weight` after a round trip through `spec.bits`-bit integers, in the input's dtype."""
    values = weight.astype(np.float64)
    if spec.granularity is Granularity.TENSOR:
        result = _quantize_dequantize_blocks(values.reshape(1, -1), spec.bits, spec.symmetric)
        return result.reshape(weight.shape).astype(weight.dtype)
    rows = _as_rows(values, channel_axis)
    if spec.granularity is Granularity.CHANNEL:
        result = _quantize_dequantize_blocks(rows, spec.bits, spec.symmetric)
    else:
        channels, elements = rows.shape
        size = spec.group_size
        padded_len = -(-elements // size) * size
        # Pad with the row's last value: padding then never widens the last block's range.
        padded = np.pad(rows, ((0, 0), (0, padded_len - elements)), mode="edge")
        blocks = padded.reshape(channels * (padded_len // size), size)
        result = _quantize_dequantize_blocks(blocks, spec.bits, spec.symmetric)
        result = result.reshape(channels, padded_len)[:, :elements]
    return _from_rows(result, values, channel_axis).astype(weight.dtype)


@dataclass(frozen=True)
class PackedSize:
    """Bytes a weight would take stored as packed integers with float32 scales (and zero points)."""

    data: int
    scales: int
    zero_points: int

    @property
    def total(self) -> int:
        return self.data + self.scales + self.zero_points


def packed_size(shape: tuple[int, ...], spec: WeightSpec, channel_axis: int) -> PackedSize:
    numel = int(np.prod(shape))
    if spec.granularity is Granularity.TENSOR:
        n_scales = 1
    elif spec.granularity is Granularity.CHANNEL:
        n_scales = shape[channel_axis]
    else:
        channels = shape[channel_axis]
        n_scales = channels * -(-(numel // channels) // spec.group_size)
    zero_point_bytes = 0 if spec.symmetric else -(-n_scales * spec.bits // 8)
    return PackedSize(data=-(-numel * spec.bits // 8), scales=n_scales * SCALE_BYTES, zero_points=zero_point_bytes)
