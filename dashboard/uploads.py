"""What the upload widgets accept, and the column names a CSV/Parquet file offers for its label and slice pickers."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import streamlit as st

from engine.data import SUPPORTED_EXTENSIONS, require_content
from engine.errors import DataError
from engine.text import first_line

MODEL_TYPES = ["onnx"]
# What PyTorch models are saved as. The model uploader takes them only to say that this tool takes ONNX, and how to
# get there: it never reads one, since unpickling a file can run any code.
PYTORCH_TYPES = ["pt", "pth", "bin", "safetensors", "ckpt"]
DATASET_TYPES = [extension.lstrip(".") for extension in SUPPORTED_EXTENSIONS]
TABLE_EXTENSIONS = (".csv", ".parquet", ".pq")


def upload_limit_mb() -> int:
    """The server's upload limit, as configured in .streamlit/config.toml (server.maxUploadSize)."""
    return int(st.get_option("server.maxUploadSize"))


def is_pytorch_file(filename: str) -> bool:
    return Path(filename).suffix.lower().lstrip(".") in PYTORCH_TYPES


def is_table(filename: str) -> bool:
    return Path(filename).suffix.lower() in TABLE_EXTENSIONS


def table_columns(data: bytes, filename: str) -> list[str]:
    """The column names only: the header of a CSV, the schema of a Parquet file; nothing else is parsed."""
    require_content(data, filename)
    try:
        if Path(filename).suffix.lower() == ".csv":
            return [str(name) for name in pd.read_csv(io.BytesIO(data), nrows=0).columns]
        return [str(name) for name in pq.read_schema(io.BytesIO(data)).names]
    except (ValueError, OSError) as error:  # pandas' and pyarrow's parse errors are ValueErrors or OSErrors
        raise DataError(f"{filename} cannot be read as a table: {first_line(error)}") from None

