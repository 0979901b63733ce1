"""The embedded store: a workspace directory holding one SQLite database and content-addressed files.

Map of this package:

    home.py     where the workspace lives (explicit path, $QUANTSCOPE_HOME, or ./workspace) and its layout
    db.py       opening a connection (WAL, busy timeout, foreign keys) and write transactions
    schema.py   the tables, as an ordered list of migrations applied on open (PRAGMA user_version)
    blobs.py    files stored once by sha256, written atomically
    records.py  the typed rows callers see: ModelRecord, DatasetRecord, JobInfo
    library.py  uploaded models and datasets, per owner, with the shared flag
    jobs.py     jobs, their progress, and their committed result rows
    cache.py    stored artifacts and the result cache (one row per configuration, never computed twice)
    exports.py  the export history: every bundle written, its figures and its stored files

Nothing here imports onnxruntime: the store is cheap to open from any process.
"""

from engine.store.home import Store, workspace_root
from engine.store.records import DatasetRecord, ExportRecord, JobInfo, ModelRecord

__all__ = ["DatasetRecord", "ExportRecord", "JobInfo", "ModelRecord", "Store", "workspace_root"]
