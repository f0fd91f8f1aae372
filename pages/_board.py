"""The jobs a tab follows and the machine's job list, for the Run page: a card per followed
job (progress, result or error, Cancel), the job table, and following another job.

While a tab follows an active job only its cards refresh; with nothing followed, the table
refreshes itself while jobs are active (see _live_cards and _live_table).
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import streamlit as st

from pages._access import can_submit, is_admin, visitor_id
from pages._data import verified_results
from pages._jobs import track_jobs, tracked_job_ids
from pages._messages import safe_call
from xdd.core.fmt import describe_config, fmt_duration, md_table, stage_label
from xdd.core.methods import AFTER, BEFORE
from xdd.jobs import api as jobs

POLL_S = 3.0


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
    b, x = m.get(BEFORE, {}).get("auprc"), m.get(AFTER, {}).get("auprc")
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


def job_board() -> list[dict[str, Any]]:
    """The jobs this tab follows (live cards while one is active) and the machine's job list;
    returns the list."""
    ids = tracked_job_ids()
    listed, followed = safe_call(jobs.board, ids, 50, what="read the job list",
                                 default=([], {})) or ([], {})
    _unknown_ids(ids, followed)
    _register(followed)
    if _active(followed.values()):
        _live_cards(list(followed))
        _table(listed, note="This table is as of the page's last update; it refreshes when "
                            "your jobs finish.")
    else:
        _cards(followed)
        if _active(listed):
            _live_table()
        else:
            _table(listed)
    return listed


def follow_another(listed: list[dict[str, Any]]) -> None:
    """Follow a job of the list that this tab does not follow yet."""
    others = [j for j in listed if j.get("id") not in tracked_job_ids()]
    if not others:
        return
    with st.expander("Follow another job"):
        pick = st.selectbox("Job", [j["id"] for j in others], key="follow-pick",
                            format_func=lambda i: next(
                                f"{describe_config(j.get('config') or {})} · {j.get('status')}"
                                f" · {i}" for j in others if j["id"] == i))
        if st.button("Follow", key="follow"):
            track_jobs(tracked_job_ids() + [pick])
            st.rerun()
