"""Synthetic shifts: each changes only the inputs it concerns, by its level, the same way every time."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data import Dataset
from engine.errors import DataError
from engine.shifts import Shift
from tests.builders import padded_sequences


def table_data() -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset({"x": rng.normal(2, 3, (500, 4)).astype(np.float32)}, np.arange(500) % 2, None, "t.npz")


def image_data() -> Dataset:
    rng = np.random.default_rng(1)
    return Dataset({"image": rng.random((20, 1, 8, 8)).astype(np.float32)}, np.arange(20) % 2, None, "i.npz")


def test_noise_has_the_asked_spread_and_keeps_labels():
    data = table_data()
    shifted = Shift.parse("noise:0.5").apply(data)
    added = shifted.inputs["x"] - data.inputs["x"]
    assert added.std() == pytest.approx(0.5 * data.inputs["x"].std(), rel=0.05)
    assert shifted.labels is data.labels and shifted.source == "t.npz, shifted noise:0.5"


def test_shifts_are_seeded():
    data = table_data()
    assert np.array_equal(Shift.parse("noise:0.1").apply(data).inputs["x"], Shift.parse("noise:0.1").apply(data).inputs["x"])


def test_brightness_and_contrast_change_images():
    data = image_data()
    values = data.inputs["image"]
    brighter = Shift.parse("brightness:0.2").apply(data).inputs["image"]
    assert np.allclose(brighter - values, 0.2 * (values.max() - values.min()))
    stronger = Shift.parse("contrast:1").apply(data).inputs["image"]
    assert stronger.std() == pytest.approx(2 * values.std(), rel=1e-5)


def test_dropout_drops_real_tokens_and_keeps_the_first():
    ids, mask = padded_sequences(rows=200)
    data = Dataset({"input_ids": ids, "attention_mask": mask}, None, None, "text.npz")
    shifted = Shift.parse("dropout:0.3").apply(data)
    dropped = (mask == 1) & (shifted.inputs["attention_mask"] == 0)
    assert dropped.sum() / (mask[:, 1:] == 1).sum() == pytest.approx(0.3, abs=0.06)
    assert (shifted.inputs["input_ids"][dropped] == 0).all() and (shifted.inputs["attention_mask"][:, 0] == 1).all()
    assert (shifted.inputs["attention_mask"] <= mask).all()  # padding stays padding


@pytest.mark.parametrize("text, message", [
    ("blur:1", "KIND one of noise"), ("noise", "KIND:LEVEL"), ("noise:0", "above 0"), ("noise:11", "at most 10"),
])
def test_bad_specs_are_refused_in_one_line(text, message):
    with pytest.raises(DataError, match=message):
        Shift.parse(text)


def test_a_shift_for_inputs_the_model_lacks_is_refused():
    with pytest.raises(DataError, match="changes image inputs .* and this model has none"):
        Shift.parse("contrast:0.1").apply(table_data())
