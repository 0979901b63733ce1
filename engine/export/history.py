"""Every bundle written is recorded in the workspace's export history, so what was shipped can be listed and any
past bundle written again, byte for byte (its files are stored: engine.workspace.Workspace.record_export)."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from engine.export.bundle import ExportSource, bundle_files, bundle_zip, write_bundle
from engine.export.sources import source_from_job
from engine.recipe import Recipe
from engine.store.records import ExportRecord

UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9_.-]+")


def export_bundle(workspace, source: ExportSource, out: Path, owner: str) -> ExportRecord:
    """Write the bundle into `out` and record it for `owner`."""
    figures = write_bundle(source, out)
    files = {name: Path(out) / name for name in bundle_files(figures)}
    return workspace.record_export(owner, source.job_id, source.recipe, figures, files, figures["model"]["file"])


def export_job_row(workspace, job_id: str, recipe_key: str, owner: str) -> ExportRecord:
    """Bundle a sweep job's row (engine.export.sources.source_from_job) and record it; the bundle is kept only in
    the workspace's store (the dashboard hands its files out from there)."""
    with tempfile.TemporaryDirectory(prefix=".export-", dir=workspace.root) as out:
        return export_bundle(workspace, source_from_job(workspace, job_id, recipe_key), Path(out), owner)


def bundle_name(record: ExportRecord) -> str:
    """A recorded bundle's name: its model and recipe, e.g. 'digits_cnn-w8a8-static-channel-minmax-8c13f46b'. It names
    the zip's folder and downloads, so the uploaded model's name keeps only plain characters (no separators)."""
    model = UNSAFE_IN_NAMES.sub("-", Path(record.figures["base_model"]["name"]).stem).strip(".-") or "model"
    return f"{model}-{Recipe.from_json(record.recipe).slug()}"


def write_files(workspace, export_id: str, out: Path, owner: str | None = None) -> list[str]:
    """Write a recorded bundle's files into `out` again; their names."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = workspace.export_files(export_id, owner)
    for name, stored in files.items():
        shutil.copyfile(stored, out / name)
    return list(files)


def zip_of(workspace, export_id: str, owner: str | None = None) -> tuple[str, bytes]:
    """(file name, bytes) of a recorded bundle as one zip, its files inside a folder named after it."""
    folder = bundle_name(workspace.export(export_id, owner))
    return f"{folder}.zip", bundle_zip(workspace.export_files(export_id, owner), folder)

