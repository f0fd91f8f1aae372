"""Shared helpers of the benchmark scripts: the machine, timing, JSON output and the marked
sections of docs/PERFORMANCE.md (``bench/run.py``'s and the other scripts').

A script run by its path (``python bench/pipeline/e2e.py``) puts the repo root on ``sys.path``
itself, before it imports ``bench._common``; that also makes ``xdd`` importable."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"

DOC = REPO / "docs" / "PERFORMANCE.md"
# The markers keep the scripts' names from before bench/ had folders: docs/PERFORMANCE.md holds
# them as they are, so each script's own BEGIN / END strings stay as they were, too.
BEGIN = "<!-- bench/run.py: begin (generated; edits between these markers are overwritten) -->"
END = "<!-- bench/run.py: end -->"


def cpu_model() -> str:
    from xdd.core.device import cpu_model as model

    return model()


def ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def machine() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "cpu": cpu_model(), "ram_gib": round(ram_gib(), 1), "python": platform.python_version(),
            "platform": platform.platform()}


def worker_threads() -> int:
    """The torch thread count the job worker uses on this machine (its default)."""
    from xdd.jobs.worker import default_threads

    return default_threads()


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def interleaved(a: Callable[[], Any], b: Callable[[], Any], reps: int) -> tuple[list[float], list[float]]:
    """Seconds of a and b run alternately (a b a b ...), so background load hits both alike."""
    ta, tb = [], []
    for _ in range(reps):
        ta.append(timed(a)[0])
        tb.append(timed(b)[0])
    return ta, tb


def write_json(path: str | os.PathLike | None, obj: dict[str, Any]) -> None:
    text = json.dumps(obj, indent=2, default=float)
    if path:
        Path(path).write_text(text + "\n")
    else:
        print(text)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_section(doc: Path, begin: str, end: str, section: str, heading: str = "") -> None:
    """Put ``section`` (its own begin and end markers included) in place of the part of doc
    between those markers, keeping everything outside them; where doc has no such part, it is
    appended (after ``heading``)."""
    text = doc.read_text() if doc.exists() else "# Performance\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + heading + section.rstrip("\n") + "\n"
    doc.write_text(text)
