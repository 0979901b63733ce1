"""Per-point sensitivity: which weights and activation tensors a quantization recipe hurts, and by how much.

Map of this package:

    points.py      what a candidate's artifact quantizes, read off the artifact onnxruntime built: weight points
                   (a node's constants) and activation points (the tensors with a QDQ pair), as replacements of
                   fp32 tensors
    graphs.py      a model of the fp32 graph with some points quantized: the model of one cell
    statistics.py  range statistics, value histograms and SQNR of a point's values
    compute.py     the table: per candidate, calibrate and quantize once, then per point the model with only it
                   and with all but it quantized, scored like a sweep row
    naive.py       the same table computed the slow way (everything from scratch per cell), for the bench
                   and the tests that hold the fast one to it
    table.py       the row's columns and the files: sensitivity.json and sensitivity.csv
    candidates.py  the precisions compared, from the CLI's --bits, --granularity, --activations, --calibration

No streamlit here: the dashboard and the CLI read a SensitivityTable.
"""

from engine.sensitivity.candidates import DEFAULT_ACTIVATIONS, DEFAULT_BITS, DYNAMIC, candidates
from engine.sensitivity.compute import sensitivity_table
from engine.sensitivity.table import CSV_FILE, JSON_FILE, SensitivityTable

__all__ = ["CSV_FILE", "DEFAULT_ACTIVATIONS", "DEFAULT_BITS", "DYNAMIC", "JSON_FILE", "SensitivityTable", "candidates",
           "sensitivity_table"]
