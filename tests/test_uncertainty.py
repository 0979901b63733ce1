"""Intervals for the primary metric and its paired difference to fp32: right values, right coverage, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from engine.metrics import _FIDELITY_PRIMARY, _PRIMARY, evaluate, primary_metric
from engine.uncertainty import PRIMARY_DECOMPOSITIONS, uncertainty, wilson

TRIALS = 300


def scores_for(correct: np.ndarray, labels: np.ndarray, classes: int = 3) -> np.ndarray:
    """Class scores whose argmax is the label where `correct`, another class elsewhere."""
    predicted = np.where(correct, labels, (labels + 1) % classes)
    return np.eye(classes)[predicted] + 0.01


def test_every_metric_that_can_be_primary_has_an_interval():
    assert set(PRIMARY_DECOMPOSITIONS) == {*_PRIMARY.values(), *_FIDELITY_PRIMARY}


@pytest.mark.parametrize("case", ["top1", "mae", "top1_agreement", "cosine"])
def test_the_point_values_are_engine_metrics_own(case):
    generator = np.random.default_rng(0)
    labels = generator.integers(0, 3, 200)
    if case == "mae":
        labels = generator.normal(size=(200, 1))
        reference, output = labels + generator.normal(0, 0.3, (200, 1)), labels + generator.normal(0, 0.5, (200, 1))
        task_labels = labels
    else:
        reference = scores_for(generator.random(200) < 0.9, labels)
        output = reference + generator.normal(0, 0.6, reference.shape)
        task_labels = None if case in ("top1_agreement", "cosine") else labels
    evaluation = evaluate(reference, output, task_labels, None)
    scores = {**evaluation.metrics, **evaluation.fidelity}
    original = {**evaluate(reference, reference, task_labels, None).metrics,
                **evaluate(reference, reference, task_labels, None).fidelity}
    sureness = uncertainty(case, reference, output, task_labels)
    assert sureness.delta == pytest.approx(scores[case] - original[case], abs=1e-12)
    assert sureness.metric.low <= scores[case] <= sureness.metric.high
    assert sureness.delta_interval.low <= sureness.delta <= sureness.delta_interval.high


def test_the_same_inputs_give_the_same_intervals():
    generator = np.random.default_rng(1)
    labels = generator.integers(0, 3, 300)
    reference = scores_for(generator.random(300) < 0.8, labels)
    output = scores_for(generator.random(300) < 0.75, labels)
    assert uncertainty("top1", reference, output, labels) == uncertainty("top1", reference, output, labels)


def test_the_original_model_has_no_difference_to_itself():
    labels = np.arange(90) % 3
    reference = scores_for(np.arange(90) % 4 != 0, labels)
    sureness = uncertainty("top1", reference, reference, labels)
    assert sureness.delta == 0 and (sureness.delta_interval.low, sureness.delta_interval.high) == (0, 0)


def test_the_accuracy_interval_covers_a_known_rate_95_percent_of_the_time():
    """300 synthetic validation sets of 360 examples, each example right with probability 0.8."""
    generator = np.random.default_rng(2)
    labels = np.arange(360) % 3
    covered = 0
    for _ in range(TRIALS):
        output = scores_for(generator.random(360) < 0.8, labels)
        covered += uncertainty("top1", output, output, labels, resamples=10).metric.contains(0.8)
    assert 0.92 <= covered / TRIALS <= 0.98


def test_the_paired_difference_interval_covers_a_known_difference_95_percent_of_the_time():
    """fp32 right with probability 0.85; the recipe loses 4 in 100 of those and gains 1 in 100 of the others,
    so its accuracy differs by 0.85 * -0.04 + 0.15 * 0.01 = -0.0325 in expectation."""
    generator = np.random.default_rng(3)
    labels = np.arange(400) % 3
    expected = 0.85 * -0.04 + 0.15 * 0.01
    covered = 0
    for _ in range(TRIALS):
        original = generator.random(400) < 0.85
        flips = np.where(original, generator.random(400) < 0.04, generator.random(400) < 0.01)
        sureness = uncertainty("top1", scores_for(original, labels), scores_for(original ^ flips, labels), labels,
                               resamples=400, seed=int(generator.integers(1 << 30)))
        covered += sureness.delta_interval.contains(expected)
    assert 0.91 <= covered / TRIALS <= 0.99


@pytest.mark.parametrize("successes, trials", [(81, 100), (3, 40), (359, 360), (0, 10), (10, 10)])
def test_wilson_matches_scipy(successes, trials):
    stats = pytest.importorskip("scipy.stats")
    expected = stats.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    interval = wilson(successes, trials)
    assert interval.low == pytest.approx(expected.low, abs=1e-6) and interval.high == pytest.approx(expected.high,
                                                                                                   abs=1e-6)


def test_fidelity_primary_metrics_are_intervals_around_agreement_with_fp32():
    generator = np.random.default_rng(4)
    reference = generator.normal(size=(120, 5))
    output = reference + generator.normal(0, 0.8, reference.shape)
    assert primary_metric("fidelity", reference) == "top1_agreement"
    sureness = uncertainty("top1_agreement", reference, output, None)
    agreement = float(np.mean(reference.argmax(1) == output.argmax(1)))
    assert sureness.delta == pytest.approx(agreement - 1)
    assert sureness.metric.low < agreement < sureness.metric.high
