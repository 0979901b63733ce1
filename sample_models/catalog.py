"""The sample models shipped with quantscope: where each one lives and what it does.

Stdlib only: the app imports this module, and torch is needed solely to rebuild the samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Sample:
    name: str
    model_path: Path  # the .onnx file, next to this module
    data_path: Path  # the .npz validation set: one array per model input, plus `labels`
    description: str  # one plain-English sentence for a non-technical user


def _sample(name: str, description: str) -> Sample:
    return Sample(name, SAMPLES_DIR / f"{name}.onnx", SAMPLES_DIR / f"{name}.npz", description)


SAMPLES: dict[str, Sample] = {
    sample.name: sample
    for sample in (
        _sample(
            "digits_cnn",
            "A small image model that reads tiny 8x8 pictures of handwritten digits and says which digit (0-9) each one shows.",
        ),
        _sample(
            "breast_cancer_mlp",
            "A small model that looks at 30 measurements of a breast tissue sample and predicts whether the tumour is benign or malignant.",
        ),
        _sample(
            "tiny_transformer",
            "A miniature version of the transformer design behind modern language models, reading handwritten digits one row of pixels at a time.",
        ),
        _sample(
            "wide_cnn",
            "A larger image model for handwritten digits, heavy enough that making it smaller (8-bit) also makes it noticeably faster.",
        ),
        _sample(
            "text_encoder",
            "A small language model in the style of BERT that reads a sentence from Python's own documentation and says which of six parts of Python it describes.",
        ),
    )
}
