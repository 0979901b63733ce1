"""What the Export page hands out: a bundle's files (engine.export.bundle) as downloads, and the whole bundle as one
zip. Each file keeps the bundle's name behind the bundle's own name, so a download says what it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dashboard import help_text
from engine.export.bundle import BUNDLE_FILE, CARD_FILE, MODEL_FILE, RECIPE_FILE, REPORT_FILE, SIMULATION_FILE


@dataclass(frozen=True)
class Download:
    """Everything `st.download_button` needs for one file."""

    label: str
    data: bytes
    file_name: str
    mime: str
    help: str


# A bundle file's (label, MIME type, help).
BUNDLE_DOWNLOADS = {
    MODEL_FILE: ("Model (.onnx)", "application/octet-stream", help_text.DOWNLOAD_MODEL),
    SIMULATION_FILE: ("fp32 simulation (.onnx)", "application/octet-stream", help_text.SIMULATED_EXPORT),
    RECIPE_FILE: ("Recipe (.json)", "application/json", help_text.DOWNLOAD_RECIPE),
    REPORT_FILE: ("Report (.html)", "text/html", help_text.DOWNLOAD_REPORT),
    CARD_FILE: ("Model card (.md)", "text/markdown", help_text.DOWNLOAD_CARD),
    BUNDLE_FILE: ("Figures (bundle.json)", "application/json", help_text.DOWNLOAD_FIGURES),
}
ZIP_LABEL = "Download the bundle (.zip)"


def file_downloads(files: dict[str, Path], name: str) -> list[Download]:
    """One download per bundle file, in the bundle's order; `name` is the bundle's (engine.export.history)."""
    downloads = []
    for file_name, path in files.items():
        label, mime, help = BUNDLE_DOWNLOADS[file_name]
        downloads.append(Download(label, Path(path).read_bytes(), f"{name}.{file_name}", mime, help))
    return downloads


def zip_download(file_name: str, data: bytes) -> Download:
    return Download(ZIP_LABEL, data, file_name, "application/zip", help_text.DOWNLOAD_ZIP)
