"""engine.data: every loader with good and malformed input, plus the Dataset API.

All fixtures are tiny synthetic files built here; nothing binary is committed.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import engine.data.images as images_module
import engine.data.zips as zips_module
from engine.data import SUPPORTED_EXTENSIONS, Dataset, ImageOptions, load_dataset
from engine.errors import DataError
from engine.tensors import TensorSpec
from tests.builders import gray_png, png_bytes, zip_bytes

PROJECT_ROOT = Path(__file__).resolve().parents[1]


# --- builders ------------------------------------------------------------------------------


def spec(name: str = "x", shape: tuple = (None, 4), dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name, shape, dtype)


def npz_bytes(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()








def table_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "csv":
        frame.to_csv(buffer, index=False)
    else:
        frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def load_npz(model_inputs=(spec(),), **arrays: np.ndarray) -> Dataset:
    return load_dataset(npz_bytes(**arrays), list(model_inputs), filename="data.npz")


def load_zip(members: dict[str, bytes], model_input: TensorSpec, **kwargs) -> Dataset:
    return load_dataset(zip_bytes(members), [model_input], filename="images.zip", **kwargs)


def raises(match: str):
    return pytest.raises(DataError, match=match)


# A value whose unpickling leaves a trace: proves the loader never unpickles.
UNPICKLED: list[str] = []


def _record_unpickle(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Tripwire:
    def __reduce__(self):
        return (_record_unpickle, ("tripwire",))


# --- NPZ -----------------------------------------------------------------------------------


def test_npz_with_labels_and_slices(tmp_path):
    x = np.arange(20, dtype=np.float64).reshape(5, 4) / 7
    path = tmp_path / "val.npz"
    np.savez(path, x=x, labels=np.array([0.0, 1, 2, 1, 0]), slice=np.array(["a", "b", "a", "a", "b"]))

    data = load_dataset(path, [spec()])

    assert data.source == "val.npz"
    assert len(data) == 5
    assert data.inputs["x"].dtype == np.float32  # float64 cast to the model dtype
    np.testing.assert_allclose(data.inputs["x"], x.astype(np.float32))
    assert data.labels.dtype == np.int64  # integer-valued floats are class ids
    assert data.labels.tolist() == [0, 1, 2, 1, 0]
    assert data.slices.tolist() == ["a", "b", "a", "a", "b"]
    assert data.label_names is None


def test_npz_without_labels_or_slices():
    data = load_npz(x=np.ones((3, 4), dtype=np.float32))
    assert (data.labels, data.slices) == (None, None)
    assert data.inputs["x"].shape == (3, 4)


def test_npz_several_inputs_keep_model_order_and_dtypes():
    model = [spec("ids", (None, 3), "int64"), spec("mask", (None, 3), "float32")]
    data = load_npz(model, mask=np.ones((2, 3), dtype=np.int32), ids=np.arange(6).reshape(2, 3))
    assert list(data.inputs) == ["ids", "mask"]
    assert data.inputs["ids"].dtype == np.int64
    assert data.inputs["mask"].dtype == np.float32  # int to float is safe


def test_npz_non_integral_float_labels_are_regression_targets():
    data = load_npz(x=np.zeros((3, 4)), labels=np.array([0.5, 1.0, 2.25], dtype=np.float32))
    assert data.labels.dtype == np.float64
    assert data.labels.tolist() == [0.5, 1.0, 2.25]


def test_npz_string_labels_become_sorted_class_ids():
    data = load_npz(x=np.zeros((3, 4)), labels=np.array(["dog", "cat", "dog"]))
    assert data.label_names == ["cat", "dog"]
    assert data.labels.tolist() == [1, 0, 1]


def test_npz_pickled_object_array_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.zeros((1, 4)), labels=np.array([Tripwire()], dtype=object))
    UNPICKLED.clear()

    with raises(r"array 'labels' in evil\.npz cannot be loaded.*never pickled objects"):
        load_dataset(path, [spec()])

    assert UNPICKLED == []
    # The tripwire does fire when unpickling is allowed, so the check above means something.
    np.load(path, allow_pickle=True)["labels"]
    assert UNPICKLED == ["tripwire"]


def test_npz_missing_input_names_missing_and_found_keys():
    model = [spec("x"), spec("y")]
    with raises(r"lacks the array for model input 'y'; found keys: 'x', 'labels'"):
        load_npz(model, x=np.zeros((2, 4)), labels=np.zeros(2))


def test_npz_unexpected_key_is_an_error():
    with raises(r"unexpected array 'lables'.*'x'.*optional 'labels' and 'slice'"):
        load_npz(x=np.zeros((2, 4)), lables=np.zeros(2))


@pytest.mark.parametrize(
    ("array", "found"),
    [(np.zeros((3, 5)), r"\[3, 5\]"), (np.zeros((3, 4, 1)), r"\[3, 4, 1\]"), (np.zeros(3), r"\[3\]")],
)
def test_npz_wrong_shape_names_input_expected_and_found(array, found):
    with raises(rf"input 'x' expects shape \[\?, 4\] but data\.npz has {found}"):
        load_npz(x=array)


def test_fixed_batch_dim_does_not_limit_row_count():
    data = load_npz([spec(shape=(1, 4))], x=np.zeros((3, 4)))
    assert len(data) == 3


def test_npz_nan_rows_are_counted():
    x = np.zeros((5, 4))
    x[1, 2] = np.nan
    x[3, 0] = np.inf
    with raises(r"input 'x' in data\.npz has NaN or inf in 2 of 5 rows \(first at row 1\)"):
        load_npz(x=x)


def test_npz_non_finite_float_labels_are_refused():
    with raises(r"labels in data\.npz has NaN or inf in 1 of 3 rows"):
        load_npz(x=np.zeros((3, 4)), labels=np.array([0.5, np.nan, 1.0]))


def test_npz_mismatched_row_counts():
    with raises(r"row counts differ in data\.npz: input 'x' has 5, labels has 4"):
        load_npz(x=np.zeros((5, 4)), labels=np.zeros(4))


def test_npz_labels_must_be_one_per_row():
    with raises(r"labels in data\.npz must hold one value per row, shape \[N\]; found \[3, 2\]"):
        load_npz(x=np.zeros((3, 4)), labels=np.zeros((3, 2)))


def test_float_data_for_int_input_is_refused():
    with raises(r"input 'ids' in data\.npz holds float64 values but the model needs int64"):
        load_npz([spec("ids", (None, 2), "int64")], ids=np.zeros((2, 2)))


def test_int_values_outside_target_range_are_refused():
    with raises(r"input 'x' in data\.npz has values outside the range of the model's uint8"):
        load_npz([spec(dtype="uint8")], x=np.full((2, 4), 300))


def test_string_input_is_refused():
    with raises(r"holds <U1 values but the model needs float32"):
        load_npz(x=np.full((2, 4), "a"))


def test_npz_empty_arrays():
    with raises(r"data\.npz has no rows"):
        load_npz(x=np.zeros((0, 4)))


def test_npz_that_is_not_a_zip():
    with raises(r"data\.npz is not a valid zip archive"):
        load_dataset(b"definitely not numpy", [spec()], filename="data.npz")


def test_npz_bomb_is_refused_before_decompressing():
    bomb = npz_bytes(compressed=True, x=np.zeros((10_000, 4)))
    assert len(bomb) < 5_000
    with raises(r"data\.npz would unpack to .* over the 5\.0 KB limit"):
        load_dataset(bomb, [spec()], filename="data.npz", max_bytes=5_000)


def npz_with_header(header: dict, data: bytes, version: tuple[int, int] = (1, 0)) -> bytes:
    """An .npz whose member x.npy carries the given header over the given data bytes."""
    member = io.BytesIO()
    writer = {(1, 0): np.lib.format.write_array_header_1_0, (2, 0): np.lib.format.write_array_header_2_0}
    if version in writer:
        writer[version](member, header)
    else:
        member.write(np.lib.format.magic(*version) + b"\x10\x00" + b" " * 15 + b"\n")
    member.write(data)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.npy", member.getvalue())
    return buffer.getvalue()


def test_npz_header_declaring_more_data_than_it_holds_is_refused_before_allocating(monkeypatch):
    huge = {"descr": "<f4", "fortran_order": False, "shape": (1_000_000, 1_000_000)}
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: pytest.fail("numpy read the array"))
    with raises(r"array 'x' in data\.npz declares 4,000\.0 GB of data but its member holds 144 bytes"):
        load_dataset(npz_with_header(huge, bytes(16)), [spec()], filename="data.npz")
    with raises(r"array 'x' in data\.npz declares .* but its member holds"):
        load_dataset(npz_with_header(huge, bytes(16), version=(2, 0)), [spec()], filename="data.npz")
    with raises(r"array 'x' in data\.npz uses \.npy format \(3, 0\); save it with numpy\.savez"):
        load_dataset(npz_with_header(huge, bytes(16), version=(3, 0)), [spec()], filename="data.npz")


def test_npz_header_matching_its_data_loads():
    header = {"descr": "<f4", "fortran_order": False, "shape": (2, 4)}
    data = load_dataset(npz_with_header(header, np.arange(8, dtype="<f4").tobytes()), [spec()], filename="data.npz")
    assert data.inputs["x"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


# --- CSV and Parquet -----------------------------------------------------------------------

FORMATS = ["csv", "parquet"]


def load_table(frame: pd.DataFrame, fmt: str, model_input: TensorSpec = spec(shape=(None, 2, 2)), **kwargs):
    return load_dataset(table_bytes(frame, fmt), [model_input], filename=f"table.{fmt}", **kwargs)


def four_features(**extra) -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 5, 9], "b": [2, 6, 10], "c": [3, 7, 11], "d": [4.5, 8, 12], **extra})


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_label_column_by_name(fmt):
    data = load_table(four_features(y=[2, 0, 1]), fmt, label_column="y")
    assert data.inputs["x"].dtype == np.float32
    assert data.inputs["x"].shape == (3, 2, 2)  # rows reshaped to the sample shape, in file order
    assert data.inputs["x"][0].tolist() == [[1, 2], [3, 4.5]]
    assert data.labels.tolist() == [2, 0, 1]
    assert data.labels.dtype == np.int64


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["label", "labels", "target"])
def test_table_default_label_column(fmt, name):
    data = load_table(four_features(**{name: [0.5, 1.5, 2.0]}), fmt)
    assert data.labels.tolist() == [0.5, 1.5, 2.0]  # non-integral: regression
    assert data.labels.dtype == np.float64


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_without_label_column_uses_all_columns_as_features(fmt):
    data = load_table(four_features(), fmt)
    assert data.labels is None and data.slices is None
    assert data.inputs["x"][2].ravel().tolist() == [9, 10, 11, 12]


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_label_column_may_sit_between_features(fmt):
    frame = pd.DataFrame({"a": [1.0], "label": [3], "b": [2.0]})
    data = load_table(frame, fmt, spec(shape=(None, 2)))
    assert data.inputs["x"].tolist() == [[1.0, 2.0]]
    assert data.labels.tolist() == [3]


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_slice_column_default_and_by_name(fmt):
    by_default = load_table(four_features(slice=["n", "s", "n"]), fmt)
    assert by_default.slices.tolist() == ["n", "s", "n"]
    by_name = load_table(four_features(region=[1, 2, 1]), fmt, slice_column="region")
    assert by_name.slices.tolist() == ["1", "2", "1"]  # slices are always names


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_string_labels_map_to_sorted_ids(fmt):
    data = load_table(four_features(label=["zebra", "ant", "zebra"]), fmt)
    assert data.label_names == ["ant", "zebra"]
    assert data.labels.tolist() == [1, 0, 1]


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_wrong_column_count(fmt):
    with raises(r"has 5 feature columns but input x: float32\[\?, 2, 2\] needs 4 per row \(label column: none"):
        load_table(four_features(e=[0, 0, 0]), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_non_numeric_feature_column(fmt):
    with raises(r"feature column 'c' in table\.\w+ is not numeric \(e\.g\. 'red'\)"):
        load_table(four_features(label=[0, 1, 0]).assign(c=["1", "red", "3"]), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_nan_in_features(fmt):
    with raises(r"input 'x' in table\.\w+ has NaN or inf in 1 of 3 rows \(first at row 2\)"):
        load_table(four_features().assign(b=[2, 6, np.nan]), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_nan_in_labels(fmt):
    with raises(r"labels in table\.\w+ has NaN or inf in 1 of 3 rows"):
        load_table(four_features(label=[0, np.nan, 1]), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_missing_slice_values(fmt):
    with raises(r"column 'slice' in table\.\w+ is empty in 1 of 3 rows"):
        load_table(four_features(slice=["a", None, "b"]), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_requested_label_column_must_exist(fmt):
    with raises(r"label column 'y' not in table\.\w+; columns: 'a', 'b', 'c', 'd'"):
        load_table(four_features(), fmt, label_column="y")


@pytest.mark.parametrize("fmt", FORMATS)
def test_table_header_only_has_no_rows(fmt):
    with raises(r"table\.\w+ has no rows"):
        load_table(four_features().iloc[:0], fmt)


@pytest.mark.parametrize(
    "model",
    [[spec("a", (None, 4)), spec("b", (None, 4))], [spec(shape=(None, "seq"))]],
    ids=["two inputs", "dynamic sample dim"],
)
def test_table_needs_single_fixed_shape_input(model):
    with raises(r"CSV/Parquet fits only a model with one input of fixed sample shape.*use an \.npz file"):
        load_dataset(b"a,b\n1,2\n", model, filename="t.csv")


def test_csv_integer_features_for_integer_model():
    data = load_dataset(b"a,b\n1,2\n3,4\n", [spec("ids", (None, 2), "int64")], filename="t.csv")
    assert data.inputs["ids"].dtype == np.int64
    assert data.inputs["ids"].tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize(("filename", "kind"), [("t.csv", "CSV"), ("t.parquet", "Parquet"), ("t.pq", "Parquet")])
def test_unreadable_table(filename, kind):
    with raises(rf"t\.\w+ cannot be read as {kind}: "):
        load_dataset(b"\xff\xfe\x00garbage\x00", [spec()], filename=filename)


@pytest.mark.parametrize("extension", SUPPORTED_EXTENSIONS)
def test_an_empty_file_is_said_to_be_empty_in_one_line(extension):
    with pytest.raises(DataError) as raised:
        load_dataset(b"", [spec()], filename=f"empty{extension}")
    assert str(raised.value) == f"empty{extension} is an empty file (0 bytes): it holds no examples"


def test_pq_extension_reads_parquet():
    data = load_dataset(table_bytes(four_features(), "parquet"), [spec(shape=(None, 4))], filename="t.pq")
    assert data.inputs["x"].shape == (3, 4)


# --- Image-folder ZIP ----------------------------------------------------------------------

GRAY_8 = spec("image", (None, 1, 8, 8))


def test_zip_grayscale_into_nchw():
    # Written out of order: rows come back sorted by class, then member name.
    members = {"dogs/c.png": gray_png(51), "cats/b.png": gray_png(0), "cats/a.png": gray_png(255)}
    data = load_zip(members, GRAY_8)

    assert data.inputs["image"].shape == (3, 1, 8, 8)
    assert data.inputs["image"].dtype == np.float32
    np.testing.assert_allclose(data.inputs["image"][:, 0, 0, 0], [1.0, 0.0, 0.2], rtol=1e-6)
    assert data.labels.tolist() == [0, 0, 1]
    assert data.label_names == ["cats", "dogs"]


def test_zip_rgb_into_nhwc_with_mean_and_std():
    pixels = np.zeros((8, 8, 3))
    pixels[...] = [255, 0, 51]
    options = ImageOptions(mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    data = load_zip({"only/x.png": png_bytes(pixels)}, spec("image", (None, 8, 8, 3)), image_options=options)

    assert data.inputs["image"].shape == (1, 8, 8, 3)
    # x = (pixel * scale - mean) / std, per channel
    np.testing.assert_allclose(data.inputs["image"][0, 3, 3], [1.0, -2.0, -0.3], rtol=1e-5)


def test_zip_gray_image_fills_all_channels_of_rgb_model():
    data = load_zip({"a/x.png": gray_png(102)}, spec("image", (None, 3, 8, 8)))
    assert data.inputs["image"].shape == (1, 3, 8, 8)
    np.testing.assert_allclose(data.inputs["image"][0, :, 0, 0], [0.4, 0.4, 0.4], rtol=1e-6)


def test_zip_resizes_to_model_height_and_width():
    left_dark_right_bright = np.zeros((16, 16))
    left_dark_right_bright[:, 8:] = 255
    data = load_zip({"a/x.png": png_bytes(left_dark_right_bright)}, GRAY_8)

    image = data.inputs["image"][0, 0]
    assert image.shape == (8, 8)
    np.testing.assert_allclose(image[:, 0], 0.0)
    np.testing.assert_allclose(image[:, -1], 1.0)


def test_zip_without_resize_reports_shape_mismatch():
    with raises(r"input 'image' expects shape \[\?, 1, 8, 8\] but images\.zip has \[1, 1, 16, 16\]"):
        load_zip({"a/x.png": gray_png(0, size=16)}, GRAY_8, image_options=ImageOptions(resize=False))


def test_zip_mixed_sizes_need_a_fixed_model_size():
    members = {"a/x.png": gray_png(0, size=8), "a/y.png": gray_png(0, size=10)}
    with raises(r"images in images\.zip differ in size \(a/x\.png is 8x8, a/y\.png is 10x10\)"):
        load_zip(members, spec("image", (None, 1, "h", "w")))


def test_zip_integer_folders_are_their_own_label_ids():
    members = {"10/a.png": gray_png(0), "2/b.png": gray_png(0), "0/c.png": gray_png(0)}
    data = load_zip(members, GRAY_8)

    assert data.labels.tolist() == [0, 2, 10]  # numeric, not "0" < "10" < "2"
    assert data.label_names[2] == "2" and data.label_names[10] == "10"
    assert data.summary()["labels"] == {"kind": "classes", "counts": {"0": 1, "2": 1, "10": 1}}


def test_zip_top_folder_and_clutter_are_ignored():
    members = {
        "photos/": b"",
        "photos/cats/a.png": gray_png(0),
        "photos/dogs/b.png": gray_png(255),
        "photos/dogs/notes.txt": b"not an image",
        "photos/.DS_Store": b"finder",
        "photos/dogs/.hidden.png": b"not decoded",
        "__MACOSX/photos/cats/._a.png": b"resource fork",
    }
    data = load_zip(members, GRAY_8)
    assert data.label_names == ["cats", "dogs"]
    assert data.labels.tolist() == [0, 1]


def test_zip_image_outside_a_class_folder():
    with raises(r"image 'loose\.png' in images\.zip is not directly inside a class folder"):
        load_zip({"cats/a.png": gray_png(0), "loose.png": gray_png(0)}, GRAY_8)


@pytest.mark.parametrize("name", ["../evil.png", "cats/../../evil.png", "/etc/evil.png", "C:/evil.png", "..\\evil.png"])
def test_zip_slip_and_absolute_members_are_refused(name):
    with raises(r"images\.zip has an unsafe member path .*evil\.png"):
        load_zip({"cats/a.png": gray_png(0), name: gray_png(0)}, GRAY_8)


def test_zip_bomb_is_refused_before_reading_members():
    # Not even a PNG: the size check must come before any decoding.
    bomb = zip_bytes({"cats/a.png": bytes(200_000)}, compression=zipfile.ZIP_DEFLATED)
    assert len(bomb) < 10_000
    with raises(r"images\.zip would unpack to 200\.0 KB, over the 10\.0 KB limit"):
        load_dataset(bomb, [GRAY_8], filename="images.zip", max_bytes=10_000)


def test_zip_member_count_is_bounded(monkeypatch):
    monkeypatch.setattr(zips_module, "MAX_ZIP_MEMBERS", 2)  # the module that reads it
    with raises(r"images\.zip has 3 members; the limit is 2"):
        load_zip({"a/1.png": gray_png(0), "a/2.png": gray_png(0), "a/3.png": gray_png(0)}, GRAY_8)


def test_zip_undecodable_image_names_the_member():
    with raises(r"image 'cats/bad\.png' in images\.zip cannot be decoded"):
        load_zip({"cats/good.png": gray_png(0), "cats/bad.png": b"\x89PNG but not really"}, GRAY_8)


def test_zip_truncated_image_fails_while_decoding():
    truncated = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64)))[:200]
    with raises(r"image 'cats/cut\.png' in images\.zip cannot be decoded \(OSError\)"):
        load_zip({"cats/cut.png": truncated}, GRAY_8)


def test_zip_only_expected_image_decoders_run():
    tiff = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tiff, format="TIFF")
    with raises(r"image 'cats/a\.png' in images\.zip cannot be decoded"):
        load_zip({"cats/a.png": tiff.getvalue()}, GRAY_8)


@pytest.mark.parametrize(
    ("extension", "pil_format"), [(".jpg", "JPEG"), (".BMP", "BMP"), (".gif", "GIF"), (".webp", "WEBP")]
)
def test_zip_reads_every_supported_image_type(extension, pil_format):
    encoded = io.BytesIO()
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).save(encoded, format=pil_format)
    data = load_zip({f"cats/a{extension}": encoded.getvalue()}, GRAY_8)
    np.testing.assert_allclose(data.inputs["image"], 200 / 255, atol=0.02)  # JPEG and WEBP are lossy


def test_zip_image_pixel_count_is_bounded(monkeypatch):
    monkeypatch.setattr(images_module, "MAX_IMAGE_PIXELS", 63)  # the module that reads it
    with raises(r"image 'cats/a\.png' in images\.zip is 8x8 pixels, over the 63 pixel limit"):
        load_zip({"cats/a.png": gray_png(0)}, GRAY_8)


def test_empty_zip():
    with raises(r"images\.zip contains no images"):
        load_zip({}, GRAY_8)


def test_zip_that_is_not_a_zip():
    with raises(r"images\.zip is not a valid zip archive"):
        load_dataset(b"PK but no", [GRAY_8], filename="images.zip")


@pytest.mark.parametrize(
    "model", [[GRAY_8, GRAY_8], [spec("image", (None, 64))]], ids=["two inputs", "not 4-D"]
)
def test_zip_needs_one_4d_image_input(model):
    with raises(r"an image-folder zip needs a model with one input \[batch, C, H, W\]"):
        load_dataset(zip_bytes({"a/x.png": gray_png(0)}), model, filename="images.zip")


def test_zip_channel_axis_must_be_clear():
    with raises(r"cannot tell the channel axis of image: float32\[\?, 5, 8, 8\]"):
        load_zip({"a/x.png": gray_png(0)}, spec("image", (None, 5, 8, 8)))
    with raises(r"NHWC input image: float32\[\?, 1, 8, 8\] needs 1 or 3 channels at dim 3"):
        load_zip({"a/x.png": gray_png(0)}, GRAY_8, image_options=ImageOptions(layout="NHWC"))


def test_image_options_are_validated():
    with raises(r"layout must be auto, NCHW or NHWC; got 'CHW'"):
        ImageOptions(layout="CHW")
    with raises(r"std must not contain 0"):
        ImageOptions(std=(1.0, 0.0, 1.0))
    with raises(r"image mean has 2 values; the model has 3 channels"):
        load_zip({"a/x.png": gray_png(0)}, spec("image", (None, 3, 8, 8)), image_options=ImageOptions(mean=(0.1, 0.2)))


# --- Sources, formats and limits -----------------------------------------------------------


def test_bytes_with_filename_and_uppercase_extension():
    data = load_dataset(npz_bytes(x=np.ones((2, 4))), [spec()], filename="UPLOAD.NPZ")
    assert data.source == "UPLOAD.NPZ"
    assert len(data) == 2


def test_bytes_without_filename():
    with raises(r"uploaded bytes need a filename whose extension tells the format \(\.npz, \.csv"):
        load_dataset(npz_bytes(x=np.ones((2, 4))), [spec()])


def test_filename_names_a_path_without_extension(tmp_path):
    path = tmp_path / "upload-1234"
    path.write_bytes(npz_bytes(x=np.ones((2, 4))))
    assert load_dataset(path, [spec()], filename="mine.npz").source == "mine.npz"


def test_unknown_extension_lists_supported_ones():
    assert SUPPORTED_EXTENSIONS == (".npz", ".csv", ".parquet", ".pq", ".zip")
    with raises(r"unsupported data file 'data\.txt': expected one of \.npz, \.csv, \.parquet, \.pq, \.zip"):
        load_dataset(b"1,2", [spec()], filename="data.txt")


def test_oversized_file_and_bytes_state_the_limit(tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(b"a\n" + b"1\n" * 1000)
    with raises(r"big\.csv is 2\.0 KB, over the 1\.0 KB limit"):
        load_dataset(path, [spec(shape=(None, 1))], max_bytes=1000)
    with raises(r"up\.csv is 2\.0 KB, over the 100 bytes limit"):
        load_dataset(path.read_bytes(), [spec(shape=(None, 1))], filename="up.csv", max_bytes=100)


def test_parquet_that_decompresses_past_the_limit_is_refused_before_reading():
    buffer = io.BytesIO()
    pd.DataFrame({"x": np.zeros(100_000)}).to_parquet(buffer, compression="gzip")
    assert len(buffer.getvalue()) < 20_000
    with raises(r"data\.parquet would unpack to .* over the 20\.0 KB limit"):
        load_dataset(buffer.getvalue(), [spec(shape=(None, 1))], filename="data.parquet", max_bytes=20_000)


def test_missing_path(tmp_path):
    with raises(r"no data file at .*nothere\.npz"):
        load_dataset(tmp_path / "nothere.npz", [spec()])


# --- Dataset API ---------------------------------------------------------------------------


@pytest.fixture
def five_rows() -> Dataset:
    return load_npz(
        [spec("x", (None, 2)), spec("y", (None,), "int64")],
        x=np.arange(10, dtype=np.float32).reshape(5, 2),
        y=np.arange(5),
        labels=np.array(["b", "a", "b", "b", "a"]),
        slice=np.array(["n", "n", "s", "n", "s"]),
    )


def test_take_cuts_every_field_consistently(five_rows):
    first = five_rows.take(3)
    assert len(first) == 3
    assert first.inputs["x"].tolist() == [[0, 1], [2, 3], [4, 5]]
    assert first.inputs["y"].tolist() == [0, 1, 2]
    assert first.labels.tolist() == [1, 0, 1]
    assert first.slices.tolist() == ["n", "n", "s"]
    assert (first.label_names, first.source) == (["a", "b"], "data.npz")
    assert len(five_rows.take(100)) == 5
    with pytest.raises(ValueError):
        five_rows.take(-1)


def test_batches_are_consecutive_feeds(five_rows):
    batches = list(five_rows.batches(2))
    assert [len(batch["x"]) for batch in batches] == [2, 2, 1]
    assert all(set(batch) == {"x", "y"} for batch in batches)
    assert np.concatenate([batch["y"] for batch in batches]).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        next(five_rows.batches(0))


@given(rows=st.integers(1, 30), size=st.integers(1, 40))
def test_batches_cover_every_row_once_in_order(rows, size):
    data = Dataset({"x": np.arange(rows)}, labels=None, slices=None, source="mem")
    batches = list(data.batches(size))
    assert len(batches) == -(-rows // size)
    assert np.concatenate([batch["x"] for batch in batches]).tolist() == list(range(rows))


def test_summary_for_classes_and_slices(five_rows):
    assert five_rows.summary() == {
        "source": "data.npz",
        "rows": 5,
        "inputs": {"x": {"shape": [5, 2], "dtype": "float32"}, "y": {"shape": [5], "dtype": "int64"}},
        "labels": {"kind": "classes", "counts": {"a": 2, "b": 3}},
        "slices": {"n": 3, "s": 2},
    }


def test_summary_for_regression_and_no_labels():
    regression = load_npz(x=np.zeros((3, 4)), labels=np.array([1.0, 2.5, 4.5]))
    assert regression.summary()["labels"] == {"kind": "regression", "min": 1.0, "mean": 2.6666666666666665, "max": 4.5}
    unlabelled = load_npz(x=np.zeros((3, 4)))
    assert unlabelled.summary()["labels"] == {"kind": "none"}
    assert unlabelled.summary()["slices"] is None


def test_summary_counts_integer_classes_by_id():
    data = load_npz(x=np.zeros((3, 4)), labels=np.array([3, 1, 3]))
    assert data.summary()["labels"] == {"kind": "classes", "counts": {1: 1, 3: 2}}


FINGERPRINT_ARRAYS = {
    "x": np.arange(12, dtype=np.float32).reshape(3, 4),
    "labels": np.array([0, 1, 0]),
    "slice": np.array(["a", "b", "a"]),
}


def test_fingerprint_is_repeatable_and_ignores_the_file_name():
    first = load_npz(**FINGERPRINT_ARRAYS).fingerprint()
    again = load_dataset(npz_bytes(**FINGERPRINT_ARRAYS), [spec()], filename="renamed.npz").fingerprint()
    assert first == again
    assert len(first) == 64 and int(first, 16) >= 0


@pytest.mark.parametrize(
    ("key", "index", "value"), [("x", (2, 3), 11.5), ("labels", 1, 2), ("slice", 0, "c")]
)
def test_fingerprint_changes_with_one_value(key, index, value):
    changed = {name: array.copy() for name, array in FINGERPRINT_ARRAYS.items()}
    changed[key][index] = value
    assert load_npz(**changed).fingerprint() != load_npz(**FINGERPRINT_ARRAYS).fingerprint()


def test_fingerprint_changes_with_dtype_and_label_names():
    base = load_npz(**FINGERPRINT_ARRAYS)
    as_float16 = load_npz([spec(dtype="float16")], **FINGERPRINT_ARRAYS)
    renamed = Dataset(base.inputs, base.labels, base.slices, base.source, label_names=["cat", "dog"])
    assert len({base.fingerprint(), as_float16.fingerprint(), renamed.fingerprint()}) == 3


def test_fingerprint_is_stable_across_processes(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, **FINGERPRINT_ARRAYS)
    script = (
        "import sys; from engine.data import load_dataset; from engine.tensors import TensorSpec; "
        "print(load_dataset(sys.argv[1], [TensorSpec('x', (None, 4), 'float32')]).fingerprint())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script, str(path)],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert digests == {load_dataset(path, [spec()]).fingerprint()}
