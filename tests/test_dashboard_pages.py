"""Each dashboard page, run headless with Streamlit's AppTest against a real workspace in a temp directory.

One module-wide workspace holds a finished sweep of the digits sample (the standard grid, so it has
simulated rows too); tests that need a different state make it themselves.
"""

from __future__ import annotations

import io
import json
import pickle
import secrets
import time
import zipfile
from pathlib import Path

import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.runtime.uploaded_file_manager import UploadedFile
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import app_test as app_test_module

import dashboard.samples
from dashboard import errors, help_text, jobs_view, report, sensitivity_view, state, sweep_form
from dashboard.samples import SAMPLE_LATENCY_CAP, SAMPLE_OWNER, ensure_sample_sweeps
from dashboard.workspace_link import LINK_INPUT
from engine import results
from engine.allowed_paths import ALLOWED_DIRS_VARIABLE
from engine.export import history
from engine.recipe import Recipe
from engine.sweep import PRESETS
from engine.workspace import Workspace
from engine.store.home import HOME_VARIABLE
from sample_models.catalog import SAMPLES
from tests.builders import mlp_model, model_folder_zip

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
PAGES = APP.parent / "views"
OWNER = "test-session"
RUN_TIMEOUT = 60  # seconds per script run: the first one imports onnxruntime and plotly
JOB_TIMEOUT = 180
DIGITS = SAMPLES["digits_cnn"]
BREAST_CANCER = SAMPLES["breast_cancer_mlp"]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quantscope-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOME_VARIABLE, str(root))  # what state.workspace() and the job runners read
        yield root


@pytest.fixture(scope="module")
def ws(home) -> Workspace:
    return Workspace.open(home)


@pytest.fixture(scope="module")
def digits(ws):
    """The digits sample model and data, registered privately for OWNER."""
    model = ws.add_model(DIGITS.model_path, name="digits_cnn.onnx", owner=OWNER)
    dataset = ws.add_dataset(DIGITS.data_path, filename="digits_cnn.npz", model_id=model.id, owner=OWNER)
    return model, dataset


@pytest.fixture(scope="module")
def finished_job(ws, digits) -> str:
    model, dataset = digits
    job_id = ws.submit_sweep(model.id, dataset.id, PRESETS["everything"].recipes, owner=OWNER)
    assert finished(ws, job_id).state == "done"
    return job_id


def finished(ws: Workspace, job_id: str):
    """The job once it has ended. Polls the state rather than `ws.wait`, which may take a runner that has not
    yet exec'd for a dead one."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while not (job := ws.job(job_id)).is_finished and time.monotonic() < deadline:
        time.sleep(0.2)
    return job


def page(name: str, owner: str = OWNER, **chosen) -> AppTest:
    """A page script as one browser session (owner) would run it, with earlier choices already made."""
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=RUN_TIMEOUT)
    at.session_state[state.OWNER] = owner
    for key, value in chosen.items():
        at.session_state[key] = value
    return at.run()


def new_token() -> str:
    return secrets.token_urlsafe(state.TOKEN_BYTES)


def through_app(name: str, monkeypatch, owner: str = OWNER) -> AppTest:
    """A page as app.py routes to it (its navigation and its error guard), without the sample sweeps app.py starts."""
    monkeypatch.setattr(dashboard.samples, "ensure_sample_sweeps", lambda ws: [])
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT)
    at.session_state[state.OWNER] = owner
    at.run()
    return at.switch_page(f"views/{name}.py").run()


def opened_with_link(name: str, token: str | None) -> AppTest:
    """A page as a new browser tab (a reload, another browser) opens it: from the link alone, no session yet."""
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=RUN_TIMEOUT)
    if token is not None:
        at.query_params[state.WORKSPACE_PARAM] = token
    return at.run()


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [exception.value for exception in at.exception]


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def selectbox(at: AppTest, label: str):
    return next(s for s in at.selectbox if s.label == label)


# --- Models & data -----------------------------------------------------------------------------------------------


def upload(at: AppTest, key: str, path: Path, then_click: str) -> AppTest:
    at.file_uploader(key=key).set_value((path.name, path.read_bytes(), "application/octet-stream"))
    at.run()
    return button(at, then_click).click().run()


def test_uploading_a_model_and_its_data_shows_both_summaries(ws, home):
    at = page("models_data", owner="uploader")
    assert_no_exception(at)
    assert at.info[0].value.startswith("No model yet")
    assert any("1,024 MB" in caption.value for caption in at.caption)  # the upload limit, next to the uploader

    at = upload(at, "model_file", DIGITS.model_path, "Add model")
    assert_no_exception(at)
    (model,) = ws.models("uploader")
    assert (model.name, model.shared) == ("digits_cnn.onnx", False)
    assert at.session_state[state.CHOSEN_MODEL] == model.id
    assert [metric.value for metric in at.metric][:3] == ["154.8 KB", "38,282", "4"]

    at = upload(at, "data_file", DIGITS.data_path, "Add data")
    assert_no_exception(at)
    (dataset,) = ws.datasets("uploader", model_id=model.id)
    assert at.session_state[state.CHOSEN_DATASET] == dataset.id
    assert any(metric.label == "Examples" and metric.value == "540" for metric in at.metric)


def test_a_zipped_model_folder_uploads_like_a_file(ws):
    at = page("models_data", owner="zipper")
    at.file_uploader(key="model_file").set_value(("mlp.zip", model_folder_zip(mlp_model(64)), "application/zip"))
    at.run()
    at = button(at, "Add model").click().run()
    assert_no_exception(at)
    assert [record.name for record in ws.models("zipper")] == ["mlp.zip"]
    assert at.success[0].value == "Added mlp.zip."


def test_a_file_on_the_server_is_opened_by_path_only_inside_the_allowed_folders(ws, tmp_path, monkeypatch):
    assert not page("models_data", owner="by-path").text_input  # off by default: no path field at all
    allowed, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    allowed.mkdir()
    elsewhere.mkdir()
    (allowed / "digits.onnx").write_bytes(DIGITS.model_path.read_bytes())
    (elsewhere / "digits.onnx").write_bytes(DIGITS.model_path.read_bytes())
    monkeypatch.setenv(ALLOWED_DIRS_VARIABLE, str(allowed))
    at = page("models_data", owner="by-path")
    at.text_input(key="model_path").input(str(elsewhere / "digits.onnx")).run()
    assert [error.value for error in at.error] == [
        f"{elsewhere / 'digits.onnx'} is outside the directories this server allows ({allowed})"]
    assert button(at, "Add model").disabled
    at.text_input(key="model_path").input(str(allowed / "digits.onnx")).run()
    at = button(at, "Add model").click().run()
    assert_no_exception(at)
    assert [record.name for record in ws.models("by-path")] == ["digits.onnx"]


def test_a_broken_model_is_a_one_line_error(ws):
    at = page("models_data", owner="careless")
    at.file_uploader(key="model_file").set_value(("broken.onnx", b"not a model", "application/octet-stream"))
    at.run()
    at = button(at, "Add model").click().run()
    assert_no_exception(at)
    assert at.error[0].value == "broken.onnx is not an ONNX model (DecodeError)"
    assert ws.models("careless") == []


def test_csv_data_offers_label_and_slice_column_pickers(ws):
    model = ws.add_model(BREAST_CANCER.model_path, name="breast_cancer_mlp.onnx", owner="tabular")
    csv = BREAST_CANCER.model_path.with_name("breast_cancer_mlp_val.csv")
    at = page("models_data", owner="tabular", **{state.CHOSEN_MODEL: model.id})
    at.file_uploader(key="data_file").set_value((csv.name, csv.read_bytes(), "text/csv"))
    at.run()
    label_picker = selectbox(at, "Label column")
    columns = csv.read_text().splitlines()[0].split(",")
    assert label_picker.options == ["automatic", *columns]
    assert selectbox(at, "Slice column").options == ["automatic", *columns]

    label_picker.set_value(columns[-1]).run()
    at = button(at, "Add data").click().run()
    assert_no_exception(at)
    (dataset,) = ws.datasets("tabular", model_id=model.id)
    assert dataset.label_column == columns[-1]


def test_uploads_stay_private_until_saved_to_the_shared_library(ws):
    alice = upload(page("models_data", owner="alice"), "model_file", BREAST_CANCER.model_path, "Add model")
    (model,) = ws.models("alice")
    assert model.owner == "alice" and not model.shared

    bob = page("models_data", owner="bob")
    assert not [box for box in bob.selectbox if box.label == "Model"]  # bob has no model at all

    alice = button(alice, "Save this model to the shared library").click().run()
    assert_no_exception(alice)
    bob = page("models_data", owner="bob")
    assert selectbox(bob, "Model").options == [f"{model.name} (shared library)"]


def test_a_pytorch_file_is_answered_with_how_to_export_it_and_never_read(ws, monkeypatch):
    at = page("models_data", owner="torch-user")
    monkeypatch.setattr(UploadedFile, "getvalue", lambda self: pytest.fail("the PyTorch file was read"))
    monkeypatch.setattr(UploadedFile, "read", lambda self, *size: pytest.fail("the PyTorch file was read"))
    at.file_uploader(key="model_file").set_value(("resnet.pt", pickle.dumps({"w": [1.0]}), "application/octet-stream"))
    at.run()
    assert_no_exception(at)
    assert [warning.value for warning in at.warning] == [help_text.PYTORCH_UPLOAD.format(name="resnet.pt")]
    assert "torch.onnx.export" in at.warning[0].value and "quantscope from-torch" in at.warning[0].value
    assert button(at, "Add model").disabled
    assert not [model for model in ws.models("torch-user") if model.owner == "torch-user"]


def test_an_empty_model_file_is_one_plain_line(ws):
    at = page("models_data", owner="empty-handed")
    at.file_uploader(key="model_file").set_value(("empty.onnx", b"", "application/octet-stream"))
    at.run()
    at = button(at, "Add model").click().run()
    assert_no_exception(at)
    assert [error.value for error in at.error] == ["empty.onnx is an empty file (0 bytes), not an ONNX model"]


def test_an_empty_csv_is_one_plain_line_said_once(ws):
    model = ws.add_model(BREAST_CANCER.model_path, name="breast_cancer_mlp.onnx", owner="empty-handed")
    at = page("models_data", owner="empty-handed", **{state.CHOSEN_MODEL: model.id})
    at.file_uploader(key="data_file").set_value(("empty.csv", b"", "text/csv"))
    at.run()
    assert_no_exception(at)
    assert [error.value for error in at.error] == ["empty.csv is an empty file (0 bytes): it holds no examples"]
    assert not [box for box in at.selectbox if box.label == "Label column"]
    assert button(at, "Add data").disabled  # adding it could only say the same again


# --- the workspace link ------------------------------------------------------------------------------------------


def test_a_first_visit_gets_a_new_token_written_into_its_link():
    at = opened_with_link("models_data", None)
    assert_no_exception(at)
    token = at.query_params[state.WORKSPACE_PARAM]
    assert state.is_workspace_token(token) and len(token) >= 22
    assert at.session_state[state.OWNER] == token
    assert opened_with_link("models_data", None).query_params[state.WORKSPACE_PARAM] != token


def test_the_link_brings_back_uploads_and_a_running_sweeps_progress_and_nothing_else_does(ws):
    token = new_token()
    wide = SAMPLES["wide_cnn"]
    model = ws.add_model(wide.model_path, name="wide_cnn.onnx", owner=token)
    dataset = ws.add_dataset(wide.data_path, filename="wide_cnn.npz", model_id=model.id, owner=token)
    job_id = ws.submit_sweep(model.id, dataset.id, PRESETS["everything"].recipes, owner=token)
    try:
        # A reload, a new tab, another browser or a restarted server: a new session that has only the link.
        models_page = opened_with_link("models_data", token)
        assert "wide_cnn.onnx (yours, private)" in selectbox(models_page, "Model").options
        sweep_page = opened_with_link("sweep", token)
        assert_no_exception(sweep_page)
        assert any("wide_cnn.onnx on wide_cnn.npz" in bar.proto.text for bar in sweep_page.get("progress"))
        assert sweep_page.session_state[state.OWNER] == token

        stranger = opened_with_link("sweep", None)
        assert not stranger.get("progress")
        assert "wide_cnn.onnx" not in stranger.dataframe[0].value.to_string()
        stranger_models = [box for box in opened_with_link("models_data", None).selectbox if box.label == "Model"]
        assert not [option for box in stranger_models for option in box.options if "wide_cnn.onnx" in option]
    finally:
        ws.cancel(job_id)


def link_box() -> None:
    """AppTest script: the sidebar's workspace link box, alone."""
    from dashboard import state
    from dashboard.workspace_link import workspace_link_sidebar

    state.owner()
    workspace_link_sidebar()


def test_a_pasted_link_opens_that_workspace():
    at = AppTest.from_function(link_box, default_timeout=RUN_TIMEOUT).run()
    first = at.session_state[state.OWNER]
    at.session_state[state.CHOSEN_MODEL] = "a model of the first workspace"
    token = new_token()
    at.text_input(key=LINK_INPUT).input(f"http://127.0.0.1:8501/sweep?workspace={token}")
    at = button(at, "Open").click().run()
    assert_no_exception(at)
    assert at.session_state[state.OWNER] == token != first
    assert at.query_params[state.WORKSPACE_PARAM] == token
    assert state.CHOSEN_MODEL not in at.session_state

    at.text_input(key=LINK_INPUT).input("my workspace, please")
    at = button(at, "Open").click().run()
    assert [error.value for error in at.error] == [help_text.PASTED_NOT_A_WORKSPACE]
    assert at.session_state[state.OWNER] == token


@pytest.mark.parametrize("link_token", [SAMPLE_OWNER, "cli", "../../quantscope.db", "short"])
def test_a_link_without_a_real_token_opens_a_new_workspace_and_says_so(link_token):
    at = AppTest.from_function(link_box, default_timeout=RUN_TIMEOUT)
    at.query_params[state.WORKSPACE_PARAM] = link_token
    at.run()
    assert_no_exception(at)
    owner = at.session_state[state.OWNER]
    assert owner != link_token and state.is_workspace_token(owner)
    assert at.query_params[state.WORKSPACE_PARAM] == owner
    assert [warning.value for warning in at.warning] == [help_text.LINK_NOT_A_WORKSPACE]


# --- Sweep -------------------------------------------------------------------------------------------------------


def test_choosing_a_preset_and_starting_creates_that_job(ws, digits, finished_job):
    model, dataset = digits
    at = page("sweep", **{state.CHOSEN_MODEL: model.id, state.CHOSEN_DATASET: dataset.id})
    assert_no_exception(at)
    at.radio(key="preset").set_value("fastest").run()
    assert any("4 recipes" in markdown.value for markdown in at.markdown)

    before = {job.id for job in ws.jobs(OWNER)}
    at = button(at, "Start sweep").click().run()
    assert_no_exception(at)
    (job,) = [job for job in ws.jobs(OWNER) if job.id not in before]
    assert job.params["recipes"] == [recipe.to_json() for recipe in PRESETS["fastest"].recipes]
    assert at.session_state[state.CHOSEN_JOB] == job.id
    # Every recipe of the preset is in the finished standard-grid sweep, so the result cache answers at once.
    assert finished(ws, job.id).state == "done"


def test_an_active_job_shows_progress_and_can_be_cancelled(ws):
    wide = SAMPLES["wide_cnn"]
    model = ws.add_model(wide.model_path, name="wide_cnn.onnx", owner="canceller")
    dataset = ws.add_dataset(wide.data_path, filename="wide_cnn.npz", model_id=model.id, owner="canceller")
    job_id = ws.submit_sweep(model.id, dataset.id, PRESETS["everything"].recipes, owner="canceller")

    at = page("sweep", owner="canceller")
    assert_no_exception(at)
    assert any("wide_cnn.onnx on wide_cnn.npz" in bar.proto.text for bar in at.get("progress"))
    at = at.button(key=f"cancel-{job_id}").click().run()
    assert_no_exception(at)
    assert ws.job(job_id).state == "cancelled"
    assert at.warning[0].value.startswith("Ended before finishing: wide_cnn.onnx on wide_cnn.npz, ")
    assert at.warning[0].value.endswith("(cancelled).")


def test_a_watched_sweep_that_finishes_is_announced_with_a_link_to_its_trade_offs(ws, monkeypatch):
    model = ws.add_model(BREAST_CANCER.model_path, name="breast_cancer_mlp.onnx", owner="watcher")
    dataset = ws.add_dataset(BREAST_CANCER.data_path, filename="bc.npz", model_id=model.id, owner="watcher")
    job_id = ws.submit_sweep(model.id, dataset.id, [Recipe.fp32()], owner="watcher")
    at = through_app("sweep", monkeypatch, owner="watcher")
    assert_no_exception(at)
    assert at.get("progress") and not at.success  # seen running

    assert finished(ws, job_id).state == "done"
    at.run()
    assert_no_exception(at)
    label = jobs_view.job_label(ws.job(job_id), {model.id: model.name}, {dataset.id: dataset.filename})
    assert [success.value for success in at.success] == [help_text.SWEEP_FINISHED.format(label=label)]
    (link,) = at.get("page_link")
    assert link.proto.label == help_text.SEE_TRADE_OFFS
    assert link.proto.query_string == f"{state.WORKSPACE_PARAM}=watcher"  # the link keeps the user's workspace
    assert at.session_state[state.CHOSEN_JOB] == job_id  # Trade-offs opens at this sweep
    assert not at.get("progress")


def test_the_progress_section_reports_its_own_errors_in_one_line(digits, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("the jobs table broke")

    monkeypatch.setattr(jobs_view, "jobs_table", explode)  # only the refreshing section draws it
    at = page("sweep")
    assert_no_exception(at)
    assert [error.value for error in at.error] == [
        help_text.UNEXPECTED_ERROR.format(problem="the jobs table broke", log=errors.log_path())
    ]


def test_the_advanced_grid_replaces_the_preset(digits):
    model, dataset = digits
    at = page("sweep", **{state.CHOSEN_MODEL: model.id, state.CHOSEN_DATASET: dataset.id})
    at.toggle(key="use_grid").set_value(True).run()
    assert_no_exception(at)
    assert any("5 recipes" in markdown.value for markdown in at.markdown)


# --- Trade-offs --------------------------------------------------------------------------------------------------


def figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def marker_keys(figure: dict) -> list[str]:
    return [point[0] for trace in figure["data"] if "markers" in trace["mode"] for point in trace["customdata"]]


def test_charts_have_one_point_per_row(ws, finished_job):
    at = page("tradeoffs", **{state.CHOSEN_JOB: finished_job})
    assert_no_exception(at)
    table = ws.results(finished_job)
    size, latency, three_d = figures(at)
    assert sorted(marker_keys(size)) == sorted(table["recipe_key"])
    timed = table[table["latency_b1_p50_ms"].notna()]
    assert sorted(marker_keys(latency)) == sorted(timed["recipe_key"])
    assert sorted(marker_keys(three_d)) == sorted(timed["recipe_key"])
    assert help_text.SIMULATED_LEGEND in [trace["name"] for trace in size["data"]]


def test_either_chart_can_set_the_score_against_ram(ws, finished_job):
    at = page("tradeoffs", **{state.CHOSEN_JOB: finished_job})
    at.radio(key="latency_chart_axis").set_value("RAM").run()
    assert_no_exception(at)
    ram = figures(at)[1]
    assert ram["layout"]["xaxis"]["title"]["text"].startswith("RAM")
    table = ws.results(finished_job)
    assert sorted(marker_keys(ram)) == sorted(table[table["ram_b1_peak_bytes"].notna()]["recipe_key"])
    assert not table[table["simulated"].astype(bool)]["ram_b1_peak_bytes"].notna().any()


def test_recommendation_follows_the_tolerance_slider(finished_job):
    at = page("tradeoffs", **{state.CHOSEN_JOB: finished_job})
    assert at.success[0].value.startswith("Smallest model within 1% of the original top-1 accuracy:")
    at.slider[0].set_value(5.0).run()
    assert at.success[0].value.startswith("Smallest model within 5% of the original top-1 accuracy:")


def test_picking_the_second_of_two_options_that_read_alike_picks_it():
    def two_alike() -> None:
        import streamlit as st

        from dashboard import state

        st.session_state["shown"] = state.pick("Sweep", ["first", "second"], "picked", format_func=lambda _: "07:27")

    at = AppTest.from_function(two_alike, default_timeout=RUN_TIMEOUT).run()
    assert selectbox(at, "Sweep").options == ["07:27", "07:27 (2)"]
    for option in ("second", "first"):  # a selectbox names the pick by its label: alike, both would be one
        selectbox(at, "Sweep").set_value(option).run()
        assert (at.session_state["shown"], at.session_state["picked"]) == (option, option)


def test_picking_the_second_of_two_sweeps_of_the_same_minute_shows_it(ws, digits, finished_job):
    model, dataset = digits
    recipes = PRESETS["fastest"].recipes  # all in the finished sweep: served from the cache at once
    first, second = (ws.submit_sweep(model.id, dataset.id, recipes, owner=OWNER) for _ in range(2))
    assert finished(ws, first).state == finished(ws, second).state == "done"
    at = page("tradeoffs", **{state.CHOSEN_JOB: first})
    options = selectbox(at, "Sweep").options
    assert len(set(options)) == len(options)
    selectbox(at, "Sweep").set_value(second).run()
    assert_no_exception(at)
    assert at.session_state[state.CHOSEN_JOB] == second
    assert selectbox(at, "Sweep").value == second


def test_the_original_models_detail_card_says_it_keeps_every_layer(ws, finished_job):
    table = ws.results(finished_job)
    fp32 = table[table["name"] == "fp32"].iloc[0]
    at = page("tradeoffs", **{state.CHOSEN_JOB: finished_job, state.CHOSEN_RECIPE: fp32["recipe_key"]})
    assert_no_exception(at)
    assert help_text.ALL_LAYERS_KEPT in [markdown.value for markdown in at.markdown]


def test_picking_a_simulated_recipe_shows_its_detail_card(ws, finished_job):
    table = ws.results(finished_job)
    simulated = table[table["simulated"]].iloc[0]
    at = page("tradeoffs", **{state.CHOSEN_JOB: finished_job})
    selectbox(at, "Recipe").set_value(simulated["recipe_key"]).run()
    assert_no_exception(at)
    assert at.warning[0].value == help_text.SIMULATED_DETAIL
    assert any(metric.label == "Time per example" and metric.value == "not timed" for metric in at.metric)
    assert at.session_state[state.CHOSEN_RECIPE] == simulated["recipe_key"]


# --- unexpected errors -------------------------------------------------------------------------------------------


def test_an_unexpected_error_is_one_line_and_its_traceback_goes_to_the_log(home, monkeypatch):
    def explode(self, *args, **kwargs):
        raise RuntimeError("the disk is on fire.")

    monkeypatch.setattr(Workspace, "models", explode)
    at = through_app("models_data", monkeypatch)
    assert_no_exception(at)
    log = home / "logs" / "dashboard.log"
    assert [error.value for error in at.error] == [f"Something went wrong: the disk is on fire. Details are in {log}"]
    assert "Traceback" in log.read_text() and "RuntimeError: the disk is on fire." in log.read_text()


# --- Export ------------------------------------------------------------------------------------------------------


class RecordingStorage(MemoryMediaFileStorage):
    """AppTest's in-memory media storage, remembered so a test can read what a download button would serve."""

    latest: RecordingStorage | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        RecordingStorage.latest = self


def served_bytes(download_button) -> bytes:
    return RecordingStorage.latest.get_file(download_button.proto.url.rsplit("/", 1)[-1]).content


def download_button(at: AppTest, label: str):
    return next(b for b in at.download_button if b.label == label)


def test_the_bundle_zip_holds_the_measured_artifact_and_is_kept_in_the_history(ws, finished_job, monkeypatch):
    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", RecordingStorage)
    table = ws.results(finished_job)
    row = table[table["name"] == "W8A8 static channel minmax"].iloc[0]
    at = page("export", **{state.CHOSEN_JOB: finished_job, state.CHOSEN_RECIPE: row["recipe_key"]})
    assert_no_exception(at)
    assert not at.download_button and not at.warning
    button(at, help_text.MAKE_BUNDLE).click().run()
    assert_no_exception(at)
    (record,) = ws.exports(OWNER)
    with zipfile.ZipFile(io.BytesIO(served_bytes(download_button(at, report.ZIP_LABEL)))) as archive:
        members = {Path(name).name: archive.read(name) for name in archive.namelist()}
    assert members["model.onnx"] == ws.artifact_path(finished_job, row["recipe_key"]).read_bytes()
    assert json.loads(members["recipe.json"]) == json.loads(row["recipe"])
    assert json.loads(members["bundle.json"])["metric"]["value"] == row["metric"]
    assert set(members) == {"model.onnx", "recipe.json", "bundle.json", "report.html", "MODEL_CARD.md"}
    assert served_bytes(download_button(at, "Model card (.md)")) == members["MODEL_CARD.md"]
    assert [b.label for b in at.button if b.label == help_text.MAKE_BUNDLE] == []  # made once per row and session
    assert at.dataframe[0].value["Recipe"].tolist() == ["W8A8 static channel minmax"]

    later = page("export", **{state.CHOSEN_JOB: finished_job, state.CHOSEN_RECIPE: row["recipe_key"]})
    past = served_bytes(download_button(later, help_text.PAST_ZIP))  # another session: the history, downloadable
    assert zipfile.ZipFile(io.BytesIO(past)).read(f"{history.bundle_name(record)}/model.onnx") == members["model.onnx"]


def test_exporting_a_simulated_recipe_says_it_is_an_fp32_simulation_and_what_to_ship_instead(ws, finished_job):
    table = ws.results(finished_job)
    row = table[table["simulated"]].iloc[0]
    at = page("export", **{state.CHOSEN_JOB: finished_job, state.CHOSEN_RECIPE: row["recipe_key"]})
    nearest = results.nearest_real_recipe(table, row)
    assert at.warning[0].value == f"{help_text.SIMULATED_EXPORT} {help_text.SHIP_INSTEAD.format(name=nearest['name'])}"


# --- samples -----------------------------------------------------------------------------------------------------


def test_sample_sweeps_are_submitted_once_and_shared(ws):
    job_ids = ensure_sample_sweeps(ws)
    assert len(job_ids) == len(SAMPLES)
    assert ensure_sample_sweeps(ws) == job_ids  # submitted or finished: never a second time
    assert {ws.job(job_id).params["latency_cap"] for job_id in job_ids} == {SAMPLE_LATENCY_CAP}
    shared_names = {model.name for model in ws.models("anyone") if model.owner == SAMPLE_OWNER}
    assert shared_names == set(SAMPLES)
    for job_id in job_ids:
        ws.cancel(job_id)  # the test has what it needs; spare the CPU


def test_samples_read_as_samples_next_to_a_look_alike_upload(ws):
    ensure_sample_sweeps(ws)
    for job in ws.jobs(SAMPLE_OWNER):
        ws.cancel(job.id)
    look_alike = ws.add_model(BREAST_CANCER.model_path, name="wide_cnn.onnx", owner="lookalike")
    at = page("models_data", owner="lookalike", **{state.CHOSEN_MODEL: look_alike.id})
    assert {"wide_cnn (sample)", "wide_cnn.onnx (yours, private)"} <= set(selectbox(at, "Model").options)
    at = page("sweep", owner="lookalike")
    assert {"wide_cnn (sample)", "wide_cnn.onnx (yours, private)"} <= set(selectbox(at, "Model").options)


def test_trade_offs_shows_each_recipes_loss_on_shifted_data_beside_its_loss_on_clean_data(ws):
    model = ws.add_model(BREAST_CANCER.model_path, name="breast_cancer_mlp.onnx", owner="shifter")
    dataset = ws.add_dataset(BREAST_CANCER.data_path, filename="bc.npz", model_id=model.id, owner="shifter")
    grid = {recipe.short_name(): recipe for recipe in PRESETS["everything"].recipes}
    recipes = [grid[name] for name in ("fp32", "W4 weight-only group32", "W2 weight-only channel")]
    job_id = ws.submit_sweep(model.id, dataset.id, recipes, owner="shifter", batch=None,
                             shifts=["noise:0.5", "scale:0.5"])
    assert finished(ws, job_id).state == "done"
    at = page("tradeoffs", owner="shifter", **{state.CHOSEN_JOB: job_id})
    assert_no_exception(at)
    assert "On other data" in [header.value for header in at.subheader]
    shifted = next(frame.value for frame in at.dataframe if "Much worse on" in frame.value.columns)
    assert list(shifted.columns) == ["Recipe", "Your data", "noise:0.5", "scale:0.5", "Much worse on"]
    assert list(shifted["Recipe"]) == ["W4 weight-only group32", "W2 weight-only channel"]
    table = ws.results(job_id).set_index("name")
    w2 = table.loc["W2 weight-only channel"]
    assert shifted.iloc[1]["noise:0.5"] == pytest.approx(-100 * w2["extra_sets"]["noise:0.5"]["delta"])
    flagged = shifted[shifted["Much worse on"] != ""]
    assert list(flagged["Recipe"]) == ["W2 weight-only channel"]  # 2-bit weights lose much more on scaled inputs
    assert [warning.value for warning in at.warning if "loses much more" in warning.value] == [
        help_text.DEGRADES_UNDER_SHIFT.format(recipe=row["Recipe"], sets=row["Much worse on"])
        for _, row in flagged.iterrows()]


def test_how_to_measure_reaches_the_job(ws):
    """Calibration data, an extra set, a shift, all cores and no batch timing, chosen on the form, are the job's."""
    model = ws.add_model(BREAST_CANCER.model_path, name="breast_cancer_mlp.onnx", owner="measurer")
    dataset = ws.add_dataset(BREAST_CANCER.data_path, filename="bc.npz", model_id=model.id, owner="measurer")
    other = ws.add_dataset(BREAST_CANCER.data_path.with_name("breast_cancer_mlp_val.csv"), filename="bc more.csv",
                           model_id=model.id, owner="measurer")
    at = page("sweep", owner="measurer", **{state.CHOSEN_MODEL: model.id, state.CHOSEN_DATASET: dataset.id})
    assert_no_exception(at)
    at.selectbox(key="calibration_data").set_value(other.id)
    at.multiselect(key="extra_sets").set_value([other.id])
    at.multiselect(key="shifts").set_value(["noise:0.1"])
    at.radio(key="threads").set_value(sweep_form.THREAD_CHOICES[-1])
    at.checkbox(key="time_batches").uncheck()
    at = button(at.run(), "Start sweep").click().run()
    assert_no_exception(at)
    (job,) = ws.jobs("measurer")
    assert job.params["calibration_dataset"] == other.id
    assert job.params["extra_sets"] == [["bc_more", other.id]] and job.params["shifts"] == ["noise:0.1"]
    assert job.params["threads"] == sweep_form.THREAD_CHOICES[-1] and job.params["batch"] is None
    ws.cancel(job.id)


# --- Sensitivity -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_table(ws, digits) -> str:
    model, dataset = digits
    job_id = ws.submit_sensitivity(model.id, dataset.id, OWNER, bits=(8,), activations=(8, None))
    assert finished(ws, job_id).state == "done"
    return job_id


def test_the_sensitivity_page_draws_the_heat_map_and_a_parts_values_with_its_grid(ws, finished_table):
    at = page("sensitivity", **{state.CHOSEN_TABLE: finished_table})
    assert_no_exception(at)
    table = ws.sensitivity(finished_table)
    heat, values = figures(at)
    cells = [tuple(point[:3]) for point in heat["data"][0]["customdata"]]
    expected = table.rows[table.rows["error"].isna()]
    assert sorted(cells) == sorted(zip(expected["kind"], expected["layer"], expected["tensor"]))
    assert set(heat["data"][0]["x"]) == {"W8A8 static channel minmax", "W8 weight-only channel"}

    kind, layer, tensor = json.loads(at.session_state[f"{state.CHOSEN_POINT}_widget"])  # the most harmful, first
    top = table.by_harm(selectbox(at, "Way of shrinking").value).iloc[0]
    assert (kind, layer, tensor) == (top["kind"], top["layer"], top["tensor"])
    bars, ticks = values["data"]
    assert bars["y"] == list(table.histogram(kind, layer, tensor).counts)
    grid = table.grid(kind, layer, tensor, selectbox(at, "Way of shrinking").value)
    assert ticks["x"][0] == pytest.approx(grid.levels(grid.widest_channel())[0])


def test_keeping_parts_precise_builds_the_working_recipe_and_measuring_submits_it(ws, finished_table):
    at = page("sensitivity", **{state.CHOSEN_TABLE: finished_table,
                                state.CHOSEN_CANDIDATE: "W8A8 static channel minmax"})
    table = ws.sensitivity(finished_table)
    rows = table.by_harm("W8A8 static channel minmax")
    activation = rows[(rows["kind"] == "activations") & (rows["layer"] != rows["tensor"])].iloc[0]
    weight = rows[rows["kind"] == "weights"].iloc[0]
    for row, clicked in ((activation, "Use 16 bits"), (weight, "Keep float")):
        at = selectbox(at, "Part").set_value(sensitivity_view.point_key(row)).run()
        at = button(at, clicked).click().run()
        assert_no_exception(at)
    working = Recipe.from_json(at.session_state[state.WORKING_RECIPE])
    assert {name: (o.keep_fp32, o.activation_bits) for name, o in working.overrides.items()} == {
        activation["layer"]: (False, 16), weight["layer"]: (True, None)}
    assert any(working.short_name() in markdown.value for markdown in at.markdown)

    before = {job.id for job in ws.jobs(OWNER)}
    at = button(at, "Measure this recipe").click().run()
    assert_no_exception(at)
    (job,) = [job for job in ws.jobs(OWNER) if job.id not in before]
    assert job.kind == "sweep" and job.params["recipes"] == [Recipe.fp32().to_json(), working.to_json()]
    assert at.session_state[state.CHOSEN_JOB] == job.id
    assert finished(ws, job.id).state == "done"
    measured = ws.results(job.id)
    assert results.measured_rows(measured)["recipe_key"].tolist()[-1] == working.key()
