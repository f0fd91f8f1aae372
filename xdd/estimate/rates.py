"""What each stage costs on this machine, as measured: read from its cached runs' timings or
from its calibration file (written by :mod:`xdd.estimate.calibration`).

Both are per thread count: a CPU run's costs depend on how many torch threads it runs with
(the job worker: the usable cores less one; ``python -m xdd run``: every core), so runs are
counted only at the thread count asked for, and the calibration times the networks at both.
Pretraining rates are per pretraining mode (``config.pretrain_mode``: precision and layout).

A run's timings are read through its own stage list (:func:`xdd.pipeline.plan.plan` of its
config), whose stage names are the timings' keys: what a score stage embedded is what its
Stage says, not what its method is called.  Nothing here imports torch or writes a file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from xdd.core.config import (CODE_VERSION, ConfigError, RunConfig, from_dict,
                             pretrain_mode)
from xdd.core.device import described_threads
from xdd.pipeline.plan import Stage, plan
from xdd.storage import store

# Bump when what measure() stores changes: load_calibration reads no other version.
CALIBRATION_VERSION = 6


@dataclass(frozen=True)
class ReferenceCost:
    """An unlabeled-reference scorer as the calibration timed it: the PCA fit on ``fit_rows``
    rows, each image's projection, the exact k-NN search per (test x reference) pair."""
    fit_s: float = 0.0
    fit_rows: int | None = None  # None: timed on knn_pca_fit rows
    row_s: float = 0.0
    pair_s: float = 0.0

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> "ReferenceCost":
        return cls(_num(d.get("fit_s")), d.get("fit_rows"), _num(d.get("row_s")),
                   _num(d.get("pair_s")))

    def seconds(self, cfg: RunConfig, n_ref: int, n_test: int) -> float:
        """The PCA is fitted on at most knn_pca_fit reference rows, and costs in proportion."""
        fit = min(cfg.score.knn_pca_fit, n_ref) / float(self.fit_rows or cfg.score.knn_pca_fit)
        return fit * self.fit_s + (n_ref + n_test) * self.row_s + n_test * n_ref * self.pair_s

    def search_only(self) -> "ReferenceCost":
        """What a stage pays for reference features it did not compute: the k-NN search."""
        return ReferenceCost(pair_s=self.pair_s)


@dataclass(frozen=True)
class Rates:
    """Per-stage costs of one preset from one source (None: not measured there)."""
    pretrain_step_s: float | None = None  # per pretraining step, in the asked mode
    retrain_step_s: float | None = None  # per retraining step at 90 labeled images
    score_image_s: float | None = None  # per image a score stage embeds
    project_point_s: Mapping[str, float | None] = field(default_factory=dict)  # map -> point
    # runs only (the calibration's is machine-wide: ProcessCosts)
    data_s: float | None = None
    pixels_s: float | None = None  # a whole score stage that embeds nothing (raw pixels)
    overlap: float | None = None  # wall clock over the summed stages (they run in threads)
    # calibration only
    project_n: int | None = None  # the map size the per-point rates were timed at
    project_exp: Mapping[str, float] = field(default_factory=dict)  # cost ~ n ** exp there
    reference: ReferenceCost = ReferenceCost()  # beyond embedding: the PCA fit and search
    pixel_reference: ReferenceCost | None = None


@dataclass(frozen=True)
class ProcessCosts:
    """The calibration's machine-wide figures: what a fresh process pays once."""
    data_s: float = 0.0
    imports_s: float = 0.0  # imported and entered before a run's clock starts
    first_calls_s: float = 0.0  # the libraries' first calls, beyond later ones
    startup_s: float = 0.0  # a worker's start (Python, torch, this package)
    umap_compile_s: float = 0.0
    umap_load_s: float = 0.0  # UMAP's compilation read from numba's disk cache
    preset_first_calls_s: Mapping[str, float] = field(default_factory=dict)  # each preset's


def calibration_path():
    return store.cache_root() / "calibration.json"


def is_current(cal: Any) -> bool:
    """Whether a calibration file's content was written by this code's calibration."""
    return isinstance(cal, dict) and cal.get("version") == CALIBRATION_VERSION \
        and cal.get("code_version") == CODE_VERSION


def load_calibration(kind: str) -> dict[str, Any] | None:
    """The calibration measured on this machine for a device kind ("cpu"/"cuda"), or None."""
    cal = store.read_json(calibration_path())
    if not is_current(cal):
        return None
    got = cal.get(kind)
    return got if isinstance(got, dict) and isinstance(got.get("presets"), dict) else None


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) else 0.0


def process_costs(cal: Mapping[str, Any] | None) -> ProcessCosts:
    cal = cal or {}
    presets = cal.get("presets") or {}
    return ProcessCosts(
        _num(cal.get("data_s")), _num(cal.get("imports_s")), _num(cal.get("first_calls_s")),
        _num(cal.get("startup_s")), _num(cal.get("umap_compile_s")), _num(cal.get("umap_load_s")),
        {k: _num(v.get("first_calls_s")) for k, v in presets.items() if isinstance(v, dict)})


def calibrated_rates(cal: Mapping[str, Any] | None, preset_name: str, kind: str, threads: int,
                     mode: str) -> Rates | None:
    """The calibration's figures for a preset, with the network rates at ``threads`` (CPU)
    and the pretraining rate in ``mode``; None where it did not measure them."""
    entry = (cal or {}).get("presets", {}).get(preset_name)
    if not isinstance(entry, dict):
        return None
    rates = entry.get("rates") or {}
    # a GPU is timed once, at whatever thread count; a CPU at each count a run may use
    at = next(iter(rates.values()), None) if kind == "cuda" else rates.get(str(threads))
    if not isinstance(at, dict):
        return None  # timed at another thread count only: not this run's cost
    pixels = entry.get("pixels")
    return Rates(
        pretrain_step_s=(at.get("pretrain_step_s") or {}).get(mode),
        retrain_step_s=at.get("retrain_step_s"), score_image_s=at.get("score_image_s"),
        project_point_s=entry.get("project_point_s") or {},
        project_n=entry.get("project_n"), project_exp=entry.get("project_exp") or {},
        reference=ReferenceCost(_num(entry.get("reference_fit_s")),
                                entry.get("reference_fit_rows"),
                                pair_s=_num(entry.get("knn_pair_s"))),
        pixel_reference=ReferenceCost.read(pixels) if isinstance(pixels, dict) else None)


# ---------------------------------------------------------------- this machine's runs


def run_threads(run: dict[str, Any]) -> int | None:
    """The torch thread count a cached CPU run recorded (None: a GPU run or not recorded)."""
    return described_threads(str(run.get("device", "")))


def _median(xs: Iterable[float]) -> float | None:
    v = sorted(x for x in xs if isinstance(x, (int, float)) and x > 0 and math.isfinite(x))
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else 0.5 * (v[m - 1] + v[m])


def _stages_of(run: dict[str, Any]) -> dict[str, Stage]:
    """A cached run's stages by name (its timings' keys); none where its config is unreadable."""
    try:
        return {s.name: s for s in plan(from_dict(run.get("config") or {}))}
    except (ConfigError, TypeError, ValueError, KeyError):
        return {}


def _stage_of(name: str, stages: dict[str, Stage]) -> Stage | None:
    """The stage a timing key names: the run's own, else (a stage its config no longer plans)
    what the name says of a retraining or a map; a score stage's timing is read only through
    its Stage, which says what it embedded."""
    if name in stages:
        return stages[name]
    kind, _, rest = name.partition(":")
    if kind == "retrain":
        return Stage(name, "retrain", rest)
    if kind == "project" and rest.count(":") == 1:
        method, projection = rest.split(":")
        return Stage(name, "project", method, projection=projection)
    return None


def _matches(run: dict[str, Any], preset_name: str, kind: str, threads: int | None) -> bool:
    if run.get("preset") != preset_name:
        return False
    if (kind == "cuda") != str(run.get("device", "")).startswith("cuda"):
        return False
    return kind != "cpu" or threads is None or run_threads(run) == threads


class _Samples:
    """One figure per run and stage, before the medians: ``pretrain``, ``retrain``, ``score``,
    ``pixels``, ``data``, ``overlap`` lists and ``project`` (map -> list)."""

    def __init__(self) -> None:
        for name in ("pretrain", "retrain", "score", "pixels", "data", "overlap"):
            setattr(self, name, [])
        self.project: dict[str, list] = {}

    def rates(self) -> Rates:
        return Rates(pretrain_step_s=_median(self.pretrain),
                     retrain_step_s=_median(self.retrain), score_image_s=_median(self.score),
                     data_s=_median(self.data), pixels_s=_median(self.pixels),
                     overlap=_median(self.overlap),
                     project_point_s={k: _median(v) for k, v in self.project.items()})


def _embedded(stage: Stage, run: dict[str, Any], loaded: set[str]) -> int:
    """Images a score stage of a cached run embedded, 0 where its timing is not a rate per
    image: it embedded nothing, or it searched reference features it did not compute (an
    earlier stage's, or the pretrained D's read from disk).  A stage whose unlabeled scores
    were reused (``scores_reused``) embedded the test images only."""
    if not stage.embeds_test or stage.reference == "reuse" or stage.method in loaded:
        return 0
    if stage.method in (run.get("scores_reused") or ()):
        return run.get("n_test") or 0
    n_ref = (run.get("n_reference") or 0) if stage.reference == "build" else 0
    return (run.get("n_test") or 0) + n_ref


def _add_run(run: dict[str, Any], stages: dict[str, Stage], mode: str, s: _Samples) -> None:
    cfg = run.get("config") or {}
    t = run.get("timings") or {}
    trained = run.get("pretrain_source", "cache" if run.get("pretrain_reused") else "trained")
    steps = (cfg.get("pretrain") or {}).get("steps") or 0
    if trained == "trained" and steps and t.get("pretrain") \
            and pretrain_mode(cfg.get("pretrain") or {}) == mode:
        s.pretrain.append(t["pretrain"] / steps)
    rsteps = (cfg.get("retrain") or {}).get("steps") or 0
    n_labeled = run.get("n_labeled") or 0
    n_map = min((cfg.get("projection") or {}).get("n_samples", 0), run.get("n_test") or 0) \
        + n_labeled  # the labeled points are projected too
    loaded = set(run.get("reference_loaded") or ())
    umap: list[float] = []
    for name, v in t.items():
        stage = _stage_of(name, stages)
        if stage is None:
            continue
        if stage.kind == "retrain" and rsteps:
            # a step's cost grows with the labeled images; stated per 90 (10 shots x 9)
            s.retrain.append(v / rsteps * 90 / max(1, n_labeled or 90))
        elif stage.kind == "score" and not stage.embeds_test:
            if stage.method not in (run.get("scores_reused") or ()):
                s.pixels.append(v)
        elif stage.kind == "score" and _embedded(stage, run, loaded):
            s.score.append(v / _embedded(stage, run, loaded))
        elif stage.kind == "project" and n_map:
            # a fresh process's first UMAP compiles it: counted apart (umap_compile_s)
            (umap if stage.projection == "umap" else s.project.setdefault(
                stage.projection, [])).append(v / n_map)
    if umap:
        s.project.setdefault("umap", []).append(min(umap))
    if t.get("data"):
        s.data.append(t["data"])
    # How much of the stages' summed time the run's wall clock saw: the stages that retrain
    # nothing are scored in threads beside the retraining, so the stages overlap (data and
    # pretrain come before them; the reference:<m> timings are parts of score:<m>).
    staged = sum(v for k, v in t.items() if k.startswith(("retrain:", "score:", "project:", "frames:")))
    rest = (run.get("wall_time_s") or 0.0) - (t.get("pretrain") or 0.0) - (t.get("data") or 0.0)
    if staged > 0 and rest > 0:
        s.overlap.append(min(1.0, rest / staged))


def rates_from_runs(runs: Sequence[dict[str, Any]], preset_name: str, kind: str,
                    threads: int | None = None, mode: str = "fp32") -> Rates:
    """Per-stage costs of this machine's cached runs of one preset on one device kind (the
    raw-pixel baseline's scoring is counted only from runs: the calibration does not time it).
    On the CPU, ``threads`` keeps only the runs made with that many torch threads (None: any);
    the pretraining rate counts only pretrainings in ``mode``."""
    s = _Samples()
    for run in runs:
        if not _matches(run, preset_name, kind, threads):
            continue
        _add_run(run, _stages_of(run), mode, s)
    return s.rates()
