"""The committed sample models and their data files are valid, runnable and accurate.

Rebuild them with `python -m sample_models.build` if these fail after a change to the build.
"""

from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from sample_models.catalog import SAMPLES, SAMPLES_DIR

ACCURACY_FLOORS = {
    "digits_cnn": 0.9,
    "breast_cancer_mlp": 0.9,
    "tiny_transformer": 0.85,
    "wide_cnn": 0.9,
}
EXTRA_ARRAYS = {"digits_cnn": {"slice"}}  # npz keys beyond the model inputs and `labels`

all_samples = pytest.mark.parametrize("sample", SAMPLES.values(), ids=SAMPLES.keys())


def load_npz(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def session(sample) -> ort.InferenceSession:
    return ort.InferenceSession(str(sample.model_path), providers=["CPUExecutionProvider"])


def test_catalog_lists_the_four_samples_in_order():
    assert list(SAMPLES) == ["digits_cnn", "breast_cancer_mlp", "tiny_transformer", "wide_cnn"]
    for sample in SAMPLES.values():
        assert sample.model_path.is_absolute() and sample.model_path.parent == SAMPLES_DIR
        assert sample.description.strip()


@all_samples
def test_onnx_is_valid_single_file(sample):
    onnx.checker.check_model(str(sample.model_path), full_check=True)
    model = onnx.load(sample.model_path)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer)


@all_samples
def test_batch_dim_is_dynamic(sample):
    graph = onnx.load(sample.model_path).graph
    for value in [*graph.input, *graph.output]:
        batch_dim = value.type.tensor_type.shape.dim[0]
        assert batch_dim.dim_param == "batch", value.name


@all_samples
def test_npz_holds_inputs_and_labels_without_pickle(sample):
    data = load_npz(sample.data_path)
    input_names = {i.name for i in session(sample).get_inputs()}
    assert set(data) == input_names | {"labels"} | EXTRA_ARRAYS.get(sample.name, set())
    labels = data["labels"]
    assert labels.dtype == np.int64 and labels.ndim == 1 and 250 <= len(labels) <= 600
    for name in input_names:
        assert data[name].dtype == np.float32 and len(data[name]) == len(labels)


@all_samples
def test_accuracy_on_validation_set(sample):
    data = load_npz(sample.data_path)
    model = session(sample)
    inputs = {i.name: data[i.name] for i in model.get_inputs()}
    (logits,) = model.run(None, inputs)
    accuracy = (logits.argmax(axis=1) == data["labels"]).mean()
    assert accuracy >= ACCURACY_FLOORS[sample.name]


def test_digits_slices_are_unicode_subgroups():
    slices = load_npz(SAMPLES["digits_cnn"].data_path)["slice"]
    assert slices.dtype.kind == "U"
    assert set(slices) == {"ink:light", "ink:heavy"}


def test_transformer_matmuls_have_constant_weights():
    """Weight-only quantizers (MatMulNBits, dynamic int8) need MatMuls whose B is an initializer."""
    graph = onnx.load(SAMPLES["tiny_transformer"].model_path).graph
    initializers = {t.name for t in graph.initializer}
    weight_matmuls = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in initializers]
    assert len(weight_matmuls) >= 12  # per block: q, k, v, output, two MLP layers


def test_breast_cancer_csv_matches_npz():
    with (SAMPLES_DIR / "breast_cancer_mlp_val.csv").open(newline="") as file:
        header, *rows = list(csv.reader(file))
    assert len(header) == 31 and header[-1] == "label"
    data = load_npz(SAMPLES["breast_cancer_mlp"].data_path)
    values = np.array(rows, dtype=np.float64)
    np.testing.assert_array_equal(values[:, :-1].astype(np.float32), data["features"])
    np.testing.assert_array_equal(values[:, -1].astype(np.int64), data["labels"])


def test_digits_zip_is_an_image_folder_of_the_validation_rows():
    with zipfile.ZipFile(SAMPLES_DIR / "digits_images.zip") as archive:
        names = archive.namelist()
        assert {name.split("/")[0] for name in names} == {str(digit) for digit in range(10)}
        assert all(name.endswith(".png") for name in names)
        image = Image.open(io.BytesIO(archive.read(names[0])))
        assert image.mode == "L" and image.size == (8, 8)
    assert len(names) == len(load_npz(SAMPLES["digits_cnn"].data_path)["labels"])


def test_sample_files_stay_small():
    total = sum(f.stat().st_size for f in SAMPLES_DIR.iterdir() if f.is_file())
    assert total < 6_000_000
