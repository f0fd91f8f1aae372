"""One finished run, rebuilt for probing: its networks before and after XDD, its fitted scorers
under both references, its maps' embeddings; :meth:`Prober.probe` scores a new 28 x 28 image
exactly as the run scored its test images.

What is rebuilt, and from what (nothing is trained or re-estimated):

- **networks**: the pretrained D (BEFORE) from this machine's GAN cache, else from the shipped
  bundle, as the run itself got it (:func:`xdd.pipeline.gan.load_pretrained`,
  :func:`xdd.storage.bundle.load`); the retrained D (AFTER) from the run's checkpoint.pt, whose
  ``objective`` holds the trained MCDD class centres, deviations and biases;
- **labeled reference**: a ``KDEScorer`` with the bandwidth the run recorded, fitted on the
  labeled images' embeddings, normalised as scored (float64, L2 when ``score.normalize``);
- **unlabeled reference**: the run's scorer (:func:`xdd.pipeline.scorers.unlabeled_scorer`) on
  the reference features the run searched: the pretrained D's, kept beside its GAN
  (:func:`xdd.pipeline.reference.load_cached`, checked against D's weights digest), and the
  retrained D's, kept in the run's reference_after.npz, each with the PCA that made them;
- **maps**: the maps' input rows (the projected test subsample, then the labeled images)
  embedded again; the PCA map is refitted on them exactly as the run fitted it, and
  :attr:`Side.pca_error` says how closely the refit reproduces the stored map.

A probe is embedded in a batch of two (itself twice): on the CPU a batch of one takes another
convolution path whose float32 rounding differs (by ~4e-6), while every batch of two or more
gives the bits the run's batches gave.  Its embedding is then scored as :data:`PAD_ROWS` copies
of itself, for the same reason in the BLAS products of the KDE and the reference's PCA.  So a
test image probed here gets the very score the run stored for it (at the run's thread count).

On the t-SNE and UMAP maps a new point has no exact place (neither method has a transform that
the run kept); it is put at the mean map position of its :data:`MAP_K` nearest map points in the
embedding (Euclidean, normalised as scored) — an approximation the page states.

torch is imported inside the functions: importing this module loads numpy only.
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xdd.core.config import PROJECTIONS, ConfigError, RunConfig, from_dict
from xdd.core.methods import AFTER, BEFORE, REFERENCES
from xdd.core.terms import SPHERE_MODES
from xdd.pipeline.reference import REFERENCE_FILE
from xdd.storage import store

N_NEIGHBOURS = 8  # nearest unlabeled-reference images shown per network
MAP_K = 5  # map points averaged to place a probe on a t-SNE / UMAP map
PCA_TOLERANCE = 1e-3  # refit vs stored PCA map, as a fraction of the map's extent
# A probe's embedding is scored as this many copies of itself: OpenBLAS rounds a matrix
# product of fewer rows than its kernel's unroll (8 for float64, 16 for float32 here)
# differently from the run's 2,048-row batches; with 32 rows the scores are the run's bits.
PAD_ROWS = 32
CHECKPOINT = "checkpoint.pt"
SIDES = (BEFORE, AFTER)


class ProbeUnavailable(Exception):
    """A run that cannot be probed; the message says why, in one or two sentences."""


def why_not(res: dict[str, Any]) -> str | None:
    """Why a run (its results.json) cannot be probed, from what it lists; None when it can.
    Cheap: reads nothing but the dict."""
    cfg = res.get("config") or {}
    methods = cfg.get("methods") or list(res.get("methods") or {})
    if BEFORE not in methods or AFTER not in methods:
        return "it did not score both the pretrained and the XDD-retrained network"
    files = res.get("files") or {}
    refs = (cfg.get("score") or {}).get("references") or ["labeled"]
    missing = [f for f in (CHECKPOINT,) + ((REFERENCE_FILE,) if "unlabeled" in refs else ())
               if f not in files]
    if missing:
        return ("it was computed before runs kept what a probe needs (the retrained network's "
                f"class centres and its unlabeled-reference features: {', '.join(missing)}); "
                "a run computed now keeps them")
    return None


def percentile(score: float, ordinary: np.ndarray) -> float:
    """The percentage of ``ordinary`` scores strictly below ``score`` (0-100): how many of the
    run's in-distribution test images the probe is more unusual than."""
    ordinary = np.asarray(ordinary)
    return 100.0 * float(np.count_nonzero(ordinary < score)) / max(1, len(ordinary))


def sentence(pct: float) -> str:
    """'more unusual than 97 % of ordinary test digits' (rounded down, so it never claims more
    than it is)."""
    if pct >= 100.0:
        return "more unusual than every ordinary test digit"
    return f"more unusual than {math.floor(pct)} % of ordinary test digits"


@dataclass
class Side:
    """One network (BEFORE or AFTER) as the run scored it."""
    method: str
    embed: Any  # D.fused_embed(): uint8-scaled (N, 1, 28, 28) -> (N, d) float32, as embed_all
    kde: Any  # KDEScorer on the labeled embeddings (None: not scored under "labeled")
    reducer: Any  # FeatureReducer of the unlabeled reference (None: not scored under it)
    unlabeled: Any  # the run's unlabeled scorer, fitted on feats
    neighbours: Any  # NearestNeighbors over the same features (the thumbnails)
    ordinary: dict[str, np.ndarray]  # reference -> the run's in-distribution test scores, sorted
    map_z: np.ndarray | None = None  # (M + L, d) float32, the maps' points as scored
    pca: Any = None  # the PCA map refitted on map_z
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # projection -> (M + L, 2)
    pca_error: float | None = None  # max |refit - stored| / extent of the stored PCA map
    map_nn: Any = None  # NearestNeighbors over map_z (t-SNE / UMAP placement)


@dataclass
class SideResult:
    method: str
    scores: dict[str, float]  # reference -> anomaly score
    percentiles: dict[str, float]  # reference -> % of ordinary test digits below it
    neighbours: np.ndarray  # (N_NEIGHBOURS,) training-set indices, nearest first
    distances: np.ndarray  # (N_NEIGHBOURS,) their distances in the reference's features
    places: dict[str, np.ndarray]  # projection -> (2,) map position


@dataclass
class ProbeResult:
    sides: dict[str, SideResult]  # BEFORE, AFTER
    posterior: np.ndarray  # (K,) MCDD class posterior after retraining
    digits: tuple[int, ...]  # the K in-distribution digits the posterior is over


class Prober:
    """A finished run's networks and fitted scorers (see the module docstring).  Build it with
    :func:`load`; :meth:`probe` is cheap and safe from several threads at once."""

    def __init__(self, key: str, res: dict[str, Any], cfg: RunConfig) -> None:
        self.key, self.res, self.cfg = key, res, cfg
        self.sides: dict[str, Side] = {}
        self.references: tuple[str, ...] = ()
        self.digits = tuple(d for d in range(10) if d != cfg.ood_digit)
        self.objective: dict[str, Any] = {}
        self.train_images: np.ndarray | None = None  # MNIST training images (thumbnails)
        self.train_labels: np.ndarray | None = None
        self.eval_images: np.ndarray | None = None  # the run's evaluation set
        self.ref_index: np.ndarray = np.empty(0, np.int64)  # training indices of the reference
        self.scores: dict[str, np.ndarray] = {}  # scores.npz
        self.proj: dict[str, np.ndarray] | None = None  # projections.npz (None: no maps)
        self.auprc: dict[str, dict[str, float]] = {}  # reference -> method -> AUPRC

    @property
    def ood_digit(self) -> int:
        return self.cfg.ood_digit

    @property
    def projections(self) -> tuple[str, ...]:
        """The projections both networks have a map in, in PROJECTIONS order."""
        if not self.proj:
            return ()
        return tuple(p for p in PROJECTIONS
                     if all(f"{m}_{p}" in self.proj for m in SIDES))

    # ---------------------------------------------------------------- probing
    def embed(self, side: Side, x_u8: np.ndarray):
        """The raw embedding (1, d) float32 torch tensor of one (28, 28) uint8 image, computed
        in a batch of two (see the module docstring) with the run's own embedding function."""
        import torch

        from xdd.storage.data import to_tensor

        x = to_tensor(np.repeat(np.asarray(x_u8, dtype=np.uint8)[None], 2, axis=0))
        with torch.no_grad():
            return side.embed(x).float()[:1]

    def prep(self, z: np.ndarray) -> np.ndarray:
        """An embedding as scored: float64, L2-normalised when score.normalize (Run.prep)."""
        from xdd.core.scoring import l2_normalize

        z = np.asarray(z, dtype=np.float64)
        return l2_normalize(z) if self.cfg.score.normalize else z

    def probe(self, x_u8: np.ndarray) -> ProbeResult:
        """Score one (28, 28) uint8 image (white on black, as MNIST) under both references,
        before and after XDD, with its nearest training images, its class posterior after
        retraining and its place on the run's maps."""
        x_u8 = np.asarray(x_u8)
        if x_u8.shape != (28, 28) or x_u8.dtype != np.uint8:
            raise ValueError(f"a probe is a (28, 28) uint8 image, got {x_u8.shape} {x_u8.dtype}")
        out: dict[str, SideResult] = {}
        raw_after = None
        for name, side in self.sides.items():
            raw_t = self.embed(side, x_u8)
            if name == AFTER:
                raw_after = raw_t
            rows = np.repeat(raw_t.numpy(), PAD_ROWS, axis=0)  # (PAD_ROWS, d) float32
            z = self.prep(rows)  # as scored: float64, normalised
            scores: dict[str, float] = {}
            if side.kde is not None:
                scores["labeled"] = float(side.kde.score(z)[0])
            nb, dist = np.empty(0, np.int64), np.empty(0)
            if side.unlabeled is not None:
                feats = side.reducer.transform(rows)  # (PAD_ROWS, k) float32, as searched
                # a k-NN search rounds one row as it rounds many; a KDE is a product again
                knn = self.cfg.score.unlabeled_scorer != "kde"
                scores["unlabeled"] = float(side.unlabeled.score(feats[:1] if knn else feats)[0])
                d, i = side.neighbours.kneighbors(feats[:1])
                nb = self.ref_index[i[0]]
                dist = d[0].astype(np.float64)
            pct = {r: percentile(s, side.ordinary[r]) for r, s in scores.items()
                   if r in side.ordinary}
            out[name] = SideResult(name, scores, pct, nb, dist, self.place(side, z[:1]))
        return ProbeResult(out, self.posterior(raw_after), self.digits)

    def place(self, side: Side, z: np.ndarray) -> dict[str, np.ndarray]:
        """The probe's (x, y) on each of the run's maps of this network: the refitted PCA's
        transform; on t-SNE and UMAP the mean position of its MAP_K nearest map points."""
        places: dict[str, np.ndarray] = {}
        if side.map_z is None:
            return places
        zf = z.astype(np.float32)
        if side.pca is not None:
            places["pca"] = side.pca.transform(zf)[0].astype(np.float64)
        _, near = side.map_nn.kneighbors(zf)
        for p, xy in side.maps.items():
            if p != "pca":
                places[p] = xy[near[0]].astype(np.float64).mean(0)
        return places

    def posterior(self, raw) -> np.ndarray:
        """The MCDD class posterior after retraining: softmax over k of
        -||z - mu_k||^2 / (2 sigma_k^2) - d log sigma_k + b_k, with z the embedding as the loss
        saw it (on the unit sphere in the sphere and ratio pair modes).  (K,) float64"""
        import torch
        import torch.nn.functional as F

        from xdd.core.losses import mcdd_logits

        if raw is None or not self.objective:
            return np.full(len(self.digits), np.nan)
        z = raw.float()
        if self.cfg.retrain.pair_mode in SPHERE_MODES:
            z = F.normalize(z, dim=1)
        with torch.no_grad():
            logits = mcdd_logits(z, self.objective["centers"], self.objective["log_sigma"],
                                 self.objective.get("bias"))
            return torch.softmax(logits.double(), dim=1)[0].numpy()


# ---------------------------------------------------------------- building


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
    first, the GAN's and the reference's by theirs)."""
    from sklearn.neighbors import NearestNeighbors

    from xdd.core.models import weights_digest
    from xdd.core.scoring import KDEScorer
    from xdd.pipeline.reference import load_cached
    from xdd.pipeline.scorers import unlabeled_scorer
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
    ordinary = np.asarray(scores["is_ood"]) == 0

    D_before = _pretrained(cfg)
    if D_before is None:
        raise ProbeUnavailable("its pretrained GAN is neither in this machine's cache nor "
                               "among the shipped ones")
    D_after, pr.objective = _retrained(key, cfg)
    if pr.objective["centers"].shape[0] != len(pr.digits):
        raise ProbeUnavailable("its class centres do not match its nine in-distribution digits")
    map_rows = None
    if pr.proj is not None and "index" in pr.proj:
        map_rows = np.concatenate([pr.eval_images[np.asarray(pr.proj["index"], np.int64)], x_lab])
    for name, D in ((BEFORE, D_before), (AFTER, D_after)):
        kde = reducer = uns = nn = None
        if "labeled" in refs:
            bw = metrics.get("labeled", {}).get(name, {}).get("bandwidth", cfg.score.bandwidth)
            kde = KDEScorer(bw).fit(pr.prep(_embed_rows(D, x_lab)))
        if "unlabeled" in refs:
            if name == BEFORE:
                got = load_cached(cfg, pr.ref_index, weights_digest(D))
                if got is None:
                    raise ProbeUnavailable(
                        "the pretrained network's unlabeled-reference features are no longer "
                        "in this machine's GAN cache (or belong to another copy of the GAN), "
                        "so its unlabeled-reference scores cannot be reproduced")
                reducer, feats = got
            else:
                reducer, feats = _after_reference(key)
            if len(feats) != len(pr.ref_index):
                raise ProbeUnavailable("its reference features do not match its reference")
            uns = unlabeled_scorer(cfg, feats)
            nn = NearestNeighbors(n_neighbors=min(N_NEIGHBOURS, len(feats)),
                                  algorithm="brute").fit(feats)
        ordinary_scores = {r: np.sort(np.asarray(run_scores(scores, r, name))[ordinary])
                           for r in refs}
        side = Side(name, D.fused_embed(), kde, reducer, uns, nn, ordinary_scores)
        if map_rows is not None:
            _maps(pr, side, _embed_rows(D, map_rows))
        pr.sides[name] = side
    return pr


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
    except (ConfigError, TypeError, OSError, zipfile.BadZipFile):
        pass
    return out
