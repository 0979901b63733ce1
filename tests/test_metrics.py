import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, top_k_accuracy_score

from engine.errors import DataError
from engine.metrics import (
    METRICS,
    Evaluation,
    Task,
    detect_task,
    evaluate,
    fidelity,
    primary_metric,
    task_metrics,
)

seeds = st.integers(0, 2**32 - 1)


def random_classification(seed, n, k):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, k)).astype(np.float32), rng.integers(0, k, size=n)


# --- registry ------------------------------------------------------------------------------------------------------


def test_registry_names_every_metric_with_its_direction():
    lower_is_better = {"ece", "mae", "rmse"}
    higher_is_better = {"top1", "top5", "macro_f1", "top1_agreement", "cosine", "sqnr_db"}
    assert set(METRICS) == lower_is_better | higher_is_better
    for name, info in METRICS.items():
        assert info.name == name
        assert info.higher_is_better == (name in higher_is_better)
        assert info.label and info.help.endswith(".") and "\n" not in info.help


def test_every_computed_metric_is_registered():
    scores, labels = random_classification(0, 50, 10)
    classification = evaluate(scores, scores + 0.1, labels, None)
    regression = evaluate(scores[:, 0], scores[:, 1], scores[:, 2], None)
    assert set(classification.metrics) == {"top1", "top5", "macro_f1", "ece"}
    assert set(regression.metrics) == {"mae", "rmse"}
    assert set(classification.metrics) | set(regression.metrics) | set(classification.fidelity) <= set(METRICS)


# --- classification ------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(1, 300), k=st.integers(2, 15))
def test_classification_matches_sklearn(seed, n, k):
    scores, labels = random_classification(seed, n, k)
    predicted = scores.argmax(axis=1)
    got = task_metrics(Task.CLASSIFICATION, scores, labels)
    assert got["top1"] == pytest.approx(accuracy_score(labels, predicted))
    assert got["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    if k > 5:
        assert got["top5"] == pytest.approx(top_k_accuracy_score(labels, scores, k=5, labels=np.arange(k)))
    else:
        assert "top5" not in got


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(1, 100), k=st.integers(6, 12))
def test_top5_breaks_ties_towards_lower_class_like_argmax(seed, n, k):
    rng = np.random.default_rng(seed)
    scores = rng.integers(-2, 3, size=(n, k)).astype(np.int8)  # few levels: ties everywhere, as in int8 outputs
    labels = rng.integers(0, k, size=n)
    ranking = np.argsort(-scores.astype(int), axis=1, kind="stable")  # stable: lower class first among ties
    expected = np.mean([label in row[:5] for label, row in zip(labels, ranking)])
    got = task_metrics(Task.CLASSIFICATION, scores, labels)
    assert got["top5"] == pytest.approx(expected)
    assert got["top1"] == pytest.approx(np.mean(ranking[:, 0] == labels))


def test_tied_scores_hand_example():
    scores = np.zeros((2, 6))
    got = task_metrics(Task.CLASSIFICATION, scores, np.array([4, 5]))
    # All tied: classes rank 0, 1, ..., 5, so class 4 is 5th (hit) and class 5 is 6th (miss); argmax says 0.
    assert got["top5"] == 0.5
    assert got["top1"] == 0.0


def test_macro_f1_averages_over_labels_and_predictions():
    labels = np.array([0, 0, 1, 1])
    scores = np.eye(3)[[0, 2, 1, 1]]  # predicts 0, 2, 1, 1: class 2 appears only in predictions
    # F1: class 0 = 2/3, class 1 = 1, class 2 = 0 -> mean 5/9.
    got = task_metrics(Task.CLASSIFICATION, scores, labels)["macro_f1"]
    assert got == pytest.approx(5 / 9)
    assert got == pytest.approx(f1_score(labels, scores.argmax(axis=1), average="macro"))


ECE_PROBABILITIES = np.array([[0.9, 0.1], [0.08, 0.92], [0.3, 0.7], [0.45, 0.55]])
ECE_LABELS = np.array([0, 0, 1, 0])
# Bins of width 1/15: 0.9 and 0.92 share (13/15, 14/15] with accuracy 1/2; 0.7 alone (correct); 0.55 alone (wrong).
ECE_EXPECTED = 2 / 4 * abs(0.5 - 0.91) + 1 / 4 * abs(1 - 0.7) + 1 / 4 * abs(0 - 0.55)


def test_ece_hand_example_on_probabilities():
    assert ECE_EXPECTED == pytest.approx(0.4175)
    got = task_metrics(Task.CLASSIFICATION, ECE_PROBABILITIES, ECE_LABELS)
    assert got["ece"] == pytest.approx(0.4175)


def test_ece_applies_softmax_to_logits():
    logits = np.log(ECE_PROBABILITIES) + 3.0  # softmax undoes log and the shift
    assert task_metrics(Task.CLASSIFICATION, logits, ECE_LABELS)["ece"] == pytest.approx(0.4175)


def test_ece_accepts_roughly_normalised_quantized_probabilities():
    quantized = np.round(ECE_PROBABILITIES * 256) / 256 * 1.004  # int8-like steps, sums a little off 1
    got = task_metrics(Task.CLASSIFICATION, quantized, ECE_LABELS)["ece"]
    assert got == pytest.approx(0.4175, abs=0.01)


def test_ece_is_zero_for_confident_correct_predictions_and_one_for_confident_wrong():
    probabilities = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert task_metrics(Task.CLASSIFICATION, probabilities, np.array([0, 1]))["ece"] == 0.0
    assert task_metrics(Task.CLASSIFICATION, probabilities, np.array([1, 0]))["ece"] == 1.0


def test_ece_bins_are_closed_on_the_right():
    # Confidence exactly 1/3 = 5/15 belongs to (4/15, 5/15], apart from 0.34 in (5/15, 6/15].
    probabilities = np.array([[1 / 3, 1 / 3, 1 / 3], [0.34, 0.33, 0.33]])
    got = task_metrics(Task.CLASSIFICATION, probabilities, np.array([0, 1]))["ece"]
    assert got == pytest.approx(1 / 2 * (1 - 1 / 3) + 1 / 2 * 0.34)
    # Equal logits give the same uniform row through softmax.
    assert task_metrics(Task.CLASSIFICATION, np.zeros((1, 3)), np.array([0]))["ece"] == pytest.approx(2 / 3)


def reference_ece(probabilities, labels, bins=15):
    confidence, predicted = probabilities.max(axis=1), probabilities.argmax(axis=1)
    total = 0.0
    for i in range(bins):
        rows = (confidence > i / bins) & (confidence <= (i + 1) / bins)
        if rows.any():
            total += rows.mean() * abs(np.mean(predicted[rows] == labels[rows]) - confidence[rows].mean())
    return total


@settings(max_examples=40, deadline=None)
@given(seed=seeds, n=st.integers(1, 300), k=st.integers(2, 10))
def test_ece_matches_loop_over_bins(seed, n, k):
    logits, labels = random_classification(seed, n, k)
    logits = logits.astype(np.float64) * 3
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    got = task_metrics(Task.CLASSIFICATION, logits, labels)["ece"]
    assert got == pytest.approx(reference_ece(probabilities, labels), abs=1e-12)


# --- regression ----------------------------------------------------------------------------------------------------


def test_regression_hand_example():
    output = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    labels = np.array([1.5, 2.0, 2.0, 6.0])
    # Errors 0.5, 0, 1, 2.
    expected = {"mae": 0.875, "rmse": math.sqrt((0.25 + 0 + 1 + 4) / 4)}
    assert task_metrics(Task.REGRESSION, output, labels) == pytest.approx(expected)
    assert task_metrics(Task.REGRESSION, output[:, None], labels) == pytest.approx(expected)


def test_regression_with_several_outputs_per_row():
    output = np.array([[0.0, 1.0], [2.0, 3.0]])
    labels = np.array([[1.0, 1.0], [2.0, 0.0]])
    assert task_metrics(Task.REGRESSION, output, labels) == pytest.approx({"mae": 1.0, "rmse": math.sqrt(10 / 4)})


def test_fidelity_task_has_no_task_metrics():
    assert task_metrics(Task.FIDELITY, np.ones((3, 4)), None) == {}


# --- fidelity ------------------------------------------------------------------------------------------------------


def test_identical_outputs_are_perfectly_faithful():
    scores, _ = random_classification(1, 40, 10)
    assert fidelity(scores, scores.copy()) == {"top1_agreement": 1.0, "cosine": pytest.approx(1.0), "sqnr_db": math.inf}


def test_sqnr_of_known_noise_is_close_to_analytical_value():
    rng = np.random.default_rng(7)
    reference = rng.normal(size=(2000, 50))  # signal power 1
    output = reference + rng.normal(scale=0.1, size=reference.shape)  # noise power 0.01 -> 20 dB
    got = fidelity(reference, output)
    assert got["sqnr_db"] == pytest.approx(20.0, abs=0.1)
    assert got["cosine"] == pytest.approx(1 / math.sqrt(1.01), abs=2e-3)


def test_sqnr_scales_with_noise_exactly():
    reference = np.array([[3.0, 4.0]])  # signal power 25
    assert fidelity(reference, reference + [[0.5, 0.0]])["sqnr_db"] == pytest.approx(10 * math.log10(25 / 0.25))
    assert fidelity(np.zeros((1, 2)), np.ones((1, 2)))["sqnr_db"] == -math.inf


def test_cosine_hand_examples_including_zero_rows():
    reference = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    output = np.array([[0.0, 1.0], [2.0, 2.0], [-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    # Per row: 0, 1, -1, 1 (both zero), 0 (one zero).
    assert fidelity(reference, output)["cosine"] == pytest.approx(1 / 5)


def test_top1_agreement_counts_matching_argmax():
    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    output = np.array([[0.8, 0.2], [0.9, 0.1], [0.7, 0.3], [0.4, 0.6]])
    assert fidelity(reference, output)["top1_agreement"] == 0.75


def test_fidelity_flattens_trailing_dims_and_skips_agreement():
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(6, 3, 4, 5)).astype(np.float32)
    output = reference * 2 + 0.01
    got = fidelity(reference, output)
    assert "top1_agreement" not in got
    ref, out = reference.reshape(6, -1).astype(np.float64), output.reshape(6, -1).astype(np.float64)
    per_row = (ref * out).sum(axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
    assert got["cosine"] == pytest.approx(per_row.mean())
    assert got["sqnr_db"] == pytest.approx(10 * math.log10((ref**2).sum() / ((ref - out) ** 2).sum()))


def test_fidelity_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="row counts differ"):
        fidelity(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="shape"):
        fidelity(np.ones((3, 2)), np.ones((3, 4)))


# --- task detection ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "labels", "task"),
    [
        (np.zeros((4, 10)), None, Task.FIDELITY),
        (np.zeros((4,)), None, Task.FIDELITY),
        (np.zeros((4, 10)), np.array([0, 3, 9, 1]), Task.CLASSIFICATION),
        (np.zeros((4, 2)), np.array([[0], [1], [1], [0]], dtype=np.uint8), Task.CLASSIFICATION),
        (np.zeros((4,)), np.array([0.5, 1.0, 2.0, 3.0]), Task.REGRESSION),
        (np.zeros((4, 1)), np.array([0.5, 1.0, 2.0, 3.0]), Task.REGRESSION),
        (np.zeros((4,)), np.array([1, 2, 3, 4]), Task.REGRESSION),  # integer targets, e.g. counts
        (np.zeros((4, 1)), np.array([1, 2, 3, 4]), Task.REGRESSION),
        (np.zeros((4, 3)), np.zeros((4, 3)), Task.REGRESSION),  # several float targets per row
    ],
)
def test_detect_task(output, labels, task):
    assert detect_task(output, labels) is task


@pytest.mark.parametrize(
    ("output", "labels", "message"),
    [
        (np.zeros((3, 10)), np.array([0, 12, 3]), "label 12 is outside the model's 10 classes (expected 0..9)"),
        (np.zeros((3, 10)), np.array([0, -1, 3]), "label -1 is outside the model's 10 classes"),
        (np.zeros((3, 10)), np.array([0.5, 1.0, 3.0]), "labels give 1 value(s) per row but the model outputs 10"),
        (np.zeros((3, 4, 4)), np.array([0, 1, 2]), "labels give 1 value(s) per row but the model outputs 16"),
        (np.zeros((3, 10)), np.array(["cat", "dog", "cat"]), "labels must be numbers"),
    ],
)
def test_detect_task_rejects_labels_that_do_not_fit(output, labels, message):
    with pytest.raises(DataError) as error:
        detect_task(output, labels)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_detect_task_rejects_row_count_mismatch():
    with pytest.raises(ValueError, match="row counts differ"):
        detect_task(np.zeros((4, 10)), np.array([0, 1, 2]))


# --- primary metric ------------------------------------------------------------------------------------------------


def test_primary_metric_per_task():
    assert primary_metric(Task.CLASSIFICATION) == "top1"
    assert primary_metric(Task.REGRESSION) == "mae"
    assert primary_metric(Task.FIDELITY, np.zeros((4, 10))) == "top1_agreement"
    assert primary_metric(Task.FIDELITY, np.zeros((4,))) == "cosine"
    assert primary_metric(Task.FIDELITY, np.zeros((4, 1))) == "cosine"
    assert primary_metric(Task.FIDELITY, np.zeros((4, 3, 8))) == "cosine"
    with pytest.raises(ValueError):
        primary_metric(Task.FIDELITY)


def test_evaluation_primary_matches_primary_metric():
    scores, labels = random_classification(2, 30, 10)
    noisy = scores + np.random.default_rng(2).normal(scale=0.5, size=scores.shape).astype(np.float32)
    classification = evaluate(scores, noisy, labels, None)
    assert classification.primary == ("top1", classification.metrics["top1"])
    assert classification.primary[1] == pytest.approx(accuracy_score(labels, noisy.argmax(axis=1)))

    regression = evaluate(scores[:, 0], noisy[:, 0], scores[:, 1].astype(np.float64), None)
    assert regression.primary == ("mae", pytest.approx(np.mean(np.abs(noisy[:, 0] - scores[:, 1]))))

    unlabelled = evaluate(scores, noisy, None, None)
    assert unlabelled.metrics == {}
    assert unlabelled.primary == ("top1_agreement", np.mean(scores.argmax(axis=1) == noisy.argmax(axis=1)))
    assert unlabelled.primary[0] == primary_metric(Task.FIDELITY, scores)

    feature_map = evaluate(scores.reshape(30, 2, 5), noisy.reshape(30, 2, 5), None, None)
    assert feature_map.primary == ("cosine", feature_map.fidelity["cosine"])


# --- evaluate ------------------------------------------------------------------------------------------------------


def test_per_slice_values_equal_metrics_on_the_subset():
    scores, labels = random_classification(5, 120, 8)
    output = np.round(scores * 4) / 4  # coarse, quantization-like
    slices = np.random.default_rng(5).choice(["day", "night", "rain"], size=120)
    result = evaluate(scores, output, labels, slices)
    assert list(result.per_slice) == ["day", "night", "rain"]
    for name, values in result.per_slice.items():
        rows = slices == name
        expected = {
            "rows": int(rows.sum()),
            **task_metrics(Task.CLASSIFICATION, output[rows], labels[rows]),
            **fidelity(scores[rows], output[rows]),
        }
        assert values == expected
        assert values["top1"] == pytest.approx(accuracy_score(labels[rows], output[rows].argmax(axis=1)))
    assert sum(values["rows"] for values in result.per_slice.values()) == 120


def test_per_slice_without_labels_and_with_integer_slice_ids():
    reference = np.arange(12, dtype=np.float64).reshape(6, 2)
    output = reference.copy()
    output[0] = [1.0, 0.0]  # flips row 0's argmax, which is in slice 1
    result = evaluate(reference, output, None, np.array([1, 1, 1, 2, 2, 2]))
    assert result.per_slice["1"]["rows"] == 3
    assert result.per_slice["1"]["top1_agreement"] == pytest.approx(2 / 3)
    perfect = {"rows": 3, "top1_agreement": 1.0, "cosine": pytest.approx(1.0), "sqnr_db": math.inf}
    assert result.per_slice["2"] == perfect


def test_evaluate_without_slices_and_explicit_task():
    scores, labels = random_classification(4, 20, 3)
    result = evaluate(scores, scores, labels, None, task=Task.FIDELITY)
    assert result == Evaluation(Task.FIDELITY, {}, fidelity(scores, scores), {})
    assert evaluate(scores, scores, labels, None, task="classification").task is Task.CLASSIFICATION


def test_evaluate_validates_inputs():
    scores, labels = random_classification(4, 20, 3)
    with pytest.raises(ValueError, match="row counts differ"):
        evaluate(scores, scores, labels, np.zeros(19))
    with pytest.raises(ValueError, match="shape"):
        evaluate(scores, scores[:, :2], labels, None)
    with pytest.raises(DataError, match="classification needs labels"):
        evaluate(scores, scores, None, None, task=Task.CLASSIFICATION)
    with pytest.raises(DataError, match="label 3 is outside"):
        evaluate(scores, scores, labels + 1, None, task=Task.CLASSIFICATION)


def test_to_dict_is_json_ready_apart_from_infinity():
    scores, labels = random_classification(6, 30, 10)
    slices = np.repeat(["a", "b"], 15)
    data = evaluate(scores, scores, labels, slices).to_dict()
    assert data["task"] == "classification"
    assert data["primary"] == {"name": "top1", "value": data["metrics"]["top1"]}
    assert data["fidelity"]["sqnr_db"] == math.inf
    assert data["per_slice"]["a"]["rows"] == 15
    assert json.loads(json.dumps(data)) == data  # Python's json writes Infinity; strict writers must map it
