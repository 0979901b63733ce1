"""From the sensitivity table to an ordered list of moves, from the uniform recipe towards the original model.

The search never reads the table's internals, only its rows (engine.sensitivity.table's columns). Each node a row
names is a *unit* the search may move, through a per-node override of the recipe:

- a weight layer climbs its precisions, lowest first: the candidates' weight widths (4 then 8 bits, say), through
  `LayerOverride(weights=...)`, then float through `keep_fp32`;
- any other node (an Add, a Softmax, a MatMul of two activations, a bias Add) can only be kept float;
- where the table also measures the base recipe at 16-bit activations (a candidate `wider`, see `widened`), a node
  with activation points may first move them to 16 bits through `LayerOverride(activation_bits=16)`: no byte
  added, harm the 16-bit rows measured.

The uniform recipe the curve starts from is the candidate with the fewest weight bits. A row's *harm* is what the
table measured that point to cost: the larger of `drop` (only this point quantized) and the recovery (everything
quantized but it), each counted only when its paired 95% interval excludes 0. A unit's harm in a state is the sum
of its rows' harms in that state (its weight rows at that width, its activation rows at the base's). What the
metric cannot tell apart is ordered by the rows' output SQNR instead, as relative error power 10^(-SQNR/10).

Order: the greedy of the multiple-choice knapsack. From each unit's current state its next move is the higher
state with the most harm removed per byte added; moves are taken best first, measurable harm before noise. Bytes
are the weights' own (params x bits / 8; float: 4 bytes each); an activation point has none, so its moves rank by
harm alone, and come before any weight move of the same harm. An integer program would be exact for the table's
numbers, but those add up only roughly (points interact: the text encoder's mask breaks attention only where
several tensors are quantized together) and every point of the curve is measured anyway; what the curve needs is
a nested sequence, each point one step further than the last, so that accuracy control can bisect along it.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from engine.errors import RecipeError
from engine.metrics import METRICS
from engine.model import LoadedModel
from engine.realise import choose_realiser
from engine.recipe import FLOAT32_BITS, LayerOverride, Mode, Recipe
from engine.sensitivity import SensitivityTable, candidates
from engine.sensitivity import table as columns
from engine.sensitivity.points import ACTIVATIONS, WEIGHTS

FLOAT = LayerOverride(keep_fp32=True)
WIDE_ACTIVATION_BITS = 16


def widened(recipe: Recipe) -> Recipe | None:
    """The recipe at 16-bit activations: the table candidate whose activation rows give the 16-bit state (None for a
    recipe without 8-bit calibrated activations)."""
    if recipe.mode is not Mode.STATIC or recipe.activations.bits == WIDE_ACTIVATION_BITS:
        return None
    return replace(recipe, activations=replace(recipe.activations, bits=WIDE_ACTIVATION_BITS))


def curve_candidates(bits: list[int], granularity: str, activations: list[int | None], calibration: str,
                     group_size: int = 128) -> list[Recipe]:
    """The table's candidates for a curve: one activation width (none, 8 or 16) at every weight width, or 8,16:
    the curve starts at 8 bits and a node's activations may move to 16 (the fewest bits' recipe `widened`)."""
    widths = sorted(set(activations), key=lambda width: width or 0)
    if len(widths) > 1 and widths != [8, WIDE_ACTIVATION_BITS]:
        raise RecipeError(f"a curve takes one activation width, or 8,16; got {','.join(map(str, widths))}")
    recipes = candidates(bits, [granularity], widths[:1], [calibration], group_size)
    return recipes + ([widened(min(recipes, key=lambda recipe: recipe.weights.bits))] if len(widths) > 1 else [])


@dataclass(frozen=True)
class State:
    """One precision of a unit: the override that gives it (None: the base recipe's own), its weights' estimated
    bytes, the harm the table measured in it and the error power that orders what the metric cannot tell apart."""

    override: LayerOverride | None
    weight_bytes: float
    harm: float
    noise: float


@dataclass(frozen=True)
class Move:
    """One step of the search: `node` takes `override`."""

    node: str
    override: LayerOverride
    bytes_added: float
    harm_removed: float
    noise_removed: float

    def priority(self) -> tuple[bool, float, float]:
        """Larger first: measurable harm before noise, then per byte added (a byte at least: activations have none)."""
        cost = max(self.bytes_added, 1.0)
        return self.harm_removed > 0, self.harm_removed / cost, self.noise_removed / cost

    def describe(self) -> str:
        if self.override.keep_fp32:
            return f"{self.node} kept float"
        if self.override.activation_bits:
            return f"{self.node} at {self.override.activation_bits}-bit activations"
        return f"{self.node} at {self.override.weights.bits}-bit weights"


@dataclass(frozen=True)
class Ladder:
    """The base recipe and the ordered moves: point k of the curve is the base with the first k moves applied."""

    base: Recipe
    moves: tuple[Move, ...]
    units: int  # nodes the moves may change: the M of "N of M reverted"

    def overrides(self, k: int) -> dict[str, LayerOverride]:
        overrides: dict[str, LayerOverride] = {}
        for move in self.moves[:k]:
            overrides[move.node] = move.override  # a unit's later move replaces its earlier one
        return overrides

    def recipe(self, k: int) -> Recipe:
        return replace(self.base, overrides=self.overrides(k))

    def changed(self, k: int) -> int:
        """Nodes point k moves from the base: the N of "N of M reverted"."""
        return len(self.overrides(k))

    def describe(self) -> str:
        harmful = sum(move.harm_removed > 0 for move in self.moves)
        return (f"ladder: from {self.base.short_name()}, {len(self.moves)} moves over {self.units} nodes, "
                f"{harmful} of them against a harm the sensitivity table measured beyond the noise")


def measurable(value: float, low: float, high: float) -> float:
    """`value` when its 95% interval [low, high] excludes 0, else 0 (and 0 for a cell that was not measured)."""
    if any(isinstance(x, float) and math.isnan(x) for x in (value, low, high)):
        return 0.0
    return float(value) if (low > 0 or high < 0) else 0.0


def row_harm(row: pd.Series, higher_is_better: bool) -> float:
    """The metric the point costs, positive worse: only-this drop or all-but-this recovery, whichever is larger,
    each only where measurable."""
    sign = 1.0 if higher_is_better else -1.0
    drop = measurable(row[columns.DROP], row[columns.ONLY_THIS_DELTA_LOW], row[columns.ONLY_THIS_DELTA_HIGH])
    recovery = sign * measurable(row[columns.RECOVERY], row[columns.RECOVERY_LOW], row[columns.RECOVERY_HIGH])
    return max(drop, recovery, 0.0)


def row_noise(row: pd.Series) -> float:
    """The point's relative error power from its output SQNR: 0 where the tensor came through unchanged."""
    sqnr = row[columns.OUTPUT_SQNR_DB]
    return 0.0 if sqnr is None or np.isnan(sqnr) else float(10 ** (-sqnr / 10))


def ladder_from_table(model: LoadedModel, table: SensitivityTable, recipes: list[Recipe]) -> Ladder:
    """The moves for `recipes` (the table's candidates: one recipe but for its weight bits, and perhaps the fewest
    bits' recipe `widened` to 16-bit activations) on `model`."""
    by_width = sorted(recipes, key=lambda recipe: (recipe.activations.bits or 0, recipe.weights.bits))
    wider = widened(by_width[0])
    ordered = sorted([recipe for recipe in recipes if recipe != wider], key=lambda recipe: recipe.weights.bits)
    base = ordered[0]
    wider = wider if wider in recipes else None
    if any(replace(recipe, weights=replace(recipe.weights, bits=base.weights.bits)) != base for recipe in ordered):
        raise RecipeError("a mixed-precision search compares weight widths of one recipe: "
                          + ", ".join(recipe.short_name() for recipe in ordered))
    missing = [recipe.short_name() for recipe in [*ordered, *([wider] if wider else [])]
               if recipe.short_name() not in set(table.rows[columns.CANDIDATE])]
    if missing:
        raise RecipeError(f"the sensitivity table has no rows for {missing[0]}")
    activation, wide, weight = _tally(model, table, base, wider, ordered)
    weight_layers = {layer.name for layer in model.summary.layers}
    ladders = {}
    for unit in sorted(set(activation) | set(weight)):
        states = _states(base, ordered, activation.get(unit, (0.0, 0.0)), wide.get(unit), weight.get(unit, {}),
                         unit in weight_layers)
        ladders[unit] = [state for state in states if _native_like_base(model, base, unit, state)]
    position = {node.name: index for index, node in enumerate(model.proto.graph.node)}
    return Ladder(base, tuple(_greedy(ladders, position)),
                  len([unit for unit, states in ladders.items() if len(states) > 1]))


def point_nodes(model: LoadedModel) -> Callable[[str, str], list[str]]:
    """(layer, tensor) of a table row -> the nodes whose override reverts that point: its node, or a graph input's
    readers (a graph input has no node of its own)."""
    nodes = {node.name for node in model.proto.graph.node}
    readers = defaultdict(list)
    for node in model.proto.graph.node:
        for name in node.input:
            readers[name].append(node.name)
    return lambda layer, tensor: [layer] if layer in nodes else list(readers.get(tensor, []))


def _tally(model: LoadedModel, table: SensitivityTable, base: Recipe, wider: Recipe | None, ordered: list[Recipe]):
    """Per unit, from the table's rows: [harm, noise] of its activation points at the base and (`wider`) at 16 bits,
    and per weight width [harm, noise, params] of its weight points. A cell that could not be measured counts as no
    harm: its point is still there to move."""
    by_name = {recipe.short_name(): recipe for recipe in [*ordered, *([wider] if wider else [])]}
    higher_is_better = METRICS[table.info[columns.METRIC_NAME]].higher_is_better
    reverting = point_nodes(model)
    left_float = {name for summary in table.candidates if summary["candidate"] == base.short_name()
                  for name in summary.get("float_layers") or ()}

    def units_of(row: pd.Series) -> list[str]:
        return reverting(row[columns.LAYER], row[columns.TENSOR])

    activation = defaultdict(lambda: [0.0, 0.0])
    wide = defaultdict(lambda: [0.0, 0.0])
    weight = defaultdict(dict)
    for _, row in table.rows.iterrows():
        recipe = by_name.get(row[columns.CANDIDATE])
        if recipe is None:
            continue
        harm, noise = row_harm(row, higher_is_better), row_noise(row)
        for unit in units_of(row):
            if row[columns.KIND] == ACTIVATIONS and recipe in (base, wider):
                at = activation if recipe is base else wide
                at[unit][0] += harm
                at[unit][1] += noise
            elif row[columns.KIND] == WEIGHTS and recipe is wider:
                continue  # the same weights as the base's: its weight rows say it
            elif row[columns.KIND] == WEIGHTS and unit not in left_float:  # the base's realiser left it float
                cell = weight[unit].setdefault(recipe.weights.bits, [0.0, 0.0, 0])
                cell[0] += harm
                cell[1] += noise
                cell[2] += int(row[columns.PARAMS])
    return activation, wide, weight


def _states(base: Recipe, ordered: list[Recipe], activation, wide, weight: dict, is_weight_layer: bool
            ) -> list[State]:
    """The unit's states, lowest precision first: the base, its activations at 16 bits (where `wide` measured them),
    each higher candidate width (weight layers), float."""
    act_harm, act_noise = activation
    params = weight.get(base.weights.bits, [0.0, 0.0, 0])[2]
    states = []
    for recipe in ordered:
        bits = recipe.weights.bits
        if bits not in weight and recipe is not base:
            continue
        if recipe is not base and not is_weight_layer:
            continue  # a constant of a non-layer node (a bias Add's) takes no weight override: base or float only
        harm, noise, _ = weight.get(bits, [0.0, 0.0, 0])
        override = None if recipe is base else LayerOverride(weights=recipe.weights)
        states.append(State(override, params * bits / 8, act_harm + harm, act_noise + noise))
    if wide is not None:  # after the base (the first of `ordered`): the same weights, wider activations
        base_harm, base_noise, _ = weight.get(base.weights.bits, [0.0, 0.0, 0])
        states.insert(1, State(LayerOverride(activation_bits=WIDE_ACTIVATION_BITS), params * base.weights.bits / 8,
                               wide[0] + base_harm, wide[1] + base_noise))
    states.append(State(FLOAT, params * FLOAT32_BITS / 8, 0.0, 0.0))
    return states


def _native_like_base(model: LoadedModel, base: Recipe, unit: str, state: State) -> bool:
    """Whether the state keeps the recipe with the realiser kind the base has: a move the realisers could only
    simulate (8-bit layers in a 4-bit weight-only recipe, say) would leave nothing deployable."""
    if state.override is None:
        return True
    moved = replace(base, overrides={unit: state.override})
    return choose_realiser(model, moved).simulated == choose_realiser(model, base).simulated


def _greedy(ladders: dict[str, list[State]], position: dict[str, int]) -> list[Move]:
    """Every unit's moves, best first (equals in graph order), each unit's in order of precision."""
    heap: list[tuple] = []

    def push(unit: str, at: int) -> None:
        states = ladders[unit]
        options = [_move(unit, states[at], states[j]) for j in range(at + 1, len(states))]
        if options:
            best = max(range(len(options)), key=lambda i: options[i].priority())
            heapq.heappush(heap, (_negated(options[best].priority()), position[unit], at + 1 + best, options[best]))

    for unit in ladders:
        push(unit, 0)
    moves = []
    while heap:
        *_, reached, move = heapq.heappop(heap)
        moves.append(move)
        push(move.node, reached)
    return moves


def _move(unit: str, current: State, target: State) -> Move:
    return Move(unit, target.override, target.weight_bytes - current.weight_bytes, current.harm - target.harm,
                current.noise - target.noise)


def _negated(priority: tuple[bool, float, float]) -> tuple[int, float, float]:
    measurable_first, per_byte, noise_per_byte = priority
    return -int(measurable_first), -per_byte, -noise_per_byte
