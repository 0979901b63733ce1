"""The sweep job's scheduling, with an in-process fake executor: no processes, no onnxruntime, milliseconds.

The fake (tests/scheduler_fakes.py) finishes one running task per `collect`, in an order drawn from a seeded
generator, and answers each kind of task with a canned outcome. What is checked is what the scheduler decides:
which tasks it starts and when, how it shares calibrations, what it commits when a worker dies, and that it
stops when the job is taken away. tests/test_jobs.py runs the same scheduler with real processes.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine import results
from engine.errors import WorkspaceError
from engine.jobs.kinds import kind_named
from engine.jobs.kinds.sweep import SweepParams, SweepRun
from engine.jobs.tasks import BuildTask, CalibrateTask, TimeTask
from engine.measure import ADAPTIVE
from engine.realise.calibration import calibration_key
from engine.recipe import ActivationSpec, Recipe
from engine.store import Store
from engine.store import jobs
from engine.store.records import JobState
from engine.sweep import default_grid
from tests.scheduler_fakes import FakeExecutor, queued_sweep, run_with

GRID = {recipe.short_name(): recipe for recipe in default_grid()}
STATIC = [recipe for recipe in default_grid() if calibration_key(recipe) is not None]
W8_CHANNEL = GRID["W8A8 static channel minmax"]
PERCENTILE = Recipe(W8_CHANNEL.weights, ActivationSpec(8, "percentile"), W8_CHANNEL.mode)
W4_GROUP = GRID["W4 weight-only group32"]


@pytest.fixture
def store(tmp_path) -> Store:
    return Store.open(tmp_path / "ws")


def started(executor: FakeExecutor, kind: type) -> list:
    return [task for task in executor.started if isinstance(task, kind)]


def test_the_runner_finds_the_sweep_kind_by_name_and_unknown_kinds_are_none():
    assert kind_named("sweep") is SweepRun
    assert kind_named("no such kind") is None


@pytest.mark.parametrize("seed", range(5))
def test_recipes_that_calibrate_alike_share_one_calibration_task(store, seed):
    recipes = [GRID["fp32"], *STATIC, PERCENTILE, W4_GROUP]
    executor = FakeExecutor(seed)
    job, table = run_with(store, queued_sweep(store, recipes), executor)

    assert job.state is JobState.DONE
    calibrations = started(executor, CalibrateTask)
    assert sorted(task.key for task in calibrations) == sorted({calibration_key(r) for r in [*STATIC, PERCENTILE]})
    assert len(calibrations) == 2  # three minmax recipes share one; percentile has its own
    for build in started(executor, BuildTask):  # each build got its own key's ranges, or none
        key = calibration_key(build.recipe)
        assert build.ranges == (None if key is None else {"ranges for": key})
    assert list(table[results.RECIPE_KEY]) == [recipe.key() for recipe in recipes]  # rows in recipe order
    assert job.message.endswith("2 calibrations for 4 static recipes")


@pytest.mark.parametrize("seed", range(5))
def test_timings_run_alone_and_builds_keep_every_worker_busy_in_between(store, seed, monkeypatch):
    monkeypatch.setattr("engine.jobs.kinds.sweep.cpu_count", lambda: 4)
    executor = FakeExecutor(seed)
    job, table = run_with(store, queued_sweep(store, list(GRID.values()), threads=2), executor)

    assert job.state is JobState.DONE
    assert max(builds for _, builds in executor.concurrency) == 4  # one build per core when nothing is timed
    assert all(timings <= 1 for timings, _ in executor.concurrency)
    assert all(builds == 0 for timings, builds in executor.concurrency if timings)  # nothing beside a timing
    timed = {task.recipe.key() for task in started(executor, TimeTask)}
    real = {recipe.key() for recipe in GRID.values() if recipe.weights.bits >= 4}
    assert timed == real  # simulated recipes are never timed
    assert table[results.THREADS].notna().sum() == len(real)
    assert {task.batch for task in started(executor, TimeTask)} == {32}


def test_a_sweep_without_batch_n_timing_asks_for_single_examples_only(store):
    executor = FakeExecutor()
    job, _ = run_with(store, queued_sweep(store, [GRID["fp32"], W4_GROUP], batch=None), executor)
    assert job.state is JobState.DONE
    assert [task.batch for task in started(executor, TimeTask)] == [None, None]


def test_the_latency_cap_reaches_every_timing(store):
    executor = FakeExecutor()
    job, _ = run_with(store, queued_sweep(store, [GRID["fp32"], W4_GROUP], latency_cap=0.5), executor)
    assert job.state is JobState.DONE
    assert [task.protocol for task in started(executor, TimeTask)] == [replace(ADAPTIVE, cap_seconds=0.5)] * 2


def test_a_worker_death_fails_its_row_and_the_calibration_waiters_and_the_job_goes_on(store):
    w8_tensor = GRID["W8A8 static tensor minmax"]
    recipes = [GRID["fp32"], W4_GROUP, w8_tensor, W8_CHANNEL, GRID["W3 weight-only channel"]]
    executor = FakeExecutor(dies_on=frozenset({W4_GROUP.key(), w8_tensor.key()}))
    job, table = run_with(store, queued_sweep(store, recipes), executor)

    assert job.state is JobState.DONE
    errors = table.set_index(results.NAME)[results.ERROR]
    assert errors["W4 weight-only group32"] == (
        "WorkerDied: worker process killed by SIGKILL while building this configuration")
    # w8_tensor was the first to need the shared minmax calibration, so its death fails both waiting recipes
    for name in ("W8A8 static tensor minmax", "W8A8 static channel minmax"):
        assert errors[name] == "WorkerDied: worker process killed by SIGKILL while calibrating"
    assert errors[["fp32", "W3 weight-only channel"]].isna().all()
    assert job.message.startswith("done: 2 computed, 0 from the cache, 3 failed")


def test_a_cancelled_job_starts_no_more_work_and_keeps_its_state(store):
    def cancel_after_three_rows(executor: FakeExecutor) -> None:
        with store.connect() as conn:
            if len(jobs.committed_keys(conn, "job")) >= 3 and jobs.stop(conn, "job", JobState.CANCELLED, "cancelled"):
                executor.cancelled_at = len(executor.started)

    executor = FakeExecutor(on_collect=cancel_after_three_rows)
    # One build at a time, so when the cancel lands there is always a next build ready to start.
    job, table = run_with(store, queued_sweep(store, list(GRID.values()), workers=1), executor)

    assert job.state is JobState.CANCELLED and job.message == "cancelled"
    assert len(executor.started) == executor.cancelled_at  # nothing was started once the job was taken away
    assert 3 <= len(table) < len(GRID)


def test_sweep_parameters_are_checked_before_a_job_is_queued():
    with pytest.raises(WorkspaceError, match="at least one recipe"):
        SweepParams(())
    with pytest.raises(WorkspaceError, match="threads must be a positive integer"):
        SweepParams((W4_GROUP,), threads=0)
    with pytest.raises(WorkspaceError, match="tcp://host:8786"):
        SweepParams((W4_GROUP,), scheduler="localhost")
    for cap in (0, -1.0, float("nan"), 601, "2"):
        with pytest.raises(WorkspaceError, match="a latency cap is seconds per artifact and batch size"):
            SweepParams((W4_GROUP,), latency_cap=cap)
    params = SweepParams((W4_GROUP, W4_GROUP, GRID["fp32"]), batch=8, latency_cap=0.75)
    assert params.recipes == (W4_GROUP, GRID["fp32"])  # a recipe twice is one row
    assert SweepParams.from_dict(params.to_dict()) == params
