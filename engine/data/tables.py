"""CSV and Parquet files: one row per example, one column per value, plus optional label and slice columns."""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from engine.data.parsing import Parsed, ParseRequest, describe_inputs, quoted_names
from engine.errors import DataError
from engine.tensors import TensorSpec
from engine.text import first_line, size_text

_DEFAULT_LABEL_COLUMNS = ("label", "labels", "target")
_DEFAULT_SLICE_COLUMNS = ("slice",)


def parse_csv(request: ParseRequest) -> Parsed:
    return _parse_table(_read_frame(pd.read_csv, "CSV", request), request)


def parse_parquet(request: ParseRequest) -> Parsed:
    _check_parquet_size(request)
    return _parse_table(_read_frame(pd.read_parquet, "Parquet", request), request)


def _check_parquet_size(request: ParseRequest) -> None:
    """Parquet's run-length and dictionary encodings pack repetitive columns into a few bytes: bound the
    decoded table, from the footer, before reading it (8 bytes a cell, a value or a pointer, plus the data)."""
    import pyarrow.parquet  # only Parquet uploads pay for importing pyarrow

    try:
        metadata = pyarrow.parquet.ParquetFile(io.BytesIO(request.data)).metadata
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{request.source} cannot be read as Parquet: {first_line(exc)}") from exc
    cells = metadata.num_rows * metadata.num_columns
    unpacked = 8 * cells + sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if unpacked > request.max_bytes:
        raise DataError(
            f"{request.source} would unpack to {size_text(unpacked)}, over the {size_text(request.max_bytes)} limit"
        )


def _read_frame(reader: Callable[[io.BytesIO], pd.DataFrame], kind: str, request: ParseRequest) -> pd.DataFrame:
    try:
        return reader(io.BytesIO(request.data))
    # pandas' ParserError and pyarrow's ArrowInvalid are ValueErrors; hostile pandas metadata in a Parquet
    # footer raises TypeError or KeyError: any parser failure is the file's fault.
    except Exception as exc:
        raise DataError(f"{request.source} cannot be read as {kind}: {first_line(exc)}") from exc


def _parse_table(frame: pd.DataFrame, request: ParseRequest) -> Parsed:
    """One row per example: every column except label and slice is a value, in file order."""
    spec = _tabular_input(request.model_inputs, request.source)
    label = _pick_column(frame, request.label_column, _DEFAULT_LABEL_COLUMNS, "label", request.source)
    slice_ = _pick_column(frame, request.slice_column, _DEFAULT_SLICE_COLUMNS, "slice", request.source)
    features = [column for column in frame.columns if column not in (label, slice_)]
    needed = math.prod(spec.sample_shape)
    if len(features) != needed:
        raise DataError(
            f"{request.source} has {len(features)} feature columns but input {spec.describe()} "
            f"needs {needed} per row (label column: {label or 'none'}, slice column: {slice_ or 'none'})"
        )
    for column in features:
        _require_numeric(frame[column], request.source)
    values = np.column_stack([frame[column].to_numpy() for column in features])
    return Parsed(
        inputs={spec.name: values.reshape(len(frame), *spec.sample_shape)},
        labels=None if label is None else _label_values(frame[label], request.source),
        slices=None if slice_ is None else _text_values(frame[slice_], request.source),
    )


def _tabular_input(model_inputs: tuple[TensorSpec, ...], source: str) -> TensorSpec:
    if len(model_inputs) != 1 or not all(isinstance(dim, int) for dim in model_inputs[0].sample_shape):
        raise DataError(
            f"{source}: CSV/Parquet fits only a model with one input of fixed sample shape, but the "
            f"model has {describe_inputs(model_inputs)}; use an .npz file with one array per input"
        )
    return model_inputs[0]


def _pick_column(
    frame: pd.DataFrame, requested: str | None, defaults: tuple[str, ...], role: str, source: str
) -> str | None:
    """The requested column (which must exist), else the first default name present, else None."""
    if requested is None:
        return next((name for name in defaults if name in frame.columns), None)
    if requested not in frame.columns:
        raise DataError(f"{role} column '{requested}' not in {source}; columns: {quoted_names(frame.columns)}")
    return requested


def _require_numeric(column: pd.Series, source: str) -> None:
    if pd.api.types.is_numeric_dtype(column) or column.empty:  # no rows: reported by the row check
        return
    unparsable = column[pd.to_numeric(column, errors="coerce").isna() & column.notna()]
    example = f" (e.g. {unparsable.iloc[0]!r})" if len(unparsable) else ""
    raise DataError(f"feature column '{column.name}' in {source} is not numeric{example}")


def _label_values(column: pd.Series, source: str) -> np.ndarray:
    # Numeric labels keep NaN so the common check reports them; text labels become class names.
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy()
    return _text_values(column, source)


def _text_values(column: pd.Series, source: str) -> np.ndarray:
    missing = int(column.isna().sum())
    if missing:
        raise DataError(f"column '{column.name}' in {source} is empty in {missing} of {len(column)} rows")
    # Via object: pandas' own str conversion can size the numpy string dtype too small.
    return column.to_numpy(dtype=object).astype(str)
