"""Per-browser-session state: who the user is, which workspace they use, and what they picked on each page.

The user is a workspace token kept in the page's link (`?workspace=...`): a reload, a new tab, another browser or
a restarted server that opens the same link finds the same uploads and jobs. Nothing else identifies a user, so the
token is only ever a lookup key, checked against a strict format.

A choice made on one page (a model, a job, a recipe) is kept under a plain session key so the next page
starts from it. Streamlit forgets a widget's own state when a page without that widget runs, so widgets
here mirror a plain key instead of being the source of truth.
"""

from __future__ import annotations

import re
import secrets
import urllib.parse
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import streamlit as st

from engine.workspace import Workspace, workspace_root

OWNER = "owner"
REJECTED_LINK = "rejected_link"  # set when the page was opened with a workspace token that is not one
CHOSEN_MODEL = "chosen_model"
CHOSEN_DATASET = "chosen_dataset"
CHOSEN_JOB = "chosen_job"
CHOSEN_RECIPE = "chosen_recipe"
CHOSEN_EXPORT = "chosen_export"  # a past export picked on the Export page
CHOSEN_TABLE = "chosen_table"  # a sensitivity job picked on the Sensitivity page
CHOSEN_CURVE = "chosen_curve"  # a mixed-precision job drawn over the sweep on Trade-offs
CHOSEN_CANDIDATE = "chosen_candidate"  # one of its candidates, by short name
CHOSEN_POINT = "chosen_point"  # one of its points: (kind, layer, tensor)
WORKING_RECIPE = "working_recipe"  # the recipe (JSON) the Sensitivity page builds override by override
CHOICES = (CHOSEN_MODEL, CHOSEN_DATASET, CHOSEN_JOB, CHOSEN_RECIPE, CHOSEN_EXPORT, CHOSEN_TABLE, CHOSEN_CANDIDATE,
           CHOSEN_POINT, WORKING_RECIPE, CHOSEN_CURVE)
MADE_BUNDLES = "made_bundles"  # (job id, recipe key) -> id of the export this session made of that row
WATCHED_JOBS = "watched_jobs"  # job id -> still active, for the user's jobs this session saw running

WORKSPACE_PARAM = "workspace"  # the page link's query parameter that holds the token
TOKEN_BYTES = 24  # 192 random bits
# secrets.token_urlsafe's alphabet; at least 22 characters (128 bits). The length alone keeps out the fixed owners
# ('samples' for the shared samples, 'cli' for the command line), so a link can never open their items as its own.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{22,64}")


def is_workspace_token(text: object) -> bool:
    return isinstance(text, str) and TOKEN_PATTERN.fullmatch(text) is not None


def token_from_link(text: str) -> str | None:
    """The workspace token in a pasted link (or a bare token); None when there is none."""
    text = text.strip()
    query = urllib.parse.urlsplit(text).query
    found = urllib.parse.parse_qs(query).get(WORKSPACE_PARAM, [text])[-1] if query else text
    return found if is_workspace_token(found) else None


def owner() -> str:
    """The workspace token from the page's link; a new one, written into the link, on a first visit.

    Switching pages in the sidebar drops the link's parameters, so the session's token is written back.
    """
    from_link = st.query_params.get(WORKSPACE_PARAM)
    if is_workspace_token(from_link):
        st.session_state[OWNER] = from_link
    elif OWNER not in st.session_state:
        st.session_state[OWNER] = secrets.token_urlsafe(TOKEN_BYTES)
        st.session_state[REJECTED_LINK] = from_link is not None
    if from_link != st.session_state[OWNER]:
        st.query_params[WORKSPACE_PARAM] = st.session_state[OWNER]
    return st.session_state[OWNER]


def open_workspace(token: str) -> None:
    """Make `token` this session's workspace, in the page's link too; choices made in the other one are dropped."""
    st.session_state[OWNER] = token
    st.query_params[WORKSPACE_PARAM] = token
    for key in (*CHOICES, WATCHED_JOBS, MADE_BUNDLES):
        st.session_state.pop(key, None)


@st.cache_resource(show_spinner=False)
def _open_workspace(root: str) -> Workspace:
    return Workspace.open(root)


def workspace() -> Workspace:
    """One Workspace per workspace directory, shared by every session of this server."""
    return _open_workspace(str(workspace_root()))


def chosen(key: str) -> Any:
    return st.session_state.get(key)


def choose(key: str, value: Any) -> None:
    st.session_state[key] = value


def pick(
    label: str,
    options: Sequence[Hashable],
    key: str,
    format_func: Callable[[Any], str] = str,
    help: str | None = None,
) -> Any:
    """A selectbox that starts at the session's choice under `key` (else the first option) and records the user's
    own picks there; returns the option shown, or None without options.

    Showing the first option does not record it: a choice made elsewhere (e.g. a job still running, so not yet
    listed here) survives a visit to a page that cannot show it yet.
    """
    if not options:
        return None
    options = list(options)
    labels = unique_labels([format_func(option) for option in options])
    label_of = dict(zip(options, labels))
    shown = chosen(key) if chosen(key) in options else options[0]
    widget_key = f"{key}_widget"
    st.session_state[widget_key] = shown  # the widget shows the session's choice, wherever it was made
    st.selectbox(
        label,
        options,
        key=widget_key,
        format_func=label_of.get,
        help=help,
        on_change=lambda: choose(key, st.session_state[widget_key]),
    )
    return shown


def unique_labels(labels: list[str]) -> list[str]:
    """The labels, a repeated one numbered from its second showing on ('x', 'x (2)').

    A selectbox tells the server which option was picked by its label, so of options that read alike only the last
    could ever be picked.
    """
    repeated = {text for text, count in Counter(labels).items() if count > 1}
    seen: Counter[str] = Counter()
    numbered = []
    for text in labels:
        seen[text] += 1
        numbered.append(f"{text} ({seen[text]})" if text in repeated and seen[text] > 1 else text)
    return numbered
