"""How long a batch of runs will take on this machine, from measurement only.

Two sources, best first, and the estimate says which one it used:

1. **This machine's own cached runs** of the same preset and device kind: each stage's cost
   (seconds per pretraining step, per retraining step, scoring and projection seconds) is
   read from the ``timings`` every results.json records.
2. **A calibration**: ``measure()`` (``python -m xdd calibrate``, ~35 s on a 2-core CPU) times
   a few pretraining and retraining steps of each preset's networks, one embedding pass and
   the preset's t-SNE / UMAP at its own size on this machine, and ``cache/calibration.json``
   keeps the figures.

Both are per thread count: a CPU run's costs depend on how many torch threads it runs with
(the job worker: the usable cores less one; ``python -m xdd run``: every core), so runs are
counted only at the thread count asked for, and the calibration times the networks at both.
Pretraining rates are per pretraining mode (``config.pretrain_mode``: precision and layout).

With neither, there is no estimate (``Estimate.seconds is None``): the page says it is
measuring instead of showing a number from another machine.  Nothing here imports torch
unless ``measure`` is called.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from xdd.storage import store
from xdd.core.config import CODE_VERSION, RunConfig, preset, pretrain_key, pretrain_mode, run_key
from xdd.core.device import described_threads, worker_threads  # torch-free

RETRAINED = ("xdd", "mcdd", "pairwise", "svdd", "softmax")
# 2: the unlabeled reference's PCA fit and k-NN search; 3: rates per thread count and mode;
# 4: numpy's BLAS kernels chosen for the CPU (xdd.openblas), faster where OpenBLAS misdetects it;
# 5: the maps timed at the run's size (project_n, project_exp), the worker's start-up (startup_s);
# 6: imports_s is what a run pays before its clock (torch's deterministic mode), not openTSNE
CALIBRATION_VERSION = 6
MEASURED_MODES = ("fp32", "bf16+cl")  # pretraining modes the calibration times
MAP_WARM_N, MAP_TIMED_MAX = 200, 1200  # points of the calibration's small and largest maps


def run_threads(run: dict[str, Any]) -> int | None:
    """The torch thread count a cached CPU run recorded (None: a GPU run or not recorded)."""
    return described_threads(str(run.get("device", "")))


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: nothing measured yet on this machine
    basis: str
    n_cached: int = 0  # configs whose results are cached already (instant)


def calibration_path():
    return store.cache_root() / "calibration.json"


def load_calibration(kind: str) -> dict[str, Any] | None:
    """The calibration measured on this machine for a device kind ("cpu"/"cuda"), or None."""
    cal = store.read_json(calibration_path())
    if not isinstance(cal, dict) or cal.get("version") != CALIBRATION_VERSION \
            or cal.get("code_version") != CODE_VERSION:
        return None
    got = cal.get(kind)
    return got if isinstance(got, dict) and isinstance(got.get("presets"), dict) else None


def _median(xs: Iterable[float]) -> float | None:
    v = sorted(x for x in xs if isinstance(x, (int, float)) and x > 0 and math.isfinite(x))
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else 0.5 * (v[m - 1] + v[m])


def rates_from_runs(runs: Sequence[dict[str, Any]], preset_name: str, kind: str,
                    threads: int | None = None, mode: str = "fp32") -> dict[str, Any]:
    """Per-stage costs of this machine's cached runs of one preset on one device kind (the
    raw-pixel baseline's scoring is counted only from runs: the calibration does not time it).
    On the CPU, ``threads`` keeps only the runs made with that many torch threads (None: any);
    the pretraining rate counts only pretrainings in ``mode``."""
    pre, ret, score, proj, data, pixels, overlap = [], [], [], {}, [], [], []
    for r in runs:
        if r.get("preset") != preset_name:
            continue
        if (kind == "cuda") != str(r.get("device", "")).startswith("cuda"):
            continue
        if kind == "cpu" and threads is not None and run_threads(r) != threads:
            continue
        cfg = r.get("config") or {}
        t = r.get("timings") or {}
        trained = r.get("pretrain_source", "cache" if r.get("pretrain_reused") else "trained")
        steps = (cfg.get("pretrain") or {}).get("steps") or 0
        if trained == "trained" and steps and t.get("pretrain") \
                and pretrain_mode(cfg.get("pretrain") or {}) == mode:
            pre.append(t["pretrain"] / steps)
        rsteps = (cfg.get("retrain") or {}).get("steps") or 0
        n_test = r.get("n_test") or 0
        n_ref = r.get("n_reference") or 0  # unlabeled reference images embedded per method
        # a score timing whose reference was read from disk is not a rate per image embedded
        loaded = {f"score:{m}" for m in r.get("reference_loaded") or ()}
        umap: list[float] = []
        for k, v in t.items():
            if k.startswith("retrain:") and rsteps:
                # a step's cost grows with the labeled images; stated per 90 (10 shots x 9)
                ret.append(v / rsteps * 90 / max(1, r.get("n_labeled") or 90))
            elif k == "score:pixels":
                pixels.append(v)
            elif k.startswith("score:") and k not in ("score:pyod", *loaded) and n_test:
                score.append(v / (n_test + n_ref))
            elif k.startswith("project:"):
                parts = k.split(":")  # project:<embedding>:<method>
                n = min((cfg.get("projection") or {}).get("n_samples", 0), n_test) \
                    + (r.get("n_labeled") or 0)  # the labeled points are projected too
                if len(parts) == 3 and parts[2] == "umap" and n:
                    umap.append(v / n)
                elif len(parts) == 3 and n:
                    proj.setdefault(parts[2], []).append(v / n)
        if umap:  # a fresh process's first UMAP compiles it: counted apart (umap_compile_s)
            proj.setdefault("umap", []).append(min(umap))
        if t.get("data"):
            data.append(t["data"])
        # How much of the stages' summed time the run's wall clock saw: the pixel baseline
        # and the pretrained D's scores run in threads beside the retraining, so the stages
        # overlap (the reference:* timings are parts of score:*).
        staged = sum(v for k, v in t.items() if k.startswith(("retrain:", "score:", "project:")))
        rest = (r.get("wall_time_s") or 0.0) - (t.get("pretrain") or 0.0) - (t.get("data") or 0.0)
        if staged > 0 and rest > 0:
            overlap.append(min(1.0, rest / staged))
    return {"pretrain_step_s": _median(pre), "retrain_step_s": _median(ret),
            "score_image_s": _median(score), "data_s": _median(data),
            "pixels_s": _median(pixels), "overlap": _median(overlap),
            "project_point_s": {k: _median(v) for k, v in proj.items()}}


def gan_on_disk(cfg: RunConfig, use_bundle: bool = True) -> bool:
    """Whether cfg's pretrained GAN is cached on this machine or (``use_bundle``) shipped with
    the code: then its run pretrains nothing."""
    from xdd.storage import bundle

    key = pretrain_key(cfg)
    return (store.pretrain_dir(key) / "checkpoint.pt").is_file() or (
        use_bundle and key in bundle.entries())


def reference_on_disk(cfg: RunConfig) -> bool:
    """Whether the pretrained D's unlabeled-reference features for cfg are kept on disk."""
    from xdd.pipeline.reference import cached_path

    return cached_path(cfg).is_file()


def _pick(measured: dict[str, Any], cal: dict[str, Any] | None, name: str) -> tuple[float | None, str]:
    if measured.get(name):
        return measured[name], "runs"
    if cal and cal.get(name):
        return float(cal[name]), "calibration"
    return None, "none"


def _calibrated_rates(cal: dict[str, Any] | None, preset_name: str, kind: str,
                     threads: int, mode: str) -> dict[str, Any] | None:
    """The calibration's figures for a preset, with the network rates at ``threads`` (CPU)
    and the pretraining rate in ``mode``; None where it did not measure them."""
    entry = (cal or {}).get("presets", {}).get(preset_name)
    if not isinstance(entry, dict):
        return None
    rates = entry.get("rates") or {}
    # a GPU is timed once, at whatever thread count; a CPU at each count a run may use
    at = next(iter(rates.values()), None) if kind == "cuda" else rates.get(str(threads))
    if not isinstance(at, dict):
        return None  # timed at another thread count only: not this run's cost
    return {**entry, "retrain_step_s": at.get("retrain_step_s"),
            "score_image_s": at.get("score_image_s"),
            "pretrain_step_s": (at.get("pretrain_step_s") or {}).get(mode)}


def _map_points(cfg: RunConfig) -> int:
    """Points in each of a run's maps: its seeded test subsample and the labeled examples,
    appended (xdd.pipeline.experiment)."""
    return min(cfg.projection.n_samples, cfg.data.n_test or 10000) + 9 * cfg.shots


def _reference_s(fit_s, fit_rows, row_s, pair_s, cfg: RunConfig, n_ref: int, n_test: int
                 ) -> float:
    """Seconds of an unlabeled-reference scorer from the calibration's figures (None: not
    measured): its PCA, fitted on at most knn_pca_fit reference rows (the cost grows with
    them), each reference and test image projected, and the exact k-NN pairs."""
    fit = min(cfg.score.knn_pca_fit, n_ref) / float(fit_rows or cfg.score.knn_pca_fit)
    return (fit * float(fit_s or 0.0) + (n_ref + n_test) * float(row_s or 0.0)
            + n_test * n_ref * float(pair_s or 0.0))


def estimate(cfgs: Sequence[RunConfig], runs: Sequence[dict[str, Any]], kind: str,
             gan_available=None, umap_warm: bool = False, threads: int | None = None,
             recompute: bool = False, start_worker: bool = False) -> Estimate:
    """Seconds to run cfgs one after another on this machine, from measurement only.

    ``runs``: this machine's cached results; ``gan_available(cfg)``: whether a pretrained GAN
    for cfg is cached or shipped (then pretraining costs nothing); ``umap_warm``: a worker
    whose UMAP is compiled already is alive (else the runs start in a fresh process, which
    pays UMAP's compilation and the calibration's first-call cost once); ``threads``: the
    torch threads of the CPU that runs them (default: the job worker's); ``recompute``: runs
    already cached are computed again (``run --force``); ``start_worker``: no job worker is
    running, so the first job waits for one to start (Python and torch loading, what the
    calibration's own process took to reach its first measurement).  Pretraining is counted
    once per distinct pretraining config.
    """
    cal = load_calibration(kind)
    threads = threads or worker_threads()
    total = 0.0
    used: set[str] = set()
    seen: set[str] = set()
    n_cached = 0
    need_umap = False
    from_calibration = False  # a stage after pretraining costed from the calibration
    first_preset = None
    for cfg in cfgs:
        if not recompute and (store.run_dir(run_key(cfg)) / "results.json").is_file():
            n_cached += 1
            continue
        first_preset = first_preset or cfg.preset
        mode = pretrain_mode(cfg.pretrain)
        measured = rates_from_runs(runs, cfg.preset, kind, threads, mode)
        pcal = _calibrated_rates(cal, cfg.preset, kind, threads, mode)
        need_gan = any(m != "pixels" for m in cfg.methods)
        pk = pretrain_key(cfg)
        gan_here = bool(gan_available and gan_available(cfg))
        if need_gan and pk not in seen and not gan_here:
            rate, src = _pick(measured, pcal, "pretrain_step_s")
            if rate is None:
                return Estimate(None, "not measured on this machine yet", n_cached)
            total += cfg.pretrain.steps * rate
            used.add(src)
        seen.add(pk)
        # The stages after pretraining, by where their cost was measured: the runs' figures
        # are timed inside runs whose stages overlap, so their sum is scaled by the overlap
        # those runs' wall clocks saw; the calibration's are each timed alone.
        staged = {"runs": 0.0, "calibration": 0.0}
        n_ret = sum(m in RETRAINED for m in cfg.methods)
        if n_ret:
            rate, src = _pick(measured, pcal, "retrain_step_s")
            if rate is None:
                return Estimate(None, "not measured on this machine yet", n_cached)
            staged[src] += n_ret * cfg.retrain.steps * rate * (9 * cfg.shots) / (9 * 10)
            used.add(src)
        n_test = cfg.data.n_test or 10000
        # Each embedding scores the test set and, under the unlabeled reference, embeds the
        # GAN's pretraining images as well.
        n_ref = 0
        if "unlabeled" in cfg.score.references:
            n_ref = cfg.score.n_reference or cfg.data.n_pretrain or (
                54000 if cfg.data.eval_split == "test" else 45000)
        n_scored = sum(m not in ("pixels", "pyod") for m in cfg.methods)
        # the pretrained D's reference features, kept on disk by an earlier run of this GAN
        # and seed, are read, not computed (xdd.pipeline.reference.load_cached); a GAN pretrained now
        # is another network
        n_built = n_scored - int(bool(n_ref) and "before" in cfg.methods and gan_here
                                 and reference_on_disk(cfg))
        rate, src = _pick(measured, pcal, "score_image_s")
        if rate is None:
            return Estimate(None, "not measured on this machine yet", n_cached)
        staged[src] += (n_scored * n_test + n_built * n_ref) * rate
        if src == "calibration" and n_ref:  # the runs' score timings include these already
            # (each image's projection is part of the embedding rate above); features read
            # from disk are still searched
            staged[src] += n_built * _reference_s(
                pcal.get("reference_fit_s"), pcal.get("reference_fit_rows"), 0.0,
                pcal.get("knn_pair_s"), cfg, n_ref, n_test) + (n_scored - n_built) * _reference_s(
                0.0, None, 0.0, pcal.get("knn_pair_s"), cfg, n_ref, n_test)
        used.add(src)
        if "pixels" in cfg.methods:
            if measured.get("pixels_s"):
                staged["runs"] += measured["pixels_s"]
            elif n_ref and isinstance((pcal or {}).get("pixels"), dict):
                px = pcal["pixels"]
                staged["calibration"] += _reference_s(px.get("fit_s"), px.get("fit_rows"),
                                                      px.get("row_s"), px.get("pair_s"),
                                                      cfg, n_ref, n_test)
        data_s, _ = _pick(measured, cal, "data_s")  # measured once per machine
        total += data_s or 0.0
        n_embs = sum(m in ("before", "xdd") for m in cfg.methods)
        n_proj = _map_points(cfg)
        for pm in cfg.projection.methods:
            rate = (measured.get("project_point_s") or {}).get(pm)
            src, scale = "runs", 1.0
            if not rate:
                rate, src = ((pcal or {}).get("project_point_s") or {}).get(pm), "calibration"
                # timed at project_n points; another size scales with the exponent measured
                n0 = (pcal or {}).get("project_n")
                if n0:
                    exp = ((pcal or {}).get("project_exp") or {}).get(pm, 1.0)
                    scale = (n_proj / n0) ** (exp - 1.0)
            if not rate:
                return Estimate(None, "not measured on this machine yet", n_cached)
            staged[src] += n_embs * n_proj * rate * scale
            used.add(src)
            need_umap |= pm == "umap"
        total += staged["calibration"] + (measured.get("overlap") or 1.0) * staged["runs"]
        from_calibration |= staged["calibration"] > 0
    if need_umap and not umap_warm:
        # A fresh process's first UMAP compiles it, or loads what an earlier process compiled
        # from numba's disk cache (xdd.core.projection): what the calibration measured of either.
        from xdd.core.projection import umap_compiled_on_disk

        total += float((cal or {}).get(
            "umap_load_s" if umap_compiled_on_disk() else "umap_compile_s") or 0.0)
    # A fresh process, once: what it imports before a run's clock starts, and the first calls
    # of its libraries, which stage costs taken from runs include already (each CLI run is a
    # fresh process, and so is a worker's first job).
    if not umap_warm and first_preset:
        total += float((cal or {}).get("imports_s") or 0.0)
        if from_calibration:
            own = float(((cal or {}).get("presets", {}).get(first_preset) or {}).get(
                "first_calls_s") or 0.0)
            total += max(own, float((cal or {}).get("first_calls_s") or 0.0))
    if start_worker and first_preset:
        total += float((cal or {}).get("startup_s") or 0.0)
    if not total and n_cached == len(cfgs):
        return Estimate(0.0, "already cached", n_cached)
    basis = {frozenset({"runs"}): "from this machine's earlier runs",
             frozenset({"calibration"}): "from a calibration measured on this machine",
             }.get(frozenset(used), "from this machine's earlier runs and its calibration")
    return Estimate(total, basis, n_cached)


# ---------------------------------------------------------------- measuring (imports torch)


def measure(device: str = "cpu", presets: Sequence[str] = ("tiny", "quick"), steps: int = 4
            ) -> dict[str, Any]:
    """Time each preset's networks on this machine: seconds per pretraining step (batch of the
    preset; fp32 and bf16 + channels_last), per retraining step (XDD loss, 90 labeled images)
    and per test image scored, at the job worker's thread count and (CPU) at every core; the
    maps (t-SNE / UMAP / PCA) at the preset's own size (up to MAP_TIMED_MAX points, beyond it
    extrapolated), the data load and this process's start-up.  ~35 s for tiny and quick on a
    2-core CPU; the paper preset's G is wider."""
    import numpy as np
    import torch

    from xdd.storage.data import load_mnist, to_tensor
    from xdd.core.device import resolve_device, usable_cores
    from xdd.train.pretrain import pretrain_gan
    from xdd.core.projection import project, umap_compiled_on_disk
    from xdd.train.retrain import embed_all, retrain

    dev = resolve_device(device)
    # A fresh process's start (Python, torch, this package): what a job waits for when no
    # worker is running and the page starts one.
    startup_s = _process_age_s()
    # What a run pays after the CLI's estimate line and before its own clock starts, so that
    # no stage timing holds it (estimates from runs add it as well): the modules it imports
    # first (SciPy, scikit-learn's parts that xdd.core.scoring loads), and what run_experiment
    # enters, torch's deterministic mode (which imports torch._inductor and torch._dynamo,
    # ~1.3 s here) and threadpoolctl's scan of the BLAS libraries.  A fresh process (the CLI,
    # a new worker) pays it once.  What a run imports inside a stage (openTSNE at its first
    # map) is in that stage's first call, timed below with the others.
    t0 = time.perf_counter()
    from threadpoolctl import threadpool_limits

    from xdd.pipeline import experiment  # noqa: F401
    from xdd.core.device import reproducible
    from xdd.core.scoring import FeatureReducer, KNNScorer

    with threadpool_limits(limits=torch.get_num_threads()), reproducible(dev):
        pass
    imports_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = load_mnist(None)
    data_s = time.perf_counter() - t0
    base_threads = torch.get_num_threads()
    counts = [base_threads] if dev.type == "cuda" else sorted(
        {worker_threads(), min(8, usable_cores())})
    out: dict[str, Any] = {"presets": {}, "data_s": data_s, "threads": worker_threads(),
                           "measured_at": time.time()}
    x_all = to_tensor(data.x_train[:2048])
    umap_timed = False

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for name in presets:
        cfg = preset(name)
        p = cfg.pretrain
        x = x_all[: max(p.batch_size, 64)]
        y = torch.arange(9).repeat_interleave(10).to(dev)
        xl = x_all[:90].to(dev)
        rcfg = dataclasses.replace(cfg.retrain, steps=1)
        rates: dict[str, Any] = {}
        # What the first calls in a process cost beyond the later ones (library set-up,
        # oneDNN's kernels for these shapes, openTSNE's first call; UMAP's compilation is
        # counted apart): a fresh process (the CLI, a new worker) pays it once.
        first_calls = 0.0
        for n in counts:
            if dev.type == "cpu":
                torch.set_num_threads(n)
            pre: dict[str, float] = {}
            for mode in MEASURED_MODES:
                prec, _, layout = mode.partition("+")
                pm = dataclasses.replace(p, precision=prec, channels_last=layout == "cl")

                def timed(k: int) -> float:
                    t = time.perf_counter()
                    pretrain_gan(dataclasses.replace(pm, steps=k), x, dev)
                    sync()
                    return time.perf_counter() - t

                warm = timed(1)  # warm-up: allocator, kernels
                one = timed(1)
                pre[mode] = max(1e-6, (timed(steps + 1) - one) / steps)
                if n == counts[0] and mode == MEASURED_MODES[0]:
                    first_calls += max(0.0, warm - one)
            _, D, _ = pretrain_gan(dataclasses.replace(p, steps=1), x, dev)
            t = time.perf_counter()
            retrain(D, rcfg, xl, y, "xdd", 0)  # warm-up
            warm = time.perf_counter() - t
            t = time.perf_counter()
            retrain(D, dataclasses.replace(cfg.retrain, steps=steps + 1), xl, y, "xdd", 0)
            t1 = time.perf_counter() - t
            t = time.perf_counter()
            retrain(D, rcfg, xl, y, "xdd", 0)
            one = time.perf_counter() - t
            ret = max(1e-6, (t1 - one) / steps)
            if n == counts[0]:
                first_calls += max(0.0, warm - one)
            t = time.perf_counter()
            z = embed_all(D, x_all)
            emb = (time.perf_counter() - t) / len(x_all)
            # embedding dominates scoring; the KDE over 90 points adds ~30 % (measured against
            # the runs' score timings)
            rates[str(n)] = {"pretrain_step_s": pre, "retrain_step_s": ret,
                             "score_image_s": 1.3 * emb}
        torch.set_num_threads(base_threads)
        own = rates[str(counts[0] if dev.type == "cuda" else worker_threads())]
        entry = {"pretrain_step_s": own["pretrain_step_s"][pretrain_mode(p)],
                 "retrain_step_s": own["retrain_step_s"], "score_image_s": own["score_image_s"],
                 "rates": rates, "project_point_s": {}}
        def reference_cost(rows: np.ndarray, reducer) -> dict[str, float]:
            """An unlabeled-reference scorer on ``rows``: the PCA fit (its size does not
            depend on the reference), the projection per image, the exact k-NN search per
            (test image x reference image) pair."""
            t = time.perf_counter()
            reducer.fit(rows)
            fit_s = time.perf_counter() - t
            t = time.perf_counter()
            feats = reducer.transform(rows)
            row_s = (time.perf_counter() - t) / len(rows)
            t = time.perf_counter()
            KNNScorer(cfg.score.knn_k, cfg.score.knn_backend).fit(feats).score(feats[:1024])
            return {"fit_s": fit_s, "fit_rows": len(rows), "row_s": row_s,
                    "pair_s": (time.perf_counter() - t) / (1024 * len(feats))}

        if "unlabeled" in cfg.score.references and "pixels" in cfg.methods:
            # The raw-pixel baseline under the unlabeled reference, on knn_pca_fit images.
            px = data.x_train[: min(cfg.score.knn_pca_fit, len(data.x_train))]
            entry["pixels"] = reference_cost(px.reshape(len(px), -1) / 255.0, FeatureReducer(
                cfg.score.pixel_knn_pca, normalize=False, seed=0))
        if "unlabeled" in cfg.score.references:
            # What the unlabeled reference adds per scored method beyond embedding (which
            # projects each image as well): knn_pca_fit embeddings.
            c = reference_cost(np.resize(z.numpy(), (cfg.score.knn_pca_fit, z.shape[1])),
                               FeatureReducer(cfg.score.knn_pca, cfg.score.normalize, seed=0))
            entry.update(reference_fit_s=c["fit_s"], reference_fit_rows=c["fit_rows"],
                         knn_pair_s=c["pair_s"])
        # The maps at the run's own size (a t-SNE or an exact-neighbour UMAP of n points costs
        # more than n times a point's share of a smaller map: 1,090 points took 1.5x and 1.3x
        # the linear extrapolation from 400 here), after a first call and a second at a small
        # size (a fresh process's first call is counted apart).  Beyond MAP_TIMED_MAX points
        # the cost is extrapolated with the exponent between the two sizes (the paper
        # preset's 5,090 points: across UMAP's switch to NN-descent at 4,096, a rougher guess).
        n_big = max(3, min(_map_points(cfg), len(z), MAP_TIMED_MAX))
        n_small = min(MAP_WARM_N, n_big)
        small = z[:n_small].numpy()
        entry["project_n"] = n_big
        entry["project_exp"] = {}
        for pm in cfg.projection.methods:
            # UMAP's first call in a process compiles it, or loads an earlier compilation
            # from numba's disk cache: timed under the name of whichever this one is.
            if pm == "umap" and not umap_timed:
                first_umap = "umap_load_s" if umap_compiled_on_disk() else "umap_compile_s"
            t = time.perf_counter()
            project(small, pm, 0)  # warm-up
            first = time.perf_counter() - t
            t = time.perf_counter()
            project(small, pm, 0)
            again = time.perf_counter() - t
            big = again
            if n_big > n_small:
                t = time.perf_counter()
                project(z[:n_big].numpy(), pm, 0)
                big = time.perf_counter() - t
            entry["project_point_s"][pm] = big / n_big
            # an exponent only from sizes far enough apart for the ratio to be above noise
            entry["project_exp"][pm] = min(2.0, max(1.0, math.log(big / again) / math.log(
                n_big / n_small))) if n_big >= 2 * n_small and again > 0 and big > 0 else 1.0
            if pm == "umap":
                if not umap_timed:
                    out[first_umap] = max(0.0, first - again)
                    umap_timed = True
            else:
                first_calls += max(0.0, first - again)
        entry["first_calls_s"] = first_calls
        out["presets"][name] = entry
        # The first preset timed pays the process's own first calls (library set-up) besides
        # its shapes': what any fresh process pays, whichever preset it runs.
        out.setdefault("first_calls_s", first_calls)
    out["imports_s"] = imports_s
    if startup_s is not None:
        out["startup_s"] = startup_s
    return out


def _process_age_s() -> float | None:
    """Seconds since this process started (Linux: /proc), None where that is unknown."""
    try:
        with open("/proc/self/stat") as f:
            # after the command's name in parentheses: field 3 (state) onwards; 22 is starttime
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def calibrate(device: str = "cpu", presets: Sequence[str] = ("tiny", "quick")) -> dict[str, Any]:
    """measure() and keep the figures in cache/calibration.json (atomically)."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    figures = measure(device, presets)
    cal = store.read_json(calibration_path())
    if not isinstance(cal, dict) or cal.get("version") != CALIBRATION_VERSION \
            or cal.get("code_version") != CODE_VERSION:
        cal = {"version": CALIBRATION_VERSION, "code_version": CODE_VERSION}
    old = cal.get(kind) if isinstance(cal.get(kind), dict) else {}
    figures["presets"] = {**old.get("presets", {}), **figures["presets"]}
    for name in ("umap_compile_s", "umap_load_s"):  # a calibration times one of the two
        if name not in figures and name in old:
            figures[name] = old[name]
    cal[kind] = figures
    store.atomic_write_json(calibration_path(), cal)
    return cal


LOCK_STALE_S = 300.0


def ensure_calibration(kind: str = "cpu", preset_name: str = "quick") -> bool:
    """Start ``python -m xdd calibrate`` in the background when this machine has no
    calibration for the preset yet and no calibration is running (a lock file in the cache,
    so ten pages opened at once start one).  Returns True when one is running or started."""
    import subprocess
    import sys

    cal = load_calibration(kind)
    if cal and preset_name in cal.get("presets", {}):
        return False
    if os.environ.get("XDD_CALIBRATE", "1") == "0":  # tests: never time the machine unasked
        return False
    lock = store.cache_root() / "calibration.lock"
    try:
        if lock.exists() and time.time() - lock.stat().st_mtime < LOCK_STALE_S:
            return True
        lock.unlink(missing_ok=True)
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
    except OSError:  # another page took the lock first, or a read-only cache
        return lock.exists()
    names = ",".join(dict.fromkeys(("tiny", "quick", preset_name)))
    code = ("import sys; from xdd.cli.main import main; "
            f"rc = main(['calibrate', '--device', {kind!r}, '--presets', {names!r}]); "
            f"import pathlib; pathlib.Path({str(lock)!r}).unlink(missing_ok=True); sys.exit(rc)")
    subprocess.Popen([sys.executable, "-c", code], cwd=str(store.REPO_ROOT),
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    return True
