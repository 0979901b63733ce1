"""Task metrics, fidelity to the fp32 model and per-slice breakdowns.

METRICS is the one registry that names, orients and explains every metric.

Every metric is computed in float64 whatever the model's output dtype, so int8 or float16 outputs are scored exactly.
Infinite values (e.g. ``sqnr_db`` for identical outputs) are returned as ``float("inf")``: JSON has no infinity,
so whoever writes JSON must map them (e.g. to ``null`` or a string).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from engine.errors import DataError
from engine.masking import apply_mask
from engine.tensors import shared_row_count


class Task(str, Enum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    FIDELITY = "fidelity"  # no labels: only agreement with the fp32 model can be measured


@dataclass(frozen=True)
class MetricInfo:
    name: str
    label: str  # plain English, shown in tables and charts
    higher_is_better: bool
    help: str  # one sentence for a non-expert


METRICS: dict[str, MetricInfo] = {
    info.name: info
    for info in (
        MetricInfo("top1", "Top-1 accuracy", True,
                   "Share of examples where the model's highest-scoring class is the correct one."),
        MetricInfo("top5", "Top-5 accuracy", True,
                   "Share of examples where the correct class is among the model's five highest-scoring classes."),
        MetricInfo("macro_f1", "Macro F1 score", True,
                   "Balance of precision and recall averaged over classes, so rare classes count as much as common"
                   " ones."),
        MetricInfo("ece", "Calibration error (ECE)", False,
                   "How far the model's confidence is from how often it is actually right; 0 means perfectly honest."),
        MetricInfo("mae", "Mean absolute error", False,
                   "Average distance between the prediction and the true value, in the target's own units."),
        MetricInfo("rmse", "Root mean squared error", False,
                   "Like the mean absolute error, but large mistakes weigh much more than small ones."),
        MetricInfo("top1_agreement", "Top-1 agreement with fp32", True,
                   "Share of examples where the quantized model picks the same top class as the original model."),
        MetricInfo("cosine", "Cosine similarity to fp32", True,
                   "How closely the quantized outputs follow the original outputs' pattern; 1 means the same up to"
                   " scale."),
        MetricInfo("sqnr_db", "Signal-to-noise ratio (dB)", True,
                   "How much larger the original outputs are than the error quantization added; each +10 dB means"
                   " ten times less error power."),
    )
}

ECE_BINS = 15
# Rows summing to 1 within this tolerance are taken as probabilities rather than logits: a quantized softmax
# output is only roughly normalised (its values step by the quantization scale, e.g. 1/256).
_PROBABILITY_TOLERANCE = 1e-2

# A metric scores (output, target) float64 arrays; None means undefined for this output (e.g. top5 with 5 classes).
_Metric = Callable[[np.ndarray, np.ndarray], float | None]


# --- shapes and validation ---------------------------------------------------------------------------------------


def _row_count(**arrays: np.ndarray | None) -> int:
    """The row count N shared by every given array. Mismatches are caller bugs, hence ValueError."""
    return shared_row_count(arrays, ValueError, "the evaluation")


def _check_same_shape(reference: np.ndarray, output: np.ndarray) -> None:
    _row_count(reference=reference, output=output)
    if reference.shape != output.shape:
        raise ValueError(f"output shape {output.shape} differs from reference shape {reference.shape}")


def _per_row(array: np.ndarray) -> np.ndarray:
    """[N, ...] -> float64 [N, M]: one flat vector per example."""
    return np.asarray(array, dtype=np.float64).reshape(len(array), -1)


def _is_class_scores(output: np.ndarray) -> bool:
    return output.ndim == 2 and output.shape[1] > 1


def _is_integer(labels: np.ndarray) -> bool:
    return labels.dtype.kind in "iub"


def _check_class_labels(output: np.ndarray, labels: np.ndarray) -> None:
    if not _is_class_scores(output):
        raise DataError(
            f"classification needs one score per class ([N, K] with K > 1), but the output has shape {output.shape}"
        )
    if not _is_integer(labels) or labels.size != len(labels):
        raise DataError(
            f"classification needs one integer class per row, got {labels.dtype} labels of shape {labels.shape}"
        )
    k = output.shape[1]
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= k:
        raise DataError(f"label {high if high >= k else low} is outside the model's {k} classes (expected 0..{k - 1})")


def _check_regression_labels(output: np.ndarray, labels: np.ndarray) -> None:
    per_label_row, per_output_row = labels.size // len(labels), output.size // len(output)
    if per_label_row != per_output_row:
        raise DataError(
            f"labels give {per_label_row} value(s) per row but the model outputs {per_output_row}; "
            "for classification, labels must be integer class indices"
        )


_LABEL_CHECKS: dict[Task, Callable[[np.ndarray, np.ndarray], None]] = {
    Task.CLASSIFICATION: _check_class_labels,
    Task.REGRESSION: _check_regression_labels,
}


def _check_labels(task: Task, output: np.ndarray, labels: np.ndarray | None) -> None:
    """Raise DataError when labels cannot be scored against output for this task (FIDELITY ignores labels)."""
    if task is Task.FIDELITY:
        return
    if labels is None:
        raise DataError(f"{task.value} needs labels, but none were given")
    if labels.dtype.kind not in "iubf":
        raise DataError(f"labels must be numbers, got dtype {labels.dtype}")
    _LABEL_CHECKS[task](output, labels)


def detect_task(reference_output: np.ndarray, labels: np.ndarray | None) -> Task:
    """Guess the task from the fp32 output and the labels; raise DataError when the labels cannot fit the output.

    No labels -> FIDELITY. Integer labels, one per row, against [N, K > 1] scores -> CLASSIFICATION.
    Anything else (float labels, outputs [N] / [N, 1] / [N, ...]) -> REGRESSION, which needs as many label values per
    row as the output has.
    """
    if labels is None:
        return Task.FIDELITY
    reference_output, labels = np.asarray(reference_output), np.asarray(labels)
    _row_count(reference_output=reference_output, labels=labels)
    one_class_per_row = _is_integer(labels) and labels.size == len(labels)
    task = Task.CLASSIFICATION if one_class_per_row and _is_class_scores(reference_output) else Task.REGRESSION
    _check_labels(task, reference_output, labels)
    return task


# --- task metrics ------------------------------------------------------------------------------------------------


def _top1(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(scores.argmax(axis=1) == labels))


def _top5(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Share of rows whose label is among the 5 best scores; ties rank the lower class first, as argmax does,
    so tied int8 scores cannot inflate the result."""
    if scores.shape[1] <= 5:
        return None  # trivially 1
    true_score = scores[np.arange(len(labels)), labels][:, None]
    classes = np.arange(scores.shape[1])
    ahead = (scores > true_score) | ((scores == true_score) & (classes < labels[:, None]))
    return float(np.mean(ahead.sum(axis=1) < 5))


def _macro_f1(scores: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean F1 over the classes present in labels or predictions, as sklearn's f1_score(average="macro").

    A class absent from both would score 0/0 and says nothing about this data, so it is left out.
    """
    k = scores.shape[1]
    predicted = scores.argmax(axis=1)
    true_positives = np.bincount(labels[predicted == labels], minlength=k)
    # F1 = 2TP / (2TP + FP + FN), and 2TP + FP + FN = (rows labelled c) + (rows predicted c).
    labelled_plus_predicted = np.bincount(labels, minlength=k) + np.bincount(predicted, minlength=k)
    present = labelled_plus_predicted > 0
    return float(np.mean(2 * true_positives[present] / labelled_plus_predicted[present]))


def _probabilities(scores: np.ndarray) -> np.ndarray:
    """Softmax of logits; an output that already holds probabilities is only renormalised."""
    sums = scores.sum(axis=1, keepdims=True)
    if scores.min() >= 0 and np.allclose(sums, 1, atol=_PROBABILITY_TOLERANCE):
        return scores / sums
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))  # shifting by the row max keeps exp from overflowing
    return exp / exp.sum(axis=1, keepdims=True)


def _ece(scores: np.ndarray, labels: np.ndarray) -> float:
    """Expected calibration error (Guo et al. 2017): sum over bins of (share of rows) * |accuracy - mean confidence|.

    Confidence is the top softmax probability; the 15 equal-width bins are (i/15, (i+1)/15].
    """
    probabilities = _probabilities(scores)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(labels)), predicted]
    # Inner edges i/15 by true division, so a uniform 3-class row (confidence exactly 1/3) falls in (4/15, 5/15].
    inner_edges = np.arange(1, ECE_BINS) / ECE_BINS
    bins = np.digitize(confidence, inner_edges, right=True)
    # Per bin, sum(correct - confidence) = n_bin * (accuracy - mean confidence).
    gaps = np.bincount(bins, weights=(predicted == labels) - confidence, minlength=ECE_BINS)
    return float(np.abs(gaps).sum() / len(labels))


def _mae(output: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.abs(output - labels)))


def _rmse(output: np.ndarray, labels: np.ndarray) -> float:
    return float(np.sqrt(np.mean((output - labels) ** 2)))


_TASK_METRICS: dict[Task, dict[str, _Metric]] = {
    Task.CLASSIFICATION: {"top1": _top1, "top5": _top5, "macro_f1": _macro_f1, "ece": _ece},
    Task.REGRESSION: {"mae": _mae, "rmse": _rmse},
    Task.FIDELITY: {},
}


def _score(metrics: dict[str, _Metric], output: np.ndarray, target: np.ndarray) -> dict[str, float]:
    values = {name: metric(output, target) for name, metric in metrics.items()}
    return {name: value for name, value in values.items() if value is not None}


def task_metrics(task: Task, output: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    """Metrics of output against labels: top1, top5 (only with more than 5 classes), macro_f1, ece for
    classification; mae, rmse for regression; nothing for FIDELITY."""
    task = Task(task)
    if task is Task.FIDELITY:
        return {}
    output = np.asarray(output)
    labels = None if labels is None else np.asarray(labels)
    _row_count(output=output, labels=labels)
    _check_labels(task, output, labels)
    if task is Task.CLASSIFICATION:
        return _score(_TASK_METRICS[task], output.astype(np.float64), labels.reshape(-1).astype(np.int64))
    return _score(_TASK_METRICS[task], _per_row(output), _per_row(labels))


# --- fidelity to the fp32 model ---------------------------------------------------------------------------------


def _top1_agreement(reference: np.ndarray, output: np.ndarray) -> float | None:
    if not _is_class_scores(reference):
        return None  # argmax means nothing for a single value or a feature map
    return float(np.mean(reference.argmax(axis=1) == output.argmax(axis=1)))


def row_cosines(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair of flattened rows. A zero row has no direction: two zero rows count as
    identical (1), a zero row against a non-zero one as unrelated (0)."""
    ref, out = _per_row(reference), _per_row(output)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    both_zero = ~ref.any(axis=1) & ~out.any(axis=1)
    cosines = np.divide(np.einsum("ij,ij->i", ref, out), norms, out=both_zero.astype(np.float64), where=norms > 0)
    return np.clip(cosines, -1.0, 1.0)  # rounding can step just past +-1


def _cosine(reference: np.ndarray, output: np.ndarray) -> float:
    """Mean per-row cosine similarity (row_cosines)."""
    return float(np.mean(row_cosines(reference, output)))


def _sqnr_db(reference: np.ndarray, output: np.ndarray) -> float:
    """10 * log10(sum(ref^2) / sum((ref - out)^2)): +inf when the outputs are identical, -inf when the reference is
    all zero but the output is not."""
    return sqnr_db_from_energies(float(np.sum(reference**2)), float(np.sum((reference - output) ** 2)))


def sqnr_db_from_energies(signal: float, noise: float) -> float:
    """10 * log10(signal / noise), from sums of squares accumulated elsewhere (e.g. batch by batch)."""
    if noise == 0:
        return float("inf")
    if signal == 0 or noise == float("inf"):
        return float("-inf")
    return float(10 * np.log10(signal / noise))


_FIDELITY: dict[str, _Metric] = {"top1_agreement": _top1_agreement, "cosine": _cosine, "sqnr_db": _sqnr_db}


def fidelity(reference: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """How closely output follows the fp32 reference: top1_agreement (only for [N, K > 1] scores), cosine, sqnr_db."""
    reference, output = np.asarray(reference, dtype=np.float64), np.asarray(output, dtype=np.float64)
    _check_same_shape(reference, output)
    return _score(_FIDELITY, reference, output)


# --- primary metric and evaluation -------------------------------------------------------------------------------

_PRIMARY = {Task.CLASSIFICATION: "top1", Task.REGRESSION: "mae"}
# Without labels: argmax agreement for class scores (what the user sees change), else cosine, defined for any shape.
_FIDELITY_PRIMARY = ("top1_agreement", "cosine")


def primary_metric(task: Task, reference_output: np.ndarray | None = None) -> str:
    """The one metric to rank recipes by. FIDELITY depends on the output shape, so it needs reference_output."""
    task = Task(task)
    if task is not Task.FIDELITY:
        return _PRIMARY[task]
    if reference_output is None:
        raise ValueError("the fidelity primary metric depends on the output shape: pass reference_output")
    agreement, cosine = _FIDELITY_PRIMARY
    return agreement if _is_class_scores(np.asarray(reference_output)) else cosine


@dataclass
class Evaluation:
    task: Task
    metrics: dict[str, float]  # task metrics, empty for FIDELITY
    fidelity: dict[str, float]
    per_slice: dict[str, dict[str, float]]  # slice -> {"rows": n, **task metrics, **fidelity}; {} without slices

    @property
    def primary(self) -> tuple[str, float]:
        """(name, value) of the primary metric."""
        if self.task in _PRIMARY:
            name = _PRIMARY[self.task]
            return name, self.metrics[name]
        # top1_agreement is only measured for class scores, so its presence is primary_metric's shape test.
        name = next(name for name in _FIDELITY_PRIMARY if name in self.fidelity)
        return name, self.fidelity[name]

    def to_dict(self) -> dict:
        """JSON-ready except for non-finite floats, which stay floats for the writer to map."""
        name, value = self.primary
        return {
            "task": self.task.value,
            "primary": {"name": name, "value": value},
            "metrics": dict(self.metrics),
            "fidelity": dict(self.fidelity),
            "per_slice": {slice_name: dict(values) for slice_name, values in self.per_slice.items()},
        }


def _per_slice(
    task: Task, reference: np.ndarray, output: np.ndarray, labels: np.ndarray | None, slices: np.ndarray | None,
    mask: np.ndarray | None,
) -> dict[str, dict[str, float]]:
    """Slice name -> {"rows": n, **task metrics, **fidelity} computed on that slice's rows alone."""
    if slices is None:
        return {}
    breakdown = {}
    for name in np.unique(slices):
        rows = slices == name
        rows_mask = None if mask is None else mask[rows]
        breakdown[str(name)] = {
            "rows": int(rows.sum()),
            **task_metrics(task, output[rows], None if labels is None else labels[rows]),
            **fidelity(apply_mask(reference[rows], rows_mask), apply_mask(output[rows], rows_mask)),
        }
    return breakdown


def evaluate(
    reference: np.ndarray,
    output: np.ndarray,
    labels: np.ndarray | None,
    slices: np.ndarray | None,
    task: Task | None = None,
    mask: np.ndarray | None = None,
) -> Evaluation:
    """Score output (e.g. the quantized model's) against labels and against the fp32 reference, overall and per slice.

    task defaults to detect_task(reference, labels). slices holds one slice name per row. mask ([rows, sequence],
    True at real tokens; engine.masking) limits fidelity to real tokens.
    """
    reference, output = np.asarray(reference), np.asarray(output)
    labels = None if labels is None else np.asarray(labels)
    slices = None if slices is None else np.asarray(slices)
    _row_count(reference=reference, output=output, labels=labels, slices=slices)
    _check_same_shape(reference, output)
    task = detect_task(reference, labels) if task is None else Task(task)  # task_metrics checks the labels fit
    return Evaluation(
        task,
        task_metrics(task, output, labels),
        fidelity(apply_mask(reference, mask), apply_mask(output, mask)),
        _per_slice(task, reference, output, labels, slices, mask),
    )
