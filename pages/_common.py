"""Helpers shared by the pages: cached reads of the run cache, job access, labels, sidebar.

Nothing here trains, projects or imports torch: pages submit jobs and read what the worker
wrote.  Reads of the cache go through ``st.cache_data`` keyed by a signature of the cache
folder (run names and results.json modification times), so a new or recomputed run is picked
up on the next rerun without re-reading everything else.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import uuid
from typing import Any, Callable, Sequence

import numpy as np
import streamlit as st

from xdd import device, jobs, store
from xdd.config import ConfigError, RunConfig, preset, pretrain_key
from xdd.fmt import describe_config, fmt_duration
from xdd.estimate import Estimate, ensure_calibration, estimate

# ---------------------------------------------------------------- routing

_ROUTER = threading.local()


def run_app() -> None:
    """The router: page config, st.navigation over the four pages, the sidebar, the page."""
    st.set_page_config(page_title="XDD Explorer", page_icon=":material/scatter_plot:",
                       layout="wide")
    page = st.navigation([
        st.Page("pages/run.py", title="Run", icon=":material/play_circle:", default=True),
        st.Page("pages/results.py", title="Results", icon=":material/bar_chart:"),
        st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
        st.Page("pages/method.py", title="Method", icon=":material/school:"),
    ])
    claim_admin()
    sidebar()
    _ROUTER.active = True
    try:
        page.run()
    finally:
        _ROUTER.active = False


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



# ---------------------------------------------------------------- who may do what
#
# Served beyond this machine (``--server.address 0.0.0.0``), anyone who reaches the port is a
# *visitor*: they may have MAX_JOBS_PER_VISITOR jobs queued or running, the queue holds at most
# MAX_QUEUED, and they may cancel only a job no one else follows.  The person who started the
# app is the *admin* (``?admin=<token>`` once; the token is XDD_ADMIN_TOKEN, or one generated
# and printed to the terminal): no limits, any cancel.  XDD_READ_ONLY=1 shows results and
# progress but no Submit or Cancel to visitors.  The limits are enforced in xdd.jobs.submit
# under the store's write lock, so ten tabs submitting at once cannot pass them.


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return max(0, int(raw)) if raw else default
    except ValueError:
        return default


MAX_JOBS_PER_VISITOR = _env_int("XDD_MAX_JOBS_PER_VISITOR", jobs.MAX_ACTIVE_PER_VISITOR)
MAX_QUEUED = _env_int("XDD_MAX_QUEUED", jobs.MAX_ACTIVE_TOTAL)


def read_only_setting() -> bool:
    return os.environ.get("XDD_READ_ONLY", "").strip().lower() in ("1", "true", "yes", "on")


def admin_token() -> str:
    """XDD_ADMIN_TOKEN, or a token made once per server process, printed to its terminal and
    kept in cache/jobs/admin-token (readable by its owner only) for the person running it."""
    return os.environ.get("XDD_ADMIN_TOKEN", "").strip() or _generated_token()


@st.cache_resource(show_spinner=False)
def _generated_token() -> str:
    token = secrets.token_urlsafe(18)
    where = ""
    try:
        path = jobs.jobs_dir() / "admin-token"
        store.atomic_write_bytes(path, (token + "\n").encode())
        os.chmod(path, 0o600)
        where = f" (also in {path})"
    except OSError:
        pass
    print(f"XDD Explorer admin token: {token}{where}\n  open the app once with "
          f"?admin={token} to submit without limits and cancel any job", flush=True)
    return token


def claim_admin() -> None:
    """``?admin=<token>`` makes this browser session the admin; the token leaves the URL."""
    given = st.query_params.get("admin")
    if given is None:
        return
    del st.query_params["admin"]
    if hmac.compare_digest(given.encode(), admin_token().encode()):
        st.session_state["_admin"] = True
    else:
        flash("error", "That admin token is not this app's; you are a visitor.")


def is_admin() -> bool:
    return bool(st.session_state.get("_admin"))


def visitor_id() -> str:
    """Who this browser is, for the limits and the cancel rule: a hash of Streamlit's XSRF
    cookie (one per browser profile, it survives reloads and new tabs), else this session."""
    if "_visitor" not in st.session_state:
        vid = None
        try:
            cookie = st.context.cookies.get("_streamlit_xsrf")
        except Exception:  # no browser (AppTest, bare mode)
            cookie = None
        if isinstance(cookie, str) and cookie:
            vid = "v-" + hashlib.sha256(_xsrf_token(cookie)).hexdigest()[:16]
        st.session_state["_visitor"] = vid or "s-" + uuid.uuid4().hex[:16]
    return st.session_state["_visitor"]


def _xsrf_token(cookie: str) -> bytes:
    """The token inside Streamlit's XSRF cookie, which is re-issued with a fresh 4-byte mask
    on every page load ("2|mask|masked token|timestamp", tornado's format): unmasked, it is
    the same for every load of one browser.  Any other form is used as it is."""
    parts = cookie.strip("\"'").split("|")
    if len(parts) == 4 and parts[0] == "2":
        try:
            mask, masked = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
            if mask:
                return bytes(b ^ mask[i % len(mask)] for i, b in enumerate(masked))
        except ValueError:
            pass
    return cookie.encode()


@st.cache_data(ttl=10, show_spinner=False)
def _cache_problem(root: str) -> str | None:
    return store.check_writable()


def cache_problem() -> str | None:
    """Why the cache folder cannot be written (checked every 10 s at most), or None."""
    return _cache_problem(str(store.cache_root()))


def jobs_readable() -> bool:
    """The job store can be used (it lives in the cache folder, which must be writable)."""
    return cache_problem() is None


def can_submit() -> bool:
    """Submit and Cancel are shown: a writable cache, and not read-only (the admin may)."""
    return cache_problem() is None and (is_admin() or not read_only_setting())


def mode_banner() -> None:
    """One message when this page cannot submit: why, and what it still shows."""
    problem = cache_problem()
    if problem:
        st.error(f"The cache folder cannot be written ({problem}), so nothing can be "
                 "submitted and jobs cannot be followed; cached results are still shown.")
    elif read_only_setting() and not is_admin():
        st.info("This app is read-only: it shows results and the progress of running jobs; "
                "only the person running it can submit or cancel jobs.")

# ---------------------------------------------------------------- colours

# Method labels, colours, help and display order come from the method table (xdd.methods).
# Ten distinguishable digit colours (Tableau 10); the OOD digit is redrawn on top in black-edged
# red-orange so that it stands out whatever its number.
DIGIT_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2",
                "#edc948", "#9c755f", "#bab0ac", "#ff9da7", "#bcbd22"]
OOD_COLOR = "#e15759"


# ---------------------------------------------------------------- device


@st.cache_resource(ttl=600, show_spinner=False)
def device_info() -> dict[str, str]:
    """xdd.device.device_info (kind, name, note), asked at most every 10 minutes per server."""
    return device.device_info()


def worker_device() -> str | None:
    """The device a live worker reported (it resolves "auto" after importing torch)."""
    try:
        for w in jobs.workers():
            if w.get("device"):
                return str(w["device"])
    except (jobs.JobError, ValueError, OSError):
        pass
    return None


# ---------------------------------------------------------------- cached reads of the run cache


def cache_signature() -> tuple:
    """Changes whenever a run is added, removed or rewritten; cheap (a listdir and stats)."""
    root = store.runs_dir()
    sig: list[tuple[str, int]] = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if d.name.startswith("."):
                continue
            try:
                sig.append((d.name, (d / "results.json").stat().st_mtime_ns))
            except OSError:
                continue
    return (str(store.cache_root().resolve()), tuple(sig))


@st.cache_data(show_spinner=False, max_entries=16)
def _runs_for(signature: tuple) -> list[dict[str, Any]]:
    return store.list_runs()


def cached_runs() -> list[dict[str, Any]]:
    """results.json of every complete run (newest signature only is re-read)."""
    return _runs_for(cache_signature())


@st.cache_data(show_spinner=False, max_entries=64)
def _verified(root: str, key: str, mtime: int) -> dict[str, Any] | None:
    return store.load_results(key)


@st.cache_data(show_spinner=False, max_entries=64)
def _npz(root: str, key: str, name: str, mtime: int) -> dict[str, np.ndarray] | None:
    return store.load_npz(key, name)


def run_mtime(key: str) -> int:
    try:
        return (store.run_dir(key) / "results.json").stat().st_mtime_ns
    except OSError:
        return 0


def verified_results(key: str) -> dict[str, Any] | None:
    """A run's results after checking every file's hash (None for a corrupt run, which is
    left in place: pages only read; see bad_run_panel)."""
    return _verified(str(store.cache_root().resolve()), key, run_mtime(key))


def run_arrays(key: str, name: str) -> dict[str, np.ndarray] | None:
    """scores.npz / projections.npz of a verified run, or None."""
    if verified_results(key) is None:
        return None
    return _npz(str(store.cache_root().resolve()), key, name, run_mtime(key))


@st.cache_resource(show_spinner="Loading MNIST images…", max_entries=2)
def eval_images(root: str | None, eval_split: str, data_dir: str) -> np.ndarray:
    """The images of a run's evaluation set (the 10k test set, or the validation split), which
    its scores' and projections' indices point into: (10000, 28, 28) uint8; loaded only when
    images are shown."""
    from xdd.data import eval_arrays, load_mnist

    return eval_arrays(load_mnist(root), eval_split)[0]


def run_images(res: dict[str, Any], index: np.ndarray) -> np.ndarray:
    """The images at ``index`` (indices into the run's evaluation set, as scores.npz and
    projections.npz store them) from that run's data root and evaluation split.  (n, 28, 28)"""
    data_root = (res.get("config") or {}).get("data", {}).get("root")
    split = str(res.get("eval_split", "test"))
    return eval_images(data_root, split, str(store.data_dir()))[np.asarray(index, dtype=np.int64)]


# ---------------------------------------------------------------- jobs


def safe_call(fn: Callable[..., Any], *args: Any, what: str, default: Any = None,
              **kwargs: Any) -> Any:
    """Call a jobs function; any failure becomes an st.error with the reason, not a traceback."""
    try:
        return fn(*args, **kwargs)
    except (jobs.JobError, ConfigError, ValueError, OSError) as exc:
        st.error(f"Could not {what}: {exc}")
        return default


def bad_run_panel(res: dict[str, Any]) -> None:
    """A run whose files fail their integrity check: say so, and offer to recompute it (the
    new run replaces the folder whole).  Nothing is deleted by a page."""
    st.error("This run's files are missing or failed their integrity check, so its numbers "
             "are not shown. Recomputing it replaces the damaged folder.")
    if not can_submit():
        return
    if st.button("Recompute this run", key=f"recompute-{res.get('run_key')}"):
        from xdd.config import from_dict

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
            alive = jobs.ensure_worker()
        except (jobs.JobError, ValueError, OSError) as exc:
            flash("error", f"Could not start the worker: {exc}")
            alive = True  # already reported
    if not alive:
        flash("warning", "No worker process is running, so the jobs wait in the queue. Start "
                         "one with `.venv/bin/python -m xdd worker` in a terminal.")
    return ids


def flash(kind: str, text: str) -> None:
    """Remember a message for the next script run (it survives st.rerun / st.switch_page)."""
    st.session_state.setdefault("_flash", []).append((kind, text))


def show_flash() -> None:
    for kind, text in st.session_state.pop("_flash", []):
        {"toast": st.toast, "error": st.error, "warning": st.warning}.get(kind, st.info)(text)


def tracked_job_ids() -> list[str]:
    """Job ids named in the URL (?job=...&job=...), so a reload or second tab finds them."""
    return [j for j in st.query_params.get_all("job") if j]


def track_jobs(ids: Sequence[str]) -> None:
    st.query_params["job"] = list(dict.fromkeys(ids))


DEMO_DIGIT = 8


def start_demo() -> None:
    """The one-click first run: one digit, the quick preset; then show its progress."""
    ids = submit_configs([preset("quick", ood_digit=DEMO_DIGIT)])
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
        est = estimate_seconds([preset("quick", ood_digit=DEMO_DIGIT)])
        when = (f"about {fmt_duration(est.seconds)} on this machine, {est.basis}"
                if est.seconds else "this machine is being timed for an estimate")
        st.markdown(
            "This app reproduces the XDD paper on MNIST: one digit is held out as "
            "*out-of-distribution* (OOD), a GAN is pretrained on the other nine, its "
            "discriminator is retrained on a few labeled images per digit, and a kernel density "
            "scores how unusual each test image is.\n\n"
            "**To start**, press the button below for a quick demo (digit "
            f"{DEMO_DIGIT} held out, quick preset, {when}), or choose your own settings on the "
            "**Run** page. Results and embeddings appear on the other pages as soon as a run "
            "finishes.")
        if not can_submit():
            st.caption("This app is read-only here: the person running it starts the runs.")
        elif st.button(f"▶ Quick demo: hold out digit {DEMO_DIGIT}", type="primary",
                       key=f"demo-{key}"):
            start_demo()
    return True


# ---------------------------------------------------------------- time estimates


def _gan_available(cfg: RunConfig) -> bool:
    from xdd import bundle

    key = pretrain_key(cfg)
    return (store.pretrain_dir(key) / "checkpoint.pt").is_file() or key in bundle.entries()


def estimate_seconds(cfgs: Sequence[RunConfig]) -> Estimate:
    """Wall time for cfgs on this machine, from its own runs or its calibration
    (xdd.estimate); with neither, starts the calibration and returns seconds=None."""
    kind = device_info()["kind"]
    alive = bool(safe_call(jobs.worker_alive, what="check the worker", default=False))
    est = estimate(cfgs, cached_runs(), kind, gan_available=_gan_available, umap_warm=alive)
    if est.seconds is None:
        ensure_calibration(kind, cfgs[0].preset if cfgs else "quick")
    return est


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
        live = safe_call(jobs.workers, what="check the worker", default=[]) or []
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
                    ok = safe_call(jobs.ensure_worker, what="start the worker", default=False)
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
