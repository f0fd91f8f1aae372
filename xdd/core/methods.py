"""The method table: every scoring method declared once, with its behaviour.

A row says everything the rest of the code needs to know about a method, so that no other
module tests a method's name:

- what it is called and how it is shown (``label``, ``short``, ``color``, ``help``) and its
  ``role`` (``before``: the pretrained network the paper starts from; ``after``: the paper's
  retrained network; ``baseline``: everything else);
- which network it scores (``network``: ``None`` for raw pixels, ``"pretrained"`` for the GAN's
  discriminator as pretrained, ``"retrained"`` for a copy retrained with ``objective``);
- its retraining ``objective`` (init and loss, :mod:`xdd.core.objectives`);
- its ``scorer``: the name of the scorer kind in :mod:`xdd.pipeline.scorers` that scores it
  under every reference in ``scored`` (reference -> what that reference computes, in words);
- whether its embedding is ``projected`` to 2-D (projections.npz).

A new method is one :func:`register` call (tests do this with a throw-away method); a new
kind of loss or scorer adds its class where the others live.

Scoring references (docs/DESIGN.md §2):

- ``labeled``: the paper's protocol, a Gaussian KDE over the embeddings of the labeled images.
- ``unlabeled``: the in-distribution training images the GAN was pretrained on, without their
  labels (never a test image, never an image of the OOD digit), scored by k-NN distance (or a
  KDE, ``score.unlabeled_scorer``).

This module imports only :mod:`xdd.core.objectives` (which imports torch lazily), so any
module may import it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from xdd.core.objectives import IB, SVDD, Objective, Softmax

REFERENCES = ("labeled", "unlabeled")
REFERENCE_LABELS = {
    "labeled": "labeled reference (the paper: KDE over the labeled embeddings)",
    "unlabeled": "unlabeled reference (k-NN to the unlabeled in-distribution training images)",
}
REFERENCE_SHORT = {"labeled": "labeled ref.", "unlabeled": "unlabeled ref."}
ROLES = ("before", "after", "baseline")
NETWORKS = (None, "pretrained", "retrained")


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # legend label
    short: str  # table / pill label
    color: str
    help: str  # one sentence for the Run page
    scorer: str  # the scorer kind (xdd.pipeline.scorers) that scores it
    scored: dict = field(default_factory=dict)  # reference -> how it is scored (absent: not)
    network: str | None = "retrained"  # which network it scores (NETWORKS)
    objective: Objective | None = None  # the retraining objective ("retrained" only)
    projected: bool = False  # its embedding is projected to 2-D (projections.npz)
    role: str = "baseline"  # ROLES

    def __post_init__(self) -> None:
        if self.role not in ROLES or self.network not in NETWORKS:
            raise ValueError(f"method {self.name!r}: role {self.role!r}, network {self.network!r}")
        if (self.network == "retrained") != (self.objective is not None):
            raise ValueError(f"method {self.name!r}: a retrained network needs an objective, "
                             "and only a retrained one has one")

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(r for r in REFERENCES if r in self.scored)

    @property
    def retrains(self) -> str | None:
        """What retraining does, in words (None: the method retrains nothing)."""
        return self.objective.describe if self.objective else None

    @property
    def weights(self) -> str:
        """The loss weights it uses, in words ("" when it retrains nothing)."""
        return self.objective.weights if self.objective else ""

    @property
    def needs_gan(self) -> bool:
        return self.network is not None


_KDE = "KDE over the labeled embeddings"
_KNN = "k-NN distance to the unlabeled in-distribution images (L2-normalised, PCA)"
_BOTH = {"labeled": _KDE, "unlabeled": _KNN}
TABLE: list[Method] = [
    Method("pixels", "Raw pixels (no network)", "pixels", "#c7b299",
           "Raw pixels, no network: KDE over the labeled images' first 30 principal components; "
           "k-NN on 50 components under the unlabeled reference.",
           "raw-pixels", {"labeled": "KDE on PCA-30 of the labeled pixels",
                      "unlabeled": "k-NN distance on raw pixels (PCA-50)"}, network=None),
    Method("before", "Before (pretrained GAN discriminator)", "before", "#9aa5b1",
           "The pretrained discriminator's embedding, not retrained (uses no label under the "
           "unlabeled reference).",
           "embedding", _BOTH, network="pretrained", projected=True, role="before"),
    Method("mcdd", "MCDD term only", "MCDD only", "#1f77b4",
           "Retrain with the MCDD term alone (no pairwise term): the closest earlier method.",
           "embedding", _BOTH, objective=IB(beta=1.0, pair_weight=0.0)),
    Method("pairwise", "Pairwise term only", "pairwise only", "#9467bd",
           "Retrain with the pairwise term alone (beta = 0): an ablation.",
           "embedding", _BOTH, objective=IB(beta=0.0)),
    Method("svdd", "Deep SVDD", "Deep SVDD", "#2ca02c",
           "One-class Deep SVDD: pull every labeled embedding toward one center.",
           "embedding", _BOTH, objective=SVDD()),
    Method("softmax", "Max-softmax classifier", "max-softmax", "#ff7f0e",
           "A softmax classifier on the embedding; score = 1 - max probability (no reference "
           "set: shown with the labeled protocol).",
           "max-softmax", {"labeled": "1 - max softmax"}, objective=Softmax()),
    Method("pyod", "pyod KNN on pretrained D", "pyod KNN", "#8c564b",
           "A library detector with its defaults: pyod's KNN (distance to the 5th neighbour) "
           "on the pretrained embedding of the unlabeled images; uses no label.",
           "pyod-knn", {"unlabeled": "pyod KNN (n_neighbors=5, largest) on D's L2-normalised "
                                 "PCA features"}, network="pretrained"),
    Method("xdd", "After XDD retraining", "XDD", "#d62728",
           "Retrain with the XDD loss (pairwise + beta * MCDD).",
           "embedding", _BOTH, objective=IB(), projected=True, role="after"),
]
BY_NAME: dict[str, Method] = {m.name: m for m in TABLE}
# The paper's pair: the network it starts from and the one it retrains.
BEFORE = next(m.name for m in TABLE if m.role == "before")
AFTER = next(m.name for m in TABLE if m.role == "after")


def register(method: Method) -> Method:
    """Add a method to the table (after the built-in ones); returns it."""
    if method.name in BY_NAME:
        raise ValueError(f"a method named {method.name!r} exists already")
    TABLE.append(method)
    BY_NAME[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method added by :func:`register` (the built-in ones stay)."""
    method = BY_NAME.pop(name)
    TABLE.remove(method)


def names() -> tuple[str, ...]:
    """Config / storage order (also the order of run keys' canonical method tuples)."""
    return tuple(m.name for m in TABLE)


def display_order() -> tuple[str, ...]:
    """Before and after first in every chart and table, then the baselines."""
    return (BEFORE, AFTER) + tuple(n for n in names() if n not in (BEFORE, AFTER))


def retrained() -> tuple[str, ...]:
    return tuple(m.name for m in TABLE if m.objective)


def display_key(name: str) -> int:
    order = display_order()
    return order.index(name) if name in order else len(order)


def label(name: str) -> str:
    return BY_NAME[name].label if name in BY_NAME else name


def short(name: str) -> str:
    return BY_NAME[name].short if name in BY_NAME else name


def color(name: str) -> str | None:
    return BY_NAME[name].color if name in BY_NAME else None


def is_main(name: str) -> bool:
    """One of the paper's pair (before, after): drawn bold, listed first, always computed."""
    return name in (BEFORE, AFTER)
