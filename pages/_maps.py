"""The Embeddings page's maps, built once for every visitor: one run's projections and
scores (RunMaps), the map controls (Controls), and the figure of one map (build_figure), shared
through :func:`shared_map` per run, projection, colouring and selection.  A module rather than
part of the page's script, which Streamlit executes afresh on every render (a cached function
defined there would be keyed anew each time)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go

from pages._charts import Frozen, digit_rows, legend_row, shared, styled
from pages._common import DIGIT_COLORS, OOD_COLOR
from pages._frames import DIMMED
from xdd.core.methods import AFTER, BEFORE, BY_NAME, REFERENCES, display_order, label
from xdd.report.tables import run_scores
from xdd.report.views import highlight_points, positions_of



# The map titles of the paper's pair; any other projected method is titled by its label.
SIDE_TITLES = {BEFORE: "Before: pretrained GAN discriminator", AFTER: "After: XDD retraining"}


@dataclass(frozen=True)
class RunMaps:
    """One run's projections and scores, as the maps read them."""
    key: str
    res: dict[str, Any]
    proj: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]

    @property
    def ood_digit(self) -> int:
        return int(self.res.get("ood_digit", -1))

    @property
    def n_test(self) -> int:
        """The projected test subsample (the rows after it are the labeled examples)."""
        return len(self.proj["index"])

    @property
    def test_digit(self) -> np.ndarray:
        return self.proj["label"].astype(int)

    @property
    def lab_digit(self) -> np.ndarray:
        return self.proj["labeled_label"].astype(int)

    def sides(self) -> list[tuple[str, str]]:
        """(method, title) of the maps this run has: the projected methods, display order."""
        return [(m, SIDE_TITLES.get(m, label(m))) for m in display_order()
                if BY_NAME[m].projected and any(k.startswith(m + "_") for k in self.proj)]

    def positions(self) -> np.ndarray:
        """Where each map row's test image sits in scores.npz."""
        return positions_of(self.scores["test_index"], self.proj["index"])

    def subsample_scores(self, name: str, reference: str) -> np.ndarray:
        """The method's scores under a reference for the projected test subsample (NaN when
        the run lacks them)."""
        s = run_scores(self.scores, reference, name)
        if s is None:
            return np.full(self.n_test, np.nan)
        return s[self.positions()].astype(float)

    def frames(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The method's retraining frames (F, M + L, 2) and their steps (F,), or None (a run
        made before runs kept them)."""
        xy, steps = self.proj.get(f"{name}_frames"), self.proj.get(f"{name}_frame_steps")
        if xy is None or steps is None or len(xy) != len(steps) or not len(steps):
            return None
        return xy, steps


@dataclass(frozen=True)
class Controls:
    projection: str
    color_by: str  # "digit" or "score:<reference>"
    size: int
    show_labeled: bool

    @property
    def reference(self) -> str:
        """The reference the page shows: the one the maps are coloured by, else the paper's."""
        return self.color_by.split(":")[1] if self.color_by != "digit" else REFERENCES[0]


def rank_pct(s: np.ndarray) -> np.ndarray:
    """Percentile rank of each score (0 = most typical, 100 = most unusual)."""
    r = np.argsort(np.argsort(s, kind="stable"), kind="stable")
    return 100.0 * r / max(1, len(s) - 1)


def _marker(ood: bool, size: int, **style: Any) -> dict[str, Any]:
    """The held-out digit: larger black-edged diamonds; the rest: plain circles."""
    return dict(size=size + 3 if ood else size, symbol="diamond" if ood else "circle",
                line=dict(width=0.8, color="black") if ood else dict(width=0), **style)


def _digit_traces(run: RunMaps, xy, custom, hover: str, size: int) -> list[tuple[Any, Any]]:
    """One trace per digit (the held-out digit last, on top), with its rows."""
    ood_digit, test_digit = run.ood_digit, run.test_digit
    out = []
    for d, idx, ood, name in digit_rows(test_digit, ood_digit):
        out.append((go.Scattergl(
            x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=name,
            customdata=custom[idx], hovertemplate=hover,
            marker=_marker(ood, size, color=OOD_COLOR if ood else DIGIT_COLORS[d],
                           opacity=0.95 if ood else 0.6)), idx))
    return out


def _score_traces(run: RunMaps, xy, custom, hover: str, size: int,
                  sc: np.ndarray) -> list[tuple[Any, Any]]:
    """In-distribution and held-out images coloured by the rank of their anomaly score."""
    pct = rank_pct(np.nan_to_num(sc, nan=0.0))
    is_ood = run.test_digit == run.ood_digit
    out = []
    for ood in (False, True):
        idx = np.flatnonzero(is_ood == ood)
        out.append((go.Scattergl(
            x=xy[idx, 0], y=xy[idx, 1], mode="markers",
            name=f"{run.ood_digit} (OOD)" if ood else "in-distribution",
            customdata=custom[idx], hovertemplate=hover,
            marker=_marker(ood, size, color=pct[idx], coloraxis="coloraxis", opacity=0.85)),
            idx))
    return out


def build_figure(run: RunMaps, ctrl: Controls, emb: str,
                 selected: tuple[int, ...] | None = None
                 ) -> tuple[go.Figure, list[np.ndarray]]:
    """The map of one embedding; also, per trace, the projection rows it draws (for
    selection).  ``selected``: rows drawn at full opacity, the others dimmed."""
    xy = run.proj[f"{emb}_{ctrl.projection}"]
    m = run.n_test
    by_ref = {r: run.subsample_scores(emb, r) for r in REFERENCES}
    is_ood = run.test_digit == run.ood_digit
    kind = np.where(is_ood, f"OOD (digit {run.ood_digit})", "in-distribution")
    custom = np.c_[run.test_digit, kind, np.round(by_ref["labeled"], 3),
                   np.round(by_ref["unlabeled"], 3), run.proj["index"]]
    hover = ("digit %{customdata[0]}<br>%{customdata[1]}<br>anomaly score, labeled ref. "
             "%{customdata[2]}<br>anomaly score, unlabeled ref. %{customdata[3]}"
             "<br>test image #%{customdata[4]}<extra></extra>")
    fig = go.Figure()
    if ctrl.color_by == "digit":
        traces = _digit_traces(run, xy, custom, hover, ctrl.size)
    else:
        traces = _score_traces(run, xy, custom, hover, ctrl.size,
                               by_ref[ctrl.color_by.split(":")[1]])
        fig.update_layout(coloraxis=dict(
            colorscale="Viridis", cmin=0, cmax=100,
            colorbar=dict(title="score<br>rank %", thickness=12, len=0.8)))
    if ctrl.show_labeled and len(xy) > m:
        lab = np.arange(m, len(xy))
        traces.append((go.Scattergl(
            x=xy[lab, 0], y=xy[lab, 1], mode="markers", name="labeled",
            customdata=np.c_[run.lab_digit, np.full(len(lab), "labeled example")],
            hovertemplate="digit %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
            marker=dict(size=ctrl.size + 2, color="black", symbol="x")), lab))
    rows = [r for _, r in traces]
    marks = highlight_points(rows, selected) if selected else None
    for i, (trace, _) in enumerate(traces):
        if marks is not None:
            trace.update(selectedpoints=marks[i], selected=dict(marker=dict(opacity=1.0)),
                         unselected=dict(marker=dict(opacity=DIMMED)))
        fig.add_trace(trace)
    # The title and AUPRCs are a heading above the chart (pages wrap text, plotly cuts it).
    styled(fig, 460, margin=(5, 5, 10, 5), meta=f"map:{emb}",
           legend=legend_row(-0.02, yanchor="top", itemsizing="constant", font=dict(size=12)),
           dragmode="lasso", uirevision=f"{run.key}-{ctrl.projection}")
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, title=None)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, title=None,
                     scaleanchor="x", scaleratio=1)
    return fig, rows


@shared(64)
def shared_map(root: str, key: str, mtime: int, _run: RunMaps, ctrl: Controls, emb: str,
               selected: tuple[int, ...] | None) -> tuple[Frozen, list[np.ndarray]]:
    """One map as :func:`build_figure` draws it, built once for every visitor who asks for the
    same run, projection, colouring and selection (``_run`` is the run ``key`` names)."""
    fig, rows = build_figure(_run, ctrl, emb, selected)
    for r in rows:
        r.setflags(write=False)
    return Frozen(fig), rows
