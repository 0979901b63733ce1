"""The checks every format shares: a Parsed file becomes a Dataset only if its row counts, shapes, values,
dtypes and labels fit the model."""

from __future__ import annotations

import numpy as np

from engine.data.dataset import Dataset
from engine.data.parsing import Parsed
from engine.errors import DataError
from engine.tensors import TensorSpec, shared_row_count
from engine.text import shape_text

# Source dtype kind -> target kinds reached without changing meaning (b=bool, i/u=int, f=float);
# the value range is checked on top, so e.g. 300 never silently becomes a uint8.
_SAFE_CASTS = {"b": "biuf", "i": "iuf", "u": "iuf", "f": "f"}


def conform(parsed: Parsed, model_inputs: tuple[TensorSpec, ...], source: str) -> Dataset:
    """The Dataset the model can run on, or a DataError naming the first thing about the file that does not fit."""
    _check_row_counts(parsed, source)
    inputs = {spec.name: _conform_input(parsed.inputs[spec.name], spec, source) for spec in model_inputs}
    labels, label_names = _conform_labels(parsed.labels, parsed.label_names, source)
    slices = None if parsed.slices is None else _one_per_row(parsed.slices, "slice", source).astype(str)
    return Dataset(inputs, labels, slices, source, label_names)


def _check_row_counts(parsed: Parsed, source: str) -> None:
    arrays = {f"input '{name}'": array for name, array in parsed.inputs.items()}
    arrays.update({"labels": parsed.labels, "slice": parsed.slices})
    shared_row_count(arrays, DataError, source)


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
