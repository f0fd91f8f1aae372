"""Rebuilding a finished run for probing (:func:`load`): its networks, its fitted scorers and its
maps' embeddings, read and verified, nothing trained or written; see :mod:`xdd.probe.prober`
for what is rebuilt from what."""
from __future__ import annotations

from typing import Any

import numpy as np

from xdd.core.config import ConfigError, RunConfig, from_dict
from xdd.core.methods import AFTER, BEFORE, REFERENCES
from xdd.pipeline.reference import REFERENCE_FILE
from xdd.probe.prober import (CHECKPOINT, MAP_K, N_NEIGHBOURS, SIDES, Prober, ProbeUnavailable,
                              Side, one_thread, why_not)
from xdd.storage import store


def _pretrained(cfg: RunConfig):
    """The pretrained D the run scored: this machine's GAN cache, else the shipped bundle."""
    from xdd.pipeline.gan import load_pretrained
    from xdd.storage import bundle

    got = load_pretrained(cfg, "cpu")
    if got is not None:
        return got[1]
    shipped = bundle.load(cfg, "cpu")
    return None if shipped is None else shipped[0]


def _retrained(key: str, cfg: RunConfig) -> tuple[Any, dict]:
    """The run's retrained D and its objective's tensors (checkpoint.pt, hash verified)."""
    from xdd.core.models import Discriminator

    path = store.run_dir(key) / CHECKPOINT
    state = store.load_checkpoint(path)
    if state is None or "D" not in state:
        raise ProbeUnavailable("its retrained network (checkpoint.pt) cannot be read")
    objective = state.get("objective") or {}
    if not all(k in objective for k in ("centers", "log_sigma")):
        raise ProbeUnavailable(
            "it was computed before runs kept the retrained network's class centres (its "
            "checkpoint has no objective): the class posterior cannot be computed; a run "
            "computed now keeps them")
    D = Discriminator(cfg.pretrain.d_width)
    try:
        D.load_state_dict(state["D"])
    except RuntimeError:
        raise ProbeUnavailable("its retrained network does not fit its config's "
                               "discriminator") from None
    return D.eval(), {k: v.detach().float().cpu() for k, v in objective.items()}


def _pretrained_reference(cfg: RunConfig, D, images: np.ndarray, ref_index: np.ndarray):
    """The pretrained D's unlabeled-reference features, computed as the run's ReferenceStore
    computes them (the same images, PCA rows, seed and batches), kept in memory only.

    A run keeps them beside its GAN when it computes them; one that read the pretrained D's
    unlabeled scores from an earlier run or from the shipped ones (xdd.pipeline.reuse) never
    computed them.  The same code on the same inputs: equal to the bit in the tests, but a
    PCA computed in another process need not round as the run's did, so
    :func:`_check_reference` measures how closely they reproduce the run's stored scores.
    ~54,000 images embedded: seconds, once per run and server process."""
    from xdd.core.scoring import FeatureReducer
    from xdd.pipeline.reference import SCORE_BATCH, pca_fit_rows, reference_features
    from xdd.storage.data import to_tensor
    from xdd.train.retrain import embed_all

    sc = cfg.score
    return reference_features(
        lambda u8: embed_all(D, to_tensor(u8)).numpy(), images, ref_index,
        pca_fit_rows(cfg, len(ref_index)), FeatureReducer(sc.knn_pca, sc.normalize, seed=cfg.seed),
        batch=SCORE_BATCH)


def _check_reference(pr: Prober, D, reducer, scorer, n: int = 64) -> float:
    """How far the run's first ``n`` test images, scored on recomputed reference features,
    lie from the unlabeled scores the run stored for them: the largest relative difference.

    The features depend on the BLAS's rounding when the run computed them (its PCA's SVD),
    which a run does not record; where this is not 0 the probe's scores of the pretrained D
    under the unlabeled reference differ from the run's in their last digits, and the page
    says so."""
    from xdd.report.tables import run_scores

    rows = np.arange(min(n, len(pr.scores["test_index"])))
    raw = _embed_rows(D, pr.eval_images[np.asarray(pr.scores["test_index"])[rows]])
    got = scorer.score(reducer.transform(raw))
    want = np.asarray(run_scores(pr.scores, "unlabeled", BEFORE))[rows]
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-300)))


def _after_reference(key: str):
    """(reducer, features) of the retrained network's unlabeled reference (reference_after.npz)."""
    from xdd.core.scoring import FeatureReducer

    arrays = store.load_npz(key, REFERENCE_FILE)
    if arrays is None:
        raise ProbeUnavailable(f"its {REFERENCE_FILE} is missing")
    try:
        reducer = FeatureReducer.from_state(
            {k[len("reducer_"):]: v for k, v in arrays.items() if k.startswith("reducer_")})
        return reducer, arrays["feats"]
    except (KeyError, ValueError) as exc:
        raise ProbeUnavailable(f"its {REFERENCE_FILE} cannot be read: {exc}") from None


def _embed_rows(D, x_u8: np.ndarray) -> np.ndarray:
    """embed_all of uint8 images, as the run called it: (N, d) float32 numpy.  A last batch
    of one image would round differently (see the module docstring): it goes with the image
    before it."""
    from xdd.storage.data import to_tensor
    from xdd.train.retrain import EMBED_BATCH, embed_all

    x = to_tensor(x_u8)
    if len(x) % EMBED_BATCH["cpu"] != 1 or len(x) == 1:
        return embed_all(D, x).numpy()
    head = embed_all(D, x[:-2]).numpy()
    return np.concatenate([head, embed_all(D, x[-2:]).numpy()])


def load(key: str) -> Prober:
    """Rebuild a finished run for probing; raises ProbeUnavailable saying why it cannot be.
    Reads only: nothing is written anywhere (the run's files are verified by their hashes
    first, the GAN's and the reference's by theirs).  Runs at one thread (:func:`one_thread`)."""
    with one_thread():
        return _load(key)


def _load(key: str) -> Prober:
    pr, data, x_lab = _read_run(key)
    D_before = _pretrained(pr.cfg)
    if D_before is None:
        raise ProbeUnavailable("its pretrained GAN is neither in this machine's cache nor "
                               "among the shipped ones")
    D_after, pr.objective = _retrained(key, pr.cfg)
    if pr.objective["centers"].shape[0] != len(pr.digits):
        raise ProbeUnavailable("its class centres do not match its nine in-distribution digits")
    map_rows = None
    if pr.proj is not None and "index" in pr.proj:
        map_rows = np.concatenate([pr.eval_images[np.asarray(pr.proj["index"], np.int64)], x_lab])
    for name, D in ((BEFORE, D_before), (AFTER, D_after)):
        side = _side(pr, name, D, data, x_lab)
        if map_rows is not None:
            _maps(pr, side, _embed_rows(D, map_rows))
        pr.sides[name] = side
    # One probe now, so that a visitor's first is as quick as the next: the convolutions'
    # kernels, the searches and the lazy imports are set up here, not after their stroke.
    pr._probe(np.zeros((28, 28), np.uint8))
    return pr


def _read_run(key: str):
    """(Prober with the run's files read, MNIST, the labeled images): what both sides share."""
    from xdd.report.tables import run_metrics, run_scores
    from xdd.storage.data import eval_arrays, load_mnist

    res = store.load_results(key)
    if res is None:
        raise ProbeUnavailable("its files are missing or failed their integrity check")
    reason = why_not(res)
    if reason:
        raise ProbeUnavailable(reason)
    try:
        cfg = from_dict(res.get("config") or {})
    except (ConfigError, TypeError) as exc:
        raise ProbeUnavailable(f"its config cannot be read by this version of the code: "
                               f"{exc}") from None
    pr = Prober(key, res, cfg)
    scores = store.load_npz(key, "scores.npz")
    if scores is None:
        raise ProbeUnavailable("its scores.npz is missing")
    pr.scores = scores
    pr.proj = None if res.get("projections_pending") else store.load_npz(key, "projections.npz")
    metrics = run_metrics(res)
    refs = tuple(r for r in REFERENCES if r in cfg.score.references
                 and all(run_scores(scores, r, m) is not None for m in SIDES))
    if not refs:
        raise ProbeUnavailable("it kept no per-image scores of both networks")
    pr.references = refs
    pr.auprc = {r: {m: float(metrics.get(r, {}).get(m, {}).get("auprc", float("nan")))
                    for m in SIDES} for r in refs}
    try:
        data = load_mnist(cfg.data.root)
    except (ConfigError, OSError, ValueError) as exc:
        raise ProbeUnavailable(f"its MNIST images cannot be loaded: {exc}") from None
    pr.train_images, pr.train_labels = data.x_train, data.y_train
    pr.eval_images = eval_arrays(data, cfg.data.eval_split)[0]
    pr.ref_index = np.asarray(scores["reference_index"], dtype=np.int64)
    x_lab = data.x_train[np.asarray(scores["labeled_index"], dtype=np.int64)]
    pr.metrics = metrics
    return pr, data, x_lab


def _side(pr: Prober, name: str, D, data, x_lab: np.ndarray) -> Side:
    """One network's side: its scorers under each reference, fitted as the run fitted them."""
    from sklearn.neighbors import NearestNeighbors

    from xdd.core.models import weights_digest
    from xdd.core.scoring import KDEScorer
    from xdd.pipeline.reference import load_cached
    from xdd.pipeline.scorers import unlabeled_scorer
    from xdd.report.tables import run_scores

    cfg, refs, metrics, key = pr.cfg, pr.references, pr.metrics, pr.key
    ordinary = np.asarray(pr.scores["is_ood"]) == 0
    kde = reducer = uns = nn = None
    if "labeled" in refs:
        bw = metrics.get("labeled", {}).get(name, {}).get("bandwidth", cfg.score.bandwidth)
        kde = KDEScorer(bw).fit(pr.prep(_embed_rows(D, x_lab)))
    if "unlabeled" in refs:
        if name == BEFORE:
            got = load_cached(cfg, pr.ref_index, weights_digest(D))
            if got is None:
                got = _pretrained_reference(cfg, D, data.x_train, pr.ref_index)
                pr.recomputed = True
            reducer, feats = got
        else:
            reducer, feats = _after_reference(key)
        if len(feats) != len(pr.ref_index):
            raise ProbeUnavailable("its reference features do not match its reference")
        uns = unlabeled_scorer(cfg, feats)
        if name == BEFORE and pr.recomputed:
            pr.recomputed_error = _check_reference(pr, D, reducer, uns)
        nn = NearestNeighbors(n_neighbors=min(N_NEIGHBOURS, len(feats)),
                              algorithm="brute").fit(feats)
    ordinary_scores = {r: np.sort(np.asarray(run_scores(pr.scores, r, name))[ordinary])
                       for r in refs}
    return Side(name, D.fused_embed(), kde, reducer, uns, nn, ordinary_scores)


def _maps(pr: Prober, side: Side, raw: np.ndarray) -> None:
    """The side's maps: the points' embeddings as scored, the PCA map refitted on them as the
    run fitted it (xdd.core.projection.project: float32, PCA(2, random_state=projection.seed)),
    and how far the refit lies from the stored map."""
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    side.map_z = pr.prep(raw).astype(np.float32)  # (M + L, d)
    side.maps = {p: pr.proj[f"{side.method}_{p}"] for p in pr.projections}
    if "pca" in side.maps and len(side.map_z) >= 3:
        side.pca = PCA(n_components=2, random_state=pr.cfg.projection.seed)
        refit = side.pca.fit_transform(side.map_z)
        stored = side.maps["pca"]
        extent = float(np.ptp(stored, axis=0).max()) or 1.0
        side.pca_error = float(np.abs(refit - stored).max()) / extent
    side.map_nn = NearestNeighbors(n_neighbors=min(MAP_K, len(side.map_z)),
                                   algorithm="brute").fit(side.map_z)


def kept_bytes(key: str) -> dict[str, int]:
    """What a run keeps for probing, in bytes: its checkpoint and reference_after.npz, and the
    pretrained D's reference features beside its GAN (shared by the runs of that GAN)."""
    from xdd.pipeline.reference import cached_path

    out = {}
    d = store.run_dir(key)
    for name in (CHECKPOINT, REFERENCE_FILE):
        p = d / name
        out[name] = p.stat().st_size if p.is_file() else 0
    res = store.read_json(d / "results.json") or {}
    try:
        p = cached_path(from_dict(res.get("config") or {}))
        out["pretrained reference (beside the GAN)"] = p.stat().st_size if p.is_file() else 0
    except (ConfigError, TypeError, OSError):
        pass
    return out
