"""What a model expects at an input or gives at an output: the contract between model and data.

Also the one check that arrays fed or scored together line up: shared_row_count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

# A dim is a fixed size, or a name / None for a dimension the model leaves open (e.g. batch).
Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str  # numpy dtype name, e.g. "float32", "int64"

    @property
    def batch_is_dynamic(self) -> bool:
        return bool(self.shape) and not isinstance(self.shape[0], int)

    @property
    def sample_shape(self) -> tuple[Dim, ...]:
        """Shape of one example: everything after the batch dimension."""
        return self.shape[1:]

    def describe(self) -> str:
        dims = ", ".join("?" if not isinstance(d, int) else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"

    @classmethod
    def from_dict(cls, data: dict) -> TensorSpec:
        """The spec from its dataclasses.asdict form, as a stored model summary holds it."""
        return cls(data["name"], tuple(data["shape"]), data["dtype"])

    @classmethod
    def from_value_info(cls, value_info: onnx.ValueInfoProto) -> TensorSpec:
        tensor_type = value_info.type.tensor_type
        dims: list[Dim] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            else:
                dims.append(dim.dim_param or None)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        return cls(value_info.name, tuple(dims), dtype)


def shared_row_count(arrays: Mapping[str, np.ndarray | None], error: type[Exception], where: str) -> int:
    """The row count N every named array has along its first (batch) dimension; None entries are absent.

    Raises ``error`` when an array is a single value, the counts differ or there are no rows: DataError for a
    user's file, ValueError for a caller's bug. ``where`` names whose arrays they are, e.g. the file name.
    """
    counts = {}
    for name, array in arrays.items():
        if array is None:
            continue
        if array.ndim == 0:
            raise error(f"{name} in {where} is a single value; expected one row per example")
        counts[name] = len(array)
    if len(set(counts.values())) > 1:
        found = ", ".join(f"{name} has {rows}" for name, rows in counts.items())
        raise error(f"row counts differ in {where}: {found}")
    rows = max(counts.values(), default=0)
    if rows == 0:
        raise error(f"{where} has no rows")
    return rows


def tensor_bytes(tensor: onnx.TensorProto) -> int:
    """The bytes a numeric tensor's values take, from its shape and type alone (reading its data would copy it);
    0 for strings and types numpy has no size for."""
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return 0
    return 0 if tensor.data_type == onnx.TensorProto.STRING else int(np.prod(tensor.dims)) * itemsize
