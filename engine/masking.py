"""Padding is not signal: which positions fidelity metrics count, for models fed padded sequences.

A text model exported the Hugging Face way takes an attention mask beside its token ids: 1 for a real
token, 0 for padding, [batch, sequence]. Its per-token outputs ([batch, sequence, ...]) at padded positions
are whatever the model computes there, which nobody reads; on short sentences padded to 128 they are most of
the numbers. Fidelity to fp32 (cosine, SQNR) computed over every position then says more about padding than
about the sentence. With a mask, fidelity metrics count only real tokens.

The mask input is detected (`AUTO`): an input of 0/1 values shaped [batch, sequence] whose sequence axis
matches the reference output's second axis, preferring one whose name says "mask". It can be named
(`--mask-input NAME`) or switched off (`--no-mask`, `NO_MASK`). The choice and why it was made travel with
every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.data import Dataset
from engine.errors import DataError

AUTO = "auto"  # detect an attention-mask-like input
NO_MASK = "none"  # count every position


@dataclass(frozen=True)
class Masking:
    input: str | None  # the mask input's name; None: every position counts
    how: str  # why, in words

    def describe(self) -> str:
        return f"{self.input} ({self.how})" if self.input else f"every position counts ({self.how})"

    def mask(self, dataset: Dataset) -> np.ndarray | None:
        """[rows, sequence] booleans, True at real tokens; None when every position counts."""
        return None if self.input is None else dataset.inputs[self.input].astype(bool)


def _is_mask_like(values: np.ndarray) -> bool:
    """0/1 values shaped [batch, sequence]."""
    return values.ndim == 2 and values.dtype.kind in "biuf" and np.isin(values, (0, 1)).all()


def _fits(values: np.ndarray, output: np.ndarray) -> bool:
    """0/1 values shaped [batch, sequence], with that sequence axis on a per-position output."""
    return output.ndim >= 3 and output.shape[:2] == values.shape and _is_mask_like(values)


def choose_masking(dataset: Dataset, reference_output: np.ndarray, request: str = AUTO) -> Masking:
    """The masking for a sweep: `request` is AUTO, NO_MASK or the name of the mask input."""
    if request == NO_MASK:
        return Masking(None, "masking switched off")
    if request != AUTO:
        if request not in dataset.inputs:
            raise DataError(f"the model has no input {request!r} to mask fidelity with; "
                            f"its inputs are {', '.join(dataset.inputs)}")
        if not _fits(dataset.inputs[request], reference_output):
            raise DataError(f"input {request!r} cannot mask the output: it must hold 0/1 values shaped [batch, "
                            f"sequence] with the sequence axis of an output shaped {list(reference_output.shape)}")
        return Masking(request, "chosen")
    candidates = [name for name, values in dataset.inputs.items() if _fits(values, reference_output)]
    if not candidates:
        return Masking(None, "no attention-mask-like input")
    named = [name for name in candidates if "mask" in name.lower()]
    chosen = (named or candidates)[0]
    return Masking(chosen, "detected: 0/1 values matching the output's sequence axis")


def choose_padding(dataset: Dataset, request: str = AUTO) -> Masking:
    """Which input marks padding inside the model, for statistics of its intermediate tensors (engine.sensitivity).

    As choose_masking, but no output needs a sequence axis (a classifier pools it away while its hidden states keep
    it), so a detected input must also be called a mask: token_type_ids hold 0/1 values shaped alike."""
    if request == NO_MASK:
        return Masking(None, "masking switched off")
    if request != AUTO:
        if request not in dataset.inputs:
            raise DataError(f"the model has no input {request!r} to mark padding with; "
                            f"its inputs are {', '.join(dataset.inputs)}")
        if not _is_mask_like(dataset.inputs[request]):
            raise DataError(f"input {request!r} cannot mark padding: it must hold 0/1 values shaped [batch, sequence]")
        return Masking(request, "chosen")
    named = [name for name, values in dataset.inputs.items() if "mask" in name.lower() and _is_mask_like(values)]
    if not named:
        return Masking(None, "no input called a mask with 0/1 values shaped [batch, sequence]")
    return Masking(named[0], "detected: called a mask, 0/1 values shaped [batch, sequence]")


def apply_mask(outputs: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """`outputs` with padded positions zeroed: a zero contributes nothing to dot products, norms, signal or noise,
    so per-row cosine and SQNR then count real tokens only."""
    if mask is None:
        return outputs
    shape = mask.shape + (1,) * (outputs.ndim - mask.ndim)
    return np.where(mask.reshape(shape), outputs, 0).astype(outputs.dtype, copy=False)
