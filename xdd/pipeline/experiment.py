"""run_experiment(cfg, progress) -> results: the whole protocol for one configuration.

Stages (as reported to ``progress(stage, step, total, info)``): ``data``, ``pretrain`` (skipped
when a pretrained GAN with the same pretraining config is cached), ``retrain:<method>`` for
each retraining method, ``score``, ``project:<name>``.  ``progress`` may raise (e.g. a
cancelled job): the run then stops and leaves nothing in the cache.
"""
from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from xdd.storage import store
from xdd.core.config import CODE_VERSION, RunConfig, pretrain_key, run_key, to_dict, variant
from xdd.storage.data import eval_arrays, load_mnist, make_splits, to_tensor
from xdd.core.methods import BY_NAME
from xdd.pipeline.reference import (
    SCORE_BATCH, load_cached, pca_fit_rows, reference_features, reference_indices,
    reference_info, save_cached)

Progress = Callable[[str, int, int, dict], None]


def score_key(reference: str, method: str) -> str:
    """The scores.npz key of a method's per-sample scores under a reference."""
    return f"score_{reference}_{method}"


def _noop(stage: str, step: int, total: int, info: dict) -> None:
    pass


def cached_results(cfg: RunConfig) -> dict[str, Any] | None:
    """A complete cached run (scores and maps), or None."""
    res = store.load_results(run_key(cfg))
    return None if res is None or res.get("projections_pending") else res


def load_pretrained(cfg: RunConfig, device):
    """(G, D) from the cache, or None when absent or unreadable."""
    from xdd.core.models import Discriminator, Generator

    pdir = store.pretrain_dir(pretrain_key(cfg))
    meta = store.read_json(pdir / "config.json")
    ckpt = pdir / "checkpoint.pt"
    # torch.load does not notice a flipped byte inside a tensor: check the recorded hash first.
    if not isinstance(meta, dict) or not ckpt.is_file() \
            or meta.get("checkpoint_sha256") != store.sha256_file(ckpt):
        return None
    state = store.load_checkpoint(ckpt)
    if state is None or state.get("code_version") != CODE_VERSION:
        return None
    p = cfg.pretrain
    G, D = Generator(p.z_dim, p.g_width), Discriminator(p.d_width)
    try:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
    except (KeyError, RuntimeError):
        return None
    return G.to(device).eval(), D.to(device).eval()


def ensure_pretrained(cfg: RunConfig, x_pre, device, progress: Progress, use_bundle: bool = True):
    """The pretrained D for cfg's pretraining config, with what its G draws and how the game
    ended: from this machine's cache, else from the bundle shipped with the code (unless
    ``use_bundle`` is False), else trained now and cached.

    Returns (D, samples (64, 28, 28) uint8, final losses, source, seconds); source is
    "cache", "bundle" or "trained".
    """
    from xdd.storage import bundle
    from xdd.train.pretrain import pretrain_gan, sample_images

    t0 = time.perf_counter()
    pdir = store.pretrain_dir(pretrain_key(cfg))
    got = load_pretrained(cfg, device)
    if got is not None:
        progress("pretrain", cfg.pretrain.steps, cfg.pretrain.steps, {"reused": True})
        meta = store.read_json(pdir / "config.json")
        losses = meta.get("losses") if isinstance(meta, dict) else None
        return got[1], sample_images(got[0]), losses, "cache", time.perf_counter() - t0
    shipped = bundle.load(cfg, device) if use_bundle else None
    if shipped is not None:
        progress("pretrain", cfg.pretrain.steps, cfg.pretrain.steps,
                 {"reused": True, "source": "bundle"})
        D, samples, losses = shipped
        return D, samples, losses, "bundle", time.perf_counter() - t0
    G, D, last = pretrain_gan(cfg.pretrain, x_pre, device, progress)
    store.save_checkpoint(pdir / "checkpoint.pt", {
        "G": G.state_dict(), "D": D.state_dict(), "step": cfg.pretrain.steps,
        "code_version": CODE_VERSION, "losses": last,
    })
    store.atomic_write_json(pdir / "config.json", {
        "ood_digit": cfg.ood_digit, "data": to_dict(cfg.data), "pretrain": to_dict(cfg.pretrain),
        "code_version": CODE_VERSION, "losses": last,
        "checkpoint_sha256": store.sha256_file(pdir / "checkpoint.pt")})
    return D, sample_images(G), last, "trained", time.perf_counter() - t0


def side_threads(dev) -> int:
    """Threads for the scoring beside the retraining: the cores torch leaves free on a CPU
    (0 when it takes them all, at most 2), 2 beside a GPU."""
    import torch

    from xdd.core.device import usable_cores

    if dev.type != "cpu":
        return 2
    return max(0, min(2, usable_cores() - torch.get_num_threads()))


def side_by_side(dev) -> bool:
    """Whether a run's scoring threads may run beside its retraining: on a GPU, or on a CPU
    whose torch leaves one of the usable cores free."""
    return side_threads(dev) > 0


class _InThisThread:
    """An executor that runs each task when it is submitted, in the calling thread; an error
    (a cancelled job's among them) is raised there at once."""

    def submit(self, fn, *args, **kwargs) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args, **kwargs))
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def run_experiment(cfg: RunConfig, device: str = "auto", progress: Progress | None = None,
                   force: bool = False) -> dict[str, Any]:
    """Run (or load from the cache) one configuration; returns its results dict.  ``force``
    recomputes the run and does not take its GAN from the bundle shipped with the code (a GAN
    this machine pretrained and cached itself is still reused).

    numpy's and scikit-learn's BLAS / OpenMP pools run at torch's thread count meanwhile: by
    default they take every core, and beside the run's scoring threads their spinning
    workers oversubscribe a small CPU (the worker, the CLI and sweeps alike).  On a CPU, torch
    runs its deterministic algorithms (xdd.core.device.reproducible): the same config gives the same
    numbers at any thread count however busy the machine is."""
    import torch
    from threadpoolctl import threadpool_limits

    from xdd.core.device import reproducible

    with threadpool_limits(limits=torch.get_num_threads()), reproducible(device):
        return _run_experiment(cfg, device, progress, force)


def _run_experiment(cfg: RunConfig, device: str, progress: Progress | None,
                    force: bool) -> dict[str, Any]:
    import torch

    from xdd.core.device import describe, resolve_device
    from xdd.core.metrics import all_metrics
    from xdd.core.models import weights_digest
    from xdd.core.projection import project, subsample
    from xdd.train.retrain import embed_all, max_softmax_score, retrain
    from xdd.core.scoring import FeatureReducer, KDEScorer, KNNScorer, PixelKDE, PyodKNN, l2_normalize

    progress = progress or _noop
    key = run_key(cfg)
    if not force:
        hit = cached_results(cfg)  # a run whose maps never came (a killed worker) is redone
        if hit is not None:
            return hit
    dev = resolve_device(device)
    started = time.time()
    t_all = time.perf_counter()
    timings: dict[str, float] = {}

    progress("data", 0, 1, {})
    t0 = time.perf_counter()
    data = load_mnist(cfg.data.root)
    splits = make_splits(cfg, data)  # raises ConfigError for too many shots
    x_lab_u8 = data.x_train[splits.labeled]
    y_lab = data.y_train[splits.labeled]
    x_eval, y_eval = eval_arrays(data, cfg.data.eval_split)
    x_test_u8 = x_eval[splits.test]
    y_test = y_eval[splits.test]
    is_ood = (y_test == cfg.ood_digit).astype(np.int8)
    in_classes = [k for k in range(10) if k != cfg.ood_digit]
    remap = {d: i for i, d in enumerate(in_classes)}
    y_lab_idx = torch.tensor([remap[int(v)] for v in y_lab], dtype=torch.long, device=dev)
    x_lab = to_tensor(x_lab_u8).to(dev)
    x_test = to_tensor(x_test_u8)
    timings["data"] = time.perf_counter() - t0
    progress("data", 1, 1, {})

    with store.RunWriter(key) as writer:
        need_gan = any(m != "pixels" for m in cfg.methods)
        D = None
        source = None
        gan_losses = None
        if need_gan:
            D, samples, gan_losses, source, timings["pretrain"] = ensure_pretrained(
                cfg, to_tensor(data.x_train[splits.pretrain]), dev, progress,
                use_bundle=not force)
            # What G draws and how the game ended: a GAN whose D won outright (loss ~0) gives
            # the features of a noise detector, and the Results page says so.
            writer.npz("gan_samples.npz", images=samples)

        refs = cfg.score.references
        sc = cfg.score
        # scores[ref][method] / metrics[ref][method]; "labeled" is the paper's protocol.
        scores: dict[str, dict[str, np.ndarray]] = {r: {} for r in refs}
        metrics: dict[str, dict[str, dict[str, float]]] = {r: {} for r in refs}
        # "before"/"xdd" -> (projected test subsample, labeled), normalised as scored
        embeddings: dict[str, tuple[np.ndarray, np.ndarray]] = {}

        sub = (subsample(len(y_test), cfg.projection.n_samples, cfg.projection.seed)
               if cfg.projection.methods else np.arange(0))
        # The unlabeled reference: the GAN's own pretraining images (training set, label !=
        # OOD digit; in "val" mode from the first 50k only), never a test image.
        ref_index = reference_indices(cfg, splits)
        fit_rows = pca_fit_rows(cfg, len(ref_index))
        ref_memo: dict[str, tuple] = {}  # "before" -> (reducer, reference features), shared
        reference_loaded: list[str] = []  # the networks whose reference came from disk

        def prep(z: torch.Tensor) -> np.ndarray:
            z = z.numpy().astype(np.float64)  # (N, d); the float32 copy is freed on return
            return l2_normalize(z, inplace=True) if cfg.score.normalize else z

        def record(ref: str, name: str, s: np.ndarray, **extra) -> None:
            scores[ref][name] = s
            metrics[ref][name] = dict(all_metrics(is_ood, s), **extra)

        def reference_features_of(name: str, model) -> tuple:
            """(reducer, (n_ref, k) float32 features of the unlabeled reference).  The
            pretrained D's come from disk when an earlier run of its GAN and seed kept them."""
            if name not in ref_memo:
                t = time.perf_counter()
                keep = name == "before"  # the retrained networks are new to every run
                network = weights_digest(model) if keep else ""
                got = load_cached(cfg, ref_index, network) if keep else None
                if got is None:
                    got = reference_features(
                        lambda u8: embed_all(model, to_tensor(u8)).numpy(), data.x_train,
                        ref_index, fit_rows, FeatureReducer(sc.knn_pca, sc.normalize,
                                                            seed=cfg.seed), batch=SCORE_BATCH)
                    if keep:
                        save_cached(cfg, *got, ref_index, network)
                else:
                    reference_loaded.append(name)
                ref_memo[name] = got
                timings[f"reference:{name}"] = time.perf_counter() - t
            return ref_memo[name]

        def unlabeled_scorer(feats: np.ndarray):
            if sc.unlabeled_scorer == "kde":
                return KDEScorer(sc.bandwidth, loo_sample=2048, seed=cfg.seed).fit(feats)
            return KNNScorer(sc.knn_k, sc.knn_backend).fit(feats)

        def embedding_scores(name: str, model, report: bool = True) -> None:
            t = time.perf_counter()
            if report:
                progress("score", 0, 1, {"method": name})
            z_lab = prep(embed_all(model, x_lab))
            kde = KDEScorer(cfg.score.bandwidth).fit(z_lab) if "labeled" in refs else None
            uns = None
            if "unlabeled" in refs:
                red, feats = reference_features_of(name, model)
                uns = unlabeled_scorer(feats)
            # The test set is embedded and scored a batch at a time, so the 10,000 x d float64
            # embedding never exists whole; only the rows that are projected are kept.
            keep = BY_NAME[name].projected and len(sub) > 0
            z_sub = np.empty((len(sub), z_lab.shape[1])) if keep else None  # (M, d)
            lab_parts, unl_parts = [], []
            for i in range(0, len(x_test), SCORE_BATCH):
                z_raw = embed_all(model, x_test[i:i + SCORE_BATCH])  # (<= SCORE_BATCH, d)
                if uns is not None:
                    unl_parts.append(uns.score(red.transform(z_raw.numpy())))
                z = prep(z_raw)
                del z_raw
                if kde is not None:
                    lab_parts.append(kde.score(z))
                if keep:
                    here = (sub >= i) & (sub < i + len(z))
                    z_sub[here] = z[sub[here] - i]
            if kde is not None:
                record("labeled", name, np.concatenate(lab_parts), bandwidth=kde.bandwidth_)
            if uns is not None:
                record("unlabeled", name, np.concatenate(unl_parts),
                       **({"bandwidth": uns.bandwidth_} if sc.unlabeled_scorer == "kde" else {}))
            if keep:
                embeddings[name] = (z_sub, z_lab)
            timings[f"score:{name}"] = time.perf_counter() - t

        def run_method(method: str) -> None:
            """Retrain (if the method does) and score one method under every reference."""
            if method == "before":
                embedding_scores("before", D)
            elif method == "pyod":
                t = time.perf_counter()
                if "unlabeled" in refs:
                    red, feats = reference_features_of("before", D)
                    det = PyodKNN().fit(feats)
                    record("unlabeled", "pyod", np.concatenate([
                        det.score(red.transform(embed_all(D, x_test[i:i + SCORE_BATCH]).numpy()))
                        for i in range(0, len(x_test), SCORE_BATCH)]))
                timings["score:pyod"] = time.perf_counter() - t
            else:
                t = time.perf_counter()
                torch.manual_seed(cfg.seed)
                x_unl = (to_tensor(data.x_train[ref_index[fit_rows]]).to(dev)
                         if cfg.retrain.anchor_weight > 0 else None)
                out = retrain(D, cfg.retrain, x_lab, y_lab_idx, method, cfg.seed, progress,
                              x_unlabeled=x_unl)
                del x_unl
                timings[f"retrain:{method}"] = time.perf_counter() - t
                if method == "softmax":
                    if "labeled" in refs:
                        record("labeled", "softmax",
                               max_softmax_score(out.D, out.head, x_test).double().numpy())
                else:
                    embedding_scores(method, out.D)
                if method == "xdd":
                    store.save_checkpoint(writer.path("checkpoint.pt"), {
                        "D": out.D.state_dict(), "step": cfg.retrain.steps,
                        "code_version": CODE_VERSION})
                del out

        def pixel_scores() -> tuple[dict[str, tuple], float]:
            """The raw-pixel baseline under each reference: {ref: (scores, extra)}, seconds."""
            t = time.perf_counter()
            out = {}
            if "labeled" in refs:
                pk = PixelKDE(cfg.score.pixel_pca, cfg.score.bandwidth).fit(x_lab_u8 / 255.0)
                out["labeled"] = (pk.score(x_test_u8 / 255.0), {"bandwidth": pk.kde_.bandwidth_})
            if "unlabeled" in refs:
                # Raw pixels in [0, 1], not normalised: distances between images as such.
                red, feats = reference_features(
                    lambda u8: u8.reshape(len(u8), -1) / 255.0, data.x_train, ref_index,
                    fit_rows, FeatureReducer(sc.pixel_knn_pca, normalize=False, seed=cfg.seed),
                    batch=SCORE_BATCH)
                uns = unlabeled_scorer(feats)
                out["unlabeled"] = (np.concatenate([
                    uns.score(red.transform(x_test_u8[i:i + SCORE_BATCH] / 255.0))
                    for i in range(0, len(x_test_u8), SCORE_BATCH)]), {})
            return out, time.perf_counter() - t

        # Work that needs no retrained network runs in threads beside the retraining (torch,
        # numpy and scikit-learn release the GIL in their kernels; the pretrained D is only
        # read, retrain() trains a copy): the raw-pixel baseline, and the pretrained D's scores
        # when a retraining follows.  Their scores are recorded like the others'; the job's
        # progress reports come from this thread only.  Only where the retraining leaves a
        # core free (the worker's one thread on a CPU, or a GPU): with torch on every core, as
        # the CLI runs, the extra threads only competed for the cores (a quick run's process
        # took 85 s and 150 s of CPU side by side, 81 s and 135 s one after the other).  As
        # many side threads as torch leaves cores free (at most 2): on the worker's 2-core
        # machine one, which runs the pixel baseline and then the pretrained D's scores (two
        # threads there starved the retraining: the demo's job took 74.8 s, 55.9 s with one).
        n_side = side_threads(dev)
        beside = n_side > 0
        pool = ThreadPoolExecutor(n_side, thread_name_prefix="score") if beside \
            else _InThisThread()
        futures = {}
        if "pixels" in cfg.methods:
            futures["pixels"] = pool.submit(pixel_scores)
        try:
            for i, method in enumerate(cfg.methods):
                if method == "pixels":
                    continue
                if method == "before" and any(BY_NAME[m].retrains for m in cfg.methods[i + 1:]):
                    futures["before"] = pool.submit(embedding_scores, "before", D, not beside)
                    continue
                if method == "pyod" and "before" in futures:  # it reuses before's reference
                    futures.pop("before").result()
                run_method(method)
            if "before" in futures:
                futures.pop("before").result()
            if "pixels" in futures:
                pix, timings["score:pixels"] = futures.pop("pixels").result()
                for ref, (s_pix, extra) in pix.items():
                    record(ref, "pixels", s_pix, **extra)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        ref_memo.clear()

        writer.npz("scores.npz", test_index=splits.test, label=y_test, is_ood=is_ood,
                   labeled_index=splits.labeled, labeled_label=y_lab,
                   reference_index=ref_index.astype(np.int32),
                   **{score_key(r, m): s for r in refs for m, s in scores[r].items()})

        writer.json("config.json", to_dict(cfg))
        results = {
            "run_key": key, "pretrain_key": pretrain_key(cfg) if need_gan else None,
            "code_version": CODE_VERSION, "config": to_dict(cfg), "preset": cfg.preset,
            # what makes this run a variant of its preset, as the preset stands today
            "variant": variant(to_dict(cfg)),
            "ood_digit": cfg.ood_digit, "shots": cfg.shots, "seed": cfg.seed,
            "device": describe(dev), "pretrain_reused": source in ("cache", "bundle"),
            "pretrain_source": source, "pretrain_losses": gan_losses,
            "started": started, "wall_time_s": time.perf_counter() - t_all,
            "timings": timings, "eval_split": cfg.data.eval_split,
            "n_test": int(len(y_test)), "n_ood": int(is_ood.sum()),
            "base_rate": float(is_ood.mean()), "n_labeled": int(len(y_lab)),
            "n_reference": int(len(ref_index)) if "unlabeled" in refs else 0,
            # its score:<name> timing then left out the reference's embedding (xdd.estimate.model)
            "reference_loaded": reference_loaded,
            "auprc_variant": "average precision (sklearn average_precision_score), OOD = positive",
            # The paper's protocol under "methods" (what every older reader expects), and
            # every reference, each scored from the same retrained networks.
            "methods": metrics.get("labeled", {}),
            "references": metrics,
            "reference_info": reference_info(cfg, len(splits.labeled), len(ref_index)),
        }
        do_maps = bool(len(sub) and cfg.projection.methods and embeddings)
        if do_maps:
            # The scores are complete: commit them now so the Results page shows the bars
            # while the maps are computed; the second step below adds projections.npz.
            results["projections_pending"] = True
        results = writer.commit(results)


    if not do_maps:
        return results
    # Projections: the same seeded subsample of test points for every embedding, with the
    # labeled examples appended (rows M.. of each array).  A failure or a cancel here removes
    # the committed run again: the cache never keeps a run that stopped half-way.
    try:
        proj: dict[str, np.ndarray] = dict(index=splits.test[sub], label=y_test[sub],
                                           labeled_label=y_lab)
        # The maps run after the scores: on a CPU they take the cores the scoring held (torch's
        # and the side threads'), so the worker's one torch thread does not leave a core idle.
        n_proj = torch.get_num_threads() + (n_side if dev.type == "cpu" else 0)
        for emb_name, (z_sub, z_lab) in embeddings.items():
            z = np.concatenate([z_sub, z_lab])
            for pm in cfg.projection.methods:
                t = time.perf_counter()
                progress(f"project:{pm}", 0, 1, {"embedding": emb_name})
                proj[f"{emb_name}_{pm}"] = project(z, pm, cfg.projection.seed, n_proj)
                timings[f"project:{emb_name}:{pm}"] = time.perf_counter() - t
                progress(f"project:{pm}", 1, 1, {"embedding": emb_name})
        scored_s = results["wall_time_s"]
        updates = {"timings": timings, "wall_time_s": time.perf_counter() - t_all,
                   "scores_s": scored_s}
        return store.add_run_file(key, "projections.npz", proj, updates,
                                  drop=("projections_pending",))
    except BaseException:
        store.remove_run(key)
        raise


def sweep_configs(base: RunConfig, digits, seeds, shots_list,
                  gan_seeds: Sequence[int] | None = None) -> list[RunConfig]:
    """digits x shots x seeds.  A repetition redraws the GAN too: its pretraining seed is the
    repetition seed, unless ``gan_seeds`` (one per seed) says otherwise.  Runs of the same GAN
    seed share one pretrained GAN across shot counts and methods."""
    seeds = list(seeds)
    gan = list(seeds) if gan_seeds is None else list(gan_seeds)
    if len(gan) != len(seeds):
        raise ValueError(f"{len(gan)} GAN seeds for {len(seeds)} repetitions")
    return [dataclasses.replace(base, ood_digit=d, seed=s, shots=k,
                                pretrain=dataclasses.replace(base.pretrain, seed=g))
            for d in digits for k in shots_list for s, g in zip(seeds, gan)]
