"""The Method page's fixed sketches, drawn once for every visitor (a module rather than part of
the page's script, which Streamlit executes afresh on every render)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from pages._charts import Frozen, shared, styled


@shared(1)
def reference_picture() -> Frozen:
    """A fixed 2-D sketch: an unlabeled cloud, a few labeled points, one ordinary test point
    and its distance to each reference (no training, no data); built once for every visitor."""
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [3.0, 0.5], [1.4, 2.6]])
    unl = np.concatenate([c + rng.normal(scale=0.75, size=(220, 2)) for c in centers])
    lab = np.concatenate([c + rng.normal(scale=0.75, size=(3, 2)) for c in centers])
    test = np.array([1.0, 1.0])
    nu = unl[np.argmin(((unl - test) ** 2).sum(1))]
    nl = lab[np.argmin(((lab - test) ** 2).sum(1))]
    fig = go.Figure([
        go.Scatter(x=unl[:, 0], y=unl[:, 1], mode="markers", name="unlabeled reference",
                   marker=dict(size=4, color="#bbbbbb")),
        go.Scatter(x=lab[:, 0], y=lab[:, 1], mode="markers", name="labeled reference",
                   marker=dict(size=10, color="black", symbol="x")),
        go.Scatter(x=[test[0], nl[0]], y=[test[1], nl[1]], mode="lines",
                   name=f"distance to the labeled set: {np.hypot(*(test - nl)):.2f}",
                   line=dict(color="black", dash="dot")),
        go.Scatter(x=[test[0], nu[0]], y=[test[1], nu[1]], mode="lines",
                   name=f"distance to the unlabeled set: {np.hypot(*(test - nu)):.2f}",
                   line=dict(color="#d62728", width=3)),
        go.Scatter(x=[test[0]], y=[test[1]], mode="markers", name="an ordinary test image",
                   marker=dict(size=14, color="#d62728", symbol="star")),
    ])
    return Frozen(styled(fig, 360, margin=(5, 5, 10, 5), xaxis=dict(visible=False),
                         yaxis=dict(visible=False, scaleanchor="x"),
                         legend=dict(x=1.0, xanchor="left")))
