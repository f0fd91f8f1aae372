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
  (:func:`xdd.pipeline.reference.load_cached`, checked against D's weights digest) or, when
  the run reused the pretrained D's scores and so never computed them, computed here once in
  memory as the run would have (and checked against the run's stored scores, see
  :attr:`Prober.recomputed_error`); the retrained D's, kept in the run's reference_after.npz;
  each with the PCA that made them;
- **maps**: the maps' input rows (the projected test subsample, then the labeled images)
  embedded again; the PCA map is refitted on them exactly as the run fitted it, and
  :attr:`Side.pca_error` says how closely the refit reproduces the stored map.

A probe is embedded in a batch of two (itself twice): on the CPU a batch of one takes another
convolution path whose float32 rounding differs in the last bits, while every batch of two or more
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xdd.core.config import PROJECTIONS, RunConfig
from xdd.core.methods import AFTER, BEFORE
from xdd.core.terms import SPHERE_MODES
from xdd.pipeline.reference import REFERENCE_FILE

N_NEIGHBOURS = 8  # nearest unlabeled-reference images shown per network
MAP_K = 5  # map points averaged to place a probe on a t-SNE / UMAP map
PCA_TOLERANCE = 1e-3  # refit vs stored PCA map, as a fraction of the map's extent
# A probe's embedding is scored as this many copies of itself: OpenBLAS rounds a matrix
# product of fewer rows than its kernels' unroll differently from the run's 2,048-row
# batches; from 16 rows on they were the run's bits on the kernels tried, and 32 leaves room
# (tests/test_probe.py checks the bits on the machine it runs on).
PAD_ROWS = 32
CHECKPOINT = "checkpoint.pt"
SIDES = (BEFORE, AFTER)


_CONTROLLER = None  # threadpoolctl's view of the BLAS / OpenMP libraries, made once


@contextmanager
def one_thread():
    """torch, BLAS and OpenMP at one thread meanwhile (torch's count given back after).

    A probe is a few tiny products: on a small machine a second thread costs more than it
    brings (every call then waits on the thread pools' barrier, which takes longer than the
    product itself, and far longer beside a busy worker; bench/app/probe.py measures it).
    One thread also matches the worker's rounding (it scores at one thread on a 2-core
    machine).  torch's count is process-wide: a page computing at the
    same moment in another session runs at one thread until this returns."""
    import torch
    from threadpoolctl import ThreadpoolController

    global _CONTROLLER
    if _CONTROLLER is None:
        import scipy.special  # noqa: F401  (every library probing uses is loaded first:
        import sklearn.neighbors  # noqa: F401  threadpoolctl only sees the loaded ones)

        _CONTROLLER = ThreadpoolController()
    n = torch.get_num_threads()
    if n != 1:
        torch.set_num_threads(1)
    try:
        with _CONTROLLER.limit(limits=1):
            yield
    finally:
        if n != 1:
            torch.set_num_threads(n)


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
        self.metrics: dict[str, dict[str, dict]] = {}  # results.json's, by reference and method
        # the pretrained D's reference features were not on disk and were computed by load();
        # then: the largest relative difference of the run's first test images' unlabeled
        # scores, so computed, from the scores the run stored (0.0: the same bits)
        self.recomputed = False
        self.recomputed_error: float | None = None

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
        with one_thread():
            return self._probe(x_u8)

    def _probe(self, x_u8: np.ndarray) -> ProbeResult:
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
