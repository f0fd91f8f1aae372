"""The calibration: times this machine's costs per stage for the estimate's fallback
(:mod:`xdd.estimate.costs`), and keeps them in ``cache/calibration.json``.

``measure()`` times a few pretraining and retraining steps of each preset's networks, one
embedding pass, the unlabeled reference's PCA fit and k-NN search, and the preset's maps at
its own size; it is what ``python -m xdd calibrate`` runs.  It imports torch (inside its
functions: importing this module does not).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Sequence

from xdd.core.config import CODE_VERSION, preset, pretrain_mode
from xdd.core.device import worker_threads
from xdd.core.methods import AFTER
from xdd.estimate.costs import map_points
from xdd.estimate.launcher import process_age_s
from xdd.estimate.rates import CALIBRATION_VERSION, calibration_path, is_current
from xdd.pipeline.plan import plan
from xdd.storage import store

MEASURED_MODES = ("fp32", "bf16+cl")  # pretraining modes the calibration times
MAP_WARM_N, MAP_TIMED_MAX = 200, 1200  # points of the calibration's small and largest maps
# Embedding dominates scoring; the KDE over the labeled embeddings adds about 30 % to it
# (the runs' score timings against the embedding alone).
SCORE_OVER_EMBEDDING = 1.3


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def _seconds(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def _pretrain_seconds(p, steps: int, x, dev) -> float:
    """One pretraining of ``steps`` steps, to the device's last kernel."""
    from xdd.train.pretrain import pretrain_gan

    t = time.perf_counter()
    pretrain_gan(dataclasses.replace(p, steps=steps), x, dev)
    _sync(dev)
    return time.perf_counter() - t


def _time_imports(dev) -> float:
    """What a run pays after the CLI's estimate line and before its own clock starts, so that
    no stage timing holds it: the modules it imports first (SciPy, the parts of scikit-learn
    that xdd.core.scoring loads), torch's deterministic mode that run_experiment enters (it
    imports torch._inductor and torch._dynamo) and threadpoolctl's scan of the BLAS libraries.
    What a run imports inside a stage (openTSNE at its first map) is in that stage's first
    call instead."""
    import torch

    t0 = time.perf_counter()
    from threadpoolctl import threadpool_limits

    from xdd.pipeline import experiment  # noqa: F401
    from xdd.core.device import reproducible
    from xdd.core.scoring import FeatureReducer, KNNScorer  # noqa: F401

    with threadpool_limits(limits=torch.get_num_threads()), reproducible(dev):
        pass
    return time.perf_counter() - t0


def _time_pretraining(p, x, dev, steps: int) -> tuple[dict[str, float], float]:
    """Seconds per pretraining step in each measured mode, after a warm-up (allocator,
    kernels) and net of a one-step run's fixed cost; and the fp32 warm-up's excess."""
    per_step: dict[str, float] = {}
    first = 0.0
    for mode in MEASURED_MODES:
        prec, _, layout = mode.partition("+")
        pm = dataclasses.replace(p, precision=prec, channels_last=layout == "cl")
        warm = _pretrain_seconds(pm, 1, x, dev)
        one = _pretrain_seconds(pm, 1, x, dev)
        per_step[mode] = max(1e-6, (_pretrain_seconds(pm, steps + 1, x, dev) - one) / steps)
        if mode == MEASURED_MODES[0]:
            first = max(0.0, warm - one)
    return per_step, first


def _time_retraining(cfg, D, xl, y, steps: int) -> tuple[float, float]:
    """Seconds per retraining step (the paper's objective, 90 labeled images), net of a
    one-step run's fixed cost; and the warm-up's excess."""
    from xdd.train.retrain import retrain

    one_step = dataclasses.replace(cfg.retrain, steps=1)
    warm = _seconds(retrain, D, one_step, xl, y, AFTER, 0)
    many = _seconds(retrain, D, dataclasses.replace(cfg.retrain, steps=steps + 1), xl, y,
                    AFTER, 0)
    one = _seconds(retrain, D, one_step, xl, y, AFTER, 0)
    return max(1e-6, (many - one) / steps), max(0.0, warm - one)


def _time_networks(cfg, x_all, dev, counts: Sequence[int], steps: int):
    """The networks' rates at each thread count; the first count's first-call excess; the
    embeddings of x_all (what the reference and the maps are timed on)."""
    import torch

    from xdd.train.pretrain import pretrain_gan
    from xdd.train.retrain import embed_all

    p = cfg.pretrain
    x = x_all[: max(p.batch_size, 64)]
    y = torch.arange(9).repeat_interleave(10).to(dev)
    xl = x_all[:90].to(dev)
    rates: dict[str, Any] = {}
    first_calls = 0.0
    z = None
    for n in counts:
        if dev.type == "cpu":
            torch.set_num_threads(n)
        pre, pre_first = _time_pretraining(p, x, dev, steps)
        _, D, _ = pretrain_gan(dataclasses.replace(p, steps=1), x, dev)
        ret, ret_first = _time_retraining(cfg, D, xl, y, steps)
        if n == counts[0]:
            first_calls += pre_first + ret_first
        t = time.perf_counter()
        z = embed_all(D, x_all)
        emb = (time.perf_counter() - t) / len(x_all)
        rates[str(n)] = {"pretrain_step_s": pre, "retrain_step_s": ret,
                         "score_image_s": SCORE_OVER_EMBEDDING * emb}
    return rates, first_calls, z


def _reference_cost(cfg, rows, reducer) -> dict[str, float]:
    """An unlabeled-reference scorer on ``rows``: the PCA fit (its size does not depend on
    the reference), the projection per image, the exact k-NN search per (test image x
    reference image) pair."""
    from xdd.core.scoring import KNNScorer

    fit_s = _seconds(reducer.fit, rows)
    t = time.perf_counter()
    feats = reducer.transform(rows)
    row_s = (time.perf_counter() - t) / len(rows)
    t = time.perf_counter()
    KNNScorer(cfg.score.knn_k, cfg.score.knn_backend).fit(feats).score(feats[:1024])
    return {"fit_s": fit_s, "fit_rows": len(rows), "row_s": row_s,
            "pair_s": (time.perf_counter() - t) / (1024 * len(feats))}


def _time_references(cfg, x_train, z) -> dict[str, Any]:
    """The unlabeled reference's costs beyond embedding, on knn_pca_fit rows, for the kinds
    of reference the preset's stages search: the raw pixels' (``pixels``) and an embedding's
    (its projection is in the embedding rate)."""
    import numpy as np

    from xdd.core.scoring import FeatureReducer

    kinds = {s.reference for s in plan(cfg) if s.kind == "score"}
    out: dict[str, Any] = {}
    if "pixels" in kinds:
        px = x_train[: min(cfg.score.knn_pca_fit, len(x_train))]
        out["pixels"] = _reference_cost(cfg, px.reshape(len(px), -1) / 255.0, FeatureReducer(
            cfg.score.pixel_knn_pca, normalize=False, seed=0))
    if kinds & {"build", "reuse"}:
        c = _reference_cost(cfg, np.resize(z.numpy(), (cfg.score.knn_pca_fit, z.shape[1])),
                            FeatureReducer(cfg.score.knn_pca, cfg.score.normalize, seed=0))
        out.update(reference_fit_s=c["fit_s"], reference_fit_rows=c["fit_rows"],
                   knn_pair_s=c["pair_s"])
    return out


def _time_map(pm: str, small, big_rows) -> tuple[float, float, float]:
    """A map's first call, a second call at the small size, and a call at the big size."""
    from xdd.core.projection import project

    first = _seconds(project, small, pm, 0)
    again = _seconds(project, small, pm, 0)
    big = _seconds(project, big_rows, pm, 0) if len(big_rows) > len(small) else again
    return first, again, big


def _time_maps(cfg, z, umap_timed: bool) -> tuple[dict[str, Any], float, dict[str, float]]:
    """The preset's maps at the run's own size (a t-SNE or an exact-neighbour UMAP of n points
    costs more than n times a point's share of a smaller map), after a first call and a second
    at a small size.  Beyond MAP_TIMED_MAX points the cost is extrapolated with the exponent
    between the two sizes.  Returns the entry's map figures, the first calls' excess (UMAP's
    apart) and, unless ``umap_timed``, UMAP's first call under the name of what it was: a
    compilation, or a load of an earlier one from numba's disk cache."""
    from xdd.core.projection import umap_compiled_on_disk

    n_big = max(3, min(map_points(cfg), len(z), MAP_TIMED_MAX))
    n_small = min(MAP_WARM_N, n_big)
    small, big_rows = z[:n_small].numpy(), z[:n_big].numpy()
    entry: dict[str, Any] = {"project_point_s": {}, "project_n": n_big, "project_exp": {}}
    first_calls, umap_first = 0.0, {}
    for pm in cfg.projection.methods:
        umap_name = None  # asked before the call that compiles it
        if pm == "umap" and not umap_timed:
            umap_name = "umap_load_s" if umap_compiled_on_disk() else "umap_compile_s"
        first, again, big = _time_map(pm, small, big_rows)
        entry["project_point_s"][pm] = big / n_big
        # an exponent only from sizes far enough apart for the ratio to be above noise
        entry["project_exp"][pm] = min(2.0, max(1.0, math.log(big / again) / math.log(
            n_big / n_small))) if n_big >= 2 * n_small and again > 0 and big > 0 else 1.0
        if pm != "umap":
            first_calls += max(0.0, first - again)
        elif umap_name:
            umap_first[umap_name] = max(0.0, first - again)
    return entry, first_calls, umap_first


def _measure_preset(name: str, data, x_all, dev, counts: Sequence[int], steps: int,
                    umap_timed: bool) -> tuple[dict[str, Any], dict[str, float]]:
    """One preset's calibration entry, and UMAP's first call where it was timed here."""
    import torch

    cfg = preset(name)
    base_threads = torch.get_num_threads()
    # first_calls_s: what the first calls in a process cost beyond the later ones (library
    # set-up, oneDNN's kernels for these shapes, openTSNE's first call; UMAP's compilation is
    # counted apart), which a fresh process (the CLI, a new worker) pays once
    rates, first_calls, z = _time_networks(cfg, x_all, dev, counts, steps)
    torch.set_num_threads(base_threads)
    own = rates[str(counts[0] if dev.type == "cuda" else worker_threads())]
    entry = {"pretrain_step_s": own["pretrain_step_s"][pretrain_mode(cfg.pretrain)],
             "retrain_step_s": own["retrain_step_s"], "score_image_s": own["score_image_s"],
             "rates": rates, **_time_references(cfg, data.x_train, z)}
    maps, map_first_calls, umap_first = _time_maps(cfg, z, umap_timed)
    entry.update(maps)
    entry["first_calls_s"] = first_calls + map_first_calls
    return entry, umap_first


def measure(device: str = "cpu", presets: Sequence[str] = ("tiny", "quick"), steps: int = 4
            ) -> dict[str, Any]:
    """Time each preset's networks on this machine: seconds per pretraining step (batch of the
    preset; each of MEASURED_MODES), per retraining step (the paper's objective, 90 labeled
    images) and per test image scored, at the job worker's thread count and (CPU) at every
    core; the unlabeled reference's fit and search; the maps (t-SNE / UMAP / PCA) at the
    preset's own size (up to MAP_TIMED_MAX points, beyond it extrapolated); the data load,
    what a run imports before its clock starts, and this process's start-up."""
    import torch

    from xdd.storage.data import load_mnist, to_tensor
    from xdd.core.device import resolve_device, usable_cores

    dev = resolve_device(device)
    # A fresh process's start (Python, torch, this package): what a job waits for when no
    # worker is running and the page starts one.
    startup_s = process_age_s()
    imports_s = _time_imports(dev)
    t0 = time.perf_counter()
    data = load_mnist(None)
    data_s = time.perf_counter() - t0
    counts = [torch.get_num_threads()] if dev.type == "cuda" else sorted(
        {worker_threads(), min(8, usable_cores())})
    out: dict[str, Any] = {"presets": {}, "data_s": data_s, "threads": worker_threads(),
                           "measured_at": time.time()}
    x_all = to_tensor(data.x_train[:2048])
    for name in presets:
        entry, umap_first = _measure_preset(name, data, x_all, dev, counts, steps,
                                            umap_timed="umap_compile_s" in out
                                            or "umap_load_s" in out)
        out.update(umap_first)
        out["presets"][name] = entry
        # The first preset timed pays the process's own first calls (library set-up) besides
        # its shapes': what any fresh process pays, whichever preset it runs.
        out.setdefault("first_calls_s", entry["first_calls_s"])
    out["imports_s"] = imports_s
    if startup_s is not None:
        out["startup_s"] = startup_s
    return out


def calibrate(device: str = "cpu", presets: Sequence[str] = ("tiny", "quick")) -> dict[str, Any]:
    """measure() and keep the figures in cache/calibration.json (atomically), beside the
    presets an earlier calibration of this version timed."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    figures = measure(device, presets)
    cal = store.read_json(calibration_path())
    if not is_current(cal):
        cal = {"version": CALIBRATION_VERSION, "code_version": CODE_VERSION}
    old = cal.get(kind) if isinstance(cal.get(kind), dict) else {}
    figures["presets"] = {**old.get("presets", {}), **figures["presets"]}
    for name in ("umap_compile_s", "umap_load_s"):  # a calibration times one of the two
        if name not in figures and name in old:
            figures[name] = old[name]
    cal[kind] = figures
    store.atomic_write_json(calibration_path(), cal)
    return cal
