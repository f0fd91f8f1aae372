"""Method page (teaching): the XDD loss, where each term comes from, and a live toy.

The toy is the one place a page trains anything: a 90-point, two-second demonstration that
imports torch only when the button is pressed (see xdd/core/toy.py, a pure function).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pages._charts import MAIN_WIDTH, legend_row, show, styled
from pages._common import DIGIT_COLORS, require_router
from pages._data import cached_runs
from pages._jobs import DEMO_DIGIT, demo_config
from pages._sketches import reference_picture
from xdd.core.config import preset, run_key
from xdd.core.methods import color, short
from xdd.core.toy import N_CLASSES, TOY_STEPS, toy_claims

# The pairwise weight λ of the toy's two runs, in xdd.core.toy.train_toy's order: the MCDD
# term alone, then the XDD loss (train_toy's default pair weight).
TOY_LAMBDAS = (0, 1)
PAIR_MODES = ["sphere", "ratio"]


# ---------------------------------------------------------------- the loss, step by step


def objective_section() -> None:
    """1 · the information bottleneck the loss starts from."""
    st.subheader("1 · The objective: an information bottleneck")
    st.markdown("The embedding $Z=f(X)$ should forget as much about the image $X$ as it can "
                "while keeping what tells the classes $Y$ apart:")
    st.latex(r"\mathcal{L} \;=\; I(X;Z)\;-\;\beta\, I(Z;Y)")
    st.markdown("Neither mutual information can be computed exactly, so each is replaced by an "
                "estimate on a batch of $N$ labeled embeddings $z_1,\\dots,z_N$ with classes "
                "$y_1,\\dots,y_N$.")


def mcdd_section() -> None:
    """2 · the MCDD term: a lower bound on I(Z;Y)."""
    st.subheader("2 · Keeping the class information: the MCDD term")
    st.markdown("Give every in-distribution class $k$ a Gaussian with center $\\mu_k$, width "
                "$\\sigma_k$ and log-prior $b_k$ (Deep MCDD, Lee et al. 2020). Its posterior is a "
                "softmax over distances to the centers:")
    st.latex(r"q(y=k\mid z) \;=\; \operatorname{softmax}_k\!\Big(-\frac{\lVert z-\mu_k\rVert^2}"
             r"{2\sigma_k^2} \;-\; d\log\sigma_k \;+\; b_k\Big)")
    st.markdown("Because $I(Z;Y)=H(Y)-H(Y\\mid Z)$ and $H(Y)$ is fixed, and "
                "$-H(Y\\mid Z) \\ge \\mathbb{E}\\log q(y\\mid z)$ for any model $q$, the log "
                "likelihood of the labels is a lower bound on $I(Z;Y)$ up to a constant:")
    st.latex(r"I(Z;Y) \;\gtrsim\; \frac{1}{N}\sum_{i=1}^{N} \log q(y_i \mid z_i)"
             r" \;=\; -\,\mathcal{L}_{\text{MCDD}}")
    st.markdown("**What it does:** maximising it pulls each embedding toward its own class "
                "center and away from the others' centers, i.e. it makes each class a tight "
                "Gaussian blob. It only needs the classes to be *separable*, not far apart.")


def pairwise_section() -> None:
    """3 · the pairwise term: the paper's estimate of I(X;Z), between classes only."""
    st.subheader("3 · Forgetting the rest: the pairwise term")
    st.markdown("The paper estimates $I(X;Z)$ from the distances between embeddings (a Gaussian "
                "kernel estimate of the entropy of $Z$ with width $\\sigma$) and reads it as the "
                "sum over pairs:")
    st.latex(r"I(X;Z) \;\approx\; -\frac{1}{N^2}\sum_{i,j}\frac{\lVert z_i-z_j\rVert^2}"
             r"{2\sigma^2} \;+\; \text{const}")
    st.markdown("This implementation keeps only the pairs $P$ of **different** classes, so that "
                "lowering the term pushes classes apart:")
    st.latex(r"\mathcal{L}_{\text{pair}} \;=\; -\frac{1}{\lvert P\rvert}\sum_{(i,j)\in P}"
             r"\frac{\lVert z_i-z_j\rVert^2}{2\sigma^2},\qquad P=\{(i,j): y_i\neq y_j\}")
    st.markdown("**What it does:** it rewards every inter-class pair for being far apart, so "
                "the class blobs spread out over the whole embedding space and leave empty room "
                "between them, which is where an unseen digit can land and be noticed.")


def well_posed_section() -> None:
    """4 · the unit sphere (and the ratio mode), the loss training minimises, its settings."""
    st.subheader("4 · Making it well posed")
    st.markdown("As written, $\\mathcal{L}_{\\text{pair}}$ has no minimum: multiplying every "
                "$z$ by 10 multiplies it by 100, so a network could lower it forever by growing "
                "its output. The embeddings are therefore put on the unit sphere before both "
                "terms are computed:")
    st.latex(r"\hat z = \frac{z}{\lVert z\rVert}\quad\Longrightarrow\quad "
             r"0 \le \lVert \hat z_i-\hat z_j\rVert^2 \le 4")
    st.markdown("Distances are now bounded, so the only way to lower the pairwise term is to "
                "arrange the classes on the sphere, not to inflate the scale "
                "(`pair_mode = \"sphere\"`). The `\"ratio\"` mode goes one step further and "
                "measures the distances between classes in units of the spread within them, "
                "a Fisher-like ratio that pushes classes apart *and* pulls each one together:")
    st.latex(r"\sigma^2 \;=\; \frac{1}{N}\sum_{i}\lVert \hat z_i-\hat\mu_{y_i}\rVert^2"
             r" \;+\; \varepsilon \qquad (\text{pair\_mode} = \text{ratio})")
    st.markdown("The loss that training minimises (`xdd.core.losses.xdd_loss`) is")
    st.latex(r"\mathcal{L}_{\text{XDD}} \;=\; \beta\,\mathcal{L}_{\text{MCDD}}(\hat z)"
             r"\;+\;\lambda\,\mathcal{L}_{\text{pair}}(\hat z)")
    defaults = preset("quick").retrain
    st.markdown(f"with $\\beta$ = `retrain.beta` and $\\lambda$ = `retrain.pair_weight`. "
                f"$\\lambda=0$ is the MCDD-only baseline, $\\beta=0$ the pairwise-only "
                f"ablation. The quick preset trains with β = {defaults.beta:g}, "
                f"λ = {defaults.pair_weight:g}, `pair_mode = \"{defaults.pair_mode}\"`"
                + (f", plus Deep MCDD's pull of each point to its class centre with weight "
                   f"{defaults.pull_weight:g}" if defaults.pull_weight else "")
                + ". docs/METHOD.md says how they were chosen (on a validation split, never "
                  "the test set).")


def scoring_section() -> None:
    """5 · the paper's score: a KDE over the labeled embeddings."""
    st.subheader("5 · Scoring")
    st.markdown("After retraining, a kernel density estimate is fitted on the embeddings of the "
                "labeled images only. A test image's anomaly score is its negative log density: "
                "far from every labeled class means a high score. The bandwidth is chosen by "
                "leave-one-out likelihood on the labeled set, never by looking at test labels.")
    st.latex(r"s(x) \;=\; -\log \frac{1}{L}\sum_{l=1}^{L} "
             r"\mathcal{N}\big(\hat f(x);\,\hat f(x_l),\,h^2 I\big)")


def references_section() -> None:
    """6 · the two references, with a sketch."""
    st.subheader("6 · Two scoring references")
    st.markdown("The paper measures how far a test image is from the **labeled** images only "
                "(90 of them, black crosses below), so a perfectly ordinary image that happens "
                "to lie between them scores as unusual. The **unlabeled** reference scores it "
                "by the distance to its nearest neighbour among the ~54,000 in-distribution "
                "training images the GAN was pretrained on (grey; no label needed, never a "
                "test image): every run reports both, each number named by its reference.")
    st.latex(r"s_{\text{unlabeled}}(x) \;=\; \big\lVert \hat f(x) - "
             r"\hat f(x_{(k)})\big\rVert,\quad x_{(k)} = k\text{-th nearest unlabeled image}")
    show(reference_picture(), "ref-fig")


def reading_section() -> None:
    """7 · how to read the views of a real run that show the loss at work, with links to the
    demo run's Results and Embeddings pages."""
    st.subheader("7 · Watching the loss work on a real run")
    st.markdown(
        "**The loss and its two sides** (Results page, *How the retraining went*). One line "
        "per term as the loss weighs it, over the retraining steps: the I(X;Z) side "
        "(λ × the pairwise term) falls as the classes move apart, the −β·I(Z;Y) side "
        "(β × the MCDD term, with its pull) falls as each labeled image moves towards its own "
        "class centre, "
        "and the black line is their sum, the loss. These are the estimators the loss "
        "computes on the labeled batch, not the true mutual information, so read their "
        "slopes, not their values.")
    st.markdown(
        "**Spread within and between the classes** (beside it). Measured on the labeled "
        "embeddings on the unit sphere: the MCDD side pulls the within-class spread down, "
        "the pairwise side pushes the distance between class centres up; which of the two "
        "moves more depends on the run. Tight, separated classes leave empty space where an "
        "unseen digit can land.")
    st.markdown(
        "**The information plane** (beside it). The same two sides plotted against each "
        "other, one dot per step, coloured from dark (start) to yellow (end). The loss is "
        "their sum, so training drags the dot towards the lower left; a path that moves "
        "mostly down is the MCDD side doing the work, one that moves mostly left is the "
        "pairwise side.")
    st.markdown(
        "**The embedding during retraining** (Embeddings page). The test images and the "
        "labeled examples at a few retraining steps, all drawn on the PCA axes of the "
        "final embedding, so that only the points move; the last frame is the \"after\" PCA "
        "map. Press ▶ play and watch whether the red diamonds (the held-out digit) end up "
        "away from the black crosses (the labeled images the density is fitted on).")
    st.markdown(
        "**Before and after, linked** (Embeddings page). Draw a box or lasso on either map: "
        "the same images light up on the other map and in the animation, and are listed with "
        "their digits. *Which images moved most* selects the test images whose anomaly-score "
        "rank changed most between before and after: what retraining changed its mind about.")
    st.markdown(
        "**Score distributions and a threshold** (Results page, *Anomaly scores before and "
        "after retraining*). For each network, how the anomaly scores of in-distribution "
        "(blue) and held-out (red) test images spread: the less the two overlap, the better "
        "the detector. The slider flags the most unusual share of the test images and reads "
        "out what that catches (recall), the false alarms (FPR) and precision, marked as a "
        "star on each precision–recall curve.")
    key = run_key(demo_config())
    if any(r.get("run_key") == key for r in cached_runs()):
        st.markdown(f"The quick demo's run (digit {DEMO_DIGIT} held out, quick preset, seed 0; "
                    f"run `{key}`) is cached: open its views.")
        with st.container(horizontal=True, gap="medium"):
            st.page_link("pages/results.py", label="Its Results page",
                         icon=":material/bar_chart:", query_params={"run": key})
            st.page_link("pages/embeddings.py", label="Its Embeddings page",
                         icon=":material/scatter_plot:", query_params={"run": key})
    else:
        st.markdown(f"The quick demo (digit {DEMO_DIGIT} held out, quick preset, seed 0) makes "
                    f"a run with all of these views (run `{key}`); it is not computed here yet: "
                    "an empty app offers it as a one-click **Quick demo**. Every run from the "
                    "Run page has the same views.")
        st.page_link("pages/run.py", label="Go to the Run page", icon=":material/play_circle:")


def loss_tab() -> None:
    for section in (objective_section, mcdd_section, pairwise_section, well_posed_section,
                    scoring_section, references_section, reading_section):
        section()


# ---------------------------------------------------------------- live toy


def toy_runs(out: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, title) of the toy's two runs: the MCDD-only baseline, then XDD."""
    return [(m, f"{short(m)} (λ = {lam:g})") for m, lam in zip(out["methods"], TOY_LAMBDAS)]


def _sphere_wire() -> go.Scatter3d:
    """A few latitude and longitude circles, so the eye reads the points as on a sphere."""
    t = np.linspace(0, 2 * np.pi, 73)
    lines = []
    for lat in np.radians([-60, -30, 0, 30, 60]):
        lines.append((np.cos(lat) * np.cos(t), np.cos(lat) * np.sin(t),
                      np.full_like(t, np.sin(lat))))
    for lon in np.radians(np.arange(0, 180, 30)):
        lines.append((np.cos(t) * np.cos(lon), np.cos(t) * np.sin(lon), np.sin(t)))
    xs, ys, zs = [], [], []
    for x, y, z in lines:  # one trace, circles separated by gaps
        xs += [*x, None]
        ys += [*y, None]
        zs += [*z, None]
    return go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", hoverinfo="skip", showlegend=False,
                        line=dict(color="#d0d0d0", width=1))


def toy_figure(out: dict) -> go.Figure:
    """Both runs side by side on the unit sphere, animated over the training snapshots."""
    y = out["y"]
    runs = toy_runs(out)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for _, t in runs],
                        specs=[[{"type": "scene"}, {"type": "scene"}]], horizontal_spacing=0.02)

    def traces(frame: int) -> list[go.Scatter3d]:
        tr = []
        for col, (m, _) in enumerate(runs, start=1):
            z = out["methods"][m]["snapshots"][frame]
            for k in range(N_CLASSES):
                tr.append(go.Scatter3d(
                    x=z[y == k, 0], y=z[y == k, 1], z=z[y == k, 2], mode="markers",
                    name=f"class {k}", legendgroup=f"c{k}", showlegend=col == 1,
                    marker=dict(size=5, color=DIGIT_COLORS[k], opacity=0.9),
                    scene="scene" if col == 1 else "scene2",
                    hovertemplate=f"class {k}<extra></extra>"))
        return tr

    for col in (1, 2):
        fig.add_trace(_sphere_wire(), row=1, col=col)
    n_frames = len(out["steps"])
    for tr in traces(n_frames - 1):
        fig.add_trace(tr)
    moving = list(range(2, 2 + 2 * N_CLASSES))  # the class traces, after the two wireframes
    fig.frames = [go.Frame(data=traces(f), traces=moving, name=str(s))
                  for f, s in enumerate(out["steps"])]
    axis = dict(visible=False, range=[-1.05, 1.05])
    scene = dict(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="cube",
                 camera=dict(eye=dict(x=0.95, y=0.95, z=0.6)))
    anim = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
    return styled(
        fig, 600, margin=(0, 0, 40, 0), scene=scene, scene2=scene,
        legend=legend_row(-0.02, x=0.5, xanchor="center"),
        updatemenus=[dict(type="buttons", showactive=False, x=0.0, y=-0.16, xanchor="left",
                          buttons=[dict(label="▶ play", method="animate",
                                        args=[None, dict(frame=dict(duration=120, redraw=True),
                                                         fromcurrent=False,
                                                         transition=dict(duration=0))])])],
        sliders=[dict(active=n_frames - 1, x=0.08, len=0.92, y=-0.1,
                      currentvalue=dict(prefix="training step "),
                      steps=[dict(label=str(s), method="animate", args=[[str(s)], anim])
                             for s in out["steps"]])])


def stats_figure(out: dict) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=[
        "within-class spread (lower = tighter classes)",
        "mean distance² between classes (higher = further apart)"])
    for m, title in toy_runs(out):
        stats = out["methods"][m]["stats"]
        line = dict(color=color(m), width=MAIN_WIDTH)
        xs = [s["step"] for s in stats]
        fig.add_trace(go.Scatter(x=xs, y=[s["within"] for s in stats], name=title,
                                 line=line, legendgroup=m), 1, 1)
        fig.add_trace(go.Scatter(x=xs, y=[s["between"] for s in stats], name=title,
                                 line=line, legendgroup=m, showlegend=False), 1, 2)
    styled(fig, 300, margin=(10, 10, 40, 10), grid="xy", legend=legend_row(1.25))
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(rangemode="tozero")
    return fig


def toy_controls() -> tuple[tuple[int, float, str, int], bool]:
    """The toy's settings and its button: (steps, beta, pair mode, seed), pressed."""
    trained = preset("quick").retrain
    t1, t2, t3, t4, t5 = st.columns([1, 1, 1, 0.8, 1.1], vertical_alignment="bottom")
    steps = t1.slider("Training steps", 100, 600, TOY_STEPS, step=50, key="toy-steps")
    beta = t2.slider("β (MCDD weight)", 0.25, 4.0, 1.0, step=0.25, key="toy-beta")
    mode = t3.segmented_control(
        "Pairwise term", PAIR_MODES, required=True, key="toy-mode",
        default=trained.pair_mode if trained.pair_mode in PAIR_MODES else "sphere",
        help="sphere: distances on the unit sphere; ratio: the same, in units of the "
             "within-class spread (see 4 · Making it well posed).")
    seed = t4.number_input("Seed", 0, 999, 0, key="toy-seed")
    go_btn = t5.button("▶ Train both", type="primary", key="toy-run", width="stretch")
    return (int(steps), float(beta), str(mode), int(seed)), go_btn


def toy_caption(out: dict[str, Any], mode: str) -> None:
    """The two runs' last within-class spread and distance between classes, in words."""
    (mb, base), (mx, full) = [(m, out["methods"][m]["stats"][-1]) for m, _ in toy_runs(out)]
    st.caption(
        f"After {out['steps'][-1]} steps: within-class spread {base['within']:.2f} "
        f"({short(mb)}) vs {full['within']:.2f} ({short(mx)}); mean distance² between classes "
        f"{base['between']:.2f} vs {full['between']:.2f}. The MCDD term is "
        "content once the classes can be told apart, even if they all sit on one side of "
        "the sphere. The pairwise term pushes the distance between classes toward its "
        "largest possible value, 2.25 for nine equal classes, reached when every class is "
        "tight and the classes balance around the centre of the sphere."
        + (" In ratio mode the same term also shrinks every class toward a point."
           if mode == "ratio" else ""))


def toy_results(params: tuple[int, float, str, int]) -> None:
    """The last toy run's spheres, statistics and what to watch (or how to start one)."""
    toy = st.session_state.get("toy")
    if toy is None:
        st.caption("Press **Train both** (a few seconds on a CPU), then press ▶ play under the "
                   "spheres or drag the step slider.")
        return
    used, out = toy
    if used != params:
        st.caption("The plots show the previous settings; press **Train both** to retrain.")
    show(toy_figure(out), "toy-fig")
    st.markdown("**What to watch**")
    show(stats_figure(out), "toy-stats")
    toy_caption(out, used[2])
    claims = toy_claims(out, used[2])
    failed = [c for c, ok in claims.items() if not ok]
    if failed:
        what = {"spreads": "XDD did not spread the classes further apart than MCDD only",
                "pulls": "XDD's classes did not end tighter than MCDD only's"}
        st.warning(f"Seed {used[3]} is one of the exceptions: " + "; ".join(
            what[c] for c in failed) + ". With the default settings (300 steps, β = 1) that "
            "happens on about 1 seed in 20 (a class splits in two, or two classes share "
            "a spot); try another seed.")


def toy_tab() -> None:
    st.subheader("MCDD only vs XDD on a toy problem")
    st.markdown(f"{N_CLASSES} classes × 10 points in the plane (blobs on a 3×3 grid that "
                "almost touch) go through a small network (2 → 64 → 64 → 3) whose output is "
                "put on the unit sphere. Both runs start from the same network and use the same "
                "loss function as the real retraining (`xdd_loss`); the only difference is the "
                "pairwise weight λ. Drag a sphere to turn it.")
    params, pressed = toy_controls()
    if pressed:
        from xdd.core.toy import train_toy  # torch is imported here, on demand

        steps, beta, mode, seed = params
        with st.spinner("Training two tiny networks…"):
            st.session_state["toy"] = (params, train_toy(seed=seed, steps=steps, beta=beta,
                                                         pair_mode=mode))
    toy_results(params)


# ---------------------------------------------------------------- the page


def render() -> None:
    require_router()
    st.title("Method: the XDD loss")
    st.caption("S. Ando, *Deep Representation Learning with an Information-theoretic Loss*. "
               "The network is the discriminator of a GAN; retraining reshapes its embedding "
               "z = f(x) with a few labeled images per digit.")
    tab_loss, tab_toy = st.tabs(["The loss, step by step", "Try it: MCDD only vs XDD"])
    with tab_loss:
        loss_tab()
    with tab_toy:
        toy_tab()


render()
