"""Run page: choose a configuration, submit jobs, watch them progress, cancel them.

The page only submits jobs and reads job records; the worker process does the computing.
The ids of the jobs this tab follows live in the URL (``?job=...``), so a reload or a second
tab shows the same progress.
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import streamlit as st

from pages._access import can_submit, is_admin, jobs_readable, mode_banner, visitor_id
from pages._common import require_router
from pages._data import verified_results
from pages._jobs import device_info, estimate_seconds, first_visit_panel, submit_configs, \
    track_jobs, tracked_job_ids, worker_device
from pages._messages import safe_call, show_flash
from xdd.jobs import api as jobs
from xdd.core.config import METHODS, ConfigError, preset
from xdd.core.fmt import describe_config, fmt_duration, md_table, stage_label
from xdd.core.methods import BY_NAME, DISPLAY_ORDER, short

MAX_SHOTS = 1000  # well below the smallest digit's 5421 training images
MAX_REPS = 10
MAX_SEED = 9999
POLL_S = 3.0
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

require_router()
st.title("Run an experiment")
st.caption("Hold one digit out as out-of-distribution, pretrain a GAN on the other nine, "
           "retrain its discriminator with the XDD loss on a few labeled images per digit, and "
           "score the whole test set. Every run is cached: asking again is instant.")

show_flash()
mode_banner()
first_visit_panel("run")

dev = device_info()
default_preset = "paper" if dev["kind"] == "cuda" else "quick"


def _settings() -> None:
    """The configuration widgets and the submit button (values are bounded by the widgets)."""
    with st.container(border=True):
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
        options = [m for m in DISPLAY_ORDER if m not in ("before", "xdd")]
        chosen = c6.pills(
            "Baselines (before and after XDD are always included)", options,
            selection_mode="multi", default=[m for m in preset("quick").methods
                                             if m in options],
            format_func=short, key="baselines",
            help="\n\n".join(f"**{short(m)}**: {BY_NAME[m].help}" for m in options))

        bad = out_of_range({"shots": shots, "reps": reps, "seed0": seed0})
        if bad:
            st.error("These settings cannot run:\n\n" + "\n\n".join(f"- {b}" for b in bad))
            return
        if not digits:
            st.info("Select at least one held-out digit.")
            return
        if not name:
            st.info("Select a preset.")
            return
        # In config.METHODS order, as the presets list them: the same choice gives the same
        # run key (and cache entry) as the command line's default.
        methods = tuple(m for m in METHODS if m in ("before", "xdd") or m in chosen)
        try:
            # A repetition redraws the GAN too (GAN pretraining seed = repetition seed), as
            # sweeps do: the error bars then include the GAN's variance (DESIGN.md section 2).
            fast = FAST_PRETRAIN if precision == "bf16" else {}
            cfgs = [preset(name, ood_digit=int(d), shots=int(shots), seed=int(s), methods=methods,
                           **{"pretrain.seed": int(s), **fast})
                    for d in sorted(digits) for s in range(int(seed0), int(seed0) + int(reps))]
        except ConfigError as exc:
            st.error(f"These settings cannot run: {exc}")
            return
        est = estimate_seconds(cfgs)
        n = len(cfgs)
        c7, c8 = st.columns([3, 1], vertical_alignment="center")
        with c7:
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
            if name == "paper" and dev["kind"] == "cpu" and est.seconds:
                st.warning(f"The paper preset trains the full-width GAN for "
                           f"{cfgs[0].pretrain.steps:,} steps: about "
                           f"{fmt_duration(est.seconds / max(1, len(set(digits))))} per digit "
                           "on this CPU. A GPU makes it practical; on a laptop use quick.")
        if c8.button(f"Submit {n} job{'s' if n > 1 else ''}", type="primary",
                     width="stretch", key="submit"):
            ids = submit_configs(cfgs)
            if ids:  # follow them too, next to the jobs this tab already follows
                track_jobs(tracked_job_ids() + ids)
            # Rerun so that the sidebar, the first-visit panel and the job list all show the
            # new jobs; messages from the submission are shown by that rerun (show_flash).
            st.rerun()


def _job_card(job: dict[str, Any]) -> None:
    """Progress, result or error of one followed job."""
    c = job.get("config") or {}
    status = job.get("status", "?")
    prog = job.get("progress") or {}
    with st.container(border=True):
        head, btn = st.columns([5, 1], vertical_alignment="center")
        head.markdown(f"**{describe_config(c)}** &nbsp; <small>job `{job.get('id')}`</small>",
                      unsafe_allow_html=True)
        cancelling = bool(job.get("cancel_requested")) and status == "running"
        others = 0 if is_admin() else jobs.others_following(job, visitor_id())
        if status in jobs.ACTIVE and can_submit():
            if others and not cancelling:
                btn.button("Shared", key=f"cancel-{job['id']}", width="stretch", disabled=True,
                           help=f"Followed by {others} other{'s' if others > 1 else ''} (or "
                                "submitted by the person who started the app): only that "
                                "person can cancel it.")
            elif btn.button("Cancelling…" if cancelling else "Cancel", key=f"cancel-{job['id']}",
                            width="stretch", disabled=cancelling):
                visitor = None if is_admin() else visitor_id()
                safe_call(jobs.cancel, job["id"], visitor=visitor,
                          what=f"cancel job {job['id']}")
                st.rerun()
        if status == "running" and job.get("worker_gone"):
            st.progress(0.0, text="Its worker stopped: the job is re-queued and finished when a "
                                  "worker runs (the sidebar can start one)")
        elif status == "running":
            step, total = int(prog.get("step") or 0), int(prog.get("total") or 0)
            frac = min(1.0, step / total) if total > 0 else 0.0
            eta = prog.get("eta_s")
            text = (f"{stage_label(prog.get('stage'))} · step {step}/{total}"
                    + (f" · about {fmt_duration(eta)} left" if eta is not None else ""))
            st.progress(frac, text=("Stopping at the next progress report… · " if cancelling
                                    else "") + text)
            if job.get("device"):
                st.caption(f"on {job['device']}")
            if str(prog.get("stage") or "").startswith("project") and job.get("run_key"):
                # The scores are committed before the maps: the bars can be looked at now.
                res = verified_results(job["run_key"])
                if res is not None:
                    _result_links(res, "Scores ready; the 2-D maps are being computed")
        elif status == "queued":
            st.progress(0.0, text="Queued: waits for the worker")
            if job.get("note"):
                st.caption(job["note"])
        elif status == "done":
            res = verified_results(job["run_key"]) if job.get("run_key") else None
            took = (job.get("finished") or 0) - (job.get("started") or job.get("finished") or 0)
            if res is not None:
                _result_links(res, "Already computed (from the cache)" if job.get("cached")
                              else "Finished" + (f" in {fmt_duration(took)}" if took > 0 else ""))
            else:
                st.warning("Finished, but its results are no longer in the cache "
                           "(removed or failed the integrity check). Submit it again.")
        elif status == "failed":
            st.error(f"Failed: {job.get('error') or 'no error message was recorded'}")
        elif status == "cancelled":
            st.warning("Cancelled; nothing was written to the cache.")
        else:
            st.warning(f"Unknown job status {status!r}.")


def _result_links(res: dict[str, Any], msg: str) -> None:
    """A run's headline AUPRC and the links to its results and maps."""
    m = res.get("methods", {})
    b, x = m.get("before", {}).get("auprc"), m.get("xdd", {}).get("auprc")
    if b is not None and x is not None:
        msg += f". AUPRC before {b:.3f} → after XDD {x:.3f}"
    st.success(msg)
    l1, l2, _ = st.columns([1, 1, 3])
    l1.page_link("pages/results.py", label="See results", icon=":material/bar_chart:")
    l2.page_link("pages/embeddings.py", label="See embeddings", icon=":material/scatter_plot:")


def _jobs_table(listed: list[dict[str, Any]]) -> None:
    rows = []
    for j in listed:
        c = j.get("config") or {}
        p = j.get("progress") or {}
        status = j.get("status")
        total = p.get("total") or 0
        end = j.get("finished") or (time.time() if status == "running" else None)
        rows.append({
            "job": f"`{str(j.get('id'))[:8]}`", "status": status, "digit": c.get("ood_digit"),
            "shots": c.get("shots"), "seed": c.get("seed"), "preset": c.get("preset"),
            "stage": (f"{stage_label(p.get('stage'))} {100 * (p.get('step') or 0) / total:.0f} %"
                      if status == "running" and total else ""),
            "submitted": _ts(j.get("created")),
            "took": fmt_duration(end - j["started"]) if j.get("started") and end else "",
            "error": _short(j.get("error") or "", 60),
        })
    st.markdown(md_table(rows, [
        ("job", "job", ""), ("status", "status", ""), ("digit", "digit", ""),
        ("shots", "shots", ""), ("seed", "seed", ""), ("preset", "preset", ""),
        ("stage", "stage", ""), ("submitted", "submitted", ""), ("took", "took", ""),
        ("error", "error", "")]))


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _ts(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S") if t else ""


def _register(followed: dict[str, dict[str, Any]]) -> None:
    """This visitor follows these active jobs: recorded once per job and session (a write),
    so that no other visitor can cancel a job that this one is watching."""
    if not can_submit() or is_admin():
        return
    done = st.session_state.setdefault("_registered", set())
    vid = visitor_id()
    for job_id, job in followed.items():
        if job_id in done or job.get("status") not in jobs.ACTIVE:
            continue
        if vid not in (job.get("followers") or []):
            rec = safe_call(jobs.follow, job_id, vid, what=f"follow job {job_id}")
            if rec is not None:
                followed[job_id] = dict(job, followers=rec.get("followers"))
        done.add(job_id)


def _unknown_ids(ids: list[str], followed: dict[str, dict[str, Any]]) -> None:
    for job_id in ids:
        if job_id in followed:
            continue
        try:
            jobs.check_id(job_id)
            st.warning(f"The job in the address bar is not known here: no job {job_id!r} in "
                       "this app's queue (it may belong to another machine or a deleted "
                       "cache).")
        except jobs.JobError as exc:
            st.warning(f"The job in the address bar is not known here: {exc}")


def _cards(followed: dict[str, dict[str, Any]]) -> None:
    if followed:
        st.subheader("Progress")
        for job in followed.values():
            _job_card(job)


def _table(listed: list[dict[str, Any]], note: str | None = None) -> None:
    st.subheader("Jobs on this machine")
    if listed:
        _jobs_table(listed)
        if note:
            st.caption(note)
    else:
        st.caption("No jobs yet.")


def _active(recs) -> bool:
    return any(j.get("status") in jobs.ACTIVE for j in recs)


# While this tab follows a job, only its cards refresh (one read of the followed records every
# POLL_S); the job table is drawn once per full rerun -- a 50-row table redrawn every few seconds in
# every open tab is most of what following a job costs the browser.  With nothing followed,
# the table refreshes itself while jobs are active.


@st.fragment(run_every=POLL_S)
def _live_cards(ids: list[str]) -> None:
    _, followed = safe_call(jobs.board, ids, 0, what="read your jobs",
                            default=([], {})) or ([], {})
    _cards(followed)
    if not _active(followed.values()):
        st.rerun()  # they finished: one full rerun refreshes the table and the sidebar


@st.fragment(run_every=POLL_S)
def _live_table() -> None:
    listed, _ = safe_call(jobs.board, [], 50, what="read the job list",
                          default=([], {})) or ([], {})
    _table(listed)
    if not _active(listed):
        st.rerun()


if can_submit():
    _settings()
if not jobs_readable():
    st.stop()
ids = tracked_job_ids()
listed_now, followed_now = safe_call(jobs.board, ids, 50, what="read the job list",
                                     default=([], {})) or ([], {})
_unknown_ids(ids, followed_now)
_register(followed_now)
if _active(followed_now.values()):
    _live_cards(list(followed_now))
    _table(listed_now, note="This table is as of the page's last update; it refreshes when "
                            "your jobs finish.")
else:
    _cards(followed_now)
    if _active(listed_now):
        _live_table()
    else:
        _table(listed_now)

others = [j for j in listed_now if j.get("id") not in tracked_job_ids()]
if others:
    with st.expander("Follow another job"):
        pick = st.selectbox("Job", [j["id"] for j in others], key="follow-pick",
                            format_func=lambda i: next(
                                f"{describe_config(j.get('config') or {})} · {j.get('status')}"
                                f" · {i}" for j in others if j["id"] == i))
        if st.button("Follow", key="follow"):
            track_jobs(tracked_job_ids() + [pick])
            st.rerun()
