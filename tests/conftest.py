"""Shared fixtures: the committed sample models, loaded once."""

from __future__ import annotations

import pytest

from engine.dataset import load_dataset
from engine.model import load_model
from sample_models.catalog import SAMPLES


@pytest.fixture(scope="session")
def digits():
    """(model, dataset) of the digits CNN sample."""
    sample = SAMPLES["digits_cnn"]
    model = load_model(sample.model_path)
    return model, load_dataset(sample.data_path, model.summary.inputs)
