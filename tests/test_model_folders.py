"""Real models as users bring them: a model folder (weights as external data) zipped into one upload, and files
opened by path from directories the operator allows."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from engine import model_zip, results
from engine.allowed_paths import ALLOWED_DIRS_VARIABLE
from engine.cli import main
from engine.data import Dataset
from engine.errors import DiskFull, ModelError, WorkspaceError
from engine.measure import open_session
from engine.model import load_model
from engine.export.bundle import write_bundle
from engine.export.sources import source_from_job
from engine.onnx_files import THRESHOLD_VARIABLE, files_bytes, has_external_data, model_files, packed, save_model
from engine.recipe import Recipe
from engine.sweep import default_grid, sweep
from engine.workspace import Workspace
from tests.builders import gemm_model, mlp_model, model_folder_zip, zip_bytes


def _weights(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in proto.graph.initializer}


# --- a model folder as one zip --------------------------------------------------------------------------------------


def test_a_zipped_model_folder_loads_with_its_external_data(tmp_path):
    proto = mlp_model(64)
    upload = model_folder_zip(proto, folder="bert", extra={"__MACOSX/bert/._model.onnx": b"\0\5\26\7"})
    model = load_model(upload, name="bert.zip", scratch=tmp_path)
    assert model.source == "bert.zip"
    for name, weight in _weights(proto).items():
        np.testing.assert_array_equal(_weights(model.proto)[name], weight)
    assert list(tmp_path.iterdir()) == []  # unpacked only while it was checked


@pytest.mark.parametrize("member", ["../escape.onnx", "/etc/evil.onnx", "C:/evil.onnx", "bert\\..\\..\\evil.onnx"])
def test_a_member_path_leaving_the_folder_refuses_the_zip_and_writes_nothing(tmp_path, member):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(ModelError, match="unsafe member path"):
        load_model(zip_bytes({member: gemm_model().SerializeToString()}), name="evil.zip", scratch=scratch)
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["scratch"]


def test_external_data_is_read_from_the_unpacked_folder_only(tmp_path):
    """A model naming '../secret.bin' is refused although that file exists right beside the unpacked folder."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "secret.bin").write_bytes(b"\0" * 96)
    proto = gemm_model()
    weight = next(t for t in proto.graph.initializer if t.name == "W")
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../secret.bin")
    with pytest.raises(ModelError, match="escapes the model's directory"):
        load_model(zip_bytes({"m/model.onnx": proto.SerializeToString()}), name="m.zip", scratch=scratch)


def test_a_zip_bomb_is_refused_from_its_declared_sizes_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(model_zip, "MAX_MODEL_FOLDER_BYTES", 1_000_000)
    bomb = model_folder_zip(gemm_model(), extra={"model/padding.bin": b"\0" * 2_000_000})  # 2 MB in ~2 KB
    assert len(bomb) < 10_000
    with pytest.raises(ModelError, match=r"would unpack to 2\.0 MB, over the 1\.0 MB limit"):
        load_model(bomb, name="bomb.zip", scratch=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_zip_too_big_for_the_disk_says_so_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(model_zip.shutil, "disk_usage", lambda path: SimpleNamespace(free=100))
    with pytest.raises(DiskFull, match="unpacks to .* but the disk holding .* has 100 bytes free"):
        load_model(model_folder_zip(gemm_model()), name="big.zip", scratch=tmp_path)


@pytest.mark.parametrize("members, message", [
    ({"a/model.onnx": b"x", "b/model.onnx": b"y"}, "holds exactly one .onnx file .* this one holds 2"),
    ({"model/weights.bin": b"\0"}, "is not an ONNX model: .* this one holds 0"),
    ({"model/model.onnx": b"x", "model/data.pkl": b"\x80\x02."}, "is a PyTorch file"),
])
def test_a_zip_that_is_not_one_model_folder_is_one_line(tmp_path, members, message):
    with pytest.raises(ModelError, match=message) as raised:
        load_model(zip_bytes(members), name="folder.zip", scratch=tmp_path)
    assert "\n" not in str(raised.value)


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_a_member_written_twice_is_refused(tmp_path):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as writer:
        writer.writestr("m/model.onnx", gemm_model().SerializeToString())
        writer.writestr("m/model.onnx.data", b"\0")
        writer.writestr("m/model.onnx.data", b"\1")  # zipfile warns, but writes it
    with pytest.raises(ModelError, match="member 'm/model.onnx.data' cannot be written"):
        load_model(archive.getvalue(), name="twice.zip", scratch=tmp_path)


def test_without_a_workspace_a_zip_is_checked_but_not_unpacked(tmp_path):
    with pytest.raises(ModelError, match="bert.zip is a zip: a zipped model folder is unpacked in a workspace"):
        load_model(model_folder_zip(gemm_model()), name="bert.zip")


def test_a_zipped_folder_is_stored_self_contained_and_sweeps_end_to_end(tmp_path):
    workspace = Workspace.open(tmp_path / "workspace")
    proto = mlp_model(64)
    record = workspace.add_model(model_folder_zip(proto, folder="mlp"), "mlp.zip", "me")
    stored = load_model(workspace.model_file(record.id))  # one file: the blob needs nothing beside it
    for name, weight in _weights(proto).items():
        np.testing.assert_array_equal(_weights(stored.proto)[name], weight)
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, labels=np.arange(64) % 4)
    data = workspace.add_dataset(buffer.getvalue(), "val.npz", record.id, "me")
    job_id = workspace.submit_sweep(record.id, data.id, [Recipe.fp32(), Recipe.fp16()], "me", batch=None)
    assert workspace.wait(job_id, 120).state == "done"
    table = workspace.results(job_id)
    assert table["error"].isna().all() and (table["ram_b1_peak_bytes"] > 0).all()
    assert list(workspace.store.incoming.iterdir()) == []


def test_the_cli_inspects_a_zipped_folder(tmp_path, capsys):
    (tmp_path / "bert.zip").write_bytes(model_folder_zip(mlp_model(64)))
    assert main(["inspect", str(tmp_path / "bert.zip")]) == 0
    assert "3 quantizable layers" in capsys.readouterr().out


# --- files on the server, by path -----------------------------------------------------------------------------------


@pytest.fixture
def allowed(tmp_path, monkeypatch):
    """An allowed directory with a model in it, a directory beside it that is not allowed, and a workspace."""
    inside, outside = tmp_path / "models", tmp_path / "private"
    inside.mkdir()
    outside.mkdir()
    onnx.save(gemm_model(), inside / "gemm.onnx")
    onnx.save(gemm_model(seed=1), outside / "secret.onnx")
    monkeypatch.setenv(ALLOWED_DIRS_VARIABLE, f"{inside}{os.pathsep}{tmp_path / 'also'}")
    return inside, outside, Workspace.open(tmp_path / "workspace")


def test_by_default_no_path_is_opened(monkeypatch, tmp_path):
    monkeypatch.delenv(ALLOWED_DIRS_VARIABLE, raising=False)
    assert Workspace.server_directories() == []
    with pytest.raises(WorkspaceError, match="opening files by path is off on this server: .* QUANTSCOPE_ALLOWED_DIRS"):
        Workspace.server_file(str(tmp_path))


def test_a_file_inside_an_allowed_directory_is_added(allowed):
    inside, _, workspace = allowed
    path = workspace.server_file(f"{inside}/gemm.onnx")
    assert path == (inside / "gemm.onnx").resolve()
    assert workspace.add_model(path, path.name, "me").name == "gemm.onnx"


@pytest.mark.parametrize("how", ["outside", "dot-dot", "symlink", "symlinked folder"])
def test_a_path_that_leads_outside_the_allowed_directories_is_refused_in_one_line(allowed, how):
    inside, outside, workspace = allowed
    if how == "symlink":
        (inside / "link.onnx").symlink_to(outside / "secret.onnx")
    if how == "symlinked folder":
        (inside / "shortcut").symlink_to(outside)
    typed = {"outside": f"{outside}/secret.onnx", "dot-dot": f"{inside}/../private/secret.onnx",
             "symlink": f"{inside}/link.onnx", "symlinked folder": f"{inside}/shortcut/secret.onnx"}[how]
    with pytest.raises(WorkspaceError) as raised:
        workspace.server_file(typed)
    assert str(raised.value) == f"{typed} is outside the directories this server allows ({inside}, " \
                                f"{inside.parent / 'also'})"


def test_a_missing_or_relative_path_is_one_line(allowed):
    inside, outside, workspace = allowed
    with pytest.raises(WorkspaceError, match="^no file at"):
        workspace.server_file(f"{inside}/missing.onnx")
    with pytest.raises(WorkspaceError, match="outside the directories"):  # whether it exists is not said
        workspace.server_file(f"{outside}/missing.onnx")
    with pytest.raises(WorkspaceError, match="give the file's full path"):
        workspace.server_file("models/gemm.onnx")


# --- past protobuf's 2 GiB: external data in the workspace, artifacts as folders ---------------------------------

LOW_THRESHOLD = 100_000  # bytes: the 270 kB model below is "past 2 GB" for these tests


def test_the_writer_keeps_weights_beside_the_file_past_the_threshold_and_leaves_the_proto_alone(tmp_path, monkeypatch):
    proto = mlp_model(256)
    before = proto.SerializeToString()
    assert save_model(proto, tmp_path / "small.onnx") == [tmp_path / "small.onnx"]  # under 2 GiB: one file
    # streamed tensor by tensor, in another field order: the same message, of the same length
    assert onnx.load(tmp_path / "small.onnx") == proto and (tmp_path / "small.onnx").stat().st_size == len(before)
    monkeypatch.setenv(THRESHOLD_VARIABLE, str(LOW_THRESHOLD))
    files = save_model(proto, tmp_path / "big.onnx")
    assert [file.name for file in files] == ["big.onnx", "big.onnx.data"] == [file.name for file in model_files(files[0])]
    assert files[0].stat().st_size < 5_000 and files_bytes(files[0]) > len(before) - 1_000
    assert proto.SerializeToString() == before
    loaded = onnx.load(files[0])
    for name, weight in _weights(proto).items():
        np.testing.assert_array_equal(_weights(loaded)[name], weight)


def test_a_model_past_the_threshold_stays_external_and_sweeps_end_to_end(tmp_path, monkeypatch):
    """A zipped model folder, its weights past the (lowered) threshold: stored as a folder blob, swept with every
    kind of realiser, each artifact a folder whose download unpacks anywhere and runs in a fresh session."""
    monkeypatch.setenv(THRESHOLD_VARIABLE, str(LOW_THRESHOLD))
    workspace = Workspace.open(tmp_path / "workspace")
    record = workspace.add_model(model_folder_zip(mlp_model(256), folder="big"), "big.zip", "me")
    stored = workspace.model_file(record.id)
    assert [file.name for file in model_files(stored)] == ["model.onnx", "model.onnx.data"]
    assert stored.parent.name == record.id and record.bytes == files_bytes(stored) > LOW_THRESHOLD
    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, labels=np.arange(200) % 4)
    data = workspace.add_dataset(buffer.getvalue(), "val.npz", record.id, "me")
    recipes = {recipe.short_name(): recipe for recipe in default_grid()}
    chosen = [recipes[name] for name in ("fp32", "fp16", "W8A8 static channel minmax", "W8A8 dynamic channel",
                                         "W4 weight-only group32", "W3 weight-only channel")]
    job_id = workspace.submit_sweep(record.id, data.id, chosen, "me", batch=None)
    assert workspace.wait(job_id, 240).state == "done"
    table = workspace.results(job_id)
    assert table["error"].isna().all(), table["error"].tolist()
    feed = {"x": x[:16]}
    for _, row in table.iterrows():
        artifact = Path(row["artifact"])
        assert [file.name for file in model_files(artifact)] == [artifact.name, f"{artifact.name}.data"]
        if not row["simulated"]:
            assert row["size_bytes"] == files_bytes(artifact) and row["ram_b1_peak_bytes"] > 0
        elsewhere = tmp_path / "downloads" / row["recipe_key"][:12]
        zipfile.ZipFile(io.BytesIO(packed(artifact))).extractall(elsewhere)
        (unpacked,) = elsewhere.glob("*.onnx")
        np.testing.assert_array_equal(open_session(unpacked).run(None, feed)[0],
                                      open_session(artifact).run(None, feed)[0])
    real = table[~table["simulated"]].iloc[-1]
    bundle = tmp_path / "bundle"
    write_bundle(source_from_job(workspace, job_id, real["recipe_key"]), bundle)  # the model ships with its weights
    np.testing.assert_array_equal(open_session(bundle / "model.onnx").run(None, feed)[0],
                                  open_session(Path(real["artifact"])).run(None, feed)[0])
    exported = tmp_path / "out"
    results.export_results(table, stored, exported)  # what `quantscope sweep --out` writes
    for path in [exported / "reference.onnx", *(exported / "artifacts").glob("*.onnx")]:
        assert len(model_files(path)) == 2 and open_session(path).run(None, feed)[0].shape == (16, 4)


@pytest.mark.slow
def test_a_generated_model_past_2_gib_is_stored_swept_and_downloaded_as_a_folder(tmp_path):
    """Once, at the real threshold: two 16,500 x 16,500 float layers, 2.2 GB of weights."""
    (tmp_path / "huge").mkdir()
    save_model(mlp_model(16_500, depth=3), tmp_path / "huge" / "model.onnx", external=True)
    workspace = Workspace.open(tmp_path / "workspace")
    record = workspace.add_model(tmp_path / "huge" / "model.onnx", "huge.onnx", "me")
    stored = workspace.model_file(record.id)
    assert has_external_data(stored) and record.bytes > 2**31
    model = load_model(stored)
    x = np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32)
    dynamic = next(recipe for recipe in default_grid() if recipe.short_name() == "W8A8 dynamic channel")
    table = sweep(model, Dataset({"x": x}, np.arange(8) % 4, None, "generated"), [Recipe.fp32(), dynamic],
                  tmp_path / "sweep", batch=None)
    assert results.failed_rows(table).empty
    for artifact in table["artifact"]:
        assert has_external_data(Path(artifact)) and open_session(artifact).run(None, {"x": x})[0].shape == (8, 4)
