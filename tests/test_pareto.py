import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.pareto import pareto_front, pareto_flags

nan = math.nan


def front(points, maximize):
    return pareto_front(np.array(points, dtype=float), maximize).tolist()


def test_2d_maximize_both():
    points = [[1, 5], [2, 4], [3, 3], [2, 2], [1, 1]]
    assert front(points, [True, True]) == [True, True, True, False, False]


def test_2d_accuracy_up_size_down():
    points = [[0.9, 100], [0.8, 50], [0.85, 120], [0.7, 50]]
    # (0.85, 120) loses to (0.9, 100); (0.7, 50) loses to (0.8, 50) on accuracy alone.
    assert front(points, [True, False]) == [True, True, False, False]


def test_2d_minimize_both():
    points = [[1, 5], [2, 4], [3, 3], [2, 2], [1, 1]]
    assert front(points, [False, False]) == [False, False, False, False, True]


def test_3d_accuracy_size_latency():
    points = [
        [0.90, 100, 10],  # best accuracy
        [0.85, 50, 12],  # smallest
        [0.80, 80, 5],  # fastest
        [0.85, 60, 12],  # loses to row 1 on size only
        [0.70, 100, 11],  # loses to row 0 everywhere
        [0.88, 70, 9],  # a genuine compromise
    ]
    assert front(points, [True, False, False]) == [True, True, True, False, False, True]


def test_equal_in_one_objective_better_in_other_dominates():
    assert front([[1, 2], [1, 1]], [True, True]) == [True, False]


def test_exact_duplicates_are_all_kept():
    assert front([[1, 1], [1, 1], [0, 0]], [True, True]) == [True, True, False]
    assert front([[2, 2], [1, 1], [1, 1]], [True, True]) == [True, False, False]


def test_nan_is_off_the_front_and_dominates_nothing():
    # (2, nan) would dominate (1, 1) if NaN counted as anything.
    assert front([[1, 1], [2, nan]], [True, True]) == [True, False]
    # (nan, 10) would beat everything; the rest form the front among themselves.
    assert front([[nan, 10], [1, 1], [0, 0]], [True, True]) == [False, True, False]
    assert front([[nan, nan], [nan, 1]], [True, False]) == [False, False]


def test_single_objective_keeps_all_ties_for_best():
    assert front([[3], [1], [3], [2]], [True]) == [True, False, True, False]


def test_infinite_values_compare_normally():
    assert front([[math.inf, 5], [1, 1], [2, 6]], [True, True]) == [True, False, True]


def test_empty_and_shape_errors():
    assert pareto_front(np.empty((0, 2)), [True, False]).shape == (0,)
    with pytest.raises(ValueError, match="shape"):
        pareto_front(np.zeros((3, 2)), [True])
    with pytest.raises(ValueError, match="shape"):
        pareto_front(np.zeros(3), [True])


def test_pareto_flags_adds_one_column_per_front():
    table = pd.DataFrame(
        {
            "recipe": ["fp32", "int8", "int8-qdq", "int4-sim"],
            "top1": [0.90, 0.88, 0.89, 0.80],
            "size_bytes": [400, 100, 110, 50],
            "latency_ms": [10.0, 4.0, 3.0, None],  # simulated row: latency not measured
        },
        index=[10, 11, 12, 13],
    )
    result = pareto_flags(
        table,
        {
            "pareto_size": {"top1": True, "size_bytes": False},
            "pareto_latency": {"top1": True, "latency_ms": False},
        },
    )
    assert result["pareto_size"].tolist() == [True, True, True, True]
    # int8 loses to int8-qdq (more accurate and faster); int4-sim has no latency.
    assert result["pareto_latency"].tolist() == [True, False, True, False]
    assert result["pareto_size"].dtype == bool
    assert list(result.index) == [10, 11, 12, 13]
    assert "pareto_size" not in table.columns  # the input is left untouched


def test_pareto_flags_handles_nullable_columns():
    table = pd.DataFrame({"top1": pd.array([0.9, None, 0.5], dtype="Float64"), "size_bytes": [10, 1, 20]})
    result = pareto_flags(table, {"front": {"top1": True, "size_bytes": False}})
    assert result["front"].tolist() == [True, False, False]


def dominates(a, b, maximize):
    a = [x if up else -x for x, up in zip(a, maximize)]
    b = [x if up else -x for x, up in zip(b, maximize)]
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


@st.composite
def point_sets(draw):
    k = draw(st.integers(1, 3))
    # Few distinct values so that ties and duplicates are common.
    value = st.one_of(st.integers(0, 4).map(float), st.just(nan))
    points = draw(st.lists(st.tuples(*[value] * k), min_size=0, max_size=25))
    maximize = draw(st.lists(st.booleans(), min_size=k, max_size=k))
    return points, maximize


@settings(max_examples=300, deadline=None)
@given(point_sets())
def test_front_property(case):
    points, maximize = case
    mask = pareto_front(np.array(points, dtype=float).reshape(len(points), len(maximize)), maximize)
    has_nan = [any(math.isnan(x) for x in p) for p in points]
    valid = [p for p, bad in zip(points, has_nan) if not bad]
    on_front = [p for p, m in zip(points, mask) if m]
    for point, is_front, bad in zip(points, mask, has_nan):
        if bad:
            assert not is_front
        elif is_front:
            assert not any(dominates(other, point, maximize) for other in valid)
        else:
            assert any(dominates(other, point, maximize) for other in on_front)


def test_the_real_recipe_nearest_a_simulated_one_is_on_the_front_of_real_recipes():
    from engine import results

    def row(name, metric, size, simulated=False):
        return {results.NAME: name, results.RECIPE_KEY: name, results.METRIC_NAME: "top1", results.METRIC: metric,
                results.SIZE_BYTES: size, results.SIMULATED: simulated}

    table = pd.DataFrame([
        row("fp32", 0.98, 100), row("int8", 0.97, 25), row("int4", 0.90, 20),
        row("int8 beaten", 0.96, 28),  # by int8 on both counts
        row("W3", 0.96, 10, simulated=True), row("W2", 0.50, 9, simulated=True), row("W5", 0.99, 60, simulated=True),
    ])
    def nearest(name):
        return results.nearest_real_recipe(table, table[table[results.NAME] == name].iloc[0])[results.NAME]

    assert nearest("W3") == "int8"  # the smallest real recipe scoring at least as well
    assert nearest("W2") == "int4"
    assert nearest("W5") == "fp32"  # none scores as well: the best-scoring one
    assert results.nearest_real_recipe(table[table[results.SIMULATED]], table.iloc[4]) is None
