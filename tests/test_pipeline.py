"""A run as a list of stages, and a method as one row: the stage list, the objects the stages
share (scores, reference features), and a method registered here, in the test alone, run
through the tiny pipeline, the report and the CLI's table."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from xdd.core import methods
from xdd.core.config import preset
from xdd.pipeline.plan import plan


def _names(stages):
    return [s.name for s in stages]


def test_the_plan_lists_the_stages_a_run_executes_in_order():
    cfg = preset("quick", ood_digit=3)  # pixels, before, mcdd, xdd; maps pca, tsne, umap
    stages = plan(cfg)
    assert _names(stages) == [
        "data", "pretrain", "score:pixels", "score:before", "retrain:mcdd", "score:mcdd",
        "retrain:xdd", "score:xdd", "commit",
        "project:before:pca", "project:before:tsne", "project:before:umap",
        "project:xdd:pca", "project:xdd:tsne", "project:xdd:umap", "frames:xdd"]
    by = {s.name: s for s in stages}
    assert by["score:pixels"].beside and by["score:before"].beside
    assert not by["score:xdd"].beside and not by["score:mcdd"].beside
    assert by["score:pixels"].reference == "raw-pixels" and not by["score:pixels"].embeds_test
    assert by["score:before"].reference == "build" and by["score:before"].keeps_reference
    assert by["score:xdd"].reference == "build" and not by["score:xdd"].keeps_reference
    assert by["retrain:xdd"].snapshots and not by["retrain:mcdd"].snapshots  # xdd is mapped


def test_the_plan_reads_each_methods_row():
    all_methods = preset("tiny", ood_digit=3, methods=tuple(methods.names()),
                         **{"projection.methods": ()})
    by = {s.name: s for s in plan(all_methods)}
    assert by["score:pyod"].reference == "reuse"  # the pretrained D's, built for "before"
    assert by["score:softmax"].reference is None and by["score:softmax"].embeds_test
    assert not any(s.kind in ("project", "frames") or s.snapshots for s in by.values())
    pixels_only = plan(preset("tiny", ood_digit=3, methods=("pixels",)))
    assert _names(pixels_only) == ["data", "score:pixels", "commit"]  # no GAN, no map
    only_pyod = {s.name: s for s in plan(preset("tiny", ood_digit=3, methods=("pyod",)))}
    assert only_pyod["score:pyod"].reference == "build"  # nothing built it before


def test_scores_record_metrics_in_the_order_asked():
    from xdd.core.metrics import all_metrics
    from xdd.pipeline.scores import Scores

    rng = np.random.default_rng(0)
    is_ood = (rng.random(200) < 0.2).astype(np.int8)
    sc = Scores(("labeled", "unlabeled"), is_ood)
    a, b = rng.normal(size=200), rng.normal(size=200) + is_ood
    sc.record("unlabeled", "b", b)
    sc.record("labeled", "a", a, bandwidth=0.5)
    m = sc.metrics(["a", "b"])
    assert list(m) == ["labeled", "unlabeled"]
    assert m["labeled"]["a"] == dict(all_metrics(is_ood, a), bandwidth=0.5)
    assert m["unlabeled"] == {"b": all_metrics(is_ood, b)}
    arrays = sc.arrays(["a", "b"])
    assert sorted(arrays) == ["score_labeled_a", "score_unlabeled_b"]
    assert arrays["score_unlabeled_b"] is b
    assert m["unlabeled"]["b"]["auprc"] > m["labeled"]["a"]["auprc"]  # b knows the labels


class _CountingNet:
    """Stands in for a network: ReferenceStore only hands it to its embedding function."""


def test_the_reference_store_computes_each_networks_features_once(monkeypatch):
    from xdd.pipeline import reference
    from xdd.pipeline.timing import Timings

    calls = []
    started = threading.Event()

    def fake_compute(self, name, model, keep):
        calls.append((name, keep))
        started.set()
        threading.Event().wait(0.05)  # a second caller arrives while this one computes
        return ("reducer", np.full((3, 2), len(calls), dtype=np.float32))

    monkeypatch.setattr(reference.ReferenceStore, "_compute", fake_compute)
    timings = Timings()
    store = reference.ReferenceStore(preset("tiny", ood_digit=1), np.zeros((5, 28, 28)),
                                     np.arange(3), np.arange(2), timings)
    net = _CountingNet()
    out = []
    threads = [threading.Thread(target=lambda n=n: out.append(
        store.features("pretrained", n, net, keep=True))) for n in ("before", "pyod")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and out[0] is out[1]  # one computation, shared
    assert calls[0][1] is True and list(timings.seconds) == [f"reference:{calls[0][0]}"]
    other = store.features("retrained:xdd", "xdd", net, keep=False)
    assert len(calls) == 2 and other[1][0, 0] == 2
    store.clear()
    store.features("pretrained", "before", net, keep=True)
    assert len(calls) == 3  # cleared: computed again


def test_a_method_registered_in_a_test_runs_through_the_pipeline_the_report_and_the_cli(
        beta_two, capsys):
    from xdd.cli.main import main
    from xdd.pipeline.experiment import run_experiment
    from xdd.report.document import digit_table
    from xdd.report.tables import results_table

    cfg = preset("tiny", ood_digit=4, methods=("before", "beta2", "xdd"),
                 **{"projection.methods": ()})
    assert cfg.methods == ("before", "xdd", "beta2")  # registered methods come after the table
    assert [s.name for s in plan(cfg) if s.method == "beta2"] == ["retrain:beta2", "score:beta2"]
    res = run_experiment(cfg, device="cpu")
    for ref in ("labeled", "unlabeled"):
        got = res["references"][ref]["beta2"]
        assert 0.0 < got["auprc"] <= 1.0
        assert got["auprc"] != res["references"][ref]["xdd"]["auprc"]  # another loss
    assert "retrain:beta2" in res["timings"] and "score:beta2" in res["timings"]

    df = results_table([res])
    assert set(df[df.method == "beta2"].reference) == {"labeled", "unlabeled"}
    assert "beta 2" in digit_table(df, "unlabeled")

    assert main(["show", res["run_key"]]) == 0
    table = [ln.split() for ln in capsys.readouterr().out.splitlines()]
    rows = [ln for ln in table if ln[:1] == ["beta2"]]
    assert [r[1] for r in rows] == ["labeled", "unlabeled"]
    assert float(rows[0][2]) == pytest.approx(res["references"]["labeled"]["beta2"]["auprc"],
                                              abs=5e-5)


def test_a_registered_name_is_refused_once_it_is_gone(beta_two):
    from xdd.core.config import ConfigError

    methods.unregister(beta_two.name)
    try:
        with pytest.raises(ConfigError, match="unknown method 'beta2'"):
            preset("tiny", ood_digit=4, methods=("beta2",))
    finally:
        methods.register(beta_two)  # the fixture unregisters it
    with pytest.raises(ValueError, match="exists already"):
        methods.register(beta_two)


def test_a_run_keeps_each_retrainings_curves_verified_and_the_last_loss_is_the_reported_one(
        tiny_run):
    from xdd.pipeline.curves import CURVES_FILE, load_curves
    from xdd.storage import store

    curves = load_curves(tiny_run.key)
    steps = tiny_run.cfg.retrain.steps
    retrained = [m for m in tiny_run.cfg.methods if methods.BY_NAME[m].objective]
    assert sorted(curves) == sorted(retrained) and steps > 1
    for m in retrained:
        c = curves[m]
        assert list(c["step"]) == list(range(1, steps + 1))
        assert np.all(c["lr"] == tiny_run.cfg.retrain.lr)
        assert np.all(c["within"] >= 0) and np.all(c["between"] > 0)
        # the loss is the sum of its two sides, each weighed as the loss weighs it
        assert np.allclose(c["ixz"] + c["izy"], c["loss"], rtol=1e-5, atol=1e-6)
    beta = tiny_run.cfg.retrain.beta
    xdd = curves[methods.AFTER]
    assert np.allclose(xdd["izy"], beta * (xdd["mcdd"] + tiny_run.cfg.retrain.pull_weight
                                           * xdd.get("pull", 0.0)), rtol=1e-6)
    assert np.all(curves["mcdd"]["ixz"] == 0)  # the MCDD-only method has no pairwise side
    # an altered file is not read
    path = store.run_dir(tiny_run.key) / CURVES_FILE
    path.write_bytes(path.read_bytes()[:-8] + b"12345678")
    assert load_curves(tiny_run.key) is None


def test_the_last_curve_value_is_the_last_loss_the_retraining_reported():
    import torch

    from xdd.core.models import Discriminator
    from xdd.train.retrain import retrain

    cfg = preset("tiny", ood_digit=0).retrain
    torch.manual_seed(0)
    D0 = Discriminator(0.5).eval()
    x = torch.rand(18, 1, 28, 28) * 2 - 1
    y = torch.arange(9).repeat(2)
    out = retrain(D0, cfg, x, y, methods.AFTER, seed=1, report_every=4)
    assert out.curves["loss"][-1] == out.history[-1]["loss"]
    assert len(out.curves["loss"]) == cfg.steps and out.history[-1]["step"] == cfg.steps


def test_a_run_made_before_curves_has_none():
    from xdd.pipeline.curves import load_curves

    assert load_curves("0123456789abcdef") is None


def test_the_retraining_frames_share_the_static_maps_points_and_end_on_the_after_map(tiny_run):
    from xdd.storage import store
    from xdd.train.snapshots import snapshot_steps

    proj = store.load_npz(tiny_run.key, "projections.npz")
    after = methods.AFTER
    frames, steps = proj[f"{after}_frames"], proj[f"{after}_frame_steps"]
    n_points = len(proj["index"]) + len(proj["labeled_label"])
    assert frames.shape == (len(steps), n_points, 2) and frames.dtype == np.float32
    assert tuple(steps) == snapshot_steps(tiny_run.cfg.retrain.steps)
    assert steps[0] == 0 and steps[-1] == tiny_run.cfg.retrain.steps
    # the last frame is the static "after" PCA map itself, point for point
    assert np.array_equal(frames[-1], proj[f"{after}_pca"])
    assert not np.allclose(frames[0], frames[-1])  # the embedding moved
    assert f"{methods.BEFORE}_frames" not in proj  # nothing retrains "before"


def test_snapshots_are_what_embed_all_gives_at_that_step():
    import dataclasses

    import torch

    from xdd.core.models import Discriminator
    from xdd.train.retrain import embed_all, embed_snapshots, retrain
    from xdd.train.snapshots import snapshot_steps

    assert snapshot_steps(200) == (0, 10, 25, 50, 100, 200)
    assert snapshot_steps(5) == (0, 1, 2, 5)
    cfg = preset("tiny", ood_digit=0).retrain
    torch.manual_seed(0)
    D0 = Discriminator(0.5).eval()
    x = torch.rand(18, 1, 28, 28) * 2 - 1
    y = torch.arange(9).repeat(2)
    probe = torch.rand(7, 1, 28, 28) * 2 - 1
    out = retrain(D0, cfg, x, y, methods.AFTER, seed=1, snapshots=True)
    assert tuple(out.snapshots) == snapshot_steps(cfg.steps)[:-1]  # the last: out.D's own
    z = embed_snapshots(out.D, out.snapshots, probe)
    assert np.array_equal(z[0], embed_all(D0, probe).numpy())
    longer = retrain(D0, dataclasses.replace(cfg, steps=cfg.steps + 1), x, y, methods.AFTER,
                     seed=1, snapshots=True)
    # a snapshot is the network at that step: the same step of a longer retraining agrees
    common = sorted(set(out.snapshots) & set(longer.snapshots) - {0})
    assert common
    z_longer = embed_snapshots(longer.D, longer.snapshots, probe)
    for step in common:
        assert np.array_equal(z[step], z_longer[step])
    assert not np.array_equal(z[common[-1]], embed_all(out.D, probe).numpy())  # it moved
    plain = retrain(D0, cfg, x, y, methods.AFTER, seed=1)  # snapshots change no weight
    assert np.array_equal(embed_all(plain.D, x).numpy(), embed_all(out.D, x).numpy())


def test_the_after_network_is_kept_with_its_centres_and_its_reference_features(tiny_run):
    import torch

    from xdd.core.scoring import FeatureReducer
    from xdd.pipeline.reference import REFERENCE_FILE
    from xdd.storage import store

    ckpt = store.load_checkpoint(store.run_dir(tiny_run.key) / "checkpoint.pt")
    obj = ckpt["objective"]
    assert sorted(obj) == ["bias", "centers", "log_sigma"]
    assert obj["centers"].shape[0] == 9 and torch.isfinite(obj["centers"]).all()
    kept = store.load_npz(tiny_run.key, REFERENCE_FILE)
    s = store.load_npz(tiny_run.key, "scores.npz")
    assert kept["feats"].shape == (len(s["reference_index"]), tiny_run.cfg.score.knn_pca)
    reducer = FeatureReducer.from_state(
        {k[len("reducer_"):]: v for k, v in kept.items() if k.startswith("reducer_")})
    assert reducer.transform(np.zeros((1, obj["centers"].shape[1]))).shape == (
        1, tiny_run.cfg.score.knn_pca)
