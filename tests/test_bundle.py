"""The pretrained GANs shipped in xdd/pretrained/ and how a run uses them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xdd.storage import bundle
from xdd.storage import store
from xdd.core.config import preset, pretrain_key
from xdd.pipeline.experiment import run_experiment
from xdd.core.models import Discriminator


def test_every_shipped_gan_has_todays_key_and_loads_weights_only(monkeypatch):
    monkeypatch.delenv("XDD_BUNDLE", raising=False)
    entries = bundle.entries()
    # the quick preset's default GAN (seed 0) for every held-out digit: the first demo's
    assert {(e["preset"], e["gan_seed"], e["ood_digit"]) for e in entries.values()} >= {
        ("quick", 0, d) for d in range(10)}
    for key, e in entries.items():
        cfg = preset(e["preset"], ood_digit=e["ood_digit"], **{"pretrain.seed": e["gan_seed"]})
        assert pretrain_key(cfg) == key, f"{key}: today's code computes another key"
        path = bundle.DEFAULT_DIR / f"{key}.pt"
        assert store.sha256_file(path) == e["sha256"]
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert state["meta"] == bundle._meta(cfg)
        D = Discriminator(cfg.pretrain.d_width)
        D.load_state_dict(state["D"])  # strict: every weight present, no stray one
        assert state["samples"].shape == (64, 28, 28) and state["samples"].dtype == torch.uint8
        assert path.stat().st_size < 400_000  # small: D and 64 images, no generator
        got = bundle.load(cfg, "cpu")
        assert got is not None and np.array_equal(got[1], state["samples"].numpy())


@pytest.mark.slow
def test_a_run_takes_its_gan_from_the_bundle_unless_forced(tmp_path, monkeypatch, xdd_cache):
    cfg = preset("tiny", ood_digit=3, methods=("before",), **{"projection.methods": "pca"})
    made = run_experiment(cfg, device="cpu")  # trains the GAN here and caches it
    assert made["pretrain_source"] == "trained"
    from xdd.pipeline.gan import load_pretrained

    G, D = load_pretrained(cfg, "cpu")
    from xdd.train.pretrain import sample_images

    monkeypatch.setenv("XDD_BUNDLE", str(tmp_path / "bundle"))
    bundle.write(cfg, D, sample_images(G), made["pretrain_losses"])

    monkeypatch.setenv("XDD_CACHE", str(tmp_path / "fresh"))  # a machine without that GAN
    got = run_experiment(cfg, device="cpu")
    assert got["pretrain_source"] == "bundle" and got["pretrain_reused"] is True
    # the same D (same process): the same scores, exactly
    assert got["methods"]["before"]["auprc"] == made["methods"]["before"]["auprc"]
    assert got["pretrain_losses"] == made["pretrain_losses"]
    # nothing trained, no GAN cached: only the shipped D's reference features are kept
    pdir = store.pretrain_dir(pretrain_key(cfg))
    assert [p.name.startswith("reference-") for p in pdir.iterdir()] == [True]
    assert load_pretrained(cfg, "cpu") is None
    forced = run_experiment(cfg, device="cpu", force=True)
    assert forced["pretrain_source"] == "trained"

    # a bundled file that does not match its recorded hash is never used
    monkeypatch.setenv("XDD_CACHE", str(tmp_path / "fresh2"))
    path = bundle.bundle_dir() / f"{pretrain_key(cfg)}.pt"
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert bundle.load(cfg, "cpu") is None
    assert run_experiment(cfg, device="cpu")["pretrain_source"] == "trained"


def test_a_bundle_entry_for_another_config_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDD_BUNDLE", str(tmp_path))
    cfg = preset("tiny", ood_digit=3)
    D = Discriminator(cfg.pretrain.d_width)
    bundle.write(cfg, D, np.zeros((64, 28, 28), np.uint8), None)
    assert bundle.load(cfg, "cpu") is not None
    other = preset("tiny", ood_digit=3, **{"pretrain.steps": 21})
    assert bundle.load(other, "cpu") is None  # another key: no file
    # a file renamed to another config's key carries the wrong config and is refused
    src = tmp_path / f"{pretrain_key(cfg)}.pt"
    dst = tmp_path / f"{pretrain_key(other)}.pt"
    dst.write_bytes(src.read_bytes())
    idx = store.read_json(tmp_path / "index.json")
    idx[pretrain_key(other)] = dict(idx[pretrain_key(cfg)])
    store.atomic_write_json(tmp_path / "index.json", idx)
    assert bundle.load(other, "cpu") is None
