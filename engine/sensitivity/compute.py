"""The sensitivity table: every point of every candidate, measured with only it quantized and with all but it.

For each candidate precision (a Recipe):

1. its artifact is built once by the realisers (engine.realise), static candidates calibrating once per
   calibration key through one CalibrationSet, as AIMET's AMP reuses its encodings;
2. its points are read off that artifact (engine.sensitivity.points); layers its realiser left in float get
   simulated stand-ins, so that every weight layer has a row;
3. per point, two models are composed from the fp32 graph (engine.sensitivity.graphs), each opened once and
   run over the scored rows once: with only this point quantized (fetching the point's tensor too, for its SQNR
   and range statistics) and with every point of the artifact but this one. The fp32 outputs are the sweep's
   reference, computed once; a weight point's fp32 node output comes from a probe of that node alone; a model
   already measured (the same QDQ pair on an activation under W8A8 and W4A8) is not run again.

Each cell is scored like a sweep row (engine.sweep.rows: masked fidelity, the primary metric, its paired
interval against fp32), and `all_but_this` also against the artifact with every point quantized (`recovery`).
The naive computation (engine.sensitivity.naive) repeats steps 1-2 for every cell and gives the same numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from engine.data import Dataset
from engine.errors import QuantscopeError
from engine.masking import AUTO, NO_MASK, Masking, apply_mask, choose_padding
from engine.measure import open_session, predict, run_batches
from engine.model import LoadedModel
from engine.realise import Artifact, quantize
from engine.realise.calibration import CalibrationSet, calibration_key
from engine.realise.native import nonfinite_range_warnings_silenced
from engine.realise.simulated import Simulated
from engine.recipe import LayerOverride, Recipe
from engine.sensitivity import table as columns
from engine.sensitivity.graphs import Composed, compose
from engine.sensitivity.points import ACTIVATIONS, WEIGHTS, Point, extract_points
from engine.sensitivity.statistics import RangeCollector, RangeStats, Sqnr, range_stats, real_values, sqnr_db
from engine.sensitivity.table import SensitivityTable
from engine.sweep.plan import DataPlan, calibration_rows_asked, plan_data
from engine.sweep.rows import Reference, reference_for, score_output
from engine.text import error_line
from engine.uncertainty import difference

Progress = Callable[[int, int, str], None]  # (done, total, message)
PointKey = tuple[str, str, str]  # Point.key
REAL, SIMULATED = "real", "simulated"


@dataclass(frozen=True)
class CandidateOutputs:
    """A candidate's artifact on the scored rows: what `all_but_this` is compared with."""

    output: np.ndarray
    score: tuple[float, float, float, float]  # (metric, change against fp32, its interval)


@dataclass
class Candidate:
    """One precision the table measures and what its artifact quantizes."""

    recipe: Recipe
    artifact: Artifact | None = None
    points: list[Point] = field(default_factory=list)  # what the artifact quantizes
    stand_ins: list[Point] = field(default_factory=list)  # simulated points for layers the artifact left in float
    unmapped: list[str] = field(default_factory=list)
    error: str | None = None
    outputs: CandidateOutputs | None = None  # the artifact on the scored rows, once measured
    measured: list[Point] | None = None  # the points that get rows (restrict); None: all

    @property
    def rows(self) -> list[Point]:
        return [*self.points, *self.stand_ins] if self.measured is None else self.measured

    @property
    def cells(self) -> int:
        return sum(2 if any(point is p for p in self.points) else 1 for point in self.rows)


def prepare_candidate(model: LoadedModel, recipe: Recipe, workdir: Path, calibration: CalibrationSet | None
                      ) -> Candidate:
    """Build the candidate's artifact and read its points; an artifact onnxruntime cannot build is an error
    of that candidate alone."""
    candidate = Candidate(recipe)
    try:
        with nonfinite_range_warnings_silenced():  # the table's range statistics say it better
            artifact = quantize(model, recipe, Path(workdir) / "artifacts" / f"{recipe.slug()}.onnx", calibration)
    except QuantscopeError:
        raise
    except Exception as error:  # onnxruntime cannot quantize this model so; the other candidates go on
        candidate.error = error_line(error)
        return candidate
    bits = (recipe.weights.bits, recipe.activations.bits)
    extraction = extract_points(model, onnx.load(artifact.path), bits, artifact.simulated)
    candidate.artifact, candidate.points, candidate.unmapped = artifact, extraction.points, extraction.unmapped
    covered = {point.layer for point in extraction.points if point.kind == WEIGHTS} | \
        {point.tensor for point in extraction.points if point.kind == WEIGHTS}
    left_float = {layer.name for layer in model.summary.layers if not {layer.name, layer.weight} & covered}
    if left_float and not artifact.simulated:
        quantized = {layer.name for layer in model.summary.layers} - left_float
        simulated = replace(recipe, overrides={name: LayerOverride(keep_fp32=True) for name in sorted(quantized)})
        stand_in_path = Path(workdir) / "artifacts" / f"{recipe.slug()}-stand-ins.onnx"
        Simulated().realise(model, simulated, calibration, stand_in_path)
        candidate.stand_ins = extract_points(model, onnx.load(stand_in_path), bits, True, left_float).points
    return candidate


def restrict(candidate: Candidate, only: Collection[PointKey] | None) -> Candidate:
    """The candidate measured on the points `only` names (all of them when None); `all_but_this` still leaves out
    one point of the whole artifact."""
    if only is not None:
        candidate.measured = [p for p in [*candidate.points, *candidate.stand_ins] if p.key in only]
    return candidate


@dataclass
class Scoring:
    """What every cell is measured against: the scored rows, the fp32 reference, and caches shared by all cells
    (probes of fp32 nodes, each tensor's range statistics)."""

    model: LoadedModel
    data: Dataset
    reference: Reference
    padding: Masking  # which positions of a tensor inside the model are signal (engine.masking.choose_padding)
    threads: int = 1
    probes: dict[str, ort.InferenceSession] = field(default_factory=dict)
    ranges: dict[str, RangeStats] = field(default_factory=dict)
    # only_this results by their model's bytes: W8A8 and W4A8 put the very same pair on each activation tensor
    measured: dict[str, OnlyThis] = field(default_factory=dict)

    @classmethod
    def of(cls, model: LoadedModel, data: Dataset, workdir: Path, mask: str, threads: int,
           reference: Reference | None = None) -> Scoring:
        """Scoring on `data`; `mask` (AUTO, NO_MASK or an input's name) marks padding, which fidelity ignores where
        the output has a sequence axis too (detected as in a sweep) and range statistics and SQNR ignore inside.
        `reference`: the fp32 reference already computed on `data` with this mask (a Dask worker's), else anew."""
        padding = choose_padding(data, mask)
        fidelity = mask if mask in (AUTO, NO_MASK) else AUTO  # a classifier's pooled output has no padding to mask
        reference = reference or reference_for(model, data, Path(workdir), fidelity)
        return cls(model, data, reference, padding, threads)

    def __post_init__(self) -> None:
        self.mask = self.reference.masking.mask(self.data)
        self.padding_mask = self.padding.mask(self.data)
        self.inferred = onnx.shape_inference.infer_shapes(self.model.proto)
        self.types = tensor_types(self.inferred)
        self.fp32_metric = self.score(self.reference.output)[0]

    def score(self, output: np.ndarray) -> tuple[float, float, float, float]:
        """(metric, change against fp32, and that change's 95% interval)."""
        evaluation, sureness = score_output(self.reference.output, output, self.data, self.reference.task,
                                            self.reference.metric, self.reference.masking, by_slice=False)
        interval = sureness.delta_interval
        return evaluation.primary[1], sureness.delta, interval.low, interval.high

    def recovery(self, baseline: np.ndarray, output: np.ndarray) -> tuple[float, float, float]:
        """(change of `output` against `baseline`, its 95% interval), both scored against fp32."""
        def masked(values):
            return apply_mask(values, self.mask)

        delta, interval = difference(self.reference.metric, masked(self.reference.output), masked(baseline),
                                     masked(output), self.data.labels)
        return delta, interval.low, interval.high

    def run(self, composed: Composed) -> np.ndarray:
        return predict(open_session(composed.serialized(), self.threads), self.data)

    def probe(self, point: Point) -> tuple[ort.InferenceSession, list[str]]:
        """A session on the fp32 node that reads the point's weight, and its run-time input names."""
        node = next(n for n in self.model.proto.graph.node if n.name == point.layer)
        initializers = {t.name for t in self.model.proto.graph.initializer}
        inputs = [name for name in node.input if name and name not in initializers]
        if point.layer not in self.probes:
            extracted = onnx.utils.Extractor(self.inferred).extract_model(inputs, [point.observed])
            self.probes[point.layer] = open_session(extracted.SerializeToString(), self.threads)
        return self.probes[point.layer], inputs


def tensor_types(inferred: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor a shape-inferred graph names."""
    types = {t.name: t.data_type for t in inferred.graph.initializer}
    for value in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    return types


def with_outputs(composed: Composed, names: Sequence[str], types: dict[str, int], originals: dict[str, str]
                 ) -> Composed:
    """The composed model with `names` as graph outputs too, so that a run can fetch them."""
    present = {o.name for o in composed.proto.graph.output}
    for name in names:
        if name not in present:
            elem_type = types.get(originals.get(name, name), onnx.TensorProto.FLOAT)
            composed.proto.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_type, None))
            present.add(name)
    return composed


@dataclass(frozen=True)
class OnlyThis:
    output: np.ndarray
    output_sqnr_db: float
    ranges: RangeStats


def only_this(scoring: Scoring, point: Point) -> OnlyThis:
    """The model with `point` alone quantized, run once over the scored rows: its output, the SQNR of the point's
    tensor against fp32, and (activations) that tensor's range statistics."""
    composed = compose(scoring.model.proto, [point])
    before, after = composed.observed(point)
    graph_inputs = {v.name for v in composed.proto.graph.input}
    probe, probe_inputs = (None, []) if before is not None else scoring.probe(point)
    fetched_inputs = [composed.name(name) for name in probe_inputs]
    wanted = [after] + ([before] if before is not None and before not in graph_inputs else []) + \
        [name for name in fetched_inputs if name not in graph_inputs]
    originals = {after: point.observed, **({before: point.observed} if before else {}),
                 **dict(zip(fetched_inputs, probe_inputs))}
    with_outputs(composed, wanted, scoring.types, originals)
    serialized = composed.serialized()
    digest = hashlib.sha256(serialized).hexdigest()
    if digest in scoring.measured:
        return scoring.measured[digest]
    session = open_session(serialized, scoring.threads)
    final = session.get_outputs()[0].name
    names = [final, *wanted]
    collect = point.kind == ACTIVATIONS and point.tensor not in scoring.ranges
    collector = RangeCollector(len(scoring.data))
    sqnr, outputs = Sqnr(), []
    for rows, values in run_batches(session, scoring.data, names):
        fetched = dict(zip(names, values))
        feed = {name: array[rows] for name, array in scoring.data.inputs.items()}
        fetched.update({name: feed[name] for name in graph_inputs if name in feed})
        outputs.append(fetched[final])
        if before is not None:
            fp32_value = fetched[before]
        else:
            fp32_value = probe.run([point.observed], {original: fetched[here] for here, original in
                                                       zip(fetched_inputs, probe_inputs)})[0]
        mask = None if scoring.padding_mask is None else scoring.padding_mask[rows]
        reference, quantized = real_values(fp32_value, mask), real_values(fetched[after], mask)
        sqnr.add(reference, quantized)
        if collect:
            collector.add(fp32_value, reference, len(fetched[final]))
    if collect:
        scoring.ranges[point.tensor] = collector.result()
    result = scoring.measured[digest] = OnlyThis(np.concatenate(outputs, axis=0), sqnr.db, point_ranges(scoring, point))
    return result


def point_ranges(scoring: Scoring, point: Point) -> RangeStats:
    """Range statistics of the values the point quantizes (fp32): a weight's, or an activation's on the scored rows
    (collected by only_this)."""
    if point.tensor not in scoring.ranges:
        initializer = next(t for t in scoring.model.proto.graph.initializer if t.name == point.tensor)
        scoring.ranges[point.tensor] = range_stats(onnx.numpy_helper.to_array(initializer))
    return scoring.ranges[point.tensor]


def weight_sqnr(scoring: Scoring, point: Point) -> float:
    if point.kind == ACTIVATIONS or point.effective_weight is None:
        return float("nan")
    initializer = next(t for t in scoring.model.proto.graph.initializer if t.name == point.tensor)
    return sqnr_db(onnx.numpy_helper.to_array(initializer), point.effective_weight)


class CellModels:
    """How the two models of a point's row are built and run: here from the candidate prepared once (the naive
    computation, engine.sensitivity.naive, prepares it again for every cell)."""

    def only_this(self, scoring: Scoring, candidate: Candidate, point: Point) -> OnlyThis:
        return only_this(scoring, point)

    def all_but_this(self, scoring: Scoring, candidate: Candidate, point: Point) -> np.ndarray:
        others = [p for p in candidate.points if p is not point]
        return scoring.run(compose(scoring.model.proto, others)) if others else scoring.reference.output


def measure_candidate(scoring: Scoring, candidate: Candidate, progress: Callable[[str], None],
                      models: CellModels = CellModels()) -> list[dict]:
    """Every row of one prepared candidate, in graph order."""
    artifact = candidate.artifact
    output = predict(open_session(artifact.path, scoring.threads), scoring.data)
    everything = candidate.outputs = CandidateOutputs(output, scoring.score(output))
    rows = []
    position = {node.name: index for index, node in enumerate(scoring.model.proto.graph.node)}
    for point in sorted(candidate.rows, key=lambda p: position.get(p.layer, -1)):
        name = candidate.recipe.short_name()
        in_artifact = any(point is p for p in candidate.points)
        progress(f"{name}: only {point.layer}")  # outside the try: a progress callback may stop the table
        alone, error = _attempt(lambda: models.only_this(scoring, candidate, point))
        all_but, note = everything.output, f"left in float by {artifact.realiser}: only_this is simulated"
        if in_artifact and error is None:
            progress(f"{name}: all but {point.layer}")
            (all_but, error), note = _attempt(lambda: models.all_but_this(scoring, candidate, point)), None
        if error is not None:
            rows.append(columns.failed_row(point, name, scoring.reference.metric, error))
        else:
            rows.append(cell_row(scoring, candidate, point, alone, all_but, everything, note))
    return rows


def _attempt(compute: Callable[[], object]) -> tuple[object, str | None]:
    """(result, None), or (None, the error in one line) when onnxruntime cannot build or run a cell's model: one
    such cell must not sink the table. A user's error (QuantscopeError) stops it."""
    try:
        return compute(), None
    except QuantscopeError:
        raise
    except Exception as error:
        return None, error_line(error)


def cell_row(scoring: Scoring, candidate: Candidate, point: Point, alone: OnlyThis, all_but: np.ndarray,
             everything: CandidateOutputs, note: str | None) -> dict:
    only_value, only_delta, only_low, only_high = scoring.score(alone.output)
    all_but_value = scoring.score(all_but)[0]
    recovery, recovery_low, recovery_high = scoring.recovery(everything.output, all_but)
    return columns.row(
        point, candidate.recipe.short_name(), scoring.reference.metric, scoring.fp32_metric,
        only_this=(only_value, only_delta, only_low, only_high),
        all_but_this=(all_but_value, recovery, recovery_low, recovery_high),
        all_quantized=everything.score[0],
        output_sqnr_db=alone.output_sqnr_db, weight_sqnr_db=weight_sqnr(scoring, point), ranges=alone.ranges,
        methods=(SIMULATED if point.simulated else REAL, SIMULATED if candidate.artifact.simulated else REAL),
        note=note,
    )


@dataclass(frozen=True)
class CandidateResult:
    """What one candidate adds to the table, small enough to come back from a Dask worker: its summary, its rows,
    the identity of each point it measured (in its order) and the range statistics known of their tensors."""

    summary: dict
    rows: list[dict]
    points: list[dict]  # columns.point_identity
    ranges: dict[str, RangeStats]  # by tensor

    @classmethod
    def of(cls, scoring: Scoring, candidate: Candidate, rows: list[dict]) -> CandidateResult:
        known = [p for p in candidate.rows if p.kind != ACTIVATIONS or p.tensor in scoring.ranges]
        return cls(candidate_summary(scoring, candidate), rows, [columns.point_identity(p) for p in candidate.rows],
                   {point.tensor: point_ranges(scoring, point) for point in known})


def candidate_result(scoring: Scoring, candidate: Candidate, progress: Callable[[str], None]) -> CandidateResult:
    """A prepared candidate measured: the one way its cells are computed, in this process or on a Dask worker."""
    rows = [] if candidate.error is not None else measure_candidate(scoring, candidate, progress)
    return CandidateResult.of(scoring, candidate, rows)


def table_scoring(model: LoadedModel, dataset: Dataset, recipes: Sequence[Recipe], workdir: Path,
                  calibration_data: Dataset | None, mask: str, threads: int) -> tuple[DataPlan, Scoring]:
    """Which rows score and which calibrate (engine.sweep.plan), and the scoring every cell shares."""
    plan = plan_data(dataset, calibration_rows_asked(recipes), calibration_data)
    return plan, Scoring.of(model, plan.scored, workdir, mask, threads)


def sensitivity_table(
    model: LoadedModel,
    dataset: Dataset,
    recipes: Sequence[Recipe],
    workdir: Path,
    calibration_data: Dataset | None = None,
    mask: str = AUTO,
    threads: int = 1,
    progress: Progress | None = None,
    only: Collection[PointKey] | None = None,
    calibration: CalibrationSet | None = None,
) -> SensitivityTable:
    """The table for `recipes` on `dataset`; with `only`, the rows of those points (Point.key) alone. Static recipes
    calibrate on `calibration_data`, else on validation rows held out of scoring for every cell
    (engine.sweep.plan), all of them from one CalibrationSet: `calibration` when the caller shares its own (on
    those same rows: engine.mixed measures its curve with the table's ranges), else a new one."""
    plan, scoring = table_scoring(model, dataset, recipes, workdir, calibration_data, mask, threads)
    calibration = shared_calibration(plan, calibration)
    candidates = [restrict(prepare_candidate(model, recipe, workdir, calibration), only) for recipe in recipes]
    total = sum(candidate.cells for candidate in candidates)
    done = 0

    def step(message: str) -> None:
        nonlocal done
        if progress:
            progress(done, total, message)
        done += 1

    results = [candidate_result(scoring, candidate, step) for candidate in candidates]
    if progress:
        progress(total, total, "done")
    return assemble(model, plan, scoring, recipes, results)


def shared_calibration(plan: DataPlan, calibration: CalibrationSet | None) -> CalibrationSet | None:
    """`calibration` when it holds the plan's calibration rows, a new CalibrationSet on them when None."""
    if plan.calibration is None:
        return None
    if calibration is None:
        return CalibrationSet(plan.calibration)
    given, planned = calibration.dataset, plan.calibration
    if len(given) != len(planned) or any(not np.array_equal(given.inputs[name], planned.inputs[name])
                                         for name in planned.inputs):
        raise ValueError("the calibration set shared with the table is not on the table's calibration rows")
    return calibration


def assemble(model: LoadedModel, plan: DataPlan, scoring: Scoring, recipes: Sequence[Recipe],
             results: Sequence[CandidateResult]) -> SensitivityTable:
    """The candidates' rows, in the order of `recipes`, with what they rest on: data, reference, candidates and
    every point's statistics (a tensor's as first measured, in that order)."""
    info = {
        "model": model.source,
        **plan.columns(next((recipe for recipe in recipes if calibration_key(recipe)), Recipe.fp32())),
        "task": scoring.reference.task.value,
        columns.METRIC_NAME: scoring.reference.metric,
        columns.FP32_METRIC: scoring.fp32_metric,
        "fidelity_mask": scoring.reference.masking.describe(),
        "padding_mask": scoring.padding.describe(),
    }
    ranges: dict[str, RangeStats] = {}
    for result in results:
        for tensor, stats in result.ranges.items():
            ranges.setdefault(tensor, stats)
    points = {}
    for result in results:
        for identity in result.points:
            key = identity[columns.KIND], identity[columns.LAYER], identity[columns.TENSOR]
            if key not in points and identity[columns.TENSOR] in ranges:
                points[key] = columns.point_record(identity, ranges[identity[columns.TENSOR]])
    rows = [row for result in results for row in result.rows]
    return SensitivityTable(info, [result.summary for result in results], list(points.values()),
                            columns.rows_table(rows))


def candidate_summary(scoring: Scoring, candidate: Candidate) -> dict:
    artifact = candidate.artifact
    summary = {"candidate": candidate.recipe.short_name(), "recipe": candidate.recipe.to_dict(),
               "description": candidate.recipe.describe(), "error": candidate.error}
    if candidate.outputs is None:
        return summary
    value, delta, low, high = candidate.outputs.score
    return {**summary, "realiser": artifact.realiser, "simulated": artifact.simulated,
            "all_quantized": value, "delta": delta, "delta_ci_low": low, "delta_ci_high": high,
            "points": len(candidate.points), "stand_ins": len(candidate.stand_ins),
            "float_layers": list(artifact.float_layers), "unmapped": candidate.unmapped}
