"""A tiny run end to end: what it saves, that the saved scores reproduce the metrics, and the
retraining loop it is built on."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import xdd.train.retrain
from xdd.storage import store
from xdd.core.config import CODE_VERSION, preset, pretrain_key, run_key, to_dict
from xdd.storage.data import labeled_indices, to_tensor
from xdd.pipeline.experiment import run_experiment, sweep_configs
from xdd.pipeline.gan import load_pretrained
from xdd.train.retrain import embed_all, retrain

pytestmark = pytest.mark.slow


def test_results_describe_the_run(tiny_run, mnist):
    r, cfg = tiny_run.results, tiny_run.cfg
    assert r["run_key"] == run_key(cfg) == tiny_run.key
    assert r["pretrain_key"] == pretrain_key(cfg)
    assert r["code_version"] == CODE_VERSION
    assert r["config"] == to_dict(cfg) and r["preset"] == "tiny"
    assert (r["ood_digit"], r["shots"], r["seed"]) == (8, 10, 0)
    assert r["device"].startswith("cpu") and r["pretrain_reused"] is False
    assert r["n_labeled"] == 90
    scores = store.load_npz(tiny_run.key, "scores.npz")
    assert r["n_test"] == len(scores["test_index"])
    assert r["n_ood"] == int((scores["label"] == 8).sum()) > 0
    assert r["base_rate"] == pytest.approx(r["n_ood"] / r["n_test"])
    assert "average precision" in r["auprc_variant"]
    assert set(r["methods"]) == set(cfg.methods)
    for m, v in r["methods"].items():
        for k in ("auprc", "auroc", "fpr95", "aupr_in"):
            assert 0.0 <= v[k] <= 1.0, (m, k, v[k])
        if m != "softmax":
            assert v["bandwidth"] > 0
    assert {"data", "pretrain", "retrain:xdd"} <= set(r["timings"])
    run = store.run_dir(tiny_run.key)
    assert set(r["files"]) == {"config.json", "scores.npz", "projections.npz", "checkpoint.pt",
                               "gan_samples.npz", "curves.npz", "reference_after.npz"}
    # What the GAN draws, and how its game ended, recorded for the Results page.
    imgs = store.load_npz(tiny_run.key, "gan_samples.npz")["images"]
    assert imgs.shape == (64, 28, 28) and imgs.dtype == np.uint8 and imgs.std() > 0
    assert set(r["pretrain_losses"]) == {"d_loss", "g_loss"}
    assert all(np.isfinite(v) and v >= 0 for v in r["pretrain_losses"].values())
    assert all(store.sha256_file(run / n) == h for n, h in r["files"].items())
    assert store.read_json(run / "config.json") == to_dict(cfg)
    assert store.load_checkpoint(run / "checkpoint.pt")["code_version"] == CODE_VERSION


def test_saved_scores_reproduce_auprc_exactly(tiny_run):
    """The issue's 'done means': the saved per-sample scores reproduce the reported AUPRC with
    sklearn.metrics.average_precision_score exactly."""
    scores = store.load_npz(tiny_run.key, "scores.npz")
    mismatches = {}
    for m, v in tiny_run.results["methods"].items():
        s = scores[f"score_labeled_{m}"]
        ap = average_precision_score(scores["is_ood"], s)
        assert v["auprc"] == pytest.approx(ap, abs=1e-12)
        assert v["auroc"] == pytest.approx(roc_auc_score(scores["is_ood"], s), abs=1e-12)
        if v["auprc"] != ap:
            mismatches[m] = (v["auprc"], ap)
    assert not mismatches, (f"saved AUPRC != sklearn average_precision_score in the last bits: "
                            f"{mismatches} (xdd/core/metrics.py auprc summation order)")


def test_scores_npz_holds_the_protocol(tiny_run, mnist):
    s = store.load_npz(tiny_run.key, "scores.npz")
    cfg = tiny_run.cfg
    ti = s["test_index"]
    assert np.all(np.diff(ti) > 0) and ti.min() >= 0 and ti.max() < 10000
    assert np.array_equal(s["label"], mnist.y_test[ti])
    assert np.array_equal(s["is_ood"].astype(bool), s["label"] == 8)
    li = s["labeled_index"]
    assert np.array_equal(li, labeled_indices(mnist.y_train, 8, cfg.shots, cfg.seed))
    assert np.array_equal(s["labeled_label"], mnist.y_train[li])
    assert np.bincount(s["labeled_label"], minlength=10).tolist() == [10] * 8 + [0, 10]
    for m in cfg.methods:
        assert s[f"score_labeled_{m}"].shape == ti.shape and np.isfinite(s[f"score_labeled_{m}"]).all()


def test_projections_npz_has_the_documented_layout(tiny_run, mnist):
    p = store.load_npz(tiny_run.key, "projections.npz")
    s = store.load_npz(tiny_run.key, "scores.npz")
    cfg = tiny_run.cfg
    embs = [e for e in ("before", "xdd") if e in cfg.methods]
    expected = {"index", "label", "labeled_label"} | {f"{e}_{m}" for e in embs
                                                      for m in cfg.projection.methods}
    frames = {"xdd_frames", "xdd_frame_steps"}  # the retraining's snapshots, as frames
    assert set(p) == expected | frames
    n_points = cfg.projection.n_samples + 9 * cfg.shots
    assert p["xdd_frames"].shape == (len(p["xdd_frame_steps"]), n_points, 2)
    m, n_lab = cfg.projection.n_samples, 9 * cfg.shots
    assert p["index"].shape == (m,) and p["label"].shape == (m,)
    assert np.isin(p["index"], s["test_index"]).all() and len(np.unique(p["index"])) == m
    assert np.array_equal(p["label"], mnist.y_test[p["index"]])
    assert np.array_equal(p["labeled_label"], s["labeled_label"])
    for key in expected - {"index", "label", "labeled_label"}:
        assert p[key].shape == (m + n_lab, 2) and np.isfinite(p[key]).all()
        assert p[key].std(0).min() > 0, f"{key} collapsed to a point"


def test_progress_reports_every_stage(tiny_run):
    events = []
    cfg = preset("tiny", ood_digit=8, shots=2, methods=("before", "mcdd", "xdd"),
                 **{"projection.methods": ("pca",)})
    run_experiment(cfg, device="cpu", progress=lambda *e: events.append(e))
    stages = [e[0] for e in events]
    for s in ("data", "pretrain", "retrain:mcdd", "retrain:xdd", "score", "project:pca"):
        assert s in stages, s
    pre = [e for e in events if e[0] == "pretrain"]
    assert pre[-1][3].get("reused") is True
    xs = [e for e in events if e[0] == "retrain:xdd"]
    assert [e[1] for e in xs] == sorted(e[1] for e in xs)
    assert xs[-1][1] == xs[-1][2] == cfg.retrain.steps
    assert all(np.isfinite(v) for e in xs[1:] for v in e[3].values())


def test_force_recomputes_identical_numbers(tiny_run, monkeypatch):
    cfg = preset("tiny", ood_digit=8, shots=4, methods=("before", "xdd"),
                 **{"projection.methods": ("pca",)})
    first = run_experiment(cfg, device="cpu")
    calls = []
    real = xdd.train.retrain.retrain
    monkeypatch.setattr(xdd.train.retrain, "retrain", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert run_experiment(cfg, device="cpu") == first and not calls  # a hit
    res = run_experiment(cfg, device="cpu", force=True)
    assert len(calls) == 1  # xdd
    # Same seeds, same pretrained GAN: the same numbers up to float32 kernel rounding (the
    # retrained embedding is not bit-reproducible across allocations); another seed moves
    # AUPRC by ~1e-2.
    for m, v in first["methods"].items():
        assert res["methods"][m] == pytest.approx(v, rel=1e-5, abs=1e-4), m
    assert res["pretrain_reused"] is True
    assert store.load_results(run_key(cfg)) == res


def test_pixels_only_run_needs_no_gan():
    cfg = preset("tiny", ood_digit=3, methods=("pixels",), **{"projection.methods": ("pca",)})
    res = run_experiment(cfg, device="cpu")
    assert res["pretrain_key"] is None and set(res["methods"]) == {"pixels"}
    assert not (store.cache_root() / "pretrain").exists()
    proj = store.load_npz(res["run_key"], "projections.npz") or {}
    assert set(proj) <= {"index", "label", "labeled_label"}  # no embedding to project


def test_sweep_configs_is_the_full_product():
    base = preset("tiny")
    cfgs = sweep_configs(base, digits=[1, 4], seeds=[0, 1, 2], shots_list=[5, 10])
    assert len(cfgs) == 12
    assert {(c.ood_digit, c.seed, c.shots) for c in cfgs} == {
        (d, s, k) for d in (1, 4) for s in (0, 1, 2) for k in (5, 10)}
    # a repetition redraws the GAN: its pretraining seed is the repetition seed ...
    assert all(c.pretrain.seed == c.seed for c in cfgs)
    assert all(dataclasses.replace(c, ood_digit=0, seed=0, shots=10, pretrain=base.pretrain)
               == base for c in cfgs)
    # ... and runs of one GAN seed share one pretrained GAN across shot counts
    from xdd.core.config import pretrain_key
    assert len({pretrain_key(c) for c in cfgs}) == 2 * 3
    # or one GAN for every repetition, when asked
    fixed = sweep_configs(base, digits=[1], seeds=[0, 1], shots_list=[5], gan_seeds=[7, 7])
    assert [c.pretrain.seed for c in fixed] == [7, 7] and [c.seed for c in fixed] == [0, 1]
    with pytest.raises(ValueError):
        sweep_configs(base, digits=[1], seeds=[0, 1], shots_list=[5], gan_seeds=[7])


# ---------------------------------------------------------------- the retraining loop


@pytest.fixture
def pretrained(tiny_run, mnist):
    cfg = tiny_run.cfg
    G, D = load_pretrained(cfg, torch.device("cpu"))
    idx = labeled_indices(mnist.y_train, 8, 5, seed=0)
    x = to_tensor(mnist.x_train[idx])
    remap = {d: i for i, d in enumerate(k for k in range(10) if k != 8)}
    y = torch.tensor([remap[int(v)] for v in mnist.y_train[idx]])
    return cfg, D, x, y


def test_retrain_changes_only_the_chosen_blocks_of_a_copy(pretrained):
    cfg, D0, x, y = pretrained
    state0 = {k: v.clone() for k, v in D0.state_dict().items()}
    rcfg = dataclasses.replace(cfg.retrain, steps=5, train_blocks=2, lr=1e-3)
    out = retrain(D0, rcfg, x, y, "xdd", seed=0)
    assert all(torch.equal(v, D0.state_dict()[k]) for k, v in state0.items()), "D0 was modified"
    new = out.D.state_dict()
    for k, v in state0.items():
        block = int(k.split(".")[1]) if k.startswith("blocks.") else None
        moved = not torch.equal(new[k], v)
        if block is not None and block >= 2 and k.endswith("weight"):
            assert moved, f"{k} in a retrained block did not change"
        if block is not None and block < 2 or k.startswith("head"):
            assert not moved, f"{k} outside the retrained blocks changed"


@pytest.mark.parametrize("mode", ["ratio", "sphere"])
def test_xdd_retraining_lowers_its_loss(pretrained, mode):
    from xdd.core.losses import RATIO_EPS

    cfg, D0, x, y = pretrained
    rcfg = dataclasses.replace(cfg.retrain, steps=30, pair_mode=mode)  # the preset's lr
    out = retrain(D0, rcfg, x, y, "xdd", seed=0, report_every=1)
    first, last = out.history[0], out.history[-1]
    assert np.isfinite([h["loss"] for h in out.history]).all()
    assert last["loss"] < first["loss"]
    # Both modes bound the pairwise term: squared distances on the sphere are <= 4, and the
    # ratio mode divides by (within-class spread + eps) >= eps.
    low = -4.0 / (2.0 * RATIO_EPS) if mode == "ratio" else -2.0
    assert low <= last["pairwise"] <= 0.0
    if mode == "ratio":  # between- over within-class spread went up
        assert last["pairwise"] < first["pairwise"]


def test_retraining_is_seeded(pretrained):
    cfg, D0, x, y = pretrained
    rcfg = dataclasses.replace(cfg.retrain, steps=4, augment_shift=2)
    a = embed_all(retrain(D0, rcfg, x, y, "xdd", seed=3).D, x)
    b = embed_all(retrain(D0, rcfg, x, y, "xdd", seed=3).D, x)
    c = embed_all(retrain(D0, rcfg, x, y, "xdd", seed=4).D, x)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("method", ["xdd", "mcdd", "pairwise", "svdd", "softmax"])
def test_every_method_moves_the_embedding(pretrained, method):
    """A retraining method whose loss has no gradient silently reports the "before" numbers
    under another name.  With 5 shots per class the MCDD term, initialised with sigma_k from
    the per-dimension spread in d = 1568 dimensions, is saturated (loss exactly 0)."""
    cfg, D0, x, y = pretrained
    out = retrain(D0, dataclasses.replace(cfg.retrain, steps=3), x, y, method, seed=0,
                  report_every=1)
    with torch.no_grad():
        change = sum(float((a - b).abs().sum()) for a, b in zip(out.D.parameters(), D0.parameters()))
    assert change > 0, (f"{method} retraining left D unchanged (loss history "
                        f"{[h['loss'] for h in out.history]}): no gradient reaches the embedding")


@pytest.mark.parametrize("method", ["xdd", "mcdd", "pairwise", "svdd", "softmax"])
def test_one_shot_per_class_retraining_stays_finite(pretrained, method):
    cfg, D0, x, y = pretrained
    first = torch.tensor([int(torch.nonzero(y == c)[0]) for c in range(9)])
    rcfg = dataclasses.replace(cfg.retrain, steps=5, lr=1e-3)
    out = retrain(D0, rcfg, x[first], y[first], method, seed=0, report_every=1)
    assert out.history and all(np.isfinite(h["loss"]) for h in out.history)
    assert all(torch.isfinite(p).all() for p in out.D.parameters())


@pytest.mark.parametrize("mode", ["ratio", "raw"])
def test_one_shot_xdd_retraining_in_every_pair_mode(pretrained, mode):
    cfg, D0, x, y = pretrained
    first = torch.tensor([int(torch.nonzero(y == c)[0]) for c in range(9)])
    rcfg = dataclasses.replace(cfg.retrain, steps=5, pair_mode=mode)
    out = retrain(D0, rcfg, x[first], y[first], "xdd", seed=0, report_every=1)
    assert all(np.isfinite(h["loss"]) for h in out.history)
    assert all(torch.isfinite(p).all() for p in out.D.parameters())


def test_projected_rows_are_the_embeddings_of_the_subsampled_test_images(tiny_run, monkeypatch):
    """The run scores the test set batch by batch and keeps only the projected rows: with a
    batch that does not divide the test set, the scores match the one-batch run and the PCA
    map of "before" is the PCA of exactly those rows' embeddings (plus the labeled ones),
    recomputed here from the pretrained D in one piece."""
    import torch

    import xdd.pipeline.scorers
    from xdd.pipeline.experiment import run_experiment

    one_batch = store.load_npz(tiny_run.key, "scores.npz")
    monkeypatch.setattr(xdd.pipeline.scorers, "SCORE_BATCH", 97)
    assert len(one_batch["test_index"]) > 3 * 97
    run_experiment(tiny_run.cfg, device="cpu", force=True)
    batched = store.load_npz(tiny_run.key, "scores.npz")
    for m in ("before", "mcdd", "xdd"):
        assert np.allclose(batched[f"score_labeled_{m}"], one_batch[f"score_labeled_{m}"], rtol=1e-9, atol=1e-6)

    from xdd.storage.data import eval_arrays, load_mnist, make_splits
    from xdd.pipeline.gan import load_pretrained
    from xdd.core.projection import project, subsample
    from xdd.core.scoring import l2_normalize

    cfg = tiny_run.cfg
    proj = store.load_npz(tiny_run.key, "projections.npz")
    data = load_mnist()
    sp = make_splits(cfg, data)
    x_eval, _ = eval_arrays(data, cfg.data.eval_split)
    sub = subsample(len(sp.test), cfg.projection.n_samples, cfg.projection.seed)
    assert np.array_equal(proj["index"], sp.test[sub])
    _, D = load_pretrained(cfg, torch.device("cpu"))
    z = embed_all(D, to_tensor(np.concatenate([x_eval[sp.test[sub]], data.x_train[sp.labeled]])))
    z = l2_normalize(z.numpy().astype(np.float64))
    # Batch-wise and whole embeddings agree to float rounding; PCA signs are fixed by svd_flip.
    assert np.allclose(project(z, "pca", cfg.projection.seed), proj["before_pca"], atol=1e-6)


def test_a_validation_split_run_shows_validation_images(mnist):
    """scores.npz / projections.npz index the run's evaluation set: for a data.eval_split=val
    run the Embeddings page must show validation images (the last 10k training images), not
    the test images at the same indices."""
    from pages._data import run_images

    cfg = preset("tiny", ood_digit=8, methods=("before",),
                 **{"data.eval_split": "val", "projection.methods": "pca"})
    res = run_experiment(cfg, device="cpu")
    proj = store.load_npz(res["run_key"], "projections.npz")
    idx = proj["index"]
    got = run_images(res, idx)
    assert got.shape == (len(idx), 28, 28)
    assert np.array_equal(got, mnist.x_train[50000 + idx])
    assert np.array_equal(mnist.y_train[50000 + idx], proj["label"])
    assert not np.array_equal(got, mnist.x_test[idx])


def test_scores_are_in_the_cache_before_the_maps(mnist):
    """The Results page can show a run's bars while its maps are computed: when the first
    projection starts, the run is committed with its scores (flagged as waiting for maps, so
    it is not yet a cache hit); a cancel during the maps leaves nothing."""
    cfg = preset("tiny", ood_digit=5, methods=("before", "xdd"), **{"projection.methods": "pca"})
    key = run_key(cfg)
    seen = []

    def progress(stage, step, total, info):
        if stage.startswith("project:") and not seen:
            res = store.load_results(key)
            seen.append(res)
            assert res is not None and res["projections_pending"] is True
            assert "xdd" in res["methods"] and "projections.npz" not in res["files"]
            assert store.load_npz(key, "scores.npz") is not None
            from xdd.pipeline.experiment import cached_results

            assert cached_results(cfg) is None  # not complete: a new job would redo it

    res = run_experiment(cfg, device="cpu", progress=progress)
    assert seen and "projections_pending" not in res
    assert store.load_results(key) == res and "projections.npz" in res["files"]
    assert res["wall_time_s"] >= res["scores_s"] > 0

    class Cancelled(Exception):
        pass

    def cancel_at_maps(stage, step, total, info):
        if stage.startswith("project:"):
            raise Cancelled

    other = preset("tiny", ood_digit=5, seed=1, methods=("before", "xdd"),
                   **{"projection.methods": "pca"})
    with pytest.raises(Cancelled):
        run_experiment(other, device="cpu", progress=cancel_at_maps)
    assert not store.run_dir(run_key(other)).exists()


def test_a_cpu_run_uses_torchs_deterministic_algorithms_and_gives_the_setting_back(monkeypatch):
    """With two torch threads on a busy CPU, accumulating gradients into indexed rows is left
    in timing order by default, and a retraining differed from one run to the next; a run on
    the CPU switches torch's deterministic versions on, and only for its duration."""
    import xdd.pipeline.experiment

    seen = []
    monkeypatch.setattr(xdd.pipeline.experiment, "_run", lambda cfg, device, progress, force:
                        seen.append(torch.are_deterministic_algorithms_enabled()) or {})
    assert not torch.are_deterministic_algorithms_enabled()
    xdd.pipeline.experiment.run_experiment(preset("tiny", ood_digit=2), device="cpu")
    assert seen == [True] and not torch.are_deterministic_algorithms_enabled()
    from xdd.core.device import reproducible

    with reproducible("cuda"):  # a GPU keeps torch's defaults
        assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError):  # the setting comes back after an error too
        with reproducible("cpu"):
            assert torch.is_deterministic_algorithms_warn_only_enabled()
            raise RuntimeError("boom")
    assert not torch.are_deterministic_algorithms_enabled()



def test_scoring_beside_the_retraining_only_where_a_core_is_free_and_the_numbers_agree(
        tiny_run, monkeypatch):
    import threading

    import xdd.core.device
    import xdd.pipeline.experiment
    import xdd.pipeline.threads

    cpu = torch.device("cpu")
    monkeypatch.setattr(xdd.core.device, "usable_cores", lambda: torch.get_num_threads() + 1)
    assert xdd.pipeline.threads.side_by_side(cpu)
    assert xdd.pipeline.threads.side_threads(cpu) == 1  # one free core: one thread beside
    monkeypatch.setattr(xdd.core.device, "usable_cores", lambda: torch.get_num_threads() + 5)
    assert xdd.pipeline.threads.side_threads(cpu) == 2
    assert xdd.pipeline.threads.side_threads(torch.device("cuda")) == 2
    monkeypatch.setattr(xdd.core.device, "usable_cores", lambda: torch.get_num_threads())
    assert not xdd.pipeline.threads.side_by_side(cpu)  # torch takes every core: one thread
    assert xdd.pipeline.threads.side_threads(cpu) == 0
    assert xdd.pipeline.threads.side_by_side(torch.device("cuda"))  # the CPU is free beside a GPU
    where = []
    import xdd.core.scoring

    real = xdd.core.scoring.PixelKDE

    class Spy(real):
        def fit(self, *a, **k):
            where.append(threading.current_thread().name)
            return super().fit(*a, **k)

    monkeypatch.setattr(xdd.core.scoring, "PixelKDE", Spy)
    import xdd.core.projection

    real_project = xdd.core.projection.project
    map_threads = []

    def project(z, method, seed=0, n_threads=None):
        map_threads.append(n_threads)
        return real_project(z, method, seed, n_threads)

    monkeypatch.setattr(xdd.core.projection, "project", project)
    again = run_experiment(tiny_run.cfg, device="cpu", force=True)
    assert where == [threading.current_thread().name]  # the pixel baseline ran in this thread
    assert again["references"] == tiny_run.results["references"]
    n_maps = 2 * len(tiny_run.cfg.projection.methods)  # before's and xdd's
    assert map_threads == [torch.get_num_threads()] * n_maps  # no core beside torch's
    # one core free: the pixel baseline and the pretrained D's scores share one side thread,
    # and the maps, after the scores, take that core as well
    monkeypatch.setattr(xdd.core.device, "usable_cores", lambda: torch.get_num_threads() + 1)
    where.clear()
    map_threads.clear()
    beside = run_experiment(tiny_run.cfg, device="cpu", force=True)
    assert len(where) == 1 and where[0].startswith("score")
    assert beside["references"] == tiny_run.results["references"]
    assert map_threads == [torch.get_num_threads() + 1] * n_maps
