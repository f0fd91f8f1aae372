"""Telling the visitor what went wrong: now (safe_call) or on the next script run (flash)."""
from __future__ import annotations

from typing import Any, Callable

import streamlit as st

from xdd.jobs import api as jobs
from xdd.core.config import ConfigError


def safe_call(fn: Callable[..., Any], *args: Any, what: str, default: Any = None,
              **kwargs: Any) -> Any:
    """Call a jobs function; any failure becomes an st.error with the reason, not a traceback."""
    try:
        return fn(*args, **kwargs)
    except (jobs.JobError, ConfigError, ValueError, OSError) as exc:
        st.error(f"Could not {what}: {exc}")
        return default


def flash(kind: str, text: str) -> None:
    """Remember a message for the next script run (it survives st.rerun / st.switch_page)."""
    st.session_state.setdefault("_flash", []).append((kind, text))


def show_flash() -> None:
    for kind, text in st.session_state.pop("_flash", []):
        {"toast": st.toast, "error": st.error, "warning": st.warning}.get(kind, st.info)(text)
