"""What the upload widgets accept, and the column names a CSV/Parquet file offers for its label and slice pickers."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import streamlit as st

from dashboard import help_text
from engine.data import SUPPORTED_EXTENSIONS, require_content
from engine.errors import DataError
from engine.text import first_line

MODEL_TYPES = ["onnx", "zip"]  # a zip: a model folder, its .onnx file with the external-data files it names
# What PyTorch models are saved as. The model uploader takes them only to say that this tool takes ONNX, and how to
# get there: it never reads one, since unpickling a file can run any code.
PYTORCH_TYPES = ["pt", "pth", "bin", "safetensors", "ckpt"]
DATASET_TYPES = [extension.lstrip(".") for extension in SUPPORTED_EXTENSIONS]
TABLE_EXTENSIONS = (".csv", ".parquet", ".pq")


def upload_limit_mb() -> int:
    """The server's upload limit, as configured in .streamlit/config.toml (server.maxUploadSize)."""
    return int(st.get_option("server.maxUploadSize"))


def upload_memory_text(limit_mb: int) -> str:
    """What adding a model at the upload limit costs the server in memory, as bench/upload_memory.py measures it:
    Streamlit holds the upload's bytes while the page shows it and the check holds the model parsed, about twice the
    file in all; a zipped folder's weights are also read back from disk while it is written anew, about three times."""
    gigabytes = limit_mb / 1024  # Streamlit's MB are MiB
    return help_text.UPLOAD_MEMORY.format(single=f"{2 * gigabytes:.1f}", folder=f"{3 * gigabytes:.1f}")


def is_pytorch_file(filename: str) -> bool:
    return Path(filename).suffix.lower().lstrip(".") in PYTORCH_TYPES


def is_table(filename: str) -> bool:
    return Path(filename).suffix.lower() in TABLE_EXTENSIONS


def table_columns(data: bytes | Path, filename: str) -> list[str]:
    """The column names only: the header of a CSV, the schema of a Parquet file (uploaded bytes, or a file on the
    server); nothing else is parsed."""
    source = io.BytesIO(require_content(data, filename)) if isinstance(data, bytes) else data
    try:
        if Path(filename).suffix.lower() == ".csv":
            return [str(name) for name in pd.read_csv(source, nrows=0).columns]
        return [str(name) for name in pq.read_schema(source).names]
    except (ValueError, OSError) as error:  # pandas' and pyarrow's parse errors are ValueErrors or OSErrors
        raise DataError(f"{filename} cannot be read as a table: {first_line(error)}") from None

