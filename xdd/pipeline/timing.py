"""Stage timings: one context manager instead of hand-paired clock reads."""
from __future__ import annotations

import time
from contextlib import contextmanager


class Timings:
    """Seconds per named stage (``data``, ``pretrain``, ``retrain:<m>``, ``score:<m>``,
    ``reference:<m>``, ``project:<embedding>:<map>``), as results.json records them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - t0
