"""Dataset: validation data ready for onnxruntime, with batching, a summary for reports and a content fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


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
        return self.rows(slice(0, n))

    def rows(self, which: slice) -> Dataset:
        """The rows `which` selects, e.g. slice(128, None) for all but the first 128; views, not copies."""
        return Dataset(
            inputs={name: array[which] for name, array in self.inputs.items()},
            labels=None if self.labels is None else self.labels[which],
            slices=None if self.slices is None else self.slices[which],
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


def _value_counts(values: np.ndarray) -> dict:
    uniques, counts = np.unique(values, return_counts=True)
    return {value.item(): int(count) for value, count in zip(uniques, counts)}
