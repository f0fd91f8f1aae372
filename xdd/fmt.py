"""Plain-text formatting shared by the CLI, the job queue and the pages (no Streamlit, no torch)."""
from __future__ import annotations

import math


def fmt_duration(seconds: float | None, compact: bool = False) -> str:
    """'45 s' / '2.5 min' / '1.2 h' (compact: '45s' / '2.5m' / '1.2h'); a dash when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-" if compact else "–"
    seconds = max(0.0, float(seconds))
    sep = "" if compact else " "
    if seconds < 60:
        return f"{seconds:.0f}{sep}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}{sep}{'m' if compact else 'min'}"
    return f"{seconds / 3600:.1f}{sep}h"


def one_line(exc: BaseException, limit: int = 400) -> str:
    """'ConfigError: data folder ... does not exist' — readable in a table cell."""
    text = " ".join(str(exc).split()) or "(no message)"
    msg = f"{type(exc).__name__}: {text}"
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."
