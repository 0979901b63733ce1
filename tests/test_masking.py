"""Padding is not signal: fidelity over real tokens only, detected from an attention-mask input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from engine import results
from engine.data import load_dataset
from engine.errors import DataError
from engine.masking import AUTO, NO_MASK, apply_mask, choose_masking
from engine.measure import open_session, predict
from engine.metrics import row_cosines
from engine.model import load_model
from engine.sweep import default_grid, sweep
from tests.builders import padded_sequences, padded_text_model

# Dynamic quantization picks one activation range per batch: the huge padded positions set it, and the real
# tokens lose resolution, so fidelity over every position flatters the artifact.
W8_DYNAMIC = next(recipe for recipe in default_grid() if recipe.short_name() == "W8A8 dynamic channel")
FP32 = default_grid()[0]


@pytest.fixture
def padded(tmp_path):
    model_path, data_path = tmp_path / "text.onnx", tmp_path / "text.npz"
    onnx.save(padded_text_model(), model_path)
    ids, mask = padded_sequences()
    np.savez(data_path, input_ids=ids, attention_mask=mask)
    model = load_model(model_path)
    return model, load_dataset(data_path, model.summary.inputs), mask


def real_token_cosine(reference: np.ndarray, output: np.ndarray, mask: np.ndarray) -> float:
    """Per sentence: the cosine of its real tokens' outputs, flattened; then the mean over sentences."""
    reference, output = reference.astype(np.float64), output.astype(np.float64)
    return float(np.mean([
        np.dot(r[m.astype(bool)].ravel(), o[m.astype(bool)].ravel())
        / (np.linalg.norm(r[m.astype(bool)]) * np.linalg.norm(o[m.astype(bool)]))
        for r, o, m in zip(reference, output, mask)
    ]))


def test_the_row_shows_fidelity_over_real_tokens_where_counting_padding_would_differ(padded, tmp_path):
    model, dataset, mask = padded
    table = sweep(model, dataset, [FP32, W8_DYNAMIC], tmp_path / "masked", batch=None)
    unmasked = sweep(model, dataset, [FP32, W8_DYNAMIC], tmp_path / "unmasked", batch=None, mask=NO_MASK)
    quantized = table.set_index(results.NAME).loc[W8_DYNAMIC.short_name()]

    fp32_out = predict(open_session(tmp_path / "masked" / "reference.onnx"), dataset)
    quantized_out = predict(open_session(quantized[results.ARTIFACT]), dataset)
    assert quantized[results.METRIC_NAME] == "cosine"
    assert quantized["cosine"] == pytest.approx(real_token_cosine(fp32_out, quantized_out, mask), abs=1e-9)
    everything = float(np.mean(row_cosines(fp32_out, quantized_out)))
    assert abs(everything - quantized["cosine"]) > 1e-3  # counting padding would change the figure
    assert unmasked.set_index(results.NAME).loc[W8_DYNAMIC.short_name(), "cosine"] == pytest.approx(everything, abs=1e-9)
    assert quantized[results.FIDELITY_MASK].startswith("attention_mask (detected")
    assert unmasked[results.FIDELITY_MASK].iloc[0] == "every position counts (masking switched off)"
    assert (mask == 0).mean() > 0.4  # most positions are padding, as in real padded batches


def test_a_named_mask_input_must_fit_the_output(padded):
    _, dataset, _ = padded
    output = np.zeros((len(dataset), 16, 32), dtype=np.float32)
    assert choose_masking(dataset, output, "attention_mask").how == "chosen"
    with pytest.raises(DataError, match="no input 'mask'"):
        choose_masking(dataset, output, "mask")
    with pytest.raises(DataError, match="cannot mask the output"):
        choose_masking(dataset, output, "input_ids")  # token ids are not 0/1
    assert choose_masking(dataset, output[:, 0], AUTO).input is None  # a per-sentence output has no positions


def test_apply_mask_zeroes_padded_positions_only():
    outputs = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    masked = apply_mask(outputs, np.array([[True, False, True]]))
    assert (masked[0, 1] == 0).all() and (masked[0, [0, 2]] == outputs[0, [0, 2]]).all()
