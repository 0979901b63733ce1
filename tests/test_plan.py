"""Which rows score and which calibrate: never the same rows, and the same scored rows for every recipe."""

from __future__ import annotations

import numpy as np
import pytest

from engine import results
from engine.data import load_dataset
from engine.model import load_model
from engine.realise.calibration import CalibrationSet
from engine.sweep import default_grid, sweep
from engine.sweep.plan import calibration_rows_asked, plan_data, plan_identity
from sample_models.catalog import SAMPLES

GRID = {recipe.short_name(): recipe for recipe in default_grid()}
STATIC = GRID["W8A8 static channel minmax"]
WEIGHT_ONLY = GRID["W4 weight-only group32"]


@pytest.fixture(scope="module")
def mlp():
    sample = SAMPLES["breast_cancer_mlp"]
    model = load_model(sample.model_path)
    return model, load_dataset(sample.data_path, model.summary.inputs)


def test_without_a_calibration_file_no_scored_row_calibrates(mlp, tmp_path, monkeypatch):
    model, validation = mlp
    calibrated_on = []
    original = CalibrationSet.ranges
    monkeypatch.setattr(CalibrationSet, "ranges", lambda self, model, recipe: (
        calibrated_on.append(self.dataset), original(self, model, recipe))[1])
    table = sweep(model, validation, [GRID["fp32"], STATIC, WEIGHT_ONLY], tmp_path, batch=None)

    (calibration,) = calibrated_on
    held = len(calibration)
    assert held == 128 and np.array_equal(calibration.inputs["features"], validation.inputs["features"][:held])
    assert (table[results.ROWS_SCORED] == len(validation) - held).all()  # fp32 too: comparisons stay paired
    assert (table[results.SCORED_ROWS] == f"rows 129..{len(validation)} of the validation set").all()
    sources = table.set_index(results.NAME)[results.CALIBRATION_SOURCE]
    assert sources[STATIC.short_name()] == "rows 1..128 of the validation set"
    assert sources[[GRID["fp32"].short_name(), WEIGHT_ONLY.short_name()]].isna().all()


def test_with_a_calibration_file_every_validation_row_is_scored(mlp, tmp_path):
    model, validation = mlp
    calibration = validation.rows(slice(0, 100))
    calibration.source = "calibration.npz"
    table = sweep(model, validation, [GRID["fp32"], STATIC], tmp_path, batch=None, calibration_data=calibration)
    assert (table[results.ROWS_SCORED] == len(validation)).all()
    assert table.set_index(results.NAME).loc[STATIC.short_name(), results.CALIBRATION_SOURCE] == "calibration.npz"


def test_a_sweep_that_calibrates_nothing_scores_every_row(mlp):
    _, validation = mlp
    plan = plan_data(validation, calibration_rows_asked([GRID["fp32"], WEIGHT_ONLY]))
    assert len(plan.scored) == len(validation) and plan.calibration is None


def test_a_small_set_keeps_half_its_rows_for_scoring_and_says_so(mlp):
    _, validation = mlp
    small = validation.rows(slice(0, 100))
    plan = plan_data(small, calibration_rows_asked([STATIC]))
    assert len(plan.calibration) == 50 and len(plan.scored) == 50
    columns = plan.columns(STATIC)
    assert columns[results.CALIBRATION_SOURCE] == "rows 1..50 of the validation set"
    assert "50 rows, not the 128 asked for" in columns[results.CALIBRATION_NOTE]
    assert plan.columns(WEIGHT_ONLY)[results.CALIBRATION_NOTE] is None


def test_the_cache_tells_plans_apart():
    assert plan_identity(540, 128, None) == "rows 129..540 scored; rows 1..128 calibrate"
    assert plan_identity(540, 0, None) != plan_identity(540, 128, None) != plan_identity(540, 128, "abc")
