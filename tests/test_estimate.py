"""Time estimates come from this machine's measurements (its runs or its calibration), never
from a constant measured elsewhere."""
from __future__ import annotations

import dataclasses
import math

import pytest

import xdd.estimate as E
from xdd.estimate import costs
from xdd.storage import store
from xdd.core.config import CODE_VERSION, preset


@pytest.fixture(autouse=True)
def _umap_not_compiled_yet(monkeypatch):
    """UMAP's compilation is not in numba's disk cache (unless a test says so): whether it is
    depends on what ran on this machine before."""
    import xdd.core.projection

    monkeypatch.setattr(xdd.core.projection, "umap_compiled_on_disk", lambda: False)


@pytest.fixture(autouse=True)
def no_shipped_scores(monkeypatch, tmp_path):
    """The estimates here are computed by hand from the rates each test writes: the scores
    shipped beside the real bundle's GANs would be counted as read (xdd.pipeline.reuse)."""
    monkeypatch.setenv("XDD_BUNDLE", str(tmp_path / "no-bundle"))


def _write_calibration(pre=0.1, ret=0.02, score=1e-4, proj=None, compile_s=7.0, threads=None,
                       fast=None, **more):
    """A calibration as measure() writes it: the network rates at the job worker's thread
    count (or ``threads``), the pretraining per mode (fp32 ``pre``, bf16 + channels_last
    ``fast``)."""
    proj = proj or {"pca": 1e-5, "tsne": 1e-2, "umap": 5e-3}
    modes = {"fp32": pre, **({"bf16+cl": fast} if fast else {})}
    rates = {str(t): {"pretrain_step_s": modes, "retrain_step_s": ret, "score_image_s": score}
             for t in (threads or [E.worker_threads()])}
    entry = {"pretrain_step_s": pre, "retrain_step_s": ret, "score_image_s": score,
             "rates": rates, "project_point_s": proj, **more}
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
                + n_proj * 1e-5  # xdd's retraining frames: one PCA of its map's points
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
    # the PCA is fitted on at most knn_pca_fit rows: the tiny preset's 512 reference images
    # cost 512 / 8,192 of the calibration's fit on 8,192
    tiny = preset("tiny", ood_digit=8)
    _write_calibration()
    base_t = E.estimate([tiny], [], "cpu", gan_available=lambda c: True).seconds
    _write_calibration(reference_fit_s=3.0, knn_pair_s=1e-8, reference_fit_rows=8192)
    more_t = E.estimate([tiny], [], "cpu", gan_available=lambda c: True).seconds
    assert more_t - base_t == pytest.approx(3 * (3.0 * 512 / 8192 + 400 * 512 * 1e-8))
    paper_only = preset("quick", ood_digit=8, **{"score.references": ("labeled",)})
    assert E.estimate([paper_only], [], "cpu", gan_available=lambda c: True).seconds \
        < base - 3 * 54000 * 1e-4 + 1e-6  # no reference embedded, fitted or searched


def test_this_machines_runs_take_precedence(tiny_run):
    _write_calibration(pre=10.0)
    res = tiny_run.results
    cfg = preset("tiny", ood_digit=3)  # not cached; its GAN is not either
    rates = E.rates_from_runs([res], "tiny", "cpu")
    assert rates.pretrain_step_s == pytest.approx(
        res["timings"]["pretrain"] / tiny_run.cfg.pretrain.steps)
    per_step = sorted(v / tiny_run.cfg.retrain.steps for k, v in res["timings"].items()
                      if k.startswith("retrain:"))  # mcdd, xdd
    assert rates.retrain_step_s == pytest.approx(sum(per_step) / 2)
    n = E.run_threads(res)  # the torch threads the tiny run recorded
    assert n is not None and n >= 1
    est = E.estimate([cfg], [res], "cpu", threads=n)
    assert est.basis == "from this machine's earlier runs"
    assert est.seconds < 10.0 * cfg.pretrain.steps  # the calibration's 10 s/step is not used
    assert math.isfinite(est.seconds) and est.seconds > 0
    # a cached config costs nothing
    assert E.estimate([tiny_run.cfg], [res], "cpu").seconds == 0.0
    # runs made at another thread count, or pretrained in another mode, are not this run's cost
    assert E.rates_from_runs([res], "tiny", "cpu", threads=n + 1).pretrain_step_s is None
    assert E.rates_from_runs([res], "tiny", "cpu", threads=n,
                             mode="bf16+cl").pretrain_step_s is None
    assert E.rates_from_runs([res], "tiny", "cpu", threads=n).retrain_step_s \
        == rates.retrain_step_s


def test_the_rates_are_the_ones_measured_at_the_runs_thread_count_and_mode():
    cfg = preset("quick", ood_digit=8)
    fast = preset("quick", ood_digit=8, **{"pretrain.precision": "bf16",
                                           "pretrain.channels_last": True})
    w = E.worker_threads()
    _write_calibration(pre=0.1, fast=0.04, threads=[w])
    warm = E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds
    assert E.estimate([cfg], [], "cpu").seconds - warm == pytest.approx(cfg.pretrain.steps * 0.1)
    assert E.estimate([fast], [], "cpu").seconds - warm == pytest.approx(cfg.pretrain.steps * 0.04)
    # measured at the worker's count only: a run at another count has no estimate
    assert E.estimate([cfg], [], "cpu", threads=w + 1).seconds is None
    # a calibration that timed the networks at two counts answers for both, each its own
    store.atomic_write_json(E.calibration_path(), {
        "version": E.CALIBRATION_VERSION, "code_version": CODE_VERSION,
        "cpu": {"presets": {"quick": {
            "project_point_s": {"pca": 1e-5, "tsne": 1e-2, "umap": 5e-3},
            "rates": {str(w): {"pretrain_step_s": {"fp32": 0.1}, "retrain_step_s": 0.02,
                               "score_image_s": 1e-4},
                      str(w + 1): {"pretrain_step_s": {"fp32": 0.06}, "retrain_step_s": 0.01,
                                   "score_image_s": 5e-5}}}},
            "data_s": 0.5, "umap_compile_s": 7.0}})
    a = E.estimate([cfg], [], "cpu", threads=w).seconds
    b = E.estimate([cfg], [], "cpu", threads=w + 1).seconds
    assert a - b == pytest.approx(cfg.pretrain.steps * 0.04 + 2 * cfg.retrain.steps * 0.01
                                  + 3 * 64000 * 5e-5)
    # a calibration of the older format (no per-thread rates) is not read at all
    cal = store.read_json(E.calibration_path())
    cal["version"] = 2
    store.atomic_write_json(E.calibration_path(), cal)
    assert E.estimate([cfg], [], "cpu").seconds is None


@pytest.mark.slow
def test_measure_times_the_tiny_preset_here(monkeypatch):
    import contextlib

    import xdd.core.device

    entered = []
    real = xdd.core.device.reproducible

    @contextlib.contextmanager
    def recorded(device):
        entered.append(device)
        with real(device):
            yield

    monkeypatch.setattr(xdd.core.device, "reproducible", recorded)
    fig = E.measure("cpu", ["tiny"], steps=2)
    # what a run enters before its clock starts (torch's deterministic mode) is timed with
    # the imports, which every estimate for a fresh process adds
    assert entered and fig["imports_s"] > 0
    e = fig["presets"]["tiny"]
    for k in ("pretrain_step_s", "retrain_step_s", "score_image_s"):
        assert 0 < e[k] < 5, (k, e[k])
    # the networks timed at the worker's thread count and at every core, both modes
    assert str(E.worker_threads()) in e["rates"]
    for at in e["rates"].values():
        assert set(at["pretrain_step_s"]) == set(E.MEASURED_MODES)
        assert all(0 < v < 5 for v in at["pretrain_step_s"].values())
    assert e["pretrain_step_s"] == e["rates"][str(E.worker_threads())]["pretrain_step_s"]["fp32"]
    assert set(e["project_point_s"]) == set(preset("tiny").projection.methods)
    # the maps timed at the tiny run's own size: its 150 test points and 90 labeled ones
    assert e["project_n"] == 150 + 90 and set(e["project_exp"]) == set(e["project_point_s"])
    assert all(1.0 <= v <= 2.0 for v in e["project_exp"].values())
    assert fig["threads"] >= 1 and fig["data_s"] >= 0
    assert fig.get("startup_s", 1.0) > 0  # this process's start, where /proc tells it


def _synthetic_run(wall: float, threads: int = 1) -> dict:
    """A cached tiny run as results.json records it: its stages' timings, and a wall clock
    shorter than their sum (the pixel baseline and the pretrained D's scores run in threads
    beside the retraining)."""
    from xdd.core.config import to_dict

    cfg = preset("tiny", ood_digit=8)
    t = {"data": 1.0, "pretrain": 0.0, "retrain:mcdd": 10.0, "retrain:xdd": 10.0,
         "score:pixels": 4.0, "score:before": 5.0, "score:mcdd": 5.0, "score:xdd": 5.0,
         "reference:before": 3.0,  # a part of score:before, not a stage of its own
         "project:before:pca": 1.0, "project:xdd:pca": 1.0,
         "project:before:tsne": 3.0, "project:xdd:tsne": 3.0,
         "frames:xdd": 1.0}  # one PCA of the map's points, as project:xdd:pca
    return {"preset": "tiny", "device": f"cpu ({threads} thread{'s' * (threads != 1)})",
            "config": to_dict(cfg), "timings": t, "pretrain_source": "cache",
            "n_test": 400, "n_reference": 512, "n_labeled": 90, "wall_time_s": wall}


def test_runs_whose_stages_overlap_are_counted_at_the_wall_clock_they_took():
    staged = 10 + 10 + 4 + 5 + 5 + 5 + 1 + 1 + 3 + 3 + 1  # 48 s of stages, 1 s of data
    run = _synthetic_run(wall=1.0 + 0.5 * staged)
    rates = E.rates_from_runs([run], "tiny", "cpu", threads=1)
    assert rates.overlap == pytest.approx(0.5)
    # the same config again: the estimate is the wall clock that run took, not its stage sum
    est = E.estimate([preset("tiny", ood_digit=8)], [run], "cpu", threads=1,
                     gan_available=lambda c: True)
    assert est.basis == "from this machine's earlier runs"
    assert est.seconds == pytest.approx(run["wall_time_s"])
    # two runs: the median overlap; a run at another thread count does not count
    runs = [run, _synthetic_run(wall=1.0 + 0.7 * staged), _synthetic_run(wall=5.0, threads=2)]
    assert E.rates_from_runs(runs, "tiny", "cpu", threads=1).overlap == pytest.approx(0.6)
    assert E.rates_from_runs(runs, "tiny", "cpu", threads=2).overlap == pytest.approx(4 / staged)


def test_a_runs_first_umap_compiles_it_and_is_not_counted_as_its_rate():
    run = _synthetic_run(wall=30.0)
    run["timings"].update({"project:before:umap": 24.0, "project:xdd:umap": 2.4})
    n = 150 + 90  # projected points: the test subsample and the labeled images
    assert E.rates_from_runs([run], "tiny", "cpu").project_point_s["umap"] \
        == pytest.approx(2.4 / n)


def test_a_fresh_process_pays_the_first_calls_once():
    cfg = preset("quick", ood_digit=8)
    _write_calibration()
    base = E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds
    _write_calibration(first_calls_s=2.5)
    fresh = E.estimate([cfg, preset("quick", ood_digit=8, seed=1)], [], "cpu",
                       gan_available=lambda c: True).seconds
    two = 2 * base - 7.0  # two runs, one UMAP compilation
    assert fresh == pytest.approx(two + 2.5)  # once for the process, not per run
    warm = E.estimate([cfg], [], "cpu", gan_available=lambda c: True, umap_warm=True).seconds
    assert warm == pytest.approx(base - 7.0)  # a warm worker pays neither


def test_the_maps_are_costed_at_their_size_with_the_exponent_the_calibration_measured():
    cfg = preset("quick", ood_digit=8)
    n_proj = cfg.projection.n_samples + 90
    _write_calibration()  # an older-format entry: no size, per-point rates scaled linearly
    linear = E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds
    # timed at 500 points, t-SNE growing as n^1.5 there: at 2,090 points each of the two
    # maps (before, xdd) costs (2090 / 500)^0.5 times the linear extrapolation
    _write_calibration(project_n=500, project_exp={"pca": 1.0, "tsne": 1.5, "umap": 1.0})
    grown = E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds
    assert grown - linear == pytest.approx(2 * n_proj * 1e-2 * ((n_proj / 500) ** 0.5 - 1))
    # at the size it was timed at, the timing itself
    small = dataclasses.replace(cfg, projection=dataclasses.replace(cfg.projection,
                                                                    n_samples=410))
    _write_calibration()
    a = E.estimate([small], [], "cpu", gan_available=lambda c: True).seconds
    _write_calibration(project_n=500, project_exp={"pca": 1.0, "tsne": 1.5, "umap": 1.0})
    assert E.estimate([small], [], "cpu", gan_available=lambda c: True).seconds \
        == pytest.approx(a)


def test_a_job_that_starts_the_worker_waits_for_its_start_up():
    cfg = preset("quick", ood_digit=8)
    _write_calibration()
    cal = store.read_json(E.calibration_path())
    cal["cpu"]["startup_s"] = 2.25
    store.atomic_write_json(E.calibration_path(), cal)
    running = E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds
    assert E.estimate([cfg], [], "cpu", gan_available=lambda c: True,
                      start_worker=True).seconds == pytest.approx(running + 2.25)


def test_a_process_knows_how_long_ago_it_started():
    import subprocess
    import sys
    from pathlib import Path

    if not Path("/proc/self/stat").is_file():
        assert E.process_age_s() is None  # no /proc: unknown, never a guess
        return
    out = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.6); "
                          "from xdd.estimate import process_age_s; print(process_age_s())"],
                         capture_output=True, text=True, check=True, cwd=str(store.REPO_ROOT))
    age = float(out.stdout.strip())
    assert 0.6 <= age < 60


def test_a_umap_compiled_on_disk_costs_its_loading_not_its_compilation(monkeypatch):
    import xdd.core.projection

    cfg = preset("quick", ood_digit=8)
    _write_calibration(compile_s=7.0)
    warm = E.estimate([cfg], [], "cpu", gan_available=lambda c: True, umap_warm=True).seconds
    fresh = E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds
    assert fresh - warm == pytest.approx(7.0)  # nothing on disk: a fresh process compiles
    monkeypatch.setattr(xdd.core.projection, "umap_compiled_on_disk", lambda: True)
    cal = store.read_json(E.calibration_path())
    cal["cpu"]["umap_load_s"] = 1.5
    store.atomic_write_json(E.calibration_path(), cal)
    assert E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds - warm \
        == pytest.approx(1.5)


def test_the_pixel_baseline_is_counted_from_the_calibration_until_a_run_measured_it(tiny_run):
    cfg = preset("quick", ood_digit=8)  # pixels among its methods, 54,000 reference images
    _write_calibration()
    without = E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds
    px = {"fit_s": 2.0, "fit_rows": 4096, "row_s": 1e-5, "pair_s": 1e-9}
    _write_calibration(pixels=px)
    with_px = E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds
    # the PCA is fitted on knn_pca_fit (8,192) images: twice the 4,096 timed
    assert with_px - without == pytest.approx(
        2.0 * 2 + (54000 + 10000) * 1e-5 + 10000 * 54000 * 1e-9)
    # a tiny run of this machine measured it: its figure, not the calibration's
    tiny = preset("tiny", ood_digit=3)
    runs = store.list_runs()
    assert E.rates_from_runs(runs, "tiny", "cpu").pixels_s > 0
    _write_calibration(pixels=dict(px, fit_s=500.0))  # would dominate if it were counted
    a = E.estimate([tiny], runs, "cpu", gan_available=lambda c: True).seconds
    _write_calibration()
    assert a == pytest.approx(E.estimate([tiny], runs, "cpu", gan_available=lambda c: True).seconds)


def test_a_fresh_process_pays_the_calibrations_process_wide_first_calls_for_any_preset():
    cfg = preset("quick", ood_digit=8)
    _write_calibration(first_calls_s=0.1)  # quick's own shapes, timed after tiny's
    base = E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds
    cal = store.read_json(E.calibration_path())
    cal["cpu"]["first_calls_s"] = 3.0  # imports and library set-up, timed with the first preset
    store.atomic_write_json(E.calibration_path(), cal)
    assert E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds \
        == pytest.approx(base - 0.1 + 3.0)


def test_a_forced_run_is_estimated_though_cached_and_runs_timings_hold_their_first_calls(
        tiny_run):
    runs = store.list_runs()
    _write_calibration(first_calls_s=2.5)
    cached = E.estimate([tiny_run.cfg], runs, "cpu")
    assert cached.seconds == 0.0 and cached.basis == "already cached"
    forced = E.estimate([tiny_run.cfg], runs, "cpu", recompute=True,
                        gan_available=lambda c: True)
    assert forced.seconds > 0 and forced.basis == "from this machine's earlier runs"
    # the run's stage timings were taken in a fresh process: its first calls are in them
    _write_calibration(first_calls_s=0.0)
    assert E.estimate([tiny_run.cfg], runs, "cpu", recompute=True,
                      gan_available=lambda c: True).seconds == pytest.approx(forced.seconds)
    # but not what the process imported before the run's clock started
    cal = store.read_json(E.calibration_path())
    cal["cpu"]["imports_s"] = 1.5
    store.atomic_write_json(E.calibration_path(), cal)
    assert E.estimate([tiny_run.cfg], runs, "cpu", recompute=True,
                      gan_available=lambda c: True).seconds == pytest.approx(forced.seconds + 1.5)
    assert E.estimate([tiny_run.cfg], runs, "cpu", recompute=True, umap_warm=True,
                      gan_available=lambda c: True).seconds == pytest.approx(forced.seconds)


def test_a_reference_kept_on_disk_is_searched_not_embedded_again(monkeypatch):
    cfg = preset("quick", ood_digit=8)  # before, mcdd, xdd under the unlabeled reference
    _write_calibration(reference_fit_s=3.0, knn_pair_s=1e-8)
    base = E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds
    assert not E.reference_on_disk(cfg)
    monkeypatch.setattr(costs, "reference_on_disk", lambda c: True)
    kept = E.estimate([cfg], [], "cpu", gan_available=lambda c: True).seconds
    # the pretrained D's 54,000 reference images are neither embedded nor fitted again; its
    # k-NN search over them stays
    assert base - kept == pytest.approx(54000 * 1e-4 + 3.0)
    # only the pretrained D's are kept: a run that does not score it gains nothing
    no_before = preset("quick", ood_digit=8, methods=("pixels", "mcdd", "xdd"))
    on_disk = E.estimate([no_before], [], "cpu", gan_available=lambda c: True).seconds
    monkeypatch.setattr(costs, "reference_on_disk", lambda c: False)
    assert E.estimate([no_before], [], "cpu", gan_available=lambda c: True).seconds == on_disk
    # a run that read its reference from disk: its before timing is not a rate per image
    run = _synthetic_run(wall=30.0)
    del run["timings"]["score:mcdd"]
    run["timings"]["score:before"] = 0.5
    assert E.rates_from_runs([run], "tiny", "cpu", threads=1).score_image_s \
        == pytest.approx((0.5 + 5.0) / 2 / (400 + 512))
    run["reference_loaded"] = ["before"]
    assert E.rates_from_runs([run], "tiny", "cpu", threads=1).score_image_s \
        == pytest.approx(5.0 / (400 + 512))


# ---------------------------------------------------------------- the estimate follows the plan


def _seconds(cfg, **kw) -> float:
    return E.estimate([cfg], [], "cpu", gan_available=lambda c: True, **kw).seconds


def test_a_method_registered_at_run_time_costs_one_retraining_and_one_scoring(beta_two):
    cfg = preset("quick", ood_digit=8)
    more = preset("quick", ood_digit=8, methods=cfg.methods + (beta_two.name,))
    assert beta_two.name in more.methods
    _write_calibration(ret=0.02, score=1e-4, reference_fit_s=3.0, knn_pair_s=1e-8)
    # retrained with its own objective, then its embedding scored: the test images and the
    # 54,000 reference images embedded, the reference's PCA fitted and searched; not projected
    assert _seconds(more) - _seconds(cfg) == pytest.approx(
        cfg.retrain.steps * 0.02 + (10000 + 54000) * 1e-4 + 3.0 + 10000 * 54000 * 1e-8)
    labeled = {"score.references": ("labeled",)}
    assert _seconds(preset("quick", ood_digit=8, methods=more.methods, **labeled)) \
        - _seconds(preset("quick", ood_digit=8, **labeled)) == pytest.approx(
            cfg.retrain.steps * 0.02 + 10000 * 1e-4)
    # at another shot count a retraining step costs in proportion to the labeled images
    five = {"shots": 5}
    assert _seconds(preset("quick", ood_digit=8, methods=more.methods, **five)) \
        - _seconds(preset("quick", ood_digit=8, **five)) == pytest.approx(
            cfg.retrain.steps * 0.02 * 45 / 90 + (10000 + 54000) * 1e-4 + 3.0
            + 10000 * 54000 * 1e-8)


def test_no_estimate_module_names_a_method():
    """Every decision comes from the stages and the method rows: no method's name is written
    in xdd/estimate/ ("pixels" is also the calibration's key for the raw-pixel reference's
    cost, a field of its file)."""
    import ast
    from pathlib import Path

    from xdd.core import methods

    found = {}
    for path in Path(costs.__file__).parent.glob("*.py"):
        consts = {n.value for n in ast.walk(ast.parse(path.read_text()))
                  if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        found[path.name] = sorted(consts & (set(methods.names()) - {"pixels"}))
    assert not any(found.values()), found


def test_the_softmax_method_is_costed_without_a_reference():
    cfg = preset("quick", ood_digit=8)
    more = preset("quick", ood_digit=8, methods=cfg.methods + ("softmax",))
    _write_calibration(ret=0.02, score=1e-4, reference_fit_s=3.0, knn_pair_s=1e-8)
    # its scorer reads a classifier head: the test images embedded, no reference embedded,
    # fitted or searched
    assert _seconds(more) - _seconds(cfg) == pytest.approx(
        cfg.retrain.steps * 0.02 + 10000 * 1e-4)


def test_pyod_searches_the_pretrained_ds_reference_again():
    cfg = preset("quick", ood_digit=8)
    more = preset("quick", ood_digit=8, methods=cfg.methods + ("pyod",))
    _write_calibration(score=1e-4, reference_fit_s=3.0, knn_pair_s=1e-8)
    # the reference the pretrained D's scores built is reused: the test images embedded and
    # the reference searched, nothing retrained
    assert _seconds(more) - _seconds(cfg) == pytest.approx(10000 * 1e-4 + 10000 * 54000 * 1e-8)
    # alone, it builds that reference itself
    alone = preset("quick", ood_digit=8, methods=("pyod",))
    before = preset("quick", ood_digit=8, methods=("before",))
    assert _seconds(alone, umap_warm=True) == pytest.approx(
        _seconds(before, umap_warm=True) - (1000 + 90) * (1e-5 + 1e-2 + 5e-3))  # no maps


def test_a_run_without_maps_compiles_no_umap():
    cfg = preset("quick", ood_digit=8, methods=("pixels", "mcdd"))  # neither is projected
    _write_calibration(compile_s=7.0)
    assert _seconds(cfg) == pytest.approx(_seconds(cfg, umap_warm=True))


def test_a_runs_score_timings_are_read_through_its_stages():
    """A score stage's timing is a rate per image it embedded: the softmax method's only the
    test images, the raw pixels' none (a whole stage's cost)."""
    from xdd.core.config import to_dict

    run = _synthetic_run(wall=30.0)
    cfg = preset("tiny", ood_digit=8, methods=("pixels", "softmax"))
    run["config"] = to_dict(cfg)
    run["timings"] = {"data": 1.0, "pretrain": 0.0, "retrain:softmax": 10.0,
                      "score:pixels": 4.0, "score:softmax": 2.0}
    rates = E.rates_from_runs([run], "tiny", "cpu", threads=1)
    assert rates.score_image_s == pytest.approx(2.0 / 400)
    assert rates.pixels_s == pytest.approx(4.0)


def test_an_empty_cache_gets_a_first_guess_scaled_by_this_cpus_probe(monkeypatch, tmp_path):
    from xdd.estimate import costs, first_guess

    cfg = preset("quick", ood_digit=8)
    _write_calibration(pre=0.1)  # written as a calibration, then moved to be the reference
    ref = store.read_json(E.calibration_path())
    E.calibration_path().unlink()
    monkeypatch.setenv("XDD_ESTIMATE_REFERENCE", str(tmp_path / "reference.json"))
    assert E.estimate([cfg], [], "cpu").seconds is None  # nothing shipped: nothing to scale
    store.atomic_write_json(first_guess.reference_path(), {**ref, "probe_s": 0.01})
    monkeypatch.setattr(first_guess, "this_machine_probe_s", lambda: 0.01)
    same = E.estimate([cfg], [], "cpu")
    assert same.seconds is not None and same.basis == costs.FIRST_GUESS
    monkeypatch.setattr(first_guess, "this_machine_probe_s", lambda: 0.02)  # twice as slow
    slow = E.estimate([cfg], [], "cpu")
    assert slow.seconds == pytest.approx(2 * same.seconds)
    # the reference's figures, as a calibration here would give: the estimate is the same
    store.atomic_write_json(E.calibration_path(), ref)
    timed = E.estimate([cfg], [], "cpu")
    assert timed.seconds == pytest.approx(same.seconds) and timed.basis != costs.FIRST_GUESS


def test_a_first_guess_leaves_counts_and_exponents_alone():
    from xdd.estimate.first_guess import _nearest_threads, _scaled

    cal = {"data_s": 1.0, "presets": {"quick": {
        "project_point_s": {"tsne": 2.0}, "project_n": 1200, "project_exp": {"tsne": 1.4},
        "pixels": {"fit_s": 3.0, "fit_rows": 500}, "rates": {"1": {"retrain_step_s": 0.5}}}}}
    got = _scaled(cal, 3.0)
    q = got["presets"]["quick"]
    assert got["data_s"] == 3.0 and q["project_point_s"]["tsne"] == 6.0
    assert q["project_n"] == 1200 and q["project_exp"]["tsne"] == 1.4
    assert q["pixels"] == {"fit_s": 9.0, "fit_rows": 500}
    assert q["rates"]["1"]["retrain_step_s"] == 1.5  # under a thread count: still a time
    assert _nearest_threads(q, 3)["rates"]["3"] == q["rates"]["1"]
