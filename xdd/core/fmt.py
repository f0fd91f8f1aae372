"""Plain-text formatting shared by the CLI, the job queue and the pages (no Streamlit, no
torch): durations, error lines, stage and run names, thread counts, markdown tables."""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from xdd.core.device import described_threads
from xdd.core.variants import run_variant
from xdd.core.methods import short

PROJ_LABELS = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}


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


def stage_label(stage: str | None) -> str:
    """'retrain:xdd' -> 'Retraining (XDD)' etc.; a readable stage name."""
    if not stage:
        return "Waiting"
    head, _, tail = stage.partition(":")
    if head == "retrain":
        return f"Retraining ({short(tail)})"
    if head == "project":
        return f"Projecting to 2-D ({PROJ_LABELS.get(tail, tail)})"
    return {"data": "Loading MNIST", "pretrain": "GAN pretraining", "score": "Scoring (KDE)",
            "queued": "Queued", "starting": "Starting (loading PyTorch)", "done": "Done",
            "cancelled": "Cancelled"}.get(head, stage)


def describe_config(c: dict[str, Any]) -> str:
    """One line naming a run: digit, shots, seed, preset."""
    return (f"digit {c.get('ood_digit', '?')} · {c.get('shots', '?')} shots · "
            f"seed {c.get('seed', '?')} · {c.get('preset', '?')}")


def config_group(res: dict[str, Any]) -> str:
    """The preset name, or 'preset · custom (field=value, ...)' for a run whose config differed
    from its preset, when it ran, in anything but digit, shots, seed, methods and projections
    (e.g. CLI --set runs), so that such runs are never averaged with the preset's own."""
    name = str((res.get("config") or {}).get("preset", res.get("preset", "?")))
    try:
        diffs = run_variant(res)
    except (KeyError, TypeError, ValueError):
        return f"{name} · custom"
    if not diffs:
        return name
    more = f", +{len(diffs) - 3} more" if len(diffs) > 3 else ""
    return f"{name} · custom ({', '.join(diffs[:3])}{more})"


def thread_count(device: str | None) -> str:
    """The torch thread count a run recorded with its device (results.json's "device", e.g.
    'cpu (2 threads)' -> '2'); 'GPU' for a GPU run, '?' when the run did not record it.  Two runs
    of one config at different thread counts may differ in the last digits."""
    n = described_threads(str(device or ""))
    if n is not None:
        return str(n)
    return "GPU" if str(device or "").startswith("cuda") else "?"


def thread_counts(devices: Iterable[str | None]) -> str:
    """The distinct thread counts of several runs, smallest first: '1', '1, 2', '2, GPU'."""
    counts = {thread_count(d) for d in devices}
    return ", ".join(sorted(counts, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0,
                                                   c)))


def threads_note(device: str | None) -> str:
    """'1 thread' / '2 threads' / 'GPU' / 'threads not recorded': beside a run's numbers."""
    n = thread_count(device)
    if n == "GPU":
        return n
    return "threads not recorded" if n == "?" else f"{n} thread{'s' * (n != '1')}"


def md_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """A GitHub-flavoured markdown table (the pages render it with st.markdown).

    ``columns``: (key, header, format) with format a str.format spec such as ``".3f"`` or
    ``""``.  Used instead of st.dataframe, which needs pyarrow (and the pinned NumPy 1.x
    does not load the current pyarrow).  A None or non-finite float is shown as a dash.
    """
    def cell(v: Any, fmt: str) -> str:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "–"
        try:
            text = format(v, fmt) if fmt else str(v)
        except (TypeError, ValueError):
            text = str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join(" ---: " if f else " :--- " for _, _, f in columns) + "|"
    body = ["| " + " | ".join(cell(r.get(k), f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])
