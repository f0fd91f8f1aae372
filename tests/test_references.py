"""The two scoring references of a run: what the unlabeled reference holds, that both are
stored and reloaded, and that every stored AUPRC is recomputed from scores.npz."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from xdd.storage import store
from xdd.core.config import ConfigError, preset, run_key
from xdd.storage.data import N_VAL, eval_arrays, load_mnist, make_splits
from xdd.pipeline.experiment import run_experiment
from xdd.pipeline.scores import score_key
from xdd.pipeline.reference import reference_indices
from xdd.report.tables import run_scores


def test_unlabeled_reference_holds_no_test_image_and_no_ood_digit(mnist):
    for split in ("test", "val"):
        for digit in (0, 7):
            cfg = preset("quick", ood_digit=digit, **{"data.eval_split": split})
            splits = make_splits(cfg, mnist)
            ref = reference_indices(cfg, splits)
            assert len(ref) == len(np.unique(ref)) > 40000
            # indices into the training set, never of the OOD digit, never a labeled image's
            # label used: just the pretraining pool
            assert ref.min() >= 0 and ref.max() < len(mnist.y_train)
            assert not np.any(mnist.y_train[ref] == digit)
            assert set(ref) == set(splits.pretrain)
            if split == "val":  # the evaluation images are the last 10k training images
                assert ref.max() < len(mnist.y_train) - N_VAL
            # never a test image: the evaluation set is another array (test) or disjoint (val)
            x_eval, _ = eval_arrays(mnist, split)
            assert x_eval is mnist.x_test or not set(ref) & set(
                range(len(mnist.y_train) - N_VAL, len(mnist.y_train)))
    sub = preset("quick", ood_digit=3, **{"score.n_reference": 1000})
    ref = reference_indices(sub, make_splits(sub, mnist))
    assert len(ref) == 1000 and not np.any(mnist.y_train[ref] == 3)


def test_both_references_stored_reloaded_and_recomputed(tiny_run):
    res = store.load_results(tiny_run.key)
    assert res is not None and set(res["references"]) == {"labeled", "unlabeled"}
    assert res["methods"] == res["references"]["labeled"]  # the paper's protocol, as before
    assert "pixels" in res["methods"]  # computed in a thread of its own, recorded all the same
    arr = store.load_npz(tiny_run.key, "scores.npz")
    cfg = tiny_run.cfg
    data = load_mnist()
    ref = arr["reference_index"]
    assert len(ref) == cfg.data.n_pretrain and not np.any(data.y_train[ref] == cfg.ood_digit)
    assert np.array_equal(np.sort(ref), np.sort(make_splits(cfg, data).pretrain))
    for reference, methods in res["references"].items():
        for m, met in methods.items():
            s = arr[score_key(reference, m)]
            assert s.shape == arr["is_ood"].shape and np.isfinite(s).all()
            assert run_scores(arr, reference, m) is s or np.array_equal(run_scores(arr, reference, m), s)
            assert average_precision_score(arr["is_ood"], s) == met["auprc"]
    # the two references score the same network differently
    assert not np.allclose(arr[score_key("labeled", "xdd")], arr[score_key("unlabeled", "xdd")])
    assert "1-NN distance to 512 unlabeled" in res["reference_info"]["unlabeled"]


def test_references_are_part_of_the_config(tiny_run):
    only = preset("tiny", ood_digit=8, methods=("before",), **{"score.references": "labeled"})
    assert only.score.references == ("labeled",) and run_key(only) != run_key(
        dataclasses.replace(only, score=dataclasses.replace(only.score,
                                                            references=("labeled", "unlabeled"))))
    res = run_experiment(only, device="cpu")
    assert set(res["references"]) == {"labeled"}
    assert res["methods"]["before"] == tiny_run.results["methods"]["before"]
    for bad in ({"score.references": "nope"}, {"score.unlabeled_scorer": "lof"},
                {"score.knn_backend": "annoy"}, {"score.knn_k": 0}):
        with pytest.raises(ConfigError):
            preset("tiny", **bad)


def test_unlabeled_kde_and_pyod_and_faiss(tiny_run):
    base = dict(ood_digit=8, methods=("before", "pyod"), **{"projection.methods": ()})
    knn = run_experiment(preset("tiny", **base), device="cpu")
    fa = run_experiment(preset("tiny", **base, **{"score.knn_backend": "faiss"}), device="cpu")
    kde = run_experiment(preset("tiny", **base, **{"score.unlabeled_scorer": "kde"}),
                         device="cpu")
    u = {n: r["references"]["unlabeled"] for n, r in (("knn", knn), ("faiss", fa), ("kde", kde))}
    # the same pretrained D as the shared tiny run: "before" k-NN equals its unlabeled score
    assert u["knn"]["before"]["auprc"] == tiny_run.results["references"]["unlabeled"]["before"]["auprc"]
    assert u["faiss"]["before"]["auprc"] == pytest.approx(u["knn"]["before"]["auprc"], abs=1e-3)
    assert u["kde"]["before"]["bandwidth"] > 0 and 0 < u["kde"]["before"]["auprc"] <= 1
    assert "pyod" in u["knn"] and "pyod" not in knn["references"]["labeled"]


def test_reference_features_embed_each_image_once_and_match_two_passes():
    from xdd.pipeline.reference import reference_features
    from xdd.core.scoring import FeatureReducer

    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    ref_index = np.sort(rng.choice(300, 200, replace=False))
    fit_rows = np.sort(rng.choice(200, 60, replace=False))
    # integer weights: every embedding is an exact integer sum, the same whatever the batch,
    # so the PCA is fitted on identical rows both ways (no float trajectory to depend on)
    w = rng.integers(-3, 4, size=(784, 40)).astype(np.float32)
    seen: list[int] = []

    def embed(u8):  # a fixed random projection, counting the images it is given
        seen.append(len(u8))
        return u8.reshape(len(u8), -1).astype(np.float32) @ w

    red, feats = reference_features(embed, images, ref_index, fit_rows,
                                    FeatureReducer(8, True, seed=0), batch=17)
    assert sum(seen) == len(ref_index) and max(seen) <= 17  # every image once, in batches
    # The same as fitting on the fit rows, then projecting every row in order
    all_z = embed(images[ref_index])
    want = FeatureReducer(8, True, seed=0).fit(all_z[fit_rows]).transform(all_z)
    assert feats.shape == (200, 8) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(red.transform(all_z[:5]), want[:5], rtol=1e-5, atol=1e-6)


def _forget_kept_scores() -> None:
    """Remove the reusable scores runs keep, so a rerun scores the pretrained D itself."""
    import shutil

    shutil.rmtree(store.cache_root() / "reuse", ignore_errors=True)


def test_the_pretrained_ds_reference_is_kept_beside_its_gan_and_reused(tiny_run):
    """A rerun of the GAN and seed with other shots reads the pretrained D's reference
    features from disk and scores exactly as a run that computes them; another seed does
    not share them."""
    from xdd.pipeline.reference import cached_path, load_cached

    cfg = tiny_run.cfg
    path = cached_path(cfg)
    assert path.is_file() and path.parent == store.pretrain_dir(tiny_run.results["pretrain_key"])
    assert tiny_run.results["reference_loaded"] == []  # the first run computed them
    fewer = dataclasses.replace(cfg, shots=3)
    assert cached_path(fewer) == path and cached_path(dataclasses.replace(cfg, seed=1)) != path
    assert cached_path(dataclasses.replace(
        cfg, score=dataclasses.replace(cfg.score, knn_pca=8))) != path
    _forget_kept_scores()  # else the pretrained D's scores are read whole (xdd.pipeline.reuse)
    loaded = run_experiment(fewer, device="cpu")
    assert loaded["reference_loaded"] == ["before"]
    scores = store.load_npz(loaded["run_key"], "scores.npz")
    path.unlink()
    _forget_kept_scores()
    computed = run_experiment(fewer, device="cpu", force=True)
    assert computed["reference_loaded"] == [] and path.is_file()  # computed, and kept again
    again = store.load_npz(computed["run_key"], "scores.npz")
    for m in ("before", "xdd"):
        assert np.array_equal(scores[score_key("unlabeled", m)], again[score_key("unlabeled", m)])
    assert computed["references"] == loaded["references"]
    splits = make_splits(cfg, load_mnist())
    red, feats = load_cached(cfg, reference_indices(cfg, splits), _pretrained_digest(cfg))
    assert feats.shape == (len(splits.pretrain), cfg.score.knn_pca) and feats.dtype == np.float32


def test_an_altered_or_mismatched_reference_file_is_not_used(tiny_run):
    from xdd.pipeline.reference import cached_path, load_cached

    cfg = tiny_run.cfg
    ref_index = reference_indices(cfg, make_splits(cfg, load_mnist()))
    net = _pretrained_digest(cfg)
    path = cached_path(cfg)
    good = path.read_bytes()
    assert load_cached(cfg, ref_index, net) is not None
    assert load_cached(cfg, ref_index[::-1].copy(), net) is None  # kept for other images
    assert load_cached(cfg, ref_index, "0" * 64) is None  # embedded by another network
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["feats"] = arrays["feats"].copy()
    arrays["feats"][3, 1] += 1.0  # a consistent file whose features changed
    store.atomic_save_npz(path, **arrays)
    assert load_cached(cfg, ref_index, net) is None
    path.write_bytes(good[: len(good) // 2])  # cut short
    assert load_cached(cfg, ref_index, net) is None
    path.write_bytes(good)
    assert load_cached(cfg, ref_index, net) is not None
    path.write_bytes(b"not an npz file")
    _forget_kept_scores()
    res = run_experiment(dataclasses.replace(cfg, shots=3), device="cpu")
    assert res["reference_loaded"] == [] and load_cached(cfg, ref_index, net) is not None


def _pretrained_digest(cfg) -> str:
    from xdd.pipeline.gan import load_pretrained
    from xdd.core.models import weights_digest

    return weights_digest(load_pretrained(cfg, "cpu")[1])


def test_a_cache_that_cannot_keep_the_reference_still_runs(tiny_run, monkeypatch, tmp_path):
    from xdd.pipeline import reference

    blocked = tmp_path / "a-file"
    blocked.write_text("")  # its "folder" cannot be made: the write fails with an OSError
    monkeypatch.setattr(reference, "cached_path", lambda cfg: blocked / "reference-x.npz")
    res = run_experiment(dataclasses.replace(tiny_run.cfg, shots=3), device="cpu")
    assert res["reference_loaded"] == [] and "unlabeled" in res["references"]
    assert blocked.is_file()
