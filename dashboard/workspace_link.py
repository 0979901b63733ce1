"""The sidebar's word on where the user's work lives (this page's link), and a box to reopen a workspace from one."""

from __future__ import annotations

import streamlit as st

from dashboard import help_text, state

LINK_INPUT = "workspace_link"
LINK_PROBLEM = "workspace_link_problem"


def workspace_link_sidebar() -> None:
    st.sidebar.caption(help_text.BOOKMARK_LINK)
    if st.session_state.pop(state.REJECTED_LINK, False):
        st.sidebar.warning(help_text.LINK_NOT_A_WORKSPACE)
    with st.sidebar.expander("Open my workspace from a link"):
        with st.form("open_workspace", border=False):
            st.text_input("Link or workspace code", key=LINK_INPUT, help=help_text.OPEN_WORKSPACE)
            st.form_submit_button("Open", on_click=_open_from_link)
        if st.session_state.pop(LINK_PROBLEM, False):
            st.error(help_text.PASTED_NOT_A_WORKSPACE)


def _open_from_link() -> None:
    """Runs before the page does, so the whole page already reads the workspace that was opened."""
    token = state.token_from_link(st.session_state[LINK_INPUT])
    if token is None:
        st.session_state[LINK_PROBLEM] = True
    else:
        state.open_workspace(token)
        st.session_state[LINK_INPUT] = ""
