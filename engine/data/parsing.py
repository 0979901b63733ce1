"""What every format parser shares: the ParseRequest it is given, the Parsed arrays it gives back, and how its
messages name model inputs and file keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.tensors import TensorSpec

if TYPE_CHECKING:  # images.py builds on this module, so its options are imported for the annotation only
    from engine.data.images import ImageOptions


@dataclass(frozen=True)
class ParseRequest:
    """Everything a format parser may need."""

    data: bytes
    source: str
    model_inputs: tuple[TensorSpec, ...]
    label_column: str | None
    slice_column: str | None
    image_options: ImageOptions
    max_bytes: int


@dataclass
class Parsed:
    """Arrays as read from the file, before any check against the model."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    slices: np.ndarray | None = None
    label_names: list[str] | None = None


def describe_inputs(specs: Sequence[TensorSpec]) -> str:
    """'x: float32[?, 4]; mask: int64[?, 4]', or 'no inputs'."""
    return "; ".join(spec.describe() for spec in specs) or "no inputs"


def quoted_names(names: Sequence[object], limit: int = 10) -> str:
    """At most `limit` names, quoted, so a message stays one line: 'a', 'b', ... (12 in all)."""
    quoted = [f"'{name}'" for name in list(names)[:limit]]
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(quoted) + more
