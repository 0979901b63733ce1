"""Errors a user can fix. Each carries a one-line message; the CLI prints it without a traceback."""

import errno


class QuantscopeError(Exception):
    """Base of every user-facing error: the message is one line that says what is wrong."""


class ModelError(QuantscopeError):
    """The ONNX model cannot be read, checked or is unsafe."""


class DataError(QuantscopeError):
    """The validation data cannot be read or does not fit the model."""


class RecipeError(QuantscopeError):
    """A quantization recipe is inconsistent."""


class WorkspaceError(QuantscopeError):
    """A workspace request that cannot be carried out: an unknown model, dataset or job, a job in the wrong
    state, bad job parameters."""


class ExportError(QuantscopeError):
    """A PyTorch module cannot be built from the user's code or exported to ONNX (`quantscope from-torch`)."""


class DiskFull(QuantscopeError):
    """The disk holding the workspace is full: nothing more can be stored until space is freed."""


def is_disk_full(error: BaseException) -> bool:
    """Is this error the disk being full (no space left, or over quota), however it reached us?"""
    return isinstance(error, DiskFull) or (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT))


class BundleError(QuantscopeError):
    """An export bundle cannot be read or checked as given: a missing or malformed file, data it was not measured
    on (`quantscope verify`)."""
