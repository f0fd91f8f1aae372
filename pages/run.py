"""Run page: choose a configuration, submit jobs, watch them progress, cancel them.

The page only submits jobs and reads job records; the worker process does the computing.
The ids of the jobs this tab follows live in the URL (``?job=...``), so a reload or a second
tab shows the same progress.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from pages._access import can_submit, jobs_readable, mode_banner
from pages._board import follow_another, job_board
from pages._common import require_router
from pages._jobs import device_info, estimate_seconds, first_visit_panel, submit_configs, \
    track_jobs, tracked_job_ids, worker_device
from pages._messages import show_flash
from xdd.core.config import ConfigError, preset
from xdd.core.fmt import fmt_duration
from xdd.core.methods import BY_NAME, display_order, is_main, names, short

MAX_SHOTS = 1000  # well below the smallest digit's 5421 training images
MAX_REPS = 10
MAX_SEED = 9999
PRESET_HELP = {
    "tiny": "tiny: seconds; a smoke test on 512 images, numbers mean nothing",
    "quick": "quick: one digit on a laptop CPU; the default",
    "paper": "paper: the paper's network widths and training length",
}
# The pretraining mode the page offers beside fp32 (docs/PERFORMANCE.md, "Pretraining
# precision"): validated on the validation split, a setting of the run, never a default.
FAST_PRETRAIN = {"pretrain.precision": "bf16", "pretrain.channels_last": True}
PRECISION_HELP = (
    "**fp32**: as the committed results and the GANs shipped with the app. **bf16**: the GAN's "
    "forward passes in bf16 autocast, channels-last; on a CPU with AMX-BF16 a pretraining step "
    "takes 0.65-0.85x of fp32's time, and on the validation split it left the AUPRCs within "
    "±0.02 of fp32's (inside the spread between GAN seeds). It is a different setting: its GAN "
    "is pretrained here (none is shipped), and its results are labelled with it. Only the "
    "GAN's pretraining changes; on a CPU without bf16 support it can be slower.")
# The number inputs carry no min/max: Streamlit silently replaces an out-of-range value by
# the default, so the page checks the ranges itself and says what is wrong.
BOUNDS = {"shots": ("Shots per digit", 1, MAX_SHOTS), "reps": ("Repetitions", 1, MAX_REPS),
          "seed0": ("First seed", 0, MAX_SEED)}


def out_of_range(values: dict[str, Any]) -> list[str]:
    """One sentence per number input whose value is missing or outside its range."""
    bad = []
    for key, (label, lo, hi) in BOUNDS.items():
        v = values.get(key)
        if v is None:
            bad.append(f"**{label}** is empty; enter a whole number from {lo} to {hi:,}.")
        elif not lo <= v <= hi:
            bad.append(f"**{label}** {v:,} is out of range; accepted: {lo} to {hi:,}.")
    return bad


def header() -> None:
    st.title("Run an experiment")
    st.caption("Hold one digit out as out-of-distribution, pretrain a GAN on the other nine, "
               "retrain its discriminator with the XDD loss on a few labeled images per digit, "
               "and score the whole test set. Every run is cached: asking again is instant.")
    show_flash()
    mode_banner()
    first_visit_panel("run")


def _choices(default_preset: str) -> dict[str, Any]:
    """The configuration widgets' values (digits, shots, reps, seed0, preset, precision,
    baselines)."""
    c1, c2, c3, c4 = st.columns([3.2, 1, 1, 1])
    digits = c1.pills("Held-out (OOD) digits", list(range(10)), selection_mode="multi",
                      default=[8], key="digits",
                      help="Each selected digit is one experiment: that digit is removed "
                           "from training and is the positive class at test time.")
    shots = c2.number_input("Shots per digit", value=10, step=1, key="shots",
                            help="Labeled training images per in-distribution digit "
                                 f"(the paper uses 10); 1 to {MAX_SHOTS:,}.")
    reps = c3.number_input("Repetitions", value=1, step=1,
                           key="reps", help="One job per seed: the seed changes the "
                                            "labeled draw and the retraining start. Error "
                                            "bars on the Results page come from these. "
                                            f"1 to {MAX_REPS}.")
    seed0 = c4.number_input("First seed", value=0, step=1, key="seed0",
                            help=f"0 to {MAX_SEED:,}.")
    c5, c5b, c6 = st.columns([1.4, 1.1, 2.8])
    name = c5.segmented_control(
        "Preset", ["quick", "paper", "tiny"], default=default_preset, key="preset",
        required=True,
        format_func=lambda p: {"quick": "quick", "paper": "paper", "tiny": "tiny (test)"}[p],
        help="\n\n".join(PRESET_HELP.values()))
    precision = c5b.segmented_control("GAN pretraining", ["fp32", "bf16"], default="fp32",
                                      key="gan_precision", required=True,
                                      help=PRECISION_HELP)
    options = [m for m in display_order() if not is_main(m)]
    chosen = c6.pills(
        "Baselines (before and after XDD are always included)", options,
        selection_mode="multi", default=[m for m in preset("quick").methods
                                         if m in options],
        format_func=short, key="baselines",
        help="\n\n".join(f"**{short(m)}**: {BY_NAME[m].help}" for m in options))
    return dict(digits=digits, shots=shots, reps=reps, seed0=seed0, preset=name,
                precision=precision, baselines=chosen)


def _what_is_missing(c: dict[str, Any]) -> bool:
    """Say what keeps the choices from running (a bad number, no digit, no preset)."""
    bad = out_of_range({"shots": c["shots"], "reps": c["reps"], "seed0": c["seed0"]})
    if bad:
        st.error("These settings cannot run:\n\n" + "\n\n".join(f"- {b}" for b in bad))
    elif not c["digits"]:
        st.info("Select at least one held-out digit.")
    elif not c["preset"]:
        st.info("Select a preset.")
    else:
        return False
    return True


def _configs(c: dict[str, Any]) -> list[Any] | None:
    """One config per digit and seed; None (and the reason) when they cannot run."""
    # In config.METHODS order, as the presets list them: the same choice gives the same
    # run key (and cache entry) as the command line's default.
    methods = tuple(m for m in names() if is_main(m) or m in c["baselines"])
    seed0, reps = int(c["seed0"]), int(c["reps"])
    try:
        # A repetition redraws the GAN too (GAN pretraining seed = repetition seed), as
        # sweeps do: the error bars then include the GAN's variance (docs/DESIGN.md §2).
        fast = FAST_PRETRAIN if c["precision"] == "bf16" else {}
        return [preset(c["preset"], ood_digit=int(d), shots=int(c["shots"]), seed=int(s),
                       methods=methods, **{"pretrain.seed": int(s), **fast})
                for d in sorted(c["digits"]) for s in range(seed0, seed0 + reps)]
    except ConfigError as exc:
        st.error(f"These settings cannot run: {exc}")
        return None


def _estimate_line(cfgs: list[Any], est: Any, c: dict[str, Any], dev: dict[str, str]) -> None:
    """Where the jobs run, how many there are, how long they take (or why that is unknown)."""
    n = len(cfgs)
    where = worker_device() or dev["name"]
    cached = (f" ({est.n_cached} already cached)" if 0 < est.n_cached < n
              else " (already cached: instant)" if est.n_cached == n else "")
    took = f" · about **{fmt_duration(est.seconds)}** in all" if est.seconds else ""
    st.markdown(f"**Runs on** {where} · **{n} job{'s' if n > 1 else ''}**{cached}{took}")
    if est.seconds is None:
        st.caption("No estimate yet: this machine is being timed (about half a minute on "
                   "a 2-core CPU, in the background); it appears on the next refresh.")
    elif est.seconds:
        st.caption(f"Estimate {est.basis}. A pretrained GAN is cached and reused for "
                   "every seed and shot count of the same digit.")
    if c["preset"] == "paper" and dev["kind"] == "cpu" and est.seconds:
        st.warning(f"The paper preset trains the full-width GAN for "
                   f"{cfgs[0].pretrain.steps:,} steps: about "
                   f"{fmt_duration(est.seconds / max(1, len(set(c['digits']))))} per digit "
                   "on this CPU. A GPU makes it practical; on a laptop use quick.")


def settings(dev: dict[str, str]) -> None:
    """The configuration widgets and the submit button (the page checks the numbers' ranges)."""
    with st.container(border=True):
        c = _choices("paper" if dev["kind"] == "cuda" else "quick")
        if _what_is_missing(c):
            return
        cfgs = _configs(c)
        if cfgs is None:
            return
        est = estimate_seconds(cfgs)
        n = len(cfgs)
        c7, c8 = st.columns([3, 1], vertical_alignment="center")
        with c7:
            _estimate_line(cfgs, est, c, dev)
        if c8.button(f"Submit {n} job{'s' if n > 1 else ''}", type="primary",
                     width="stretch", key="submit"):
            ids = submit_configs(cfgs)
            if ids:  # follow them too, next to the jobs this tab already follows
                track_jobs(tracked_job_ids() + ids)
            # Rerun so that the sidebar, the first-visit panel and the job list all show the
            # new jobs; messages from the submission are shown by that rerun (show_flash).
            st.rerun()


# ---------------------------------------------------------------- the page


def render() -> None:
    require_router()
    header()
    if can_submit():
        settings(device_info())
    if not jobs_readable():
        return
    follow_another(job_board())


render()
