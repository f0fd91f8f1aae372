"""The method table: every scoring method declared once.

A method has a name (what configs, scores.npz and results.json use), labels and a colour (what
the pages and the report show), what it retrains and with which loss weights, how it is scored
under each scoring reference, and whether its embedding is projected to 2-D.  The report, the
CLI and the pages take names, order, labels and colours from here, so that they cannot
disagree; a new scorer enters by a row here and a branch in ``xdd.pipeline.experiment``.

Scoring references (DESIGN.md section 2):

- ``labeled``: the paper's protocol, a Gaussian KDE over the embeddings of the labeled images.
- ``unlabeled``: the in-distribution training images the GAN was pretrained on, without their
  labels (never a test image, never an image of the OOD digit), scored by k-NN distance (or a
  KDE, ``score.unlabeled_scorer``).

This module imports nothing from the package, so any module may import it.
"""
from __future__ import annotations

from dataclasses import dataclass

REFERENCES = ("labeled", "unlabeled")
REFERENCE_LABELS = {
    "labeled": "labeled reference (the paper: KDE over the labeled embeddings)",
    "unlabeled": "unlabeled reference (k-NN to the unlabeled in-distribution training images)",
}
REFERENCE_SHORT = {"labeled": "labeled ref.", "unlabeled": "unlabeled ref."}


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # legend label
    short: str  # table / pill label
    color: str
    help: str  # one sentence for the Run page
    retrains: str | None  # None, or what retraining does (the loss)
    weights: str  # the loss weights it uses ("" when it does not retrain)
    scored: dict  # reference -> how that reference scores it (a reference absent: not scored)
    projected: bool = False  # its embedding is projected to 2-D (projections.npz)

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(r for r in REFERENCES if r in self.scored)


_KNN = "k-NN distance to the unlabeled in-distribution images (L2-normalised, PCA)"
TABLE: tuple[Method, ...] = (
    Method("pixels", "Raw pixels (no network)", "pixels", "#c7b299",
           "Raw pixels, no network: KDE over the labeled images' first 30 principal components; "
           "k-NN on 50 components under the unlabeled reference.",
           None, "", {"labeled": "KDE on PCA-30 of the labeled pixels",
                      "unlabeled": "k-NN distance on raw pixels (PCA-50)"}),
    Method("before", "Before (pretrained GAN discriminator)", "before", "#9aa5b1",
           "The pretrained discriminator's embedding, not retrained (uses no label under the "
           "unlabeled reference).",
           None, "", {"labeled": "KDE over the labeled embeddings", "unlabeled": _KNN},
           projected=True),
    Method("mcdd", "MCDD term only", "MCDD only", "#1f77b4",
           "Retrain with the MCDD term alone (no pairwise term): the closest earlier method.",
           "Deep MCDD MAP term", "beta = 1, pair_weight = 0",
           {"labeled": "KDE over the labeled embeddings", "unlabeled": _KNN}),
    Method("pairwise", "Pairwise term only", "pairwise only", "#9467bd",
           "Retrain with the pairwise term alone (beta = 0): an ablation.",
           "pairwise (inter-class) term", "beta = 0, pair_weight = retrain.pair_weight",
           {"labeled": "KDE over the labeled embeddings", "unlabeled": _KNN}),
    Method("svdd", "Deep SVDD", "Deep SVDD", "#2ca02c",
           "One-class Deep SVDD: pull every labeled embedding toward one center.",
           "distance to one center", "", {"labeled": "KDE over the labeled embeddings",
                                          "unlabeled": _KNN}),
    Method("softmax", "Max-softmax classifier", "max-softmax", "#ff7f0e",
           "A softmax classifier on the embedding; score = 1 - max probability (no reference "
           "set: shown with the labeled protocol).",
           "cross-entropy of a linear head", "", {"labeled": "1 - max softmax"}),
    Method("pyod", "pyod KNN on pretrained D", "pyod KNN", "#8c564b",
           "A library detector with its defaults: pyod's KNN (distance to the 5th neighbour) "
           "on the pretrained embedding of the unlabeled images; uses no label.",
           None, "", {"unlabeled": "pyod KNN (n_neighbors=5, largest) on D's L2-normalised "
                                   "PCA features"}),
    Method("xdd", "After XDD retraining", "XDD", "#d62728",
           "Retrain with the XDD loss (pairwise + beta * MCDD).",
           "XDD loss: pairwise + beta * MCDD", "beta = retrain.beta, pair_weight = "
           "retrain.pair_weight", {"labeled": "KDE over the labeled embeddings",
                                   "unlabeled": _KNN}, projected=True),
)
BY_NAME = {m.name: m for m in TABLE}
# Config / storage order (also the order of run keys' canonical method tuples).
NAMES = tuple(m.name for m in TABLE)
# Display order: before and XDD first in every chart and table, then the baselines.
DISPLAY_ORDER = ("before", "xdd") + tuple(n for n in NAMES if n not in ("before", "xdd"))
RETRAINED = tuple(m.name for m in TABLE if m.retrains)


def display_key(name: str) -> int:
    return DISPLAY_ORDER.index(name) if name in DISPLAY_ORDER else len(DISPLAY_ORDER)


def label(name: str) -> str:
    return BY_NAME[name].label if name in BY_NAME else name


def short(name: str) -> str:
    return BY_NAME[name].short if name in BY_NAME else name


def color(name: str) -> str | None:
    return BY_NAME[name].color if name in BY_NAME else None
