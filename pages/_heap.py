"""Keep Python's cycle collector off the objects every render shares.

The server holds a few hundred thousand long-lived objects: Streamlit, plotly, pandas,
scikit-learn and, once the Probe page has been opened, torch (about 150 000 more).  A render
allocates enough to set off full (generation 2) collections, and each one walks all of them:
0.08 s per full collection with the app's imports, 0.14 s with torch, measured on a 2-core
AMD EPYC.  That walk was most of a render's server CPU (docs/PERFORMANCE.md §10).

:func:`settle` moves what is alive after the imports into the collector's permanent generation
(``gc.freeze``), where full collections no longer look.  It acts only when the set of loaded
modules has grown since it last acted (the first renders of each page, torch on the Probe
page), so it runs a handful of times per server process, not per render.  Objects frozen this
way are still freed by reference counting; only a cycle among them that became garbage later
would stay, which is why it collects first and runs rarely.
"""
from __future__ import annotations

import gc
import sys
import threading

_LOCK = threading.Lock()
_SETTLED_AT = {"modules": -1}


def settle() -> bool:
    """Collect, then freeze what is alive, if modules were imported since the last time.

    Returns whether it did (a render's ``finally`` calls it; cheap when nothing changed).
    """
    if len(sys.modules) == _SETTLED_AT["modules"]:
        return False
    with _LOCK:
        if len(sys.modules) == _SETTLED_AT["modules"]:
            return False
        gc.collect()
        gc.freeze()
        _SETTLED_AT["modules"] = len(sys.modules)
        return True
