"""Time estimates come from this machine's measurements (its runs or its calibration), never
from a constant measured elsewhere."""
from __future__ import annotations

import math

import pytest

from xdd import estimate as E
from xdd import store
from xdd.config import CODE_VERSION, preset


def _write_calibration(pre=0.1, ret=0.02, score=1e-4, proj=None, compile_s=7.0, **more):
    proj = proj or {"pca": 1e-5, "tsne": 1e-2, "umap": 5e-3}
    entry = {"pretrain_step_s": pre, "retrain_step_s": ret, "score_image_s": score,
             "project_point_s": proj, **more}
    store.atomic_write_json(E.calibration_path(), {
        "version": E.CALIBRATION_VERSION, "code_version": CODE_VERSION,
        "cpu": {"presets": {"quick": entry, "tiny": entry}, "data_s": 0.5,
                "umap_compile_s": compile_s}})


def test_nothing_measured_means_no_estimate():
    est = E.estimate([preset("quick", ood_digit=8)], [], "cpu")
    assert est.seconds is None and "not measured" in est.basis


def test_the_estimate_is_built_from_the_calibration_figures():
    cfg = preset("quick", ood_digit=8)  # methods pixels, before, mcdd, xdd
    _write_calibration(pre=0.1)
    cold = E.estimate([cfg], [], "cpu")
    warm = E.estimate([cfg], [], "cpu", gan_available=lambda c: True)
    assert cold.basis == "from a calibration measured on this machine"
    # pretraining: steps x the measured seconds per step, exactly
    assert cold.seconds - warm.seconds == pytest.approx(cfg.pretrain.steps * 0.1)
    n_proj = cfg.projection.n_samples + 90
    expected = (2 * cfg.retrain.steps * 0.02  # mcdd, xdd
                + 3 * (10000 + 54000) * 1e-4  # before, mcdd, xdd: test + unlabeled reference
                + 0.5  # data
                + 2 * n_proj * (1e-5 + 1e-2 + 5e-3)  # before and xdd projected
                + 7.0)  # UMAP's compilation in a fresh worker
    assert warm.seconds == pytest.approx(expected)
    assert E.estimate([cfg], [], "cpu", gan_available=lambda c: True,
                      umap_warm=True).seconds == pytest.approx(expected - 7.0)
    _write_calibration(pre=0.2)  # a slower machine: the pretraining part doubles
    assert E.estimate([cfg], [], "cpu").seconds - warm.seconds == pytest.approx(
        2 * cfg.pretrain.steps * 0.1)
    # one pretraining for several seeds of the same digit and GAN, one UMAP compilation
    two = E.estimate([cfg, preset("quick", ood_digit=8, seed=1)], [], "cpu")
    assert two.seconds - 2 * warm.seconds == pytest.approx(cfg.pretrain.steps * 0.2 - 7.0)


def test_the_unlabeled_references_fit_and_search_are_counted_from_the_calibration():
    cfg = preset("quick", ood_digit=8)  # before, mcdd, xdd scored under both references
    _write_calibration()
    base = E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds
    _write_calibration(reference_fit_s=3.0, knn_pair_s=1e-8)
    more = E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds
    assert more - base == pytest.approx(3 * (3.0 + 10000 * 54000 * 1e-8))
    paper_only = preset("quick", ood_digit=8, **{"score.references": ("labeled",)})
    assert E.estimate([paper_only], [], "cpu", gan_available=lambda c: True).seconds \
        < base - 3 * 54000 * 1e-4 + 1e-6  # no reference embedded, fitted or searched


def test_this_machines_runs_take_precedence(tiny_run):
    _write_calibration(pre=10.0)
    res = tiny_run.results
    cfg = preset("tiny", ood_digit=3)  # not cached; its GAN is not either
    rates = E.rates_from_runs([res], "tiny", "cpu")
    assert rates["pretrain_step_s"] == pytest.approx(
        res["timings"]["pretrain"] / tiny_run.cfg.pretrain.steps)
    per_step = sorted(v / tiny_run.cfg.retrain.steps for k, v in res["timings"].items()
                      if k.startswith("retrain:"))  # mcdd, xdd
    assert rates["retrain_step_s"] == pytest.approx(sum(per_step) / 2)
    est = E.estimate([cfg], [res], "cpu")
    assert est.basis == "from this machine's earlier runs"
    assert est.seconds < 10.0 * cfg.pretrain.steps  # the calibration's 10 s/step is not used
    assert math.isfinite(est.seconds) and est.seconds > 0
    # a cached config costs nothing
    assert E.estimate([tiny_run.cfg], [res], "cpu").seconds == 0.0


@pytest.mark.slow
def test_measure_times_the_tiny_preset_here():
    fig = E.measure("cpu", ["tiny"], steps=2)
    e = fig["presets"]["tiny"]
    for k in ("pretrain_step_s", "retrain_step_s", "score_image_s"):
        assert 0 < e[k] < 5, (k, e[k])
    assert set(e["project_point_s"]) == set(preset("tiny").projection.methods)
    assert fig["threads"] >= 1 and fig["data_s"] >= 0
