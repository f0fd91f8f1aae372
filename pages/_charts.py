"""The look every chart of the pages shares: white background, light grid, tight margins, the
legend in a row, and Plotly's toolbar without its logo.  Pages build their traces; this styles
and shows them."""
from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

GRID = "#eee"
MARGIN = (10, 10, 30, 10)  # left, right, top, bottom (px)
PLOT_CONFIG = {"displaylogo": False}
MAIN_WIDTH, OTHER_WIDTH = 3, 1.6  # line widths: the paper's pair, the other methods


def legend_row(y: float, x: float = 0, **more: Any) -> dict[str, Any]:
    """A horizontal legend starting at (x, y) in paper coordinates (1 = the plot's top)."""
    return dict(orientation="h", y=y, x=x, **more)


def styled(fig: go.Figure, height: int, margin: tuple[int, int, int, int] = MARGIN,
           grid: str = "", **layout: Any) -> go.Figure:
    """Apply the shared look: ``height`` px, ``margin`` (l, r, t, b), a white plot, light grid
    lines on the axes named in ``grid`` ("x", "y", "xy"); ``layout``: anything else."""
    left, right, top, bottom = margin
    fig.update_layout(height=height, margin=dict(l=left, r=right, t=top, b=bottom),
                      plot_bgcolor="white", **layout)
    if "x" in grid:
        fig.update_xaxes(gridcolor=GRID)
    if "y" in grid:
        fig.update_yaxes(gridcolor=GRID)
    return fig


def show(fig: go.Figure, key: str, **kwargs: Any) -> Any:
    """st.plotly_chart with the shared toolbar settings (``config`` adds to them)."""
    config = {**PLOT_CONFIG, **kwargs.pop("config", {})}
    return st.plotly_chart(fig, key=key, config=config, **kwargs)


def digit_rows(test_digit, ood_digit: int):
    """(digit, rows, is the held-out one, legend name) for each digit on a map, the held-out
    digit last so that it is drawn on top; digits without a row are left out."""
    import numpy as np

    for d in [d for d in range(10) if d != ood_digit] + [ood_digit]:
        rows = np.flatnonzero(test_digit == d)
        if len(rows):
            ood = d == ood_digit
            yield d, rows, ood, f"{d} (OOD)" if ood else str(d)


class Frozen(go.Figure):
    """A finished figure that every session shares (built once per cache state by a page's
    ``st.cache_resource`` function): it keeps the dict st.plotly_chart encodes, so a render
    neither rebuilds nor deep-copies it.  Never modified after it is made."""

    def __init__(self, fig: go.Figure):
        super().__init__()
        self._spec = fig.to_dict()

    def to_dict(self) -> dict[str, Any]:  # what st.plotly_chart encodes
        return self._spec

    @property
    def spec(self) -> dict[str, Any]:
        return self._spec


def shared(max_entries: int = 64):
    """``st.cache_resource`` for what is the same for every visitor (tables, figures of the
    cache): computed once per argument values and handed to every session as the same object.
    Key it by the cache's signature (pages._data.cache_signature) so that a new run is
    seen; parameters starting with ``_`` are not hashed (pass them with a key that is)."""
    return st.cache_resource(show_spinner=False, max_entries=max_entries)
