"""Per-browser-session state: who the user is, which workspace they use, and what they picked on each page.

A choice made on one page (a model, a job, a recipe) is kept under a plain session key so the next page
starts from it. Streamlit forgets a widget's own state when a page without that widget runs, so widgets
here mirror a plain key instead of being the source of truth.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import streamlit as st

from engine.workspace import Workspace, workspace_root

OWNER = "owner"
CHOSEN_MODEL = "chosen_model"
CHOSEN_DATASET = "chosen_dataset"
CHOSEN_JOB = "chosen_job"
CHOSEN_RECIPE = "chosen_recipe"


def owner() -> str:
    """A random id per browser session: uploads and jobs belong to it, so sessions never see each other's."""
    if OWNER not in st.session_state:
        st.session_state[OWNER] = uuid.uuid4().hex
    return st.session_state[OWNER]


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
