"""The retraining animation of the Embeddings page: the embedding of the maps' points at a few
retraining steps (projections.npz ``<method>_frames``), drawn as plotly frames with a step
slider and a play button.

Every frame is on the PCA axes of the final embedding (the pipeline places them there), so
the last frame is the static PCA map of the retrained embedding, point for point.  The traces
are SVG scatters, not WebGL ones, so that plotly moves the points smoothly between frames.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from pages._charts import digit_rows, legend_row, styled
from xdd.report.views import frame_ranges, highlight_points

FRAME_MS, MOVE_MS = 1100, 700  # per frame while playing; the glide from one frame to the next
META = "retraining-animation"  # layout.meta: how a test finds this chart on the page
DIMMED = 0.12  # the opacity of the points outside a selection


def _groups(test_digit: np.ndarray, ood_digit: int, n_lab: int, show_labeled: bool,
            size: int, colors: list[str], ood_color: str) -> list[dict[str, Any]]:
    """One group of rows per digit (the held-out digit last, on top), then the labeled ones:
    name, rows and marker, drawn as on the static maps."""
    out = []
    for d, rows, ood, name in digit_rows(test_digit, ood_digit):
        out.append(dict(name=name, rows=rows, marker=dict(
            size=size + 3 if ood else size, symbol="diamond" if ood else "circle",
            color=ood_color if ood else colors[d], opacity=0.95 if ood else 0.6,
            line=dict(width=0.8, color="black") if ood else dict(width=0))))
    if show_labeled and n_lab:
        m = len(test_digit)
        out.append(dict(name="labeled", rows=np.arange(m, m + n_lab),
                        marker=dict(size=size + 2, color="black", symbol="x")))
    return out


def animation_figure(frames: np.ndarray, steps: np.ndarray, test_digit: np.ndarray,
                     test_index: np.ndarray, ood_digit: int, n_lab: int, show_labeled: bool,
                     size: int, colors: list[str], ood_color: str,
                     selected: tuple[int, ...] | None = None) -> go.Figure:
    """``frames`` (F, M + L, 2): the M test rows (test images ``test_index``) then the L
    labeled ones at ``steps`` (F,).  Opens on the first frame; ▶ plays to the last.
    ``selected``: map rows drawn at full opacity, the rest dimmed (None: no selection).
    Each point's customdata is its test image's index (-1: a labeled example)."""
    groups = _groups(test_digit, ood_digit, n_lab, show_labeled, size, colors, ood_color)
    index = np.r_[np.asarray(test_index, dtype=np.int64), np.full(n_lab, -1)]
    marks = highlight_points([g["rows"] for g in groups], selected) if selected else None
    total = int(steps[-1])

    def traces(f: int) -> list[go.Scatter]:
        return [go.Scatter(x=frames[f, g["rows"], 0], y=frames[f, g["rows"], 1])
                for g in groups]

    fig = go.Figure()
    for i, g in enumerate(groups):
        extra: dict[str, Any] = {}
        if marks is not None:
            extra = dict(selectedpoints=marks[i], selected=dict(marker=dict(opacity=1.0)),
                         unselected=dict(marker=dict(opacity=DIMMED)))
        fig.add_trace(go.Scatter(
            x=frames[0, g["rows"], 0], y=frames[0, g["rows"], 1], mode="markers",
            name=g["name"], marker=g["marker"], customdata=index[g["rows"]],
            hovertemplate=(f"digit {g['name']}<br>test image #%{{customdata}}<extra></extra>"
                           if g["name"] != "labeled" else "labeled example<extra></extra>"),
            **extra))
    names = [str(int(s)) for s in steps]
    fig.frames = [go.Frame(data=traces(f), traces=list(range(len(groups))), name=names[f])
                  for f in range(len(steps))]
    (x0, x1), (y0, y1) = frame_ranges(frames[:, [r for g in groups for r in g["rows"]]])
    play = dict(frame=dict(duration=FRAME_MS, redraw=False), fromcurrent=True,
                mode="immediate", transition=dict(duration=MOVE_MS, easing="cubic-in-out"))
    pause = dict(frame=dict(duration=0, redraw=False), mode="immediate",
                 transition=dict(duration=0))
    jump = dict(frame=dict(duration=0, redraw=False), mode="immediate",
                transition=dict(duration=MOVE_MS, easing="cubic-in-out"))
    styled(fig, 600, margin=(5, 5, 40, 100), meta=META,
           xaxis=dict(range=[x0, x1], showticklabels=False, showgrid=False, zeroline=False),
           yaxis=dict(range=[y0, y1], showticklabels=False, showgrid=False, zeroline=False,
                      scaleanchor="x", scaleratio=1),
           legend=legend_row(1.0, yanchor="bottom", itemsizing="constant", font=dict(size=12)),
           updatemenus=[dict(type="buttons", direction="left", showactive=False, x=0.0,
                             y=0.0, xanchor="left", yanchor="top", pad=dict(t=40),
                             buttons=[dict(label="▶ play", method="animate",
                                           args=[None, play]),
                                      dict(label="❚❚ pause", method="animate",
                                           args=[[None], pause])])],
           # The slider starts right of the two buttons, whatever the chart's width.
           sliders=[dict(active=0, x=0.0, len=1.0, y=0.0, yanchor="top",
                         pad=dict(t=20, l=150, r=10),
                         currentvalue=dict(prefix="retraining step ", suffix=f" of {total}",
                                           font=dict(size=13)),
                         transition=dict(duration=MOVE_MS, easing="cubic-in-out"),
                         steps=[dict(label=n, method="animate", args=[[n], jump])
                                for n in names])])
    return fig
