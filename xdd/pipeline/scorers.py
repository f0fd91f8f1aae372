"""Scorer kinds: how a method's network is turned into anomaly scores under each reference.

A method's row names its kind (``Method.scorer``); :data:`SCORERS` maps the kind to its class.
Each ``score(run, method, net, refs)`` records into ``run.scores`` the method's scores under
the references ``refs`` (of those the run computes and the method is scored under,
``references(run, method)``; the others were reused).
``net`` is the trained network (``.D``, and ``.head`` for the softmax objective) or None for
raw pixels.  A new kind is a class here and a :func:`register_scorer` call.
"""
from __future__ import annotations

import numpy as np

from xdd.pipeline.reference import SCORE_BATCH


def references(run, method) -> tuple[str, ...]:
    return tuple(r for r in run.cfg.score.references if r in method.scored)


def unlabeled_scorer(cfg, feats: np.ndarray):
    """The scorer fitted on unlabeled-reference features: k-NN distance, or a KDE."""
    from xdd.core.scoring import KDEScorer, KNNScorer

    sc = cfg.score
    if sc.unlabeled_scorer == "kde":
        return KDEScorer(sc.bandwidth, loo_sample=2048, seed=cfg.seed).fit(feats)
    return KNNScorer(sc.knn_k, sc.knn_backend).fit(feats)


class Scorer:
    embeds_test = True  # it embeds the test images through the method's network
    uses_reference = True  # it searches the unlabeled reference's features

    def score(self, run, method, net, refs: tuple[str, ...]) -> None:
        raise NotImplementedError


def _batches(n: int):
    return range(0, n, SCORE_BATCH)


class EmbeddingScorer(Scorer):
    """KDE over the labeled embeddings; the unlabeled scorer over the reference's features.
    The test set is embedded and scored a batch at a time, so the 10,000 x d float64
    embedding never exists whole; only the rows that are projected are kept."""

    def score(self, run, method, net, refs) -> None:
        from xdd.core.scoring import KDEScorer
        from xdd.train.retrain import embed_all

        model, cfg = net.D, run.cfg
        z_lab = run.prep(embed_all(model, run.data.x_lab))
        kde = KDEScorer(cfg.score.bandwidth).fit(z_lab) if "labeled" in refs else None
        uns = red = None
        if "unlabeled" in refs:
            red, feats = run.reference_of(method, model)
            uns = unlabeled_scorer(cfg, feats)
        sub = run.data.sub
        keep = method.projected and len(sub) > 0
        z_sub = np.empty((len(sub), z_lab.shape[1])) if keep else None  # (M, d)
        lab_parts, unl_parts = [], []
        x_test = run.data.x_test
        for i in _batches(len(x_test)):
            z_raw = embed_all(model, x_test[i:i + SCORE_BATCH])  # (<= SCORE_BATCH, d)
            if uns is not None:
                unl_parts.append(uns.score(red.transform(z_raw.numpy())))
            z = run.prep(z_raw)
            del z_raw
            if kde is not None:
                lab_parts.append(kde.score(z))
            if keep:
                here = (sub >= i) & (sub < i + len(z))
                z_sub[here] = z[sub[here] - i]
        if kde is not None:
            run.scores.record("labeled", method.name, np.concatenate(lab_parts),
                              bandwidth=kde.bandwidth_)
        if uns is not None:
            extra = {"bandwidth": uns.bandwidth_} if cfg.score.unlabeled_scorer == "kde" else {}
            run.scores.record("unlabeled", method.name, np.concatenate(unl_parts), **extra)
        if keep:
            run.scores.keep_embedding(method.name, z_sub, z_lab)


class PixelScorer(Scorer):
    """Raw pixels, no network: a KDE on the labeled images' principal components; the
    unlabeled scorer on the reference's pixel PCA."""
    embeds_test = False

    def score(self, run, method, net, refs) -> None:
        from xdd.core.scoring import PixelKDE

        cfg, d = run.cfg, run.data
        if "labeled" in refs:
            pk = PixelKDE(cfg.score.pixel_pca, cfg.score.bandwidth).fit(d.x_lab_u8 / 255.0)
            run.scores.record("labeled", method.name, pk.score(d.x_test_u8 / 255.0),
                              bandwidth=pk.kde_.bandwidth_)
        if "unlabeled" in refs:
            red, feats = run.refs.pixels()
            uns = unlabeled_scorer(cfg, feats)
            run.scores.record("unlabeled", method.name, np.concatenate([
                uns.score(red.transform(d.x_test_u8[i:i + SCORE_BATCH] / 255.0))
                for i in _batches(len(d.x_test_u8))]))


class SoftmaxScorer(Scorer):
    """1 - max softmax of the objective's classifier head (no reference set)."""
    uses_reference = False

    def score(self, run, method, net, refs) -> None:
        from xdd.train.retrain import max_softmax_score

        for ref in refs:
            run.scores.record(ref, method.name,
                              max_softmax_score(net.D, net.head, run.data.x_test).double().numpy())


class PyodScorer(Scorer):
    """pyod's KNN detector with its defaults, fitted on the network's reference features."""

    def score(self, run, method, net, refs) -> None:
        from xdd.core.scoring import PyodKNN
        from xdd.train.retrain import embed_all

        if "unlabeled" not in refs:
            return
        red, feats = run.reference_of(method, net.D)
        det = PyodKNN().fit(feats)
        x_test = run.data.x_test
        run.scores.record("unlabeled", method.name, np.concatenate([
            det.score(red.transform(embed_all(net.D, x_test[i:i + SCORE_BATCH]).numpy()))
            for i in _batches(len(x_test))]))


SCORERS: dict[str, Scorer] = {"embedding": EmbeddingScorer(), "raw-pixels": PixelScorer(),
                              "max-softmax": SoftmaxScorer(), "pyod-knn": PyodScorer()}


def register_scorer(kind: str, scorer: Scorer) -> None:
    SCORERS[kind] = scorer
