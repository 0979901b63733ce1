"""The quantscope dashboard: `streamlit run dashboard/app.py` from the repository root.

This script only sets the page up and routes to the five pages in `dashboard/views/` (not `pages/`, which
Streamlit would also serve directly, bypassing this script); each page is a thin
script over small functions in the other `dashboard` modules, which are thin over the engine.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts only this file's folder on the path; the repository root holds the packages we import.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

from dashboard import help_text, state  # noqa: E402
from dashboard.errors import reported_in_one_line  # noqa: E402
from dashboard.samples import ensure_sample_sweeps  # noqa: E402
from dashboard.workspace_link import workspace_link_sidebar  # noqa: E402

PAGES_DIR = Path(__file__).resolve().parent / "views"


@st.cache_resource(show_spinner="Preparing the sample models...")
def _samples_ready(workspace_root: str) -> bool:
    """Once per server and workspace: later sessions find the sample sweeps already submitted or finished."""
    ensure_sample_sweeps(state.workspace())
    return True


st.set_page_config(page_title="quantscope", page_icon=":material/compress:", layout="wide")
with reported_in_one_line():  # around every page: no traceback ever reaches the browser
    _samples_ready(str(state.workspace().root))
    state.owner()
    navigation = st.navigation(
        [
            st.Page(PAGES_DIR / "models_data.py", title="Models & data", icon=":material/upload_file:", default=True),
            st.Page(PAGES_DIR / "sweep.py", title="Sweep", icon=":material/tune:"),
            st.Page(PAGES_DIR / "tradeoffs.py", title="Trade-offs", icon=":material/scatter_plot:"),
            st.Page(PAGES_DIR / "sensitivity.py", title="Sensitivity", icon=":material/troubleshoot:"),
            st.Page(PAGES_DIR / "export.py", title="Export", icon=":material/download:"),
        ]
    )
    workspace_link_sidebar()
    st.sidebar.caption(help_text.WHAT_IS_QUANTIZATION)
    navigation.run()
