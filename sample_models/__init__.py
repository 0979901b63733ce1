"""Small ONNX models trained on scikit-learn's shipped data, with validation sets, for demos and tests."""

from sample_models.catalog import SAMPLES, Sample

__all__ = ["SAMPLES", "Sample"]
