"""A sweep's own memory stays bounded on big outputs: what travels to workers is small, and what they share on
disk is shared. (bench/sweep_memory.py measures the whole sweep: its wall time and peak summed PSS.)"""

from __future__ import annotations

import pickle

import numpy as np

from engine.data import Dataset
from engine.model import load_model
from engine.sweep import reference_for
from tests.builders import padded_sequences, padded_text_model


def test_a_reference_travels_as_the_path_of_its_saved_outputs(tmp_path):
    """The fp32 outputs every build compares with are saved once; a task pickles their path, and each worker maps
    the same file, instead of unpickling its own copy of every output for every build."""
    model = load_model(padded_text_model(hidden=64).SerializeToString())
    ids, mask = padded_sequences(rows=256, sequence=32)
    data = Dataset({"input_ids": ids, "attention_mask": mask}, None, None, "padded")
    noisy = Dataset({"input_ids": ids[::-1].copy(), "attention_mask": mask[::-1].copy()}, None, None, "other")
    reference = reference_for(model, data, tmp_path, extras={"other": noisy})
    assert reference.output.nbytes == 256 * 32 * 64 * 4  # 2 MB of per-token outputs
    sent = pickle.dumps(reference)
    assert len(sent) < 10_000
    received = pickle.loads(sent)
    assert isinstance(received.output, np.memmap) and received.output_file == reference.output_file
    np.testing.assert_array_equal(received.output, reference.output)
    np.testing.assert_array_equal(received.extras["other"].output, reference.extras["other"].output)
    assert received.masking == reference.masking and received.task == reference.task
    # a worker on another machine (Dask) shares no disk: it gets the arrays themselves
    remote = pickle.loads(pickle.dumps(reference.in_memory()))
    assert remote.output_file is None and not isinstance(remote.output, np.memmap)
    np.testing.assert_array_equal(remote.extras["other"].output, reference.extras["other"].output)
