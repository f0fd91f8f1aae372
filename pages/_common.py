"""What every page needs: the router (run_app, require_router), the sidebar, digit colours.

The rest of the page helpers live beside this module, by responsibility: ``_access`` (who may
do what), ``_data`` (cached reads of the run cache), ``_jobs`` (submission, tracking, the demo,
estimates), ``_board`` (the followed jobs' cards and the job list), ``_charts`` (the look all
charts share), ``_messages`` (errors now or on the next run).  Text formatting and device
detection are in the core (``xdd.core.fmt``, ``xdd.core.device``); what the Results page shows
is shaped in the report package (``xdd.report.views``).

Each page (run.py, results.py, embeddings.py, method.py) is a ``render()`` made of named
sections, called once at the end of the file: st.navigation runs the file as a script.
"""
from __future__ import annotations

import threading

import streamlit as st

from pages import _heap
from pages._access import MAX_JOBS_PER_VISITOR, can_submit, claim_admin, is_admin, \
    jobs_readable, read_only_setting
from pages._data import cached_runs
from pages._jobs import device_info
from pages._messages import safe_call
from xdd.jobs import api as jobs
from xdd.jobs import workerproc

# Ten distinguishable digit colours (Tableau 10); the OOD digit is redrawn on top in black-edged
# red-orange so that it stands out whatever its number.
DIGIT_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2",
                "#edc948", "#9c755f", "#bab0ac", "#ff9da7", "#bcbd22"]
OOD_COLOR = "#e15759"

# ---------------------------------------------------------------- routing

_ROUTER = threading.local()


def run_app() -> None:
    """The router: page config, st.navigation over the five pages, the sidebar, the page."""
    st.set_page_config(page_title="XDD Explorer", page_icon=":material/scatter_plot:",
                       layout="wide")
    page = st.navigation([
        st.Page("pages/run.py", title="Run", icon=":material/play_circle:", default=True),
        st.Page("pages/results.py", title="Results", icon=":material/bar_chart:"),
        st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
        st.Page("pages/probe.py", title="Probe", icon=":material/draw:"),
        st.Page("pages/method.py", title="Method", icon=":material/school:"),
    ])
    claim_admin()
    sidebar()
    _ROUTER.active = True
    try:
        page.run()
    finally:
        _ROUTER.active = False
        _heap.settle()


def require_router() -> None:
    """Every page calls this first; it routes through run_app when app.py did not run.

    Because this folder is called ``pages/``, Streamlit treats it as a directory-based
    multipage app until ``st.navigation`` has been called once in the server process: a
    server whose very first request is a sub-path (a bookmarked /results after a restart)
    runs that page without app.py, with no sidebar and the helper modules listed as pages.
    Running the router here fixes this run, and its st.navigation call every later one.
    """
    if not getattr(_ROUTER, "active", False):
        run_app()
        st.stop()


# ---------------------------------------------------------------- sidebar


# The status sidebar refreshes itself this often while jobs are active (the Run page's job
# cards every 2 s): each refresh of each open tab is server time that a class of tabs
# multiplies (docs/PERFORMANCE.md, "Classroom").
SIDEBAR_POLL_S = 10.0


def _sidebar_body() -> None:
    dev = device_info()
    st.markdown("**XDD Explorer** · status")
    st.markdown(f"**Device** &nbsp; {dev['name']}")
    if dev["note"]:
        st.caption(dev["note"])
    if not jobs_readable():
        st.markdown("**Jobs** &nbsp; unavailable: the cache folder cannot be written")
    else:
        # Two reads of the job store per refresh: the workers and the active jobs.
        live = safe_call(workerproc.workers, what="check the worker", default=[]) or []
        counts = safe_call(jobs.queue_counts, what="count the jobs",
                           default={"queued": 0, "running": 0}) or {"queued": 0, "running": 0}
        alive = bool(live)
        st.markdown(f"**Worker** &nbsp; "
                    f"{':green[●] running' if alive else ':gray[●] not running'}")
        wdev = next((str(w["device"]) for w in live if w.get("device")), None)
        if wdev:
            st.caption(f"The worker computes on {wdev}.")
        st.markdown(f"**Jobs** &nbsp; {counts.get('running', 0)} running · "
                    f"{counts.get('queued', 0)} queued")
        waiting = counts.get("queued", 0) or counts.get("running", 0)
        if waiting and not alive and can_submit():
            if st.button("Start the worker", key="sidebar-start-worker"):
                with st.spinner("Starting…"):
                    ok = safe_call(workerproc.ensure_worker, what="start the worker", default=False)
                if not ok:
                    st.error("The worker did not start; see cache/jobs/worker.log.")
    if is_admin():
        st.caption("Admin: no job limits; you may cancel any job.")
    elif read_only_setting():
        st.caption("Read-only: results and progress, no Submit or Cancel.")
    elif can_submit():
        st.caption(f"Up to {MAX_JOBS_PER_VISITOR} jobs of yours queued or running at a time.")
    n_runs = len(cached_runs())
    st.caption(f"{n_runs} run{'s' if n_runs != 1 else ''} cached")


@st.fragment(run_every=SIDEBAR_POLL_S)
def _sidebar_live() -> None:
    _sidebar_body()


def sidebar() -> None:
    """Device, worker state and queue counts; refreshes itself while jobs are active."""
    with st.sidebar:
        counts = (safe_call(jobs.queue_counts, what="count the jobs", default={}) or {}
                  if jobs_readable() else {})
        if counts.get("queued", 0) or counts.get("running", 0):
            _sidebar_live()
        else:
            _sidebar_body()
