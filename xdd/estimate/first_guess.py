"""An estimate from the first visit, before this machine is timed.

The calibration (~30 s) is what estimates rest on, but a page opened on an empty cache would
show no number until it lands.  Meanwhile the estimate uses the calibration of the machine
that made the shipped one (``reference.json`` beside this file, written by
``python -m xdd calibrate --reference``), every time in it scaled by how much slower or faster
this CPU is on a one-second probe: single-threaded float32 matrix products (numpy, the
kernels xdd.openblas picks), timed here and on that machine.  It is a first guess, said as
such, and replaced by this machine's own calibration as soon as that exists.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from xdd.core.device import cpu_model
from xdd.storage import store

REFERENCE = Path(__file__).resolve().parent / "reference.json"


def reference_path() -> Path:
    """The shipped reference; ``XDD_ESTIMATE_REFERENCE`` points elsewhere ("" for none: the
    test suite, whose estimates must come from what each test measures)."""
    import os

    got = os.environ.get("XDD_ESTIMATE_REFERENCE")
    return REFERENCE if got is None else Path(got or "/nonexistent/reference.json")
PROBE_N = 384  # a (384 x 384) @ (384 x 384) float32 product: ~0.1 GFLOP, ~10 ms here


def probe_s(budget_s: float = 0.3) -> float:
    """Seconds of one probe product at one thread: the best of as many as fit the budget."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((PROBE_N, PROBE_N), dtype=np.float32)
    best, end = float("inf"), time.perf_counter() + budget_s
    with threadpool_limits(limits=1):
        a @ a  # the first call pays the library's start
        while time.perf_counter() < end:
            t = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t)
    return best


@functools.lru_cache(maxsize=1)
def this_machine_probe_s() -> float:
    return probe_s()


def _scaled(node: Any, factor: float, timed: bool = False) -> Any:
    """A calibration with every time in it (a key ending in ``_s``, and everything under one)
    multiplied by ``factor``; counts and exponents are left as they are."""
    if isinstance(node, dict):
        return {k: _scaled(v, factor, timed or str(k).endswith("_s")) for k, v in node.items()}
    if isinstance(node, (int, float)) and not isinstance(node, bool) and timed:
        return node * factor
    return node


def _nearest_threads(preset: dict[str, Any], threads: int) -> dict[str, Any]:
    """The reference timed the networks at its own thread counts: a machine with another
    count gets the nearest one measured (a first guess, not this machine's figure)."""
    rates = preset.get("rates") or {}
    if not rates or str(threads) in rates:
        return preset
    got = min(rates, key=lambda t: abs(int(t) - threads))
    return {**preset, "rates": {**rates, str(threads): rates[got]}}


def first_guess(kind: str, threads: int) -> dict[str, Any] | None:
    """The reference calibration scaled to this CPU, in load_calibration()'s shape, or None
    (a GPU, or no reference shipped)."""
    from xdd.estimate.rates import is_current

    ref = store.read_json(reference_path())
    if kind != "cpu" or not is_current(ref) or not isinstance(ref.get("cpu"), dict):
        return None
    ref_probe = ref.get("probe_s")
    if not isinstance(ref_probe, (int, float)) or ref_probe <= 0:
        return None
    cal = _scaled(ref["cpu"], this_machine_probe_s() / ref_probe)
    cal["presets"] = {k: _nearest_threads(v, threads) for k, v in cal["presets"].items()}
    return cal


def write_reference(cal: dict[str, Any]) -> Path:
    """Ship this machine's calibration as the reference (``calibrate --reference``)."""
    store.atomic_write_json(REFERENCE, {**cal, "probe_s": probe_s(1.0),
                                        "machine": cpu_model()})
    return REFERENCE

