"""Job kinds: what a runner can run, by the `kind` column of its job.

A kind is one module in this package holding a JobRun subclass decorated with `@register`; the runner finds
it by name (`kind_named`), so adding a kind (sensitivity, mixed precision, export) touches nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil

from engine.jobs.run import JobRun

_KINDS: dict[str, type[JobRun]] = {}


def register(kind: type[JobRun]) -> type[JobRun]:
    """Class decorator: make `kind` runnable as jobs whose kind is `kind.name`."""
    if kind.name in _KINDS and _KINDS[kind.name] is not kind:
        raise ValueError(f"two job kinds are called {kind.name!r}")
    _KINDS[kind.name] = kind
    return kind


def kind_named(name: str) -> type[JobRun] | None:
    """The registered kind called `name`, importing every module of this package first; None if none is."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return _KINDS.get(name)
