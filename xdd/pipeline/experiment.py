"""run_experiment(cfg, progress) -> results: the whole protocol for one configuration.

A run executes the stages :func:`xdd.pipeline.plan.plan` lists: prepare the data, get the GAN,
score each method under each reference (the methods that retrain nothing beside the
retrainings, :mod:`xdd.pipeline.threads`), commit the scores, project the embeddings.
``progress(stage, step, total, info)`` reports ``data``, ``pretrain``, ``retrain:<method>``,
``score``, ``project:<map>``; it may raise (e.g. a cancelled job): the run then stops and
leaves nothing in the cache.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np

from xdd.core.config import CODE_VERSION, RunConfig, pretrain_key, run_key, to_dict
from xdd.core.methods import BY_NAME
from xdd.core.variants import variant
from xdd.pipeline.curves import CURVES_FILE, curve_arrays
from xdd.pipeline.gan import ensure_pretrained, gan_identity
from xdd.pipeline.inputs import RunData, prepare
from xdd.pipeline.plan import Stage, network_key, plan
from xdd.pipeline.reference import REFERENCE_FILE, ReferenceStore, reference_info
from xdd.pipeline import reuse
from xdd.pipeline.scorers import SCORERS, references
from xdd.pipeline.scores import Scores
from xdd.pipeline.threads import map_threads, side_pool, side_threads
from xdd.pipeline.timing import Timings
from xdd.storage import store

Progress = Callable[[str, int, int, dict], None]


def _noop(stage: str, step: int, total: int, info: dict) -> None:
    pass




def cached_results(cfg: RunConfig) -> dict[str, Any] | None:
    """A complete cached run (scores and maps), or None."""
    res = store.load_results(run_key(cfg))
    return None if res is None or res.get("projections_pending") else res


@dataclasses.dataclass
class Net:
    """A network a method is scored on: D, and the softmax objective's head."""
    D: Any
    head: Any = None
    objective: dict = dataclasses.field(default_factory=dict)  # the objective's trained tensors


class Run:
    """One run's state while its stages execute: what each stage reads and writes."""

    def __init__(self, cfg: RunConfig, dev, progress: Progress, force: bool) -> None:
        self.cfg, self.dev, self.progress, self.force = cfg, dev, progress, force
        self.timings = Timings()
        self.data: RunData | None = None
        self.D = None  # the pretrained discriminator
        self.gan: dict[str, Any] = {"source": None, "losses": None, "samples": None,
                                    "identity": None}
        self.reused: list[str] = []  # methods whose unlabeled scores were read, not computed
        self.nets: dict[str, Net] = {}  # method -> its retrained network, until scored
        self.curves: dict[str, dict[str, list[float]]] = {}  # method -> its training curves
        # method -> (its retrained network, its states at the snapshot steps)
        self.snapshots: dict[str, tuple[Any, dict[int, dict]]] = {}
        self.scores: Scores | None = None
        self.refs: ReferenceStore | None = None

    def prep(self, z) -> np.ndarray:
        """A torch embedding (N, d) as scored: float64, L2-normalised when score.normalize."""
        return self.prep_array(z.numpy())

    def prep_array(self, z: np.ndarray) -> np.ndarray:
        from xdd.core.scoring import l2_normalize

        z = z.astype(np.float64)  # the float32 copy is freed on return
        return l2_normalize(z, inplace=True) if self.cfg.score.normalize else z

    def reference_of(self, method, model) -> tuple:
        return self.refs.features(network_key(method), method.name, model,
                                  keep=method.network == "pretrained")

    # ---------------------------------------------------------------- stages
    def stage_data(self, stage: Stage) -> None:
        self.progress("data", 0, 1, {})
        self.data = prepare(self.cfg, self.dev)
        self.scores = Scores(self.cfg.score.references, self.data.is_ood)
        self.refs = ReferenceStore(self.cfg, self.data.data.x_train, self.data.ref_index,
                                   self.data.fit_rows, self.timings)
        self.progress("data", 1, 1, {})

    def stage_gan(self, stage: Stage) -> None:
        D, samples, losses, source, secs = ensure_pretrained(
            self.cfg, self.data.pretrain_images(), self.dev, self.progress,
            use_bundle=not self.force)
        self.D = D
        self.gan.update(source=source, losses=losses, samples=samples,
                        identity=gan_identity(self.cfg, source))

    def stage_retrain(self, stage: Stage) -> None:
        import torch

        from xdd.train.retrain import retrain

        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        x_unl = self.data.fit_images().to(self.dev) if cfg.retrain.anchor_weight > 0 else None
        out = retrain(self.D, cfg.retrain, self.data.x_lab, self.data.y_lab_idx, stage.method,
                      cfg.seed, self.progress, x_unlabeled=x_unl, snapshots=stage.snapshots)
        self.nets[stage.method] = Net(out.D, out.head, out.objective)
        self.curves[stage.method] = out.curves
        if out.snapshots:
            self.snapshots[stage.method] = (out.D, out.snapshots)

    def stage_score(self, stage: Stage, report: bool = True) -> None:
        method = BY_NAME[stage.method]
        if method.network == "retrained":
            net = self.nets.pop(stage.method)
        else:
            net = Net(self.D) if method.network else None
        if report:
            self.progress("score", 0, 1, {"method": method.name})
        with self.timings.stage(stage.name):
            refs = references(self, method)
            key = self.reuse_key(stage, method)
            got = reuse.load(key, self.data.splits.test) if key else None
            if got is not None:
                self.scores.record(reuse.REFERENCE, method.name, got[0], **got[1])
                self.reused.append(method.name)
                refs = tuple(r for r in refs if r != reuse.REFERENCE)
            SCORERS[method.scorer].score(self, method, net, refs)
            if key and got is None:
                scores, extra = self.scores.get(reuse.REFERENCE, method.name)
                reuse.save(reuse.cache_path(key), key, scores, self.data.splits.test, extra)
        if method.role == "after":
            self.keep_after(method, net)

    def reuse_key(self, stage: Stage, method) -> str | None:
        """The key of a score stage's reusable unlabeled scores: a stage beside the retraining
        (it scores raw pixels or the pretrained D, whose file identifies it); None for a
        stage whose scores are the run's own."""
        if not stage.beside or reuse.REFERENCE not in references(self, method):
            return None
        network = ""
        if method.network is not None:
            network = self.gan["identity"]
            if not network:
                return None
        from xdd.core.device import describe

        return reuse.reuse_key(self.cfg, method, network, reuse.where(describe(self.dev)))

    def keep_after(self, method, net: Net) -> None:
        """The paper's retrained network is kept with the run, with its objective's trained
        tensors (the class centres) and its unlabeled-reference features, so that a new image
        can be scored by exactly this run's scorers (the Probe page)."""
        store.save_checkpoint(self.writer.path("checkpoint.pt"), {
            "D": net.D.state_dict(), "step": self.cfg.retrain.steps,
            "code_version": CODE_VERSION, "objective": net.objective})
        kept = self.refs.computed(network_key(method))
        if kept is not None:
            reducer, feats = kept
            self.writer.npz(REFERENCE_FILE, feats=feats,
                            **{f"reducer_{k}": v for k, v in reducer.state().items()})

    def execute(self, stages: list[Stage]) -> None:
        """The stages before the commit, in order; the side stages in the side threads, whose
        progress reports are left out (the job's come from this thread only)."""
        n_side = side_threads(self.dev)
        pool = side_pool(n_side)
        futures = []
        run_here = {"gan": self.stage_gan, "retrain": self.stage_retrain}  # data ran before
        try:
            for stage in stages:
                if stage.kind == "score" and stage.beside:
                    futures.append(pool.submit(self.stage_score, stage, not n_side))
                elif stage.kind == "score":
                    self.stage_score(stage)
                else:
                    with self.timings.stage(stage.name):
                        run_here[stage.kind](stage)
                if stage.kind == "gan":
                    self.writer.npz("gan_samples.npz", images=self.gan["samples"])
            for f in futures:
                f.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        self.refs.clear()
        self.n_side = n_side

    def results(self, t_all: float, started: float) -> dict[str, Any]:
        from xdd.core.device import describe

        cfg, d, order = self.cfg, self.data, self.cfg.methods
        refs = cfg.score.references
        metrics = self.scores.metrics(order)
        need_gan = self.D is not None
        return {
            "run_key": run_key(cfg), "pretrain_key": pretrain_key(cfg) if need_gan else None,
            "code_version": CODE_VERSION, "config": to_dict(cfg), "preset": cfg.preset,
            # what makes this run a variant of its preset, as the preset stands today
            "variant": variant(to_dict(cfg)),
            "ood_digit": cfg.ood_digit, "shots": cfg.shots, "seed": cfg.seed,
            "device": describe(self.dev),
            "pretrain_reused": self.gan["source"] in ("cache", "bundle"),
            "pretrain_source": self.gan["source"], "pretrain_losses": self.gan["losses"],
            "started": started, "wall_time_s": time.perf_counter() - t_all,
            "timings": self.timings.seconds, "eval_split": cfg.data.eval_split,
            "n_test": int(len(d.y_test)), "n_ood": int(d.is_ood.sum()),
            "base_rate": float(d.is_ood.mean()), "n_labeled": int(len(d.y_lab)),
            "n_reference": int(len(d.ref_index)) if "unlabeled" in refs else 0,
            # its score:<name> timing then left out the reference's embedding (xdd.estimate)
            "reference_loaded": self.refs.loaded,
            # their unlabeled scores were read from an earlier run or the bundle (pipeline.reuse)
            "scores_reused": self.reused,
            "auprc_variant": "average precision (sklearn average_precision_score), OOD = positive",
            # The paper's protocol under "methods" (what every older reader expects), and
            # every reference, each scored from the same retrained networks.
            "methods": metrics.get("labeled", {}),
            "references": metrics,
            "reference_info": reference_info(cfg, len(d.splits.labeled), len(d.ref_index)),
        }

    def commit(self, maps: bool, t_all: float, started: float) -> dict[str, Any]:
        """The scores, the config and the results, committed as one run folder."""
        d, order = self.data, self.cfg.methods
        self.writer.npz("scores.npz", test_index=d.splits.test, label=d.y_test,
                        is_ood=d.is_ood, labeled_index=d.splits.labeled, labeled_label=d.y_lab,
                        reference_index=d.ref_index.astype(np.int32),
                        **self.scores.arrays(order))
        if self.curves:
            self.writer.npz(CURVES_FILE, **curve_arrays(self.curves))
        self.writer.json("config.json", to_dict(self.cfg))
        results = self.results(t_all, started)
        if maps:
            # The scores are complete: commit them now so the Results page shows the bars
            # while the maps are computed; project() adds projections.npz.
            results["projections_pending"] = True
        return self.writer.commit(results)

    def frames(self, method: str, n_threads: int) -> dict[str, np.ndarray]:
        """The retraining's snapshots on the axes of the final embedding's PCA map: frame
        ``i`` is the embedding at step ``<method>_frame_steps[i]``, normalised as scored; the
        last is the static "pca" map of the retrained embedding itself."""
        from xdd.core.projection import pca_frames

        from xdd.train.retrain import embed_snapshots

        D, states = self.snapshots.pop(method)
        snaps = embed_snapshots(D, states, self.data.map_images())
        steps = sorted(snaps)  # the earlier steps; the last is the scored embedding itself
        z_sub, z_lab = self.scores.embeddings[method]
        xy = pca_frames(np.concatenate([z_sub, z_lab]),
                        [self.prep_array(snaps[s]) for s in steps],
                        self.cfg.projection.seed, n_threads)
        return {f"{method}_frames": xy,
                f"{method}_frame_steps": np.asarray(steps + [self.cfg.retrain.steps])}

    def project(self, stages: list[Stage], results: dict[str, Any], t_all: float,
                frames: list[Stage] = ()):
        """The maps: the same seeded subsample of test points for every embedding, with the
        labeled examples appended (rows M.. of each array).  A failure or a cancel here
        removes the committed run again: the cache never keeps a run that stopped half-way."""
        from xdd.core.projection import project

        d, key = self.data, run_key(self.cfg)
        try:
            proj: dict[str, np.ndarray] = dict(index=d.splits.test[d.sub], label=d.y_test[d.sub],
                                               labeled_label=d.y_lab)
            n_threads = map_threads(self.dev, self.n_side)
            for stage in stages:
                z_sub, z_lab = self.scores.embeddings[stage.method]
                info = {"embedding": stage.method}
                self.progress(f"project:{stage.projection}", 0, 1, info)
                with self.timings.stage(stage.name):
                    proj[f"{stage.method}_{stage.projection}"] = project(
                        np.concatenate([z_sub, z_lab]), stage.projection,
                        self.cfg.projection.seed, n_threads)
                self.progress(f"project:{stage.projection}", 1, 1, info)
            for stage in frames:
                with self.timings.stage(stage.name):
                    proj.update(self.frames(stage.method, n_threads))
            updates = {"timings": self.timings.seconds, "wall_time_s": time.perf_counter() - t_all,
                       "scores_s": results["wall_time_s"]}
            return store.add_run_file(key, "projections.npz", proj, updates,
                                      drop=("projections_pending",))
        except BaseException:
            store.remove_run(key)
            raise


def run_experiment(cfg: RunConfig, device: str = "auto", progress: Progress | None = None,
                   force: bool = False) -> dict[str, Any]:
    """Run (or load from the cache) one configuration; returns its results dict.  ``force``
    recomputes the run and does not take its GAN from the bundle shipped with the code (a GAN
    this machine pretrained and cached itself is still reused).

    numpy's and scikit-learn's BLAS / OpenMP pools run at torch's thread count meanwhile: by
    default they take every core, and beside the run's scoring threads their spinning
    workers oversubscribe a small CPU.  On a CPU, torch runs its deterministic algorithms
    (xdd.core.device.reproducible): the same config at the same torch thread count gives the
    same numbers however busy the machine is; another thread count may round differently
    (docs/DESIGN.md §6), and every run records its count in ``device``."""
    import torch
    from threadpoolctl import threadpool_limits

    from xdd.core.device import reproducible

    if not force:
        hit = cached_results(cfg)  # a run whose maps never came (a killed worker) is redone
        if hit is not None:
            return hit
    with threadpool_limits(limits=torch.get_num_threads()), reproducible(device):
        return _run(cfg, device, progress or _noop, force)


def _run(cfg: RunConfig, device: str, progress: Progress, force: bool) -> dict[str, Any]:
    from xdd.core.device import resolve_device

    run = Run(cfg, resolve_device(device), progress, force)
    started, t_all = time.time(), time.perf_counter()
    stages = plan(cfg)
    commit = stages.index(next(s for s in stages if s.kind == "commit"))
    with run.timings.stage("data"):  # a bad split (too many shots) raises before any write
        run.stage_data(stages[0])
    with store.RunWriter(run_key(cfg)) as run.writer:
        run.execute(stages[1:commit])
        maps = [s for s in stages[commit + 1:] if s.kind == "project"
                and s.method in run.scores.embeddings]
        frames = [s for s in stages[commit + 1:] if s.kind == "frames"
                  and run.snapshots.get(s.method)]
        results = run.commit(bool(maps and len(run.data.sub)), t_all, started)
    if not maps or not len(run.data.sub):
        return results
    return run.project(maps, results, t_all, frames)


def sweep_configs(base: RunConfig, digits, seeds, shots_list,
                  gan_seeds: Sequence[int] | None = None) -> list[RunConfig]:
    """digits x shots x seeds.  A repetition redraws the GAN too: its pretraining seed is the
    repetition seed, unless ``gan_seeds`` (one per seed) says otherwise.  Runs of the same GAN
    seed share one pretrained GAN across shot counts and methods."""
    seeds = list(seeds)
    gan = list(seeds) if gan_seeds is None else list(gan_seeds)
    if len(gan) != len(seeds):
        raise ValueError(f"{len(gan)} GAN seeds for {len(seeds)} repetitions")
    return [dataclasses.replace(base, ood_digit=d, seed=s, shots=k,
                                pretrain=dataclasses.replace(base.pretrain, seed=g))
            for d in digits for k in shots_list for s, g in zip(seeds, gan)]
