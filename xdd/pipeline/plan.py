"""A run as a list of named stages, in the order it executes them.

``plan(cfg)`` is read by the run itself (:mod:`xdd.pipeline.experiment` executes each stage)
and by the time estimate (:mod:`xdd.estimate`, which costs each stage), so the two cannot
disagree about what a run does.  The stage names are the keys of results.json's ``timings``.
"""
from __future__ import annotations

from dataclasses import dataclass

from xdd.core.config import RunConfig
from xdd.core.methods import BY_NAME
from xdd.pipeline.scorers import SCORERS

KINDS = ("data", "gan", "retrain", "score", "commit", "project", "frames")


@dataclass(frozen=True)
class Stage:
    name: str  # the timing key (results.json "timings") and what progress calls it
    kind: str  # KINDS
    method: str | None = None  # retrain / score: the method; project: the embedding's method
    beside: bool = False  # score: may run beside the retraining (it scores no retrained net)
    embeds_test: bool = False  # score: embeds the test images through a network
    # score: what it does with the unlabeled reference of its network: "build" (embeds the
    # reference images, unless the pretrained D's are kept on disk), "reuse" (an earlier
    # stage built them), "raw-pixels" (the raw-pixel reference), or None
    reference: str | None = None
    keeps_reference: bool = False  # score: its network's reference may be kept on disk
    projection: str | None = None  # project: the map (pca, tsne, umap)
    snapshots: bool = False  # retrain: keeps snapshots of the embedding for the frames


def network_key(method) -> str | None:
    """What identifies a method's network within a run: the pretrained D is one network for
    every method that scores it; each retrained method has its own."""
    if method.network is None:
        return None
    return "pretrained" if method.network == "pretrained" else f"retrained:{method.name}"


def _score_stage(cfg: RunConfig, method, built: set) -> Stage:
    scorer = SCORERS[method.scorer]
    reference = None
    if scorer.uses_reference and "unlabeled" in cfg.score.references \
            and "unlabeled" in method.scored:
        key = network_key(method)
        reference = "raw-pixels" if key is None else ("reuse" if key in built else "build")
        built.add(key)
    return Stage(f"score:{method.name}", "score", method.name, beside=method.objective is None,
                 embeds_test=scorer.embeds_test and method.network is not None,
                 reference=reference, keeps_reference=method.network == "pretrained")


def plan(cfg: RunConfig) -> list[Stage]:
    """The stages of cfg's run: data, the GAN (when a method needs one), the scores of the
    methods that retrain nothing (beside the retrainings), each retraining followed by its
    scores, the commit of the scores, then the maps of each projected embedding and the frames
    of each projected retraining (its snapshots on the final map's PCA axes)."""
    rows = [BY_NAME[m] for m in cfg.methods]
    stages = [Stage("data", "data")]
    if any(m.needs_gan for m in rows):
        stages.append(Stage("pretrain", "gan"))
    built: set = set()
    stages += [_score_stage(cfg, m, built) for m in rows if m.objective is None]
    maps = bool(cfg.projection.methods and cfg.projection.n_samples)
    for m in rows:
        if m.objective is not None:
            stages += [Stage(f"retrain:{m.name}", "retrain", m.name,
                             snapshots=maps and m.projected), _score_stage(cfg, m, built)]
    stages.append(Stage("commit", "commit"))
    if maps:
        stages += [Stage(f"project:{m.name}:{pm}", "project", m.name, projection=pm)
                   for m in rows if m.projected for pm in cfg.projection.methods]
        stages += [Stage(f"frames:{m.name}", "frames", m.name)
                   for m in rows if m.projected and m.objective is not None]
    return stages
