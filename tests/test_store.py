"""The workspace store: migrations, content-addressed blobs, and who sees which models and datasets."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from engine.errors import DataError, ModelError
from engine.jobs.tasks import exclusive
from engine.store import Store
from engine.store.blobs import BlobStore, sha256_bytes
from engine.store.db import connect
from engine.store.records import JobState
from engine.store.schema import MIGRATION_2_JOB_STATES, MIGRATIONS, migrate, schema_version
from engine.workspace import Workspace, WorkspaceError
from sample_models.catalog import SAMPLES

DIGITS = SAMPLES["digits_cnn"]
MLP = SAMPLES["breast_cancer_mlp"]


def tables(db_path) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_opening_an_empty_directory_builds_the_current_schema(tmp_path):
    store = Store.open(tmp_path / "ws")
    with store.connect() as conn:
        assert schema_version(conn) == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    assert {"models", "datasets", "jobs", "results", "artifacts", "result_cache"} <= tables(store.db_path)


def test_reopening_is_idempotent_and_keeps_the_data(tmp_path):
    workspace = Workspace.open(tmp_path / "ws")
    model = workspace.add_model(DIGITS.model_path, "digits", owner="a")
    again = Workspace.open(tmp_path / "ws")
    with again.store.connect() as conn:
        assert schema_version(conn) == len(MIGRATIONS)
        assert migrate(conn) == len(MIGRATIONS)
    assert [m.id for m in again.models("a")] == [model.id]


def test_an_older_workspace_gets_only_the_migrations_it_lacks(tmp_path):
    db_path = tmp_path / "ws" / "quantscope.db"
    db_path.parent.mkdir()
    conn = connect(db_path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO models VALUES ('m1', 'a', 'old', '{}', 1, 0, 0)")
    conn.close()
    Store.open(tmp_path / "ws")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("SELECT name FROM models").fetchall() == [("old",)]
    assert "result_cache" in tables(db_path)


def test_the_workspace_comes_from_the_environment_when_no_path_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTSCOPE_HOME", str(tmp_path / "from-env"))
    assert Store.open().root == (tmp_path / "from-env").resolve()
    assert (tmp_path / "from-env" / "quantscope.db").is_file()


def test_blobs_are_stored_once_by_sha256_without_leftovers(tmp_path):
    blobs = BlobStore(tmp_path / "blobs")
    data = b"the same bytes"
    first, second = blobs.put_bytes(data), blobs.put_bytes(data)
    assert first == second == sha256_bytes(data)
    assert blobs.path(first) == tmp_path / "blobs" / first[:2] / first
    files = [path for path in (tmp_path / "blobs").rglob("*") if path.is_file()]
    assert files == [blobs.path(first)] and files[0].read_bytes() == data


def test_putting_a_file_moves_it_in_and_keeps_one_copy(tmp_path):
    artifacts = BlobStore(tmp_path / "artifacts", suffix=".onnx")
    for name in ("a.onnx", "b.onnx"):
        (tmp_path / name).write_bytes(b"model bytes")
    shas = {artifacts.put_file(tmp_path / "a.onnx"), artifacts.put_file(tmp_path / "b.onnx")}
    (sha,) = shas
    assert artifacts.path(sha).name == f"{sha}.onnx" and artifacts.path(sha).read_bytes() == b"model bytes"
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


def test_copying_a_file_in_leaves_it_and_stores_its_bytes_once(tmp_path):
    blobs = BlobStore(tmp_path / "blobs")
    source = tmp_path / "report.html"
    source.write_bytes(b"<html></html>")
    first, second = blobs.put_copy(source), blobs.put_copy(source)
    assert first == second == sha256_bytes(b"<html></html>") and source.read_bytes() == b"<html></html>"
    assert [path for path in (tmp_path / "blobs").rglob("*") if path.is_file()] == [blobs.path(first)]


def test_the_same_model_from_two_owners_is_one_blob_listed_for_each(tmp_path):
    workspace = Workspace.open(tmp_path / "ws")
    mine = workspace.add_model(DIGITS.model_path, "digits", owner="alice")
    theirs = workspace.add_model(DIGITS.model_path.read_bytes(), "my digits", owner="bob")
    assert mine.id == theirs.id == sha256_bytes(DIGITS.model_path.read_bytes())
    assert len(list((workspace.root / "blobs").rglob(mine.id))) == 1
    assert [m.name for m in workspace.models("alice")] == ["digits"]
    assert [m.name for m in workspace.models("bob")] == ["my digits"]
    assert mine.summary["inputs"][0]["name"] == "image" and mine.bytes == DIGITS.model_path.stat().st_size


def test_owners_see_their_own_items_and_the_shared_library(tmp_path):
    workspace = Workspace.open(tmp_path / "ws")
    digits = workspace.add_model(DIGITS.model_path, "digits", owner="alice")
    mlp = workspace.add_model(MLP.model_path, "mlp", owner="bob")
    digits_data = workspace.add_dataset(DIGITS.data_path, "digits.npz", digits.id, owner="alice")
    assert [m.id for m in workspace.models("alice")] == [digits.id]
    assert [m.id for m in workspace.models("bob")] == [mlp.id]
    assert workspace.datasets("bob") == []
    assert {m.id for m in workspace.models(None)} == {digits.id, mlp.id}

    workspace.share_model(digits.id, "alice")
    workspace.share_dataset(digits_data.id, "alice")
    assert {m.id for m in workspace.models("bob")} == {digits.id, mlp.id}
    shared = workspace.datasets("bob", model_id=digits.id)
    assert [d.id for d in shared] == [digits_data.id] and shared[0].shared
    assert workspace.datasets("bob", model_id=mlp.id) == []
    assert [d.id for d in workspace.datasets("carol")] == [digits_data.id]


def test_sharing_shares_only_the_sharers_own_copy(tmp_path):
    """Two owners upload the same bytes; one shares: the other's private copy (and its name) stays private."""
    workspace = Workspace.open(tmp_path / "ws")
    alices = workspace.add_model(DIGITS.model_path, "alice's digits", owner="alice")
    workspace.add_model(DIGITS.model_path, "bob's secret digits", owner="bob")
    workspace.share_model(alices.id, "alice")
    assert [m.name for m in workspace.models("carol")] == ["alice's digits"]
    assert [(m.name, m.shared) for m in workspace.models("bob")] == [("bob's secret digits", False)]
    with pytest.raises(WorkspaceError, match="no model"):
        workspace.share_model(alices.id, "carol")


def test_uploading_again_never_unshares(tmp_path):
    workspace = Workspace.open(tmp_path / "ws")
    model = workspace.add_model(DIGITS.model_path, "digits", owner="alice", shared=True)
    again = workspace.add_model(DIGITS.model_path, "renamed", owner="alice", shared=False)
    assert again.shared and again.name == "digits" and again.id == model.id


def test_a_dataset_is_identified_by_its_bytes_and_how_they_are_read(tmp_path):
    workspace = Workspace.open(tmp_path / "ws")
    model = workspace.add_model(MLP.model_path, "mlp", owner="a")
    csv = MLP.model_path.parent / "breast_cancer_mlp_val.csv"
    plain = workspace.add_dataset(csv, csv.name, model.id, owner="a")
    labelled = workspace.add_dataset(csv, csv.name, model.id, owner="a", label_column="label")
    assert plain.sha256 == labelled.sha256 == sha256_bytes(csv.read_bytes())
    assert plain.id != labelled.id  # two ways of asking to read it: two records, one blob
    assert plain.fingerprint == labelled.fingerprint  # "label" is the default: the same content, the same cache key
    assert plain.summary["rows"] == 285


def test_unusable_uploads_are_refused_before_anything_is_stored(tmp_path):
    workspace = Workspace.open(tmp_path / "ws")
    with pytest.raises(ModelError, match="not an ONNX model"):
        workspace.add_model(b"\x08\x01garbage", "garbage.onnx", owner="a")
    with pytest.raises(ModelError, match="no model file"):
        workspace.add_model(tmp_path / "absent.onnx", "absent", owner="a")
    model = workspace.add_model(DIGITS.model_path, "digits", owner="a")
    with pytest.raises(DataError):
        workspace.add_dataset(MLP.data_path, "mlp.npz", model.id, owner="a")
    assert [path.name for path in (workspace.root / "blobs").rglob("*") if path.is_file()] == [model.id]


def test_the_latency_lock_admits_one_holder_at_a_time(tmp_path):
    lock = tmp_path / "latency.lock"
    acquired = []

    def second_holder():
        with exclusive(lock):
            acquired.append(time.monotonic())

    with exclusive(lock):
        released_at = time.monotonic() + 0.3
        thread = threading.Thread(target=second_holder)
        thread.start()
        time.sleep(0.3)
    thread.join(5)
    assert acquired and acquired[0] >= released_at - 0.01


def test_the_job_states_are_the_ones_the_shipped_schema_accepts():
    """A state the jobs table's CHECK does not list would fail at the first UPDATE: it needs a migration."""
    assert set(MIGRATION_2_JOB_STATES) == {state.value for state in JobState}
    assert {state for state in JobState if state.is_active} == {JobState.QUEUED, JobState.RUNNING}
    assert {state for state in JobState if state.is_resumable} == {
        JobState.INTERRUPTED, JobState.FAILED, JobState.CANCELLED}
    assert all(state.is_terminal != state.is_active for state in JobState)
