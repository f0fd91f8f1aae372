"""Sweeps: many runs; the tables and the markdown come from :mod:`xdd.report`."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from xdd.storage import store
from xdd.core.config import RunConfig
from xdd.report.document import report_markdown
from xdd.report.tables import results_table


def run_sweep(configs: list[RunConfig], device: str = "auto", out: str | None = None,
              progress=None, command: str | None = None, title: str = "Sweep") -> Any:
    """Run (or load) every config; write ``<out>.csv`` and ``<out>.md`` (a report per variant
    and shot count); return the table.

    ``progress``: a callable ``cfg -> progress function`` (one per run; closed after it when it
    has ``close``), or None for no per-stage progress."""
    from tqdm import tqdm

    from xdd.pipeline.experiment import run_experiment

    t0 = time.perf_counter()
    results = []
    bar = tqdm(configs, desc="sweep", file=sys.stderr, dynamic_ncols=True)
    for cfg in bar:
        bar.set_postfix(digit=cfg.ood_digit, shots=cfg.shots, seed=cfg.seed,
                        gan=cfg.pretrain.seed)
        inner = progress(cfg) if progress else None
        results.append(run_experiment(cfg, device=device, progress=inner))
        if inner is not None and hasattr(inner, "close"):
            inner.close()
    df = results_table(results)
    stem = Path(out) if out else store.cache_root() / "sweeps" / configs[0].preset
    stem.parent.mkdir(parents=True, exist_ok=True)
    store.atomic_write_bytes(stem.with_suffix(".csv"), df.to_csv(index=False).encode())
    elapsed = time.perf_counter() - t0
    # One report per variant (a --vary value) and shot count: a table never mixes settings.
    variants = list(dict.fromkeys(df.variant))
    parts = []
    for v in variants:
        for k in sorted(df[df.variant == v].shots.unique()):
            rows = df[(df.variant == v) & (df.shots == k)]
            keys = set(rows.run_key)
            label = (v or "the preset") + ", " if len(variants) > 1 else ""
            name = f"{title}: {label}{int(k)} shots"
            parts.append(report_markdown(rows, [r for r in results if r["run_key"] in keys],
                                         elapsed=elapsed, title=name, command=command))
    md = "\n".join(parts)
    store.atomic_write_bytes(stem.with_suffix(".md"), md.encode())
    print(md)
    print(f"wrote {stem.with_suffix('.csv')} and {stem.with_suffix('.md')}")
    return df
