"""What the Probe page shares between visitors: a run's prober (its networks and fitted
scorers, built once per run) and its built-in probes.  A module rather than part of the page's
script, which Streamlit executes afresh on every render (a cached function defined there is
keyed anew each time)."""
from __future__ import annotations

from typing import Any

import streamlit as st

from pages._data import run_mtime
from xdd.probe.prober import ProbeUnavailable
from xdd.storage import store


@st.cache_resource(show_spinner="Loading the run's networks and scorers, once per run (seconds; "
                                "up to a minute when the pretrained network's reference "
                                "features must be computed)…", max_entries=4)
def _prober(root: str, key: str, mtime: int) -> tuple[Any, str | None]:
    """(Prober, None) or (None, why it cannot be probed), shared by every visitor.  Keyed by
    the cache folder, the run key and its results.json's time, so a recomputed run is rebuilt."""
    from xdd.probe.loading import load

    try:
        return load(key), None
    except ProbeUnavailable as exc:
        return None, str(exc)


def prober_for(key: str):
    return _prober(str(store.cache_root().resolve()), key, run_mtime(key))


@st.cache_resource(show_spinner=False, max_entries=8)
def examples_for(key: str, mtime: int, _pr) -> list:
    """The built-in probes of a run (xdd.probe.examples), shared by every visitor."""
    from xdd.probe.examples import examples

    return examples(_pr.eval_images, _pr.scores["test_index"], _pr.scores["label"],
                    _pr.ood_digit)
