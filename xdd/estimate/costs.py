"""How long a batch of runs will take on this machine, from measurement only.

Each run is costed stage by stage, over the stages the run itself executes
(:func:`xdd.pipeline.plan.plan`): what a stage embeds, which reference it builds or reuses,
what it projects is read from its Stage, never from a method's name, so the estimate cannot
drift from the pipeline.  Each stage's rate comes from one of two sources, best first
(:mod:`xdd.estimate.rates`), and the estimate says which one it used:

1. **This machine's own cached runs** of the same preset, device kind and thread count.
2. **A calibration** (:mod:`xdd.estimate.calibration`, ``python -m xdd calibrate``).

With neither, there is no estimate (``Estimate.seconds is None``): the page says it is
measuring instead of showing a number from another machine.  Nothing here imports torch or
writes a file.
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from xdd.core.config import RunConfig, pretrain_key, pretrain_mode, run_key
from xdd.core.device import worker_threads  # torch-free
from xdd.estimate.rates import (ProcessCosts, Rates, calibrated_rates, load_calibration,
                                process_costs, rates_from_runs)
from xdd.pipeline.plan import Stage, plan
from xdd.storage import store

NOT_MEASURED = "not measured on this machine yet"
RUNS, CALIBRATION = "runs", "calibration"  # where a figure was measured


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: nothing measured yet on this machine
    basis: str
    n_cached: int = 0  # configs whose results are cached already (instant)


class NotMeasured(Exception):
    """A stage's rate was measured neither by this machine's runs nor by its calibration."""


def gan_on_disk(cfg: RunConfig, use_bundle: bool = True) -> bool:
    """Whether cfg's pretrained GAN is cached on this machine or (``use_bundle``) shipped with
    the code: then its run pretrains nothing."""
    from xdd.storage import bundle

    key = pretrain_key(cfg)
    return (store.pretrain_dir(key) / "checkpoint.pt").is_file() or (
        use_bundle and key in bundle.entries())


def reference_on_disk(cfg: RunConfig) -> bool:
    """Whether the pretrained D's unlabeled-reference features for cfg are kept on disk."""
    from xdd.pipeline.reference import cached_path

    return cached_path(cfg).is_file()


def map_points(cfg: RunConfig) -> int:
    """Points in each of a run's maps: its seeded test subsample and the labeled examples,
    appended (xdd.pipeline.experiment)."""
    return min(cfg.projection.n_samples, cfg.data.n_test or 10000) + 9 * cfg.shots


def reference_images(cfg: RunConfig) -> int:
    """Images in the unlabeled reference: the GAN's pretraining images (the training set less
    the OOD digit, and less the validation images when a run is evaluated on them), or fewer
    (score.n_reference, data.n_pretrain)."""
    return cfg.score.n_reference or cfg.data.n_pretrain or (
        54000 if cfg.data.eval_split == "test" else 45000)


@dataclass(frozen=True)
class Part:
    """A stage's cost and where its rate was measured."""
    seconds: float
    source: str  # RUNS or CALIBRATION
    # after pretraining: the runs' figures were timed inside runs whose stages overlap (so
    # their sum is scaled by the overlap those runs' wall clocks saw), the calibration's alone
    staged: bool = True
    # the estimate's basis names its source (not the data load's or a raw-pixel stage's, which
    # either source may cost without changing what the rest of the estimate rests on)
    named: bool = True


@dataclass(frozen=True)
class RunRates:
    """What costing one run's stages reads."""
    cfg: RunConfig
    runs: Rates
    cal: Rates  # empty where the calibration did not time this preset at this thread count
    process: ProcessCosts
    gan_here: bool  # its pretrained GAN is on disk or shipped: nothing to pretrain
    new_gan: bool  # no earlier config of the batch pretrains the same GAN
    kind: str = "cpu"  # the device kind that runs it
    threads: int = 1  # its torch threads (a CPU)

    @property
    def n_test(self) -> int:
        return self.cfg.data.n_test or 10000


def _pick(from_runs: float | None, from_calibration: float | None) -> tuple[float, str]:
    if from_runs:
        return from_runs, RUNS
    if from_calibration:
        return float(from_calibration), CALIBRATION
    raise NotMeasured


def _cost_data(stage: Stage, r: RunRates) -> list[Part]:
    # measured once per machine; a run without it is still estimated
    if r.runs.data_s:
        return [Part(r.runs.data_s, RUNS, staged=False, named=False)]
    return [Part(r.process.data_s, CALIBRATION, staged=False, named=False)]


def _cost_gan(stage: Stage, r: RunRates) -> list[Part]:
    if r.gan_here or not r.new_gan:
        return []
    rate, src = _pick(r.runs.pretrain_step_s, r.cal.pretrain_step_s)
    return [Part(r.cfg.pretrain.steps * rate, src, staged=False)]


def _cost_retrain(stage: Stage, r: RunRates) -> list[Part]:
    rate, src = _pick(r.runs.retrain_step_s, r.cal.retrain_step_s)
    # a step's cost grows with the labeled images; the rates are stated per 90 (10 shots x 9)
    return [Part(r.cfg.retrain.steps * rate * (9 * r.cfg.shots) / 90, src)]


def _cost_pixels(stage: Stage, r: RunRates) -> list[Part]:
    """A score stage that embeds nothing: only runs time it whole; the calibration times its
    unlabeled reference's PCA and search (the labeled protocol's PCA + KDE is negligible)."""
    if r.runs.pixels_s:
        return [Part(r.runs.pixels_s, RUNS, named=False)]
    if stage.reference == "raw-pixels" and r.cal.pixel_reference is not None:
        n_ref = reference_images(r.cfg)
        return [Part(r.cal.pixel_reference.seconds(r.cfg, n_ref, r.n_test), CALIBRATION,
                     named=False)]
    return []


# A first guess starts no timing of its own (a calibration beside the first demo would slow
# it): this machine's runs replace it stage by stage as they finish.
FIRST_GUESS = ("a first guess: this CPU's one-second probe against the machine that made the "
               "shipped figures (this machine's own runs replace it as they finish; "
               "`python -m xdd calibrate` times it now)")
FIRST_GUESS_AND_RUNS = "from this machine's earlier runs and a first guess for the rest"


def scores_on_disk(stage: Stage, r: RunRates) -> bool:
    """Whether a score stage's unlabeled scores will be read, not computed (pipeline.reuse):
    a stage beside the retraining whose inputs an earlier run, or the bundle, scored."""
    from xdd.core.methods import BY_NAME
    from xdd.pipeline import reuse
    from xdd.pipeline.gan import gan_identity

    if not stage.beside or stage.reference is None or r.kind != "cpu":
        return False
    method = BY_NAME[stage.method]
    network = ""
    if method.network is not None:
        network = gan_identity(r.cfg) if r.gan_here else None
        if not network:
            return False
    key = reuse.reuse_key(r.cfg, method, network,
                          reuse.where(f"cpu ({r.threads} thread{'s' * (r.threads != 1)})"))
    return reuse.cache_path(key).is_file() or reuse.shipped_path(key).is_file()


def _cost_score(stage: Stage, r: RunRates) -> list[Part]:
    """The test images embedded and, where the stage builds its network's reference, the
    reference images as well, unless its network's are kept on disk (``keeps_reference``: the
    pretrained D, by an earlier run of this GAN and seed; a GAN pretrained now is another
    network).  Every stage with a reference searches it: the runs' rate holds the search of
    the stages that built theirs, so a stage that reuses one is costed its embedding there."""
    reused = scores_on_disk(stage, r)
    if reused:  # what is left: the labeled reference's KDE (and the maps' rows), on the test set
        stage = dataclasses.replace(stage, reference=None)
    if not stage.embeds_test:
        return [] if reused else _cost_pixels(stage, r)
    rate, src = _pick(r.runs.score_image_s, r.cal.score_image_s)
    n_ref = reference_images(r.cfg)
    built = stage.reference == "build" and not (
        stage.keeps_reference and r.gan_here and reference_on_disk(r.cfg))
    parts = [Part((r.n_test + built * n_ref) * rate, src)]
    if src == CALIBRATION and stage.reference in ("build", "reuse"):
        # the runs' score timings hold the PCA fit and the search; the calibration times them
        # apart (each image's projection is part of its embedding rate)
        ref = r.cal.reference if built else r.cal.reference.search_only()
        parts.append(Part(ref.seconds(r.cfg, n_ref, r.n_test), CALIBRATION))
    return parts


def _cost_project(stage: Stage, r: RunRates) -> list[Part]:
    n = map_points(r.cfg)
    rate, src, scale = r.runs.project_point_s.get(stage.projection), RUNS, 1.0
    if not rate:
        rate, src = r.cal.project_point_s.get(stage.projection), CALIBRATION
        if r.cal.project_n:
            # a map costs more than linearly in its points: timed at project_n, another size
            # scales with the exponent measured there
            exp = r.cal.project_exp.get(stage.projection, 1.0)
            scale = (n / r.cal.project_n) ** (exp - 1.0)
    if not rate:
        raise NotMeasured
    return [Part(n * rate * scale, src)]


def _cost_frames(stage: Stage, r: RunRates) -> list[Part]:
    """A retraining's frames: one PCA of the map's points (nothing where no PCA map was ever
    timed).  The kept states' embedding of those points (five passes over ~1,000 images, well
    under a second on a quick run) is left out."""
    try:
        return _cost_project(dataclasses.replace(stage, projection="pca"), r)
    except NotMeasured:
        return []


STAGE_COSTS: dict[str, Callable[[Stage, RunRates], list[Part]]] = {
    "data": _cost_data, "gan": _cost_gan, "retrain": _cost_retrain, "score": _cost_score,
    "commit": lambda stage, r: [], "project": _cost_project, "frames": _cost_frames}


def stage_parts(stages: Sequence[Stage], r: RunRates) -> list[Part]:
    """Every stage's cost, in the order the run executes them."""
    return [p for s in stages for p in STAGE_COSTS[s.kind](s, r)]


def run_seconds(parts: Sequence[Part], overlap: float | None) -> float:
    """One run's seconds: the stages costed from runs after pretraining are scaled by the
    overlap those runs saw; the calibration's were each timed alone."""
    alone = sum(p.seconds for p in parts if not (p.staged and p.source == RUNS))
    return alone + (overlap or 1.0) * sum(p.seconds for p in parts
                                          if p.staged and p.source == RUNS)


@dataclass
class _Bill:
    """A batch's cost so far."""
    total: float = 0.0
    n_cached: int = 0
    first_preset: str | None = None
    used: set = field(default_factory=set)  # sources the basis names
    sources: set = field(default_factory=set)  # every source a part came from
    from_calibration: bool = False  # a stage after pretraining costed from the calibration
    need_umap: bool = False

    def add(self, stages: Sequence[Stage], parts: Sequence[Part], overlap: float | None) -> None:
        self.total += run_seconds(parts, overlap)
        self.used |= {p.source for p in parts if p.named}
        self.sources |= {p.source for p in parts if p.seconds > 0}
        self.from_calibration |= any(p.staged and p.source == CALIBRATION and p.seconds > 0
                                     for p in parts)
        self.need_umap |= any(s.kind == "project" and s.projection == "umap" for s in stages)

    def basis(self) -> str:
        used = frozenset(self.used or self.sources)
        return {frozenset({RUNS}): "from this machine's earlier runs",
                frozenset({CALIBRATION}): "from a calibration measured on this machine",
                }.get(used, "from this machine's earlier runs and its calibration")


def _process_seconds(bill: _Bill, process: ProcessCosts, umap_warm: bool,
                     start_worker: bool) -> float:
    """What a fresh process pays once: UMAP's compilation (or its loading from numba's disk
    cache), what it imports before a run's clock starts, and the first calls of its libraries,
    which stage costs taken from runs include already (each CLI run is a fresh process, and so
    is a worker's first job); and a worker's start where none is running."""
    if not bill.first_preset:
        return 0.0
    total = 0.0
    if bill.need_umap and not umap_warm:
        from xdd.core.projection import umap_compiled_on_disk

        total += process.umap_load_s if umap_compiled_on_disk() else process.umap_compile_s
    if not umap_warm:
        total += process.imports_s
        if bill.from_calibration:
            own = process.preset_first_calls_s.get(bill.first_preset, 0.0)
            total += max(own, process.first_calls_s)
    if start_worker:
        total += process.startup_s
    return total


def estimate(cfgs: Sequence[RunConfig], runs: Sequence[dict[str, Any]], kind: str,
             gan_available=None, umap_warm: bool = False, threads: int | None = None,
             recompute: bool = False, start_worker: bool = False) -> Estimate:
    """Seconds to run cfgs one after another on this machine, from measurement only.

    ``runs``: this machine's cached results; ``gan_available(cfg)``: whether a pretrained GAN
    for cfg is cached or shipped (then pretraining costs nothing); ``umap_warm``: a worker
    whose UMAP is compiled already is alive (else the runs start in a fresh process, which
    pays UMAP's compilation and the calibration's first-call cost once); ``threads``: the
    torch threads of the CPU that runs them (default: the job worker's); ``recompute``: runs
    already cached are computed again (``run --force``); ``start_worker``: no job worker is
    running, so the first job waits for one to start.  Pretraining is counted once per
    distinct pretraining config.
    """
    threads = threads or worker_threads()
    cal = load_calibration(kind)
    guess = cal is None
    if guess:  # not timed yet: the shipped reference, scaled by a one-second probe
        from xdd.estimate.first_guess import first_guess

        cal = first_guess(kind, threads)
    process = process_costs(cal)
    bill = _Bill()
    pretrained: set[str] = set()
    measured: dict[tuple[str, str], Rates] = {}  # (preset, mode): read once per batch
    for cfg in cfgs:
        if not recompute and (store.run_dir(run_key(cfg)) / "results.json").is_file():
            bill.n_cached += 1
            continue
        bill.first_preset = bill.first_preset or cfg.preset
        mode = pretrain_mode(cfg.pretrain)
        stages = plan(cfg)
        if (cfg.preset, mode) not in measured:
            measured[cfg.preset, mode] = rates_from_runs(runs, cfg.preset, kind, threads, mode)
        r = RunRates(cfg, measured[cfg.preset, mode],
                     calibrated_rates(cal, cfg.preset, kind, threads, mode) or Rates(), process,
                     gan_here=bool(gan_available and gan_available(cfg)),
                     new_gan=pretrain_key(cfg) not in pretrained, kind=kind, threads=threads)
        try:
            parts = stage_parts(stages, r)
        except NotMeasured:
            return Estimate(None, NOT_MEASURED, bill.n_cached)
        if any(s.kind == "gan" for s in stages):
            pretrained.add(pretrain_key(cfg))
        bill.add(stages, parts, r.runs.overlap)
    total = bill.total + _process_seconds(bill, process, umap_warm, start_worker)
    if not total and bill.n_cached == len(cfgs):
        return Estimate(0.0, "already cached", bill.n_cached)
    basis = bill.basis()
    if guess and CALIBRATION in (bill.used or bill.sources):
        basis = FIRST_GUESS if bill.used <= {CALIBRATION} else FIRST_GUESS_AND_RUNS
    return Estimate(total, basis, bill.n_cached)
