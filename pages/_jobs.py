"""Job submission and tracking for the pages: submit configs (and start a worker), follow jobs
through the URL, the one-click demo and the first-visit panel, time estimates, the device.

Pages submit jobs and read what the worker wrote; nothing here trains or imports torch.
"""
from __future__ import annotations

from typing import Any, Sequence

import streamlit as st

from pages._access import MAX_JOBS_PER_VISITOR, MAX_QUEUED, can_submit, is_admin, \
    jobs_readable, visitor_id
from pages._data import cached_runs
from pages._messages import flash, safe_call
from xdd.core import device
from xdd.jobs import api as jobs
from xdd.jobs import workerproc
from xdd.core.config import ConfigError, RunConfig, preset
from xdd.estimate import Estimate, ensure_calibration, estimate, gan_on_disk
from xdd.core.fmt import describe_config, fmt_duration
from xdd.core.methods import BY_NAME, is_main, names

# ---------------------------------------------------------------- device


@st.cache_resource(ttl=600, show_spinner=False)
def device_info() -> dict[str, str]:
    """xdd.core.device.device_info (kind, name, note), asked at most every 10 minutes per server."""
    return device.device_info()


def worker_device() -> str | None:
    """The device a live worker reported (it resolves "auto" after importing torch)."""
    try:
        for w in workerproc.workers():
            if w.get("device"):
                return str(w["device"])
    except (jobs.JobError, ValueError, OSError):
        pass
    return None


# ---------------------------------------------------------------- jobs


def bad_run_panel(res: dict[str, Any]) -> None:
    """A run whose files fail their integrity check: say so, and offer to recompute it (the
    new run replaces the folder whole).  Nothing is deleted by a page."""
    st.error("This run's files are missing or failed their integrity check, so its numbers "
             "are not shown. Recomputing it replaces the damaged folder.")
    if not can_submit():
        return
    if st.button("Recompute this run", key=f"recompute-{res.get('run_key')}"):
        from xdd.core.config import from_dict

        try:
            cfg = from_dict(res.get("config") or {})
        except ConfigError as exc:
            st.error(f"Its config cannot run with this version of the code: {exc}")
            return
        ids = submit_configs([cfg])
        if ids:
            track_jobs(ids)
            st.switch_page("pages/run.py", query_params={"job": ids})


def submit_configs(cfgs: Sequence[RunConfig]) -> list[str]:
    """Submit one job per config and make sure a worker will pick them up.

    Problems are queued as messages for the next run of the Run page (see show_flash), which
    the caller reaches by a rerun or a page switch.
    """
    ids: list[str] = []
    if not can_submit():
        flash("error", "This app is read-only: nothing was submitted.")
        return ids
    admin = is_admin()
    limits = None if admin else (MAX_JOBS_PER_VISITOR, MAX_QUEUED)
    visitor = None if admin else visitor_id()
    for i, cfg in enumerate(cfgs):
        name = describe_config({"ood_digit": cfg.ood_digit, "shots": cfg.shots,
                                "seed": cfg.seed, "preset": cfg.preset})
        try:
            ids.append(jobs.submit(cfg, visitor=visitor, limits=limits))
        except jobs.QueueFull as exc:
            left = len(cfgs) - i
            flash("error", f"Not submitted: {name}" + (f" and {left - 1} more" if left > 1
                                                       else "") + f". Limit reached: {exc}")
            break
        except (jobs.JobError, ConfigError, ValueError, OSError) as exc:
            flash("error", f"Could not submit {name}: {exc}")
    if not ids:
        return ids
    flash("toast", f"Submitted {len(ids)} job{'s' if len(ids) > 1 else ''}.")
    with st.spinner("Starting the worker…"):
        try:
            alive = workerproc.ensure_worker()
        except (jobs.JobError, ValueError, OSError) as exc:
            flash("error", f"Could not start the worker: {exc}")
            alive = True  # already reported
    if not alive:
        flash("warning", "No worker process is running, so the jobs wait in the queue. Start "
                         "one with `.venv/bin/python -m xdd worker` in a terminal.")
    return ids


def tracked_job_ids() -> list[str]:
    """Job ids named in the URL (?job=...&job=...), so a reload or second tab finds them."""
    return [j for j in st.query_params.get_all("job") if j]


def track_jobs(ids: Sequence[str]) -> None:
    st.query_params["job"] = list(dict.fromkeys(ids))


DEMO_DIGIT = 8


def demo_methods() -> tuple[str, ...]:
    """The demo's comparison: the paper's pair (the pretrained D against XDD) with the baseline
    that scores no network (raw pixels), under both references.  The retrained baselines (the
    quick preset's MCDD-only ablation, ~35 s more on a 2-core laptop) are left to the Run page,
    so that the first demo fits in a minute."""
    return tuple(m for m in names() if is_main(m) or BY_NAME[m].network is None)


def demo_config() -> RunConfig:
    return preset("quick", ood_digit=DEMO_DIGIT, methods=demo_methods())


def start_demo() -> None:
    """The one-click first run: one digit, the quick preset; then show its progress."""
    ids = submit_configs([demo_config()])
    st.switch_page("pages/run.py", query_params={"job": ids} if ids else None)


def first_visit_panel(key: str) -> bool:
    """When nothing is cached and no job exists: what to do, and a one-click quick demo.

    Returns True when the panel was shown.
    """
    if cached_runs():
        return False
    listed = (safe_call(jobs.list_jobs, 5, what="read the job list", default=[]) or []
              if jobs_readable() else [])
    if listed:
        return False
    with st.container(border=True):
        st.markdown("### Nothing has been computed yet")
        est = estimate_seconds([demo_config()])
        when = (f"about {fmt_duration(est.seconds)} on this machine, {est.basis}"
                if est.seconds else "this machine is being timed for an estimate")
        st.markdown(
            "This app reproduces the XDD paper on MNIST: one digit is held out as "
            "*out-of-distribution* (OOD), a GAN is pretrained on the other nine, its "
            "discriminator is retrained on a few labeled images per digit, and a kernel density "
            "scores how unusual each test image is.\n\n"
            "**To start**, press the button below for a quick demo (digit "
            f"{DEMO_DIGIT} held out, quick preset, before vs XDD with the pixel baseline, "
            f"{when}), or choose your own settings on the "
            "**Run** page. Results and embeddings appear on the other pages as soon as a run "
            "finishes.")
        if not can_submit():
            st.caption("This app is read-only here: the person running it starts the runs.")
        elif st.button(f"▶ Quick demo: hold out digit {DEMO_DIGIT}", type="primary",
                       key=f"demo-{key}"):
            start_demo()
    return True


# ---------------------------------------------------------------- time estimates


def estimate_seconds(cfgs: Sequence[RunConfig]) -> Estimate:
    """Wall time for cfgs on this machine, from its own runs or its calibration
    (xdd.estimate); with neither, starts the calibration and returns seconds=None."""
    kind = device_info()["kind"]
    alive = bool(safe_call(workerproc.worker_alive, what="check the worker", default=False))
    est = estimate(cfgs, cached_runs(), kind, gan_available=gan_on_disk, umap_warm=alive,
                   start_worker=not alive)
    if est.seconds is None:
        ensure_calibration(kind, cfgs[0].preset if cfgs else "quick")
    return est


# ---------------------------------------------------------------- the queue's room


def queue_room(cfgs: Sequence[RunConfig]) -> tuple[int, int, int | None]:
    """For a submission of cfgs: how many would be new jobs (neither cached nor queued or
    running already: those are followed, never refused), how many are queued or running
    already, and how many new jobs this visitor may queue now (None: no limit, the admin).
    The limits themselves are enforced by xdd.jobs.api.submit, under the store's lock."""
    from xdd.core.config import run_key
    from xdd.jobs.store import store_errors
    from xdd.storage import store

    active = safe_call(store_errors(lambda: jobs.records().active()), what="read the queue",
                       default=[]) or []
    keys = {r.get("run_key") for r in active}
    wanted = list(dict.fromkeys(run_key(c) for c in cfgs))
    running = sum(k in keys for k in wanted)
    new = sum(k not in keys and not (store.run_dir(k) / "results.json").is_file()
              for k in wanted)
    if is_admin():
        return new, running, None
    mine = sum(r.get("owner") == visitor_id() for r in active)
    return new, running, max(0, min(MAX_JOBS_PER_VISITOR - mine, MAX_QUEUED - len(active)))
