"""Shared fixtures: the committed sample models, loaded once."""

from __future__ import annotations

import os

# Every timing the tests start takes at most 0.3 s per artifact and batch size (the CLI, job runners and dashboard
# servers they start inherit it): the tests check what is timed and stated, not how precise it is; the protocol's
# own tests (test_measure.py) fix theirs. Set before the engine is imported: its default protocol reads it.
os.environ.setdefault("QUANTSCOPE_LATENCY_CAP", "0.3")

import pytest  # noqa: E402

from engine.data import load_dataset  # noqa: E402
from engine.model import load_model  # noqa: E402
from sample_models.catalog import SAMPLES  # noqa: E402


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
