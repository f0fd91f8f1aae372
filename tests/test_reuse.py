"""Scores that do not change between runs (the unlabeled reference's scores of raw pixels and
of the pretrained D) are computed once, verified, and reused: exactly what a fresh run gives."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xdd.core import methods
from xdd.core.config import preset
from xdd.pipeline import reuse
from xdd.pipeline.experiment import run_experiment
from xdd.storage import store

NO_MAPS = {"projection.methods": ()}
REUSABLE = [m.name for m in methods.TABLE if m.objective is None and "unlabeled" in m.scored]


def _cfg(shots: int, seed: int = 3, **over):
    return preset("tiny", ood_digit=5, shots=shots, seed=seed, methods=tuple(methods.names()),
                  **NO_MAPS, **over)


def _unlabeled(res, name):
    return store.load_npz(res["run_key"], "scores.npz")[f"score_unlabeled_{name}"]


def test_a_run_with_other_shots_reuses_the_unlabeled_scores_and_they_equal_a_fresh_run(
        xdd_cache):
    first = run_experiment(_cfg(2), device="cpu")
    assert first["scores_reused"] == []
    assert len(list((xdd_cache / "reuse").glob("*.npz"))) == len(REUSABLE)
    second = run_experiment(_cfg(3), device="cpu")
    assert sorted(second["scores_reused"]) == sorted(REUSABLE)
    # the same numbers a run that computes them gets: remove what was kept and run again
    for f in (xdd_cache / "reuse").glob("*.npz"):
        f.unlink()
    fresh = run_experiment(_cfg(3), device="cpu", force=True)
    assert fresh["scores_reused"] == []
    for name in REUSABLE:
        assert np.array_equal(_unlabeled(second, name), _unlabeled(fresh, name))
        assert second["references"]["unlabeled"][name] == fresh["references"]["unlabeled"][name]
    # and the labeled reference, which depends on the shots, was computed for the run itself
    assert not np.array_equal(_unlabeled(first, "xdd"), _unlabeled(second, "xdd"))


def test_a_damaged_or_foreign_file_is_recomputed_never_trusted(xdd_cache):
    run_experiment(_cfg(2), device="cpu")
    files = sorted((xdd_cache / "reuse").glob("*.npz"))
    victim = files[0]
    with np.load(victim) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["scores"] = arrays["scores"].copy()
    arrays["scores"][0] += 1  # the values change, the recorded hash does not
    store.atomic_save_npz(victim, **arrays)
    again = run_experiment(_cfg(3), device="cpu")
    assert len(again["scores_reused"]) == len(REUSABLE) - 1
    key = victim.stem
    got = reuse.load(key, store.load_npz(again["run_key"], "scores.npz")["test_index"])
    assert got is not None  # rewritten whole by the run that recomputed it
    # scores kept for other test images are not used for these
    assert reuse.load(key, np.arange(7)) is None


def test_another_gan_or_other_settings_are_other_keys():
    cfg = _cfg(2)
    before = methods.BY_NAME[methods.BEFORE]
    one = "cpu (1 thread)"
    k = reuse.reuse_key(cfg, before, "a" * 64, one)
    assert reuse.reuse_key(_cfg(7), before, "a" * 64, one) == k  # shots: not an input
    assert reuse.reuse_key(cfg, before, "b" * 64, one) != k  # another network
    assert reuse.reuse_key(cfg, before, "a" * 64, "cpu (2 threads)") != k  # may round otherwise
    assert reuse.reuse_key(_cfg(2, **{"score.knn_k": 3}), before, "a" * 64, one) != k
    assert reuse.reuse_key(_cfg(2, seed=4), before, "a" * 64, one) != k
    assert reuse.reuse_key(cfg, methods.BY_NAME["pixels"], "", one) != k
    # a CPU of another SIMD family rounds otherwise too
    assert reuse.where("cpu (1 thread)").startswith("cpu (1 thread); ")
    assert reuse.where("cuda (NVIDIA H100)") == "cuda (NVIDIA H100)"


@pytest.mark.parametrize("values", [np.array([0.5, 1.25, 3.0]), np.array([0.1, 1 / 3, 2.0])])
def test_scores_are_kept_exactly(tmp_path, values):
    path = tmp_path / "x.npz"
    assert reuse.save(path, "k", values, np.arange(3), {"bandwidth": 0.5})
    got = reuse._read(path, "k", np.arange(3))
    assert got[0].dtype == values.dtype and np.array_equal(got[0], values)
    assert got[1] == {"bandwidth": 0.5}


def test_the_estimate_counts_reused_scores_as_read(xdd_cache):
    import xdd.estimate as E
    from xdd.core.config import CODE_VERSION

    cfg = _cfg(2)
    entry = {"pretrain_step_s": 0.1, "retrain_step_s": 0.02, "score_image_s": 1e-4,
             "rates": {str(t): {"pretrain_step_s": {"fp32": 0.1}, "retrain_step_s": 0.02,
                               "score_image_s": 1e-4} for t in range(1, 5)},
             "project_point_s": {"pca": 1e-5}, "pixels": {"fit_s": 1.0, "fit_rows": 512,
                                                          "row_s": 1e-5, "pair_s": 1e-9}}
    store.atomic_write_json(E.calibration_path(), {
        "version": E.CALIBRATION_VERSION, "code_version": CODE_VERSION,
        "cpu": {"presets": {"tiny": entry}, "data_s": 0.5}})
    run_experiment(_cfg(7), device="cpu")  # keeps the reusable scores; its own GAN
    import torch

    threads = torch.get_num_threads()  # the runs above computed at this count

    def at(n):
        return E.estimate([cfg], [], "cpu", gan_available=lambda c: True, threads=n).seconds
    here, here_other = at(threads), at(threads + 1)
    for f in (xdd_cache / "reuse").glob("*.npz"):
        f.unlink()
    cold = at(threads)
    assert here_other == at(threads + 1)  # kept at another thread count: not this one's
    from xdd.estimate.costs import reference_images

    # before embeds the reference images again, pyod searches them, pixels rebuilds its own
    assert cold - here >= reference_images(cfg) * 1e-4


def test_scores_shipped_beside_a_bundled_gan_are_read_by_a_first_run_and_equal_a_fresh_one(
        xdd_cache, tmp_path, monkeypatch):
    import shutil

    import torch

    from xdd.pipeline.gan import load_pretrained
    from xdd.pipeline.ship import ship
    from xdd.storage import bundle
    from xdd.train.pretrain import sample_images

    cfg = preset("tiny", ood_digit=6, methods=("pixels", "before", "xdd"), **NO_MAPS)
    monkeypatch.setenv("XDD_BUNDLE", str(tmp_path / "bundle"))
    run_experiment(cfg, device="cpu")  # pretrains the GAN here; bundle it as `pretrain --bundle`
    G, D = load_pretrained(cfg, torch.device("cpu"))
    bundle.write(cfg, D, sample_images(G), None)
    shipped = ship(dataclasses.replace(cfg, methods=("pixels", "before")),
                   torch.get_num_threads())
    assert sorted(p.parent.name for p in shipped) == ["reuse", "reuse"]
    shutil.rmtree(xdd_cache)  # a fresh machine: nothing but the bundle
    xdd_cache.mkdir()
    first = run_experiment(cfg, device="cpu")
    assert first["pretrain_source"] == "bundle"
    assert sorted(first["scores_reused"]) == ["before", "pixels"]
    for p in shipped:
        p.unlink()
    shutil.rmtree(xdd_cache)
    xdd_cache.mkdir()
    fresh = run_experiment(cfg, device="cpu")
    assert fresh["scores_reused"] == [] and fresh["pretrain_source"] == "bundle"
    for name in ("pixels", "before"):
        assert np.array_equal(_unlabeled(first, name), _unlabeled(fresh, name))
