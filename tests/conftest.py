"""Shared fixtures: the committed sample models, loaded once."""

from __future__ import annotations

import os

import pytest

from engine.data import load_dataset
from engine.model import load_model
from sample_models.catalog import SAMPLES


@pytest.fixture(scope="session")
def digits():
    """(model, dataset) of the digits CNN sample."""
    sample = SAMPLES["digits_cnn"]
    model = load_model(sample.model_path)
    return model, load_dataset(sample.data_path, model.summary.inputs)


@pytest.fixture(scope="session", autouse=True)
def private_workspace(tmp_path_factory):
    """Jobs started by tests (CLI subprocesses included) never touch the developer's ./workspace."""
    home = tmp_path_factory.mktemp("workspace")
    previous = os.environ.get("QUANTSCOPE_HOME")
    os.environ["QUANTSCOPE_HOME"] = str(home)
    yield home
    if previous is None:
        del os.environ["QUANTSCOPE_HOME"]
    else:
        os.environ["QUANTSCOPE_HOME"] = previous
