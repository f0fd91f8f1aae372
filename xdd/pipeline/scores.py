"""What the scoring stages produce: per-sample scores and metrics per reference and method,
and the embeddings kept for the maps."""
from __future__ import annotations

import threading

import numpy as np


def score_key(reference: str, method: str) -> str:
    """The scores.npz key of a method's per-sample scores under a reference."""
    return f"score_{reference}_{method}"


class Scores:
    """scores[ref][method] (T,) and their metrics; "labeled" is the paper's protocol.  Side
    threads record into it too, so it takes a lock; reads come after the stages are joined."""

    def __init__(self, references, is_ood: np.ndarray) -> None:
        self.references = tuple(references)
        self.is_ood = is_ood
        self._scores: dict[tuple[str, str], np.ndarray] = {}
        self._metrics: dict[tuple[str, str], dict] = {}
        self._extra: dict[tuple[str, str], dict] = {}
        # method -> (projected test subsample (M, d), labeled (L, d)), normalised as scored
        self.embeddings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def record(self, ref: str, method: str, s: np.ndarray, **extra) -> None:
        from xdd.core.metrics import all_metrics

        m = dict(all_metrics(self.is_ood, s), **extra)
        with self._lock:
            self._scores[(ref, method)] = s
            self._metrics[(ref, method)] = m
            self._extra[(ref, method)] = dict(extra)

    def get(self, ref: str, method: str) -> tuple[np.ndarray, dict]:
        """A recorded method's scores under a reference, with the extra metrics it gave."""
        with self._lock:
            return self._scores[(ref, method)], self._extra[(ref, method)]

    def keep_embedding(self, method: str, z_sub: np.ndarray, z_lab: np.ndarray) -> None:
        with self._lock:
            self.embeddings[method] = (z_sub, z_lab)

    def metrics(self, order) -> dict[str, dict[str, dict]]:
        """reference -> method -> metrics, methods in ``order``."""
        return {r: {m: self._metrics[(r, m)] for m in order if (r, m) in self._metrics}
                for r in self.references}

    def arrays(self, order) -> dict[str, np.ndarray]:
        """scores.npz's score arrays, by :func:`score_key`."""
        return {score_key(r, m): self._scores[(r, m)] for r in self.references for m in order
                if (r, m) in self._scores}

    def embeddings_in(self, order) -> list[tuple[str, tuple[np.ndarray, np.ndarray]]]:
        return [(m, self.embeddings[m]) for m in order if m in self.embeddings]
