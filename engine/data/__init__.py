"""A user's validation data: read from a file or an upload, checked against the model's inputs.

Map of this package:

    loaders.py  load_dataset: reads the file (bounded by max_bytes), picks a parser by extension, conforms the result
    parsing.py  what a parser is given (ParseRequest) and gives back (Parsed: raw arrays, not yet checked)
    npz.py      .npz: one array per model input, optional 'labels' and 'slice'; never unpickled
    tables.py   .csv, .parquet and .pq: one row per example, one column per value
    images.py   .zip of class folders holding images, and ImageOptions: how pixels become model input
    zips.py     opening an untrusted zip (image folders and .npz): member count, unpacked size, member paths
    checks.py   every array against the model (row counts, shapes, NaN/inf, safe casts, label kind)
    dataset.py  Dataset: the checked data, ready for onnxruntime

Every problem the user can fix raises DataError with a one-line message.
Uploads are untrusted: NPZ files are never unpickled and zip members are never written to disk.
"""

from engine.data.dataset import Dataset
from engine.data.images import MAX_IMAGE_PIXELS, ImageOptions
from engine.data.loaders import MAX_DATASET_BYTES, SUPPORTED_EXTENSIONS, load_dataset, require_content
from engine.data.zips import MAX_ZIP_MEMBERS

__all__ = [
    "MAX_DATASET_BYTES", "MAX_IMAGE_PIXELS", "MAX_ZIP_MEMBERS", "SUPPORTED_EXTENSIONS", "Dataset", "ImageOptions",
    "load_dataset", "require_content",
]
