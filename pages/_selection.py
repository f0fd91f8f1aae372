"""The Embeddings page's linked selection: one set of map rows per visitor and run, shared by
every map and the retraining animation.

A box or lasso on either map, or the "moved most" button, replaces it; its per-digit counts and
images stay until the next selection or Clear.  It lives in ``st.session_state`` rather than in
the charts' own selection state because a map redrawn with the highlight is a new chart to
Streamlit (its element id hashes the figure), which forgets the selection it was drawn with.

Which rows a selection event picked is read from the trace layout of the figure the visitor
selected on, saved when that figure was drawn (``remember_rows``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

SELECTION = "emb-selection"  # session_state: the current Selection
MOVED = ":moved-most"  # the source of a "moved most" selection (never a method name)
TRACE_ROWS = "emb-trace-rows"  # session_state: chart key -> the map rows of each of its traces


@dataclass(frozen=True)
class Selection:
    """Map rows (test-subsample rows, never labeled examples) picked on a run's maps."""
    run: str  # run key
    rows: tuple[int, ...]
    source: str  # the method whose map it was drawn on, or MOVED (the ranking's button)
    moves: dict[int, float] = field(default_factory=dict)  # row -> rank move (MOVED only)
    reference: str = ""  # the reference the moves were ranked under (MOVED only)


def current(run_key: str) -> Selection | None:
    """The visitor's selection on this run (None: nothing selected, or another run's)."""
    sel = st.session_state.get(SELECTION)
    return sel if isinstance(sel, Selection) and sel.run == run_key and sel.rows else None


def replace(sel: Selection | None) -> None:
    st.session_state[SELECTION] = sel


def clear() -> None:
    st.session_state[SELECTION] = None


def remember_rows(chart_key: str, rows: list[np.ndarray]) -> None:
    """The map rows of each trace of the figure drawn under ``chart_key``."""
    st.session_state.setdefault(TRACE_ROWS, {})[chart_key] = [np.asarray(r) for r in rows]


def rows_of_event(event: Any, rows: list[np.ndarray], n_test: int) -> list[int]:
    """The test-subsample rows a box or lasso selection picked on one map, in event order."""
    points: list[dict[str, Any]] = (event or {}).get("selection", {}).get("points", []) or []
    out = []
    for pt in points:
        c, i = pt.get("curve_number"), pt.get("point_index", pt.get("point_number"))
        if c is None or i is None or not 0 <= c < len(rows) or not 0 <= i < len(rows[c]):
            continue
        row = int(rows[c][i])
        if row < n_test:  # labeled (training) examples are not test images
            out.append(row)
    return list(dict.fromkeys(out))


def on_map_select(chart_key: str, run_key: str, source: str, n_test: int) -> None:
    """The maps' on_select callback: a selection with test images replaces the current one;
    an emptied selection (a double click) clears it when it was drawn on this map."""
    rows = rows_of_event(st.session_state.get(chart_key),
                         st.session_state.get(TRACE_ROWS, {}).get(chart_key, []), n_test)
    if rows:
        replace(Selection(run_key, tuple(rows), source))
    else:
        sel = current(run_key)
        if sel is not None and sel.source == source:
            clear()
