"""How the engine writes a few recurring things in words: an error's first line, a byte count, a shape.

One home for each, so an error message, a CLI table and the dashboard say them alike.
"""

from __future__ import annotations

from collections.abc import Sequence

KB, MB, GB = 1000, 1000**2, 1000**3  # decimal units, as file managers and browsers show sizes
MAX_LINE = 200  # characters of a parser's message we repeat: hostile input can make it arbitrarily long

# How a PyTorch model becomes one quantscope takes: the model loader's error for a PyTorch file and the dashboard
# both say it.
FROM_TORCH_COMMAND = "quantscope from-torch FILE.py:FACTORY --example-shape 1,3,224,224 --out model.onnx"


def pytorch_refusal(label: str) -> str:
    """What the model loader says of a PyTorch file (read no further than its first bytes or its zip's names)."""
    return f"{label} is a PyTorch file, not an ONNX model: export it with torch.onnx.export or `{FROM_TORCH_COMMAND}`"


def first_line(error: BaseException) -> str:
    """The error's message up to its first line break, at most MAX_LINE characters; its type's name when it has
    no message."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."


def error_line(error: BaseException) -> str:
    """'TypeName: first line of the message', the one line a failed row or job shows."""
    return f"{type(error).__name__}: {first_line(error)}" if str(error).strip() else type(error).__name__


def size_unit(largest_bytes: float) -> tuple[str, int]:
    """(label, bytes per unit) that keeps sizes up to `largest_bytes` readable: KB below a megabyte, MB below a
    gigabyte, else GB."""
    for label, unit in (("GB", GB), ("MB", MB)):
        if largest_bytes >= unit:
            return label, unit
    return "KB", KB


def size_text(n_bytes: float) -> str:
    """E.g. '1.6 MB', '7.5 KB', '144 bytes' (a count under a kilobyte is exact)."""
    if n_bytes < KB:
        return f"{n_bytes:,.0f} bytes"
    label, unit = size_unit(n_bytes)
    return f"{n_bytes / unit:,.1f} {label}"


def shape_text(dims: Sequence[object]) -> str:
    """'[?, 1, 8, 8]': '?' marks a size left open (a named or unknown dimension, such as the batch)."""
    return "[" + ", ".join(str(dim) if isinstance(dim, int) else "?" for dim in dims) + "]"


def counted(n: int, noun: str) -> str:
    """'1 node', '3 nodes': a count with its noun, plural when it is not one."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def quoted(name: str, limit: int = 80) -> str:
    """A user-supplied name in quotes for an error message, cut to `limit` characters: names can be arbitrarily long."""
    return repr(name if len(name) <= limit else name[: limit - 3] + "...")


def listed(names: Sequence[str], limit: int = 5) -> str:
    """"'a', 'b' and 3 more": the first `limit` names quoted, and how many more there are."""
    shown = ", ".join(quoted(name) for name in names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"
