"""Mutated and random ONNX, NPZ, CSV, Parquet and ZIP bytes fed to every loader of uploaded files.

Two properties, each checked on every input:

* safety: nothing is unpickled, and no file is written outside the workspace (the working directory, the
  system temp directory and the model's own directory stay as they were);
* the error contract: a loader returns its object or raises the project's own error (a QuantscopeError)
  whose message is one non-empty line; any other exception is a bug.

Inputs start from small valid seed files and are mutated (bit flips, extreme integers, inserts, deletes,
truncation, spliced chunks, format tokens), or are fully random. Runs are derandomized, so CI tries the same
inputs every time; `pytest --hypothesis-show-statistics` shows how many each test tried. Inputs the fuzzer
found that broke the contract are pinned below as explicit examples and as their own tests.
"""

from __future__ import annotations

import builtins
import inspect
import io
import json
import os
import pickle
import re
import struct
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dashboard.uploads import table_columns
from engine import DataError, ModelError, QuantscopeError, load_dataset, load_model
from engine.workspace import Workspace
from sample_models.catalog import SAMPLES
from tests.builders import gemm_model, gray_png, model_folder_zip, zip_bytes

MLP = SAMPLES["breast_cancer_mlp"]
DIGITS = SAMPLES["digits_cnn"]
MLP_INPUTS = load_model(MLP.model_path).summary.inputs  # features: float32[?, 30]
DIGITS_INPUTS = load_model(DIGITS.model_path).summary.inputs  # image: float32[?, 1, 8, 8]
MAX_MESSAGE = 300

FUZZ = settings(
    max_examples=int(os.environ.get("QUANTSCOPE_FUZZ_EXAMPLES", 600)),
    deadline=None,
    derandomize=True,  # the same inputs on every run, so a CI failure reproduces
    database=None,  # and nothing is written to .hypothesis/
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- seeds: small valid files of each format -----------------------------------------------------------------------


def npz_seed(compressed: bool) -> bytes:
    arrays = np.load(MLP.data_path)
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, features=arrays["features"][:4], labels=arrays["labels"][:4])
    return buffer.getvalue()


CSV_SEED = b"".join(MLP.data_path.with_name("breast_cancer_mlp_val.csv").read_bytes().splitlines(keepends=True)[:6])
CSV_FRAME = pd.read_csv(io.BytesIO(CSV_SEED))


def parquet_seed(**options) -> bytes:
    buffer = io.BytesIO()
    CSV_FRAME.to_parquet(buffer, index=False, **options)
    return buffer.getvalue()






IMAGES = {"0/a.png": gray_png(0), "3/b.png": gray_png(120), "7/c.png": gray_png(255)}
NPZ_SEEDS = [npz_seed(compressed=False), npz_seed(compressed=True)]
CSV_SEEDS = [CSV_SEED]
PARQUET_SEEDS = [parquet_seed(), parquet_seed(compression=None)]
ZIP_SEEDS = [zip_bytes(IMAGES, zipfile.ZIP_DEFLATED), zip_bytes(IMAGES)]
ONNX_SEEDS = [gemm_model().SerializeToString(), MLP.model_path.read_bytes()]
MODEL_ZIP_SEEDS = [model_folder_zip(gemm_model()), model_folder_zip(gemm_model(), folder="a/b", data_file="w.bin")]
EXTERNAL_WEIGHTS = "weights.bin"
LEAK = "../leak.bin"  # as long as EXTERNAL_WEIGHTS, so swapping one for the other keeps protobuf's lengths right


def model_with_external_weights() -> tuple[bytes, bytes]:
    """(the .onnx bytes, the weights file's bytes) of the tiny Gemm model saved with external data."""
    with tempfile.TemporaryDirectory() as directory:
        onnx.save(gemm_model(), f"{directory}/m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                  location=EXTERNAL_WEIGHTS, size_threshold=0)
        return Path(directory, "m.onnx").read_bytes(), Path(directory, EXTERNAL_WEIGHTS).read_bytes()


EXTERNAL_MODEL, EXTERNAL_DATA = model_with_external_weights()


def test_every_seed_loads():
    """The fuzzer starts from valid files: a mutation that still loads is a real test of the happy path."""
    for seed in NPZ_SEEDS:
        assert len(load_dataset(seed, MLP_INPUTS, filename="seed.npz")) == 4
    assert len(load_dataset(CSV_SEED, MLP_INPUTS, filename="seed.csv")) == 5
    for seed in PARQUET_SEEDS:
        assert len(load_dataset(seed, MLP_INPUTS, filename="seed.parquet")) == 5
    for seed in ZIP_SEEDS:
        assert load_dataset(seed, DIGITS_INPUTS, filename="seed.zip").labels.tolist() == [0, 3, 7]
    for seed in ONNX_SEEDS:
        assert load_model(seed, name="seed.onnx").summary.layers
    with tempfile.TemporaryDirectory() as scratch:
        for seed in MODEL_ZIP_SEEDS:
            assert load_model(seed, name="seed.zip", scratch=Path(scratch)).summary.layers
    assert table_columns(CSV_SEED, "seed.csv") == list(CSV_FRAME.columns)
    assert table_columns(PARQUET_SEEDS[0], "seed.parquet") == list(CSV_FRAME.columns)


# --- mutations -----------------------------------------------------------------------------------------------------

EXTREME_INTEGERS = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
TOKENS = [b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PAR1", b"\x93NUMPY", b"\x89PNG", b"../", b"/", b"\\",
          b"\x00", b"\n", b'"', b",", b"nan", b"inf", b"-1e999", b"object", b"|O", b"shape", b"\xff\xfe"]


@st.composite
def hostile_bytes(draw, seeds: list[bytes], swaps: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A seed mutated one to four times, or (one time in ten) random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=2048))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(["flip", "integer", "insert", "delete", "truncate", "splice", "token", "swap"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if operation == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "integer":  # sizes, counts and offsets in headers are little-endian integers
            width = draw(st.sampled_from([1, 2, 4]))
            value = draw(st.sampled_from(EXTREME_INTEGERS)) & ((1 << 8 * width) - 1)
            data[at:at + width] = value.to_bytes(width, "little")
        elif operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif operation == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif operation == "truncate":
            del data[at:]
        elif operation == "splice":  # a chunk of this or another seed, copied over or inserted
            source = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, len(source)))
            chunk = source[start:start + draw(st.integers(1, 512))]
            if draw(st.booleans()):
                data[at:at + len(chunk)] = chunk
            else:
                data[at:at] = chunk
        elif operation == "token":
            token = draw(st.sampled_from(TOKENS))
            data[at:at + len(token)] = token
        elif operation == "swap" and swaps:  # replace a meaningful string with a same-length hostile one
            old, new = draw(st.sampled_from(swaps))
            data = bytearray(bytes(data).replace(old, new, 1))
    return bytes(data)


# --- guards: nothing unpickled, nothing written outside the workspace ---------------------------------------------


class Forbidden(BaseException):
    """Stops a forbidden action. A BaseException, so no loader's `except Exception` can swallow it."""


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


@dataclass
class Guard:
    workspace: Path
    armed: bool = False
    events: list[str] = field(default_factory=list)

    def forbid(self, what: str) -> None:
        if self.armed:
            self.events.append(what)
            raise Forbidden(what)

    def check_write(self, target, writes: bool, dir_fd: int | None = None) -> None:
        if not (self.armed and writes) or isinstance(target, int):  # an int is a descriptor opened earlier
            return
        if dir_fd is not None:
            self.forbid(f"write relative to a directory descriptor: {target!r}")  # cannot tell where: refuse
        elif not Path(os.path.abspath(os.fsdecode(target))).is_relative_to(self.workspace):
            self.forbid(f"write to {target!r}")


@pytest.fixture
def guard(tmp_path, monkeypatch) -> Guard:
    """While armed: unpickling, numpy loading with allow_pickle, and opening a file for writing outside the
    workspace are recorded and stopped. The working and temp directories are fresh ones outside the workspace."""
    workspace = tmp_path / "workspace"
    for directory in ("workspace", "cwd", "temp", "models"):
        (tmp_path / directory).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "temp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    monkeypatch.setenv("QUANTSCOPE_HOME", str(workspace))
    active = Guard(workspace.resolve())

    def refusing(function, what):
        def refused(*args, **kwargs):
            active.forbid(what)
            return function(*args, **kwargs)
        return refused

    monkeypatch.setattr(pickle, "load", refusing(pickle.load, "pickle.load"))
    monkeypatch.setattr(pickle, "loads", refusing(pickle.loads, "pickle.loads"))

    class GuardedUnpickler(pickle.Unpickler):
        def __init__(self, *args, **kwargs):
            active.forbid("pickle.Unpickler")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pickle, "Unpickler", GuardedUnpickler)

    def without_pickle(function, what):
        signature = inspect.signature(function)

        def checked(*args, **kwargs):
            allow_pickle = signature.bind(*args, **kwargs).arguments.get("allow_pickle", False)
            if allow_pickle is not False:
                active.forbid(f"{what}(allow_pickle={allow_pickle!r})")
            return function(*args, **kwargs)
        return checked

    monkeypatch.setattr(np, "load", without_pickle(np.load, "numpy.load"))
    monkeypatch.setattr(np.lib.format, "read_array", without_pickle(np.lib.format.read_array, "read_array"))

    open_file, open_descriptor = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        active.check_write(file, any(letter in mode for letter in "wax+"))
        return open_file(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
        active.check_write(path, bool(flags & WRITE_FLAGS), dir_fd)
        return open_descriptor(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    return active


def files_outside(root: Path, workspace: Path) -> dict[str, tuple[int, int]]:
    """Every file under root but outside the workspace, with its size and modification time."""
    found = {}
    for directory, subdirectories, names in os.walk(root):
        if Path(directory) == workspace:
            subdirectories.clear()
            continue
        for name in names:
            status = os.lstat(os.path.join(directory, name))
            found[os.path.join(directory, name)] = (status.st_size, status.st_mtime_ns)
    return found


def attempt(guard: Guard, load: Callable[[], object]) -> object:
    """Run one load with the guards armed; returns the loaded object or the exception it raised."""
    root = guard.workspace.parent
    before = files_outside(root, guard.workspace)
    guard.armed = True
    try:
        outcome = load()
    except Forbidden:
        outcome = None
    except Exception as error:  # judged by the caller: the safety checks below come first
        outcome = error
    finally:
        guard.armed = False
    assert guard.events == [], f"forbidden: {guard.events}"
    assert files_outside(root, guard.workspace) == before, "a file outside the workspace appeared or changed"
    return outcome


def assert_contract(outcome: object) -> None:
    if isinstance(outcome, BaseException):
        if not isinstance(outcome, QuantscopeError):
            raise AssertionError(f"not the project's error: {type(outcome).__name__}: {outcome}") from outcome
        message = str(outcome)
        assert message.strip(), f"{type(outcome).__name__} without a message"
        assert "\n" not in message and len(message) <= MAX_MESSAGE, f"not one short line: {message!r}"


def test_the_guards_catch_unpickling_and_writes_outside_the_workspace(guard):
    """The safety checks can fail: each forbidden action below is caught, and writing in the workspace is not."""
    npz = io.BytesIO()
    np.savez(npz, x=np.zeros(1))
    forbidden_actions = {
        "pickle.loads": lambda: pickle.loads(pickle.dumps(1)),
        "pickle.Unpickler": lambda: pickle.Unpickler(io.BytesIO(pickle.dumps(1))).load(),
        "numpy.load(allow_pickle=True)": lambda: np.load(io.BytesIO(npz.getvalue()), None, True),
        "write to 'note.txt'": lambda: open("note.txt", "w"),
        "write to": lambda: tempfile.mkstemp(),  # os.open in the temp directory
        "appeared or changed": lambda: pq.write_table(pa.table({"x": [1]}), "out.parquet"),  # C++, not Python's open
    }
    for expected, action in forbidden_actions.items():
        with pytest.raises(AssertionError, match=re.escape(expected)):
            attempt(guard, action)
        guard.events.clear()
    attempt(guard, lambda: (guard.workspace / "allowed.txt").write_text("fine"))  # raises nothing: allowed
    assert (guard.workspace / "allowed.txt").read_text() == "fine"


# --- the loaders, as the dashboard and the CLI call them ---------------------------------------------------------


def load_npz(data: bytes):
    return load_dataset(data, MLP_INPUTS, filename="fuzz.npz")


def load_csv(data: bytes):
    return load_dataset(data, MLP_INPUTS, filename="fuzz.csv")


def load_parquet(data: bytes):
    return load_dataset(data, MLP_INPUTS, filename="fuzz.parquet")


def load_zip(data: bytes):
    return load_dataset(data, DIGITS_INPUTS, filename="fuzz.zip")


def load_onnx(data: bytes):
    return load_model(data, name="fuzz.onnx")


def add_model_zip(data: bytes):
    """A zipped model folder as the dashboard adds it: unpacked in the workspace ($QUANTSCOPE_HOME, the guard's)."""
    return Workspace.open().add_model(data, "fuzz.zip", "fuzz")


# --- inputs the fuzzer found that broke the contract, rebuilt small and pinned -----------------------------------


def patched(data: bytes, signature: bytes, offset: int, layout: str, *values: int) -> bytes:
    """data with struct-packed values written at `offset` past the first `signature` (a zip header)."""
    patched_data = bytearray(data)
    struct.pack_into(layout, patched_data, patched_data.index(signature) + offset, *values)
    return bytes(patched_data)


def zip_needing_a_newer_unzipper(data: bytes) -> bytes:
    return patched(data, b"PK\x01\x02", 6, "<H", 0xFF)  # "version needed to extract": 25.5


def zip_with_a_name_that_is_not_utf8(data: bytes) -> bytes:
    flagged = bytearray(patched(data, b"PK\x01\x02", 8, "<H", 0x800))  # "the name is UTF-8"
    flagged[flagged.index(b"PK\x01\x02") + 46] = 0xFF  # the name's first byte
    return bytes(flagged)


def npz_with_a_broken_member_header(data: bytes) -> bytes:
    return patched(data, b"PK\x03\x04", 0, "<I", 0x05034B50)


def npz_with_wrong_checksums(data: bytes) -> bytes:
    return patched(patched(data, b"PK\x03\x04", 14, "<I", 0), b"PK\x01\x02", 16, "<I", 0)


def parquet_with_pandas_metadata(edit: Callable[[dict], None]) -> bytes:
    table = pa.Table.from_pandas(CSV_FRAME, preserve_index=False)
    metadata = json.loads(table.schema.metadata[b"pandas"])
    edit(metadata["columns"][0])
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(metadata).encode()}), buffer)
    return buffer.getvalue()


def zip_with_an_empty_member_name() -> bytes:
    """zipfile cannot write an empty name: write 'ab', then declare a 0-byte name and a 2-byte extra field."""
    data = bytearray(zip_bytes({"0/a.png": gray_png(0), "ab": b"x"}, zipfile.ZIP_STORED))
    local, central = data.rindex(b"PK\x03\x04"), data.rindex(b"PK\x01\x02")
    struct.pack_into("<HH", data, local + 26, 0, 2)
    struct.pack_into("<HH", data, central + 28, 0, 2)
    return bytes(data)


def found(data: bytes, name: str):
    """An input fuzzing found breaking the error contract, kept as a regression case."""
    return pytest.param(data, id=name)


NPZ_FOUND = [
    found(zip_needing_a_newer_unzipper(NPZ_SEEDS[0]), "needs a newer unzipper"),
    found(zip_with_a_name_that_is_not_utf8(NPZ_SEEDS[0]), "name not UTF-8"),
    found(npz_with_a_broken_member_header(NPZ_SEEDS[0]), "broken member header"),
    found(npz_with_wrong_checksums(NPZ_SEEDS[1]), "wrong checksums"),
]
ZIP_FOUND = [
    found(zip_needing_a_newer_unzipper(ZIP_SEEDS[0]), "needs a newer unzipper"),
    found(zip_with_a_name_that_is_not_utf8(ZIP_SEEDS[0]), "name not UTF-8"),
    found(zip_with_an_empty_member_name(), "empty member name"),
]
PARQUET_FOUND = [
    found(parquet_with_pandas_metadata(lambda column: column.update(numpy_type="float6<")), "unknown numpy type"),
    found(parquet_with_pandas_metadata(lambda column: column.pop("pandas_type")), "no pandas type"),
]


@pytest.mark.parametrize("data", NPZ_FOUND)
def test_found_by_fuzzing_npz(data):
    with pytest.raises(DataError, match=r"fuzz\.npz"):
        load_npz(data)


@pytest.mark.parametrize("data", ZIP_FOUND)
def test_found_by_fuzzing_zip(data):
    with pytest.raises(DataError, match=r"fuzz\.zip"):
        load_zip(data)


@pytest.mark.parametrize("data", PARQUET_FOUND)
def test_found_by_fuzzing_parquet(data):
    with pytest.raises(DataError, match=r"fuzz\.parquet cannot be read as Parquet"):
        load_parquet(data)


# --- the properties ----------------------------------------------------------------------------------------------


def contract_test(load: Callable[[bytes], object], seeds: list[bytes], pinned=()):
    """The error-contract test of one loader (safety included): the pinned inputs first, then hostile_bytes(seeds)."""

    @FUZZ
    @given(data=hostile_bytes(seeds))
    def test(guard, data):
        assert_contract(attempt(guard, lambda: load(data)))

    for param in reversed(pinned):
        test = example(data=param.values[0])(test)
    return test


def safety_test(load: Callable[[bytes], object], seeds: list[bytes]):
    """Any outcome is accepted; attempt() asserts nothing was unpickled and nothing written outside the workspace."""

    @FUZZ
    @given(data=hostile_bytes(seeds))
    def test(guard, data):
        attempt(guard, lambda: load(data))

    return test


test_npz_loads_or_fails_with_one_line = contract_test(load_npz, NPZ_SEEDS, NPZ_FOUND)
test_zip_loads_or_fails_with_one_line = contract_test(load_zip, ZIP_SEEDS, ZIP_FOUND)
test_parquet_loads_or_fails_with_one_line = contract_test(load_parquet, PARQUET_SEEDS, PARQUET_FOUND)
test_csv_loads_or_fails_with_one_line = contract_test(load_csv, CSV_SEEDS)
test_onnx_upload_loads_or_fails_with_one_line = contract_test(load_onnx, ONNX_SEEDS)
test_model_zip_upload_loads_or_fails_with_one_line = contract_test(add_model_zip, MODEL_ZIP_SEEDS)
# The dashboard's label and slice pickers read a table's column names before the data is loaded.
test_csv_columns_load_or_fail_with_one_line = contract_test(lambda data: table_columns(data, "fuzz.csv"), CSV_SEEDS)
test_parquet_columns_load_or_fail_with_one_line = contract_test(
    lambda data: table_columns(data, "fuzz.parquet"), PARQUET_SEEDS)

test_safety_npz = safety_test(load_npz, NPZ_SEEDS)
test_safety_zip = safety_test(load_zip, ZIP_SEEDS)
test_safety_parquet = safety_test(load_parquet, PARQUET_SEEDS)

def model_with_external_weights_at(location: str) -> bytes:
    model = onnx.load_from_string(EXTERNAL_MODEL)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    return model.SerializeToString()


EXTERNAL_FOUND = {  # fixed in engine/model.py: both raised from pathlib before the location was judged
    "NUL byte in the location": model_with_external_weights_at("weights\0.bin"),
    "location too long for the file system": model_with_external_weights_at("w" * 5000 + ".bin"),
}


@pytest.mark.parametrize("name", EXTERNAL_FOUND)
def test_found_by_fuzzing_onnx_path(name, tmp_path):
    (tmp_path / "fuzz.onnx").write_bytes(EXTERNAL_FOUND[name])
    with pytest.raises(ModelError, match=r"fuzz\.onnx: external data location '.*' is not a usable file name") as error:
        load_model(tmp_path / "fuzz.onnx")
    assert_contract(error.value)


EXTERNAL_SWAPS = ((EXTERNAL_WEIGHTS.encode(), LEAK.encode()),)
LEAK_MARKER = b"LEAKED!!" * 12  # as many bytes as the Gemm weight W, so a leaked file would load in its place


@pytest.mark.filterwarnings("ignore:Ignoring unknown external data key")  # mutated keys: onnx warns and skips them
@FUZZ
@given(data=hostile_bytes([EXTERNAL_MODEL, *ONNX_SEEDS], swaps=EXTERNAL_SWAPS))
@example(data=EXTERNAL_FOUND["NUL byte in the location"])
@example(data=EXTERNAL_FOUND["location too long for the file system"])
def test_a_model_path_reads_external_data_from_its_own_directory_only(guard, data):
    """The CLI's way to load: a path, with the weights file beside it and a secret file one directory up."""
    models = guard.workspace.parent / "models"
    (models / EXTERNAL_WEIGHTS).write_bytes(EXTERNAL_DATA)
    (models.parent / "leak.bin").write_bytes(LEAK_MARKER)
    (models / "fuzz.onnx").write_bytes(data)
    outcome = attempt(guard, lambda: load_model(models / "fuzz.onnx"))
    assert_contract(outcome)
    if not isinstance(outcome, BaseException):
        assert LEAK_MARKER not in outcome.serialized()
