"""Helpers for the tests that open the app with Streamlit's AppTest (no browser)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "app.py")


def open_run(**query: Any) -> AppTest:
    """The Run page (the default), opened with these URL query parameters; no exception."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def alerts(at: AppTest) -> dict[str, list[str]]:
    """The page's errors, warnings and infos, by kind."""
    return {k: [str(e.value) for e in getattr(at, k)] for k in ("error", "warning", "info")}
