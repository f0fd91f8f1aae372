"""Helpers shared by the pages: cached reads of the run cache, job access, labels, sidebar.

Nothing here trains, projects or imports torch: pages submit jobs and read what the worker
wrote.  Reads of the cache go through ``st.cache_data`` keyed by a signature of the cache
folder (run names and results.json modification times), so a new or recomputed run is picked
up on the next rerun without re-reading everything else.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import streamlit as st

from xdd import jobs, store
from xdd import methods as _methods
from xdd import report as _report
from xdd.config import ConfigError, RunConfig, preset, pretrain_key, run_key, variant

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


# ---------------------------------------------------------------- labels and colours

# Every method's labels, colour and help come from the method table (xdd.methods), as do the
# display order ("before" and "xdd" first, then the baselines) and the references.
METHOD_LABELS: dict[str, str] = {m.name: m.label for m in _methods.TABLE}
METHOD_SHORT: dict[str, str] = {m.name: m.short for m in _methods.TABLE}
METHOD_HELP: dict[str, str] = {m.name: m.help for m in _methods.TABLE}
METHOD_ORDER: tuple[str, ...] = _methods.DISPLAY_ORDER
METHOD_COLORS: dict[str, str] = {m.name: m.color for m in _methods.TABLE}
REFERENCES = _methods.REFERENCES
REFERENCE_LABELS = _methods.REFERENCE_LABELS
# Ten distinguishable digit colours (Tableau 10); the OOD digit is redrawn on top in black-edged
# red-orange so that it stands out whatever its number.
DIGIT_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2",
                "#edc948", "#9c755f", "#bab0ac", "#ff9da7", "#bcbd22"]
OOD_COLOR = "#e15759"
PROJ_LABELS = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}
PRESET_HELP = {
    "tiny": "tiny: seconds; a smoke test on 512 images, numbers mean nothing",
    "quick": "quick: one digit on a laptop CPU; the default",
    "paper": "paper: the paper's network widths and training length",
}
AUPRC_NOTE = _report.AUPRC_NOTE + "."
ACTIVE = ("queued", "running")


def method_sort_key(m: str) -> int:
    return _methods.display_key(m)


def stage_label(stage: str | None) -> str:
    """'retrain:xdd' -> 'Retraining: After XDD retraining' etc.; a readable stage name."""
    if not stage:
        return "Waiting"
    head, _, tail = stage.partition(":")
    if head == "retrain":
        return f"Retraining ({METHOD_SHORT.get(tail, tail)})"
    if head == "project":
        return f"Projecting to 2-D ({PROJ_LABELS.get(tail, tail)})"
    return {"data": "Loading MNIST", "pretrain": "GAN pretraining", "score": "Scoring (KDE)",
            "queued": "Queued", "starting": "Starting (loading PyTorch)", "done": "Done",
            "cancelled": "Cancelled"}.get(head, stage)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "–"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def describe_config(c: dict[str, Any]) -> str:
    """One line naming a run: digit, shots, seed, preset."""
    return (f"digit {c.get('ood_digit', '?')} · {c.get('shots', '?')} shots · "
            f"seed {c.get('seed', '?')} · {c.get('preset', '?')}")


def config_group(cfg: dict[str, Any]) -> str:
    """The preset name, or 'preset · custom (field=value, ...)' for a run whose config differs
    from its preset in anything but digit, shots, seed, methods and projections (e.g. CLI
    --set runs), so that such runs are never averaged with the preset's own."""
    name = str(cfg.get("preset", "?"))
    try:
        diffs = variant(cfg)
    except (KeyError, TypeError, ValueError):
        return f"{name} · custom"
    if not diffs:
        return name
    more = f", +{len(diffs) - 3} more" if len(diffs) > 3 else ""
    return f"{name} · custom ({', '.join(diffs[:3])}{more})"


# ---------------------------------------------------------------- device (cheap, no torch import)


def _torch_has_cuda() -> bool:
    """Whether the installed PyTorch build ships CUDA kernels, without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return False
    lib = Path(spec.origin).parent / "lib"
    return any(lib.glob("libtorch_cuda*.so*"))


def _nvidia_gpus() -> list[str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=3).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    # "GPU 0: NVIDIA H200 (UUID: GPU-...)" -> "NVIDIA H200"
    return [line.split(":", 1)[1].split("(UUID")[0].strip()
            for line in out.splitlines() if line.startswith("GPU ") and ":" in line]


@st.cache_resource(ttl=600, show_spinner=False)
def device_info() -> dict[str, str]:
    """The device a job will run on ("auto" = the GPU when PyTorch can use one).

    Uses torch only if it is already imported; otherwise asks nvidia-smi and checks whether
    the installed PyTorch has CUDA, so the page never pays for importing torch.
    """
    cores = os.cpu_count() or 1
    cpu = {"kind": "cpu", "name": f"CPU ({cores} cores)", "note": ""}
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        try:
            if torch.cuda.is_available():
                return {"kind": "cuda", "name": f"GPU: {torch.cuda.get_device_name(0)}", "note": ""}
        except Exception:  # a broken driver: the worker falls back to the CPU as well
            pass
        return cpu
    gpus = _nvidia_gpus()
    if gpus and _torch_has_cuda():
        return {"kind": "cuda", "name": f"GPU: {gpus[0]}", "note": ""}
    if gpus:
        return dict(cpu, note=f"{gpus[0]} found, but this PyTorch build has no CUDA.")
    return cpu


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
    """A run's results after checking every file's hash (a corrupt run is removed)."""
    return _verified(str(store.cache_root().resolve()), key, run_mtime(key))


def run_arrays(key: str, name: str) -> dict[str, np.ndarray] | None:
    """scores.npz / projections.npz of a verified run, or None."""
    if verified_results(key) is None:
        return None
    return _npz(str(store.cache_root().resolve()), key, name, run_mtime(key))


@st.cache_resource(show_spinner="Loading MNIST images…", max_entries=2)
def mnist_test_images(root: str | None, data_dir: str) -> np.ndarray:
    """The MNIST test images (10000, 28, 28) uint8; loaded only when images are shown."""
    from xdd.data import load_mnist

    return load_mnist(root).x_test


# ---------------------------------------------------------------- jobs


def safe_call(fn: Callable[..., Any], *args: Any, what: str, default: Any = None) -> Any:
    """Call a jobs function; any failure becomes an st.error with the reason, not a traceback."""
    try:
        return fn(*args)
    except (jobs.JobError, ConfigError, ValueError, OSError) as exc:
        st.error(f"Could not {what}: {exc}")
        return default


def submit_configs(cfgs: Sequence[RunConfig]) -> list[str]:
    """Submit one job per config and make sure a worker will pick them up.

    Problems are queued as messages for the next run of the Run page (see show_flash), which
    the caller reaches by a rerun or a page switch.
    """
    ids: list[str] = []
    for cfg in cfgs:
        name = describe_config({"ood_digit": cfg.ood_digit, "shots": cfg.shots,
                                "seed": cfg.seed, "preset": cfg.preset})
        try:
            ids.append(jobs.submit(cfg))
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
    listed = safe_call(jobs.list_jobs, 5, what="read the job list", default=[]) or []
    if listed:
        return False
    with st.container(border=True):
        st.markdown("### Nothing has been computed yet")
        est = estimate_seconds([preset("quick", ood_digit=DEMO_DIGIT)])
        st.markdown(
            "This app reproduces the XDD paper on MNIST: one digit is held out as "
            "*out-of-distribution* (OOD), a GAN is pretrained on the other nine, its "
            "discriminator is retrained on a few labeled images per digit, and a kernel density "
            "scores how unusual each test image is.\n\n"
            "**To start**, press the button below for a quick demo (digit "
            f"{DEMO_DIGIT} held out, quick preset, about {fmt_duration(est.seconds)} on this "
            "machine), or choose your own settings on the **Run** page. Results and embeddings "
            "appear on the other pages as soon as a run finishes.")
        if st.button(f"▶ Quick demo: hold out digit {DEMO_DIGIT}", type="primary",
                     key=f"demo-{key}"):
            start_demo()
    return True


# ---------------------------------------------------------------- time estimates


# Seconds measured on a 2-core laptop-class CPU (Intel, PyTorch 2, 2 threads) with the presets'
# networks; used until this machine's own cached runs give better numbers (see estimate_seconds).
CPU_PRETRAIN_S_PER_STEP = {"tiny": 0.02, "quick": 0.45, "paper": 1.5}
CPU_RETRAIN_S_PER_IMAGE_STEP = 0.0017  # one retraining step costs ~1.7 ms per labeled image
CPU_EMBED_S_PER_IMAGE = 0.0004  # one forward pass of D per test image (width 1.0)
CPU_PROJECT_S_PER_POINT = {"pca": 0.001, "tsne": 0.012, "umap": 0.006}
UMAP_FIRST_CALL_S = 30.0  # numba compiles UMAP once per worker process


class Estimate:
    """Seconds for a batch of configs and how the number was obtained."""

    def __init__(self, seconds: float, basis: str, n_cached: int = 0):
        self.seconds = seconds
        self.basis = basis
        self.n_cached = n_cached  # configs whose results are cached already (instant)


def _calibration(preset_name: str, kind: str) -> float | None:
    """Seconds per pretraining step from this machine's cached runs of that preset, if any."""
    rates = []
    for r in cached_runs():
        if r.get("preset") != preset_name or r.get("pretrain_reused"):
            continue
        dev = str(r.get("device", ""))
        if (kind == "cuda") != dev.startswith("cuda"):
            continue
        steps = (r.get("config") or {}).get("pretrain", {}).get("steps") or 0
        secs = (r.get("timings") or {}).get("pretrain")
        if steps > 0 and secs:
            rates.append(secs / steps)
    return float(np.median(rates)) if rates else None


def estimate_seconds(cfgs: Sequence[RunConfig]) -> Estimate:
    """An honest wall-time estimate for running cfgs one after another on this machine.

    Pretraining is counted once per distinct pretraining config that is not yet cached (runs
    that differ only in seed, shots or methods share it).
    """
    dev = device_info()
    total = 0.0
    seen: set[str] = set()
    basis = "from per-step costs measured on a 2-core laptop CPU"
    n_test = 10000
    n_cached = 0
    for cfg in cfgs:
        if (store.run_dir(run_key(cfg)) / "results.json").is_file():
            n_cached += 1
            continue
        measured = _calibration(cfg.preset, dev["kind"])
        rate = measured if measured is not None else CPU_PRETRAIN_S_PER_STEP.get(cfg.preset, 1.5)
        if measured is not None:
            basis = "from this machine's earlier runs"
        pk = pretrain_key(cfg)
        needs_gan = any(m != "pixels" for m in cfg.methods)
        cached_gan = (store.pretrain_dir(pk) / "checkpoint.pt").is_file()
        if needs_gan and pk not in seen and not cached_gan:
            total += cfg.pretrain.steps * rate
        seen.add(pk)
        n_lab = 9 * cfg.shots
        n_retrain = sum(m in _methods.RETRAINED for m in cfg.methods)
        scale = rate / CPU_PRETRAIN_S_PER_STEP.get(cfg.preset, rate) if measured else 1.0
        total += n_retrain * cfg.retrain.steps * n_lab * CPU_RETRAIN_S_PER_IMAGE_STEP * scale
        n_t = cfg.data.n_test or n_test
        n_embed = sum(m not in ("pixels", "pyod") for m in cfg.methods)
        # The unlabeled reference embeds the GAN's pretraining images once per embedding.
        n_ref = ((cfg.score.n_reference or cfg.data.n_pretrain or 54000)
                 if "unlabeled" in cfg.score.references else 0)
        total += n_embed * (n_t + n_lab + n_ref) * CPU_EMBED_S_PER_IMAGE * scale
        n_proj = min(cfg.projection.n_samples, n_t) + n_lab
        for p in cfg.projection.methods:
            total += 2 * n_proj * CPU_PROJECT_S_PER_POINT.get(p, 0.01)
        total += 3.0  # loading data, writing files
    if total and any("umap" in c.projection.methods for c in cfgs):
        total += UMAP_FIRST_CALL_S
    if dev["kind"] == "cuda" and basis != "from this machine's earlier runs":
        basis = ("a CPU figure; the GPU will be much faster at training, the projections "
                 "run on the CPU either way")
    return Estimate(total, basis, n_cached)


# ---------------------------------------------------------------- sidebar


def _sidebar_body() -> None:
    dev = device_info()
    alive = safe_call(jobs.worker_alive, what="check the worker", default=False)
    counts = safe_call(jobs.queue_counts, what="count the jobs",
                       default={"queued": 0, "running": 0}) or {"queued": 0, "running": 0}
    st.markdown("**XDD Explorer** · status")
    st.markdown(f"**Device** &nbsp; {dev['name']}")
    if dev["note"]:
        st.caption(dev["note"])
    st.markdown(f"**Worker** &nbsp; {':green[●] running' if alive else ':gray[●] not running'}")
    wdev = worker_device() if alive else None
    if wdev:
        st.caption(f"The worker computes on {wdev}.")
    st.markdown(f"**Jobs** &nbsp; {counts.get('running', 0)} running · "
                f"{counts.get('queued', 0)} queued")
    if counts.get("queued", 0) and not alive:
        if st.button("Start the worker", key="sidebar-start-worker"):
            with st.spinner("Starting…"):
                ok = safe_call(jobs.ensure_worker, what="start the worker", default=False)
            if not ok:
                st.error("The worker did not start; see cache/jobs/worker.log.")
    n_runs = len(cached_runs())
    st.caption(f"{n_runs} run{'s' if n_runs != 1 else ''} cached")


@st.fragment(run_every=2.0)
def _sidebar_live() -> None:
    _sidebar_body()


def sidebar() -> None:
    """Device, worker state and queue counts; refreshes itself while jobs are active."""
    with st.sidebar:
        counts = safe_call(jobs.queue_counts, what="count the jobs", default={}) or {}
        if counts.get("queued", 0) or counts.get("running", 0):
            _sidebar_live()
        else:
            _sidebar_body()


# ---------------------------------------------------------------- tables without pyarrow


def md_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """A GitHub-flavoured markdown table (rendered by st.markdown).

    ``columns``: (key, header, format) with format a str.format spec such as ``".3f"`` or
    ``""``.  Used instead of st.dataframe, which needs pyarrow (and the pinned NumPy 1.x
    does not load the current pyarrow).
    """
    def cell(v: Any, fmt: str) -> str:
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return "–"
        try:
            text = format(v, fmt) if fmt else str(v)
        except (TypeError, ValueError):
            text = str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join(" ---: " if f else " :--- " for _, _, f in columns) + "|"
    body = ["| " + " | ".join(cell(r.get(k), f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])
