"""The cache: layout, atomic writes, verified loading, hits, GAN reuse and corruption."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import xdd.train.pretrain
import xdd.train.retrain
from xdd.storage import store
from xdd.core.config import preset, pretrain_key, run_key
from xdd.pipeline.experiment import cached_results, run_experiment


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and mtime: 'nothing was written' is a comparison."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def forbid_training(monkeypatch: pytest.MonkeyPatch, pretrain: bool = True, retrain: bool = True):
    def boom(*a, **k):
        raise AssertionError("training was called on what should have been a cache hit")

    if pretrain:
        monkeypatch.setattr(xdd.train.pretrain, "pretrain_gan", boom)
    if retrain:
        monkeypatch.setattr(xdd.train.retrain, "retrain", boom)


def count_calls(monkeypatch: pytest.MonkeyPatch, module, name: str) -> list:
    calls: list = []
    real = getattr(module, name)

    def wrapper(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def fast(cfg_kwargs: dict | None = None, **kw):
    """A tiny config sharing the shared run's pretraining, with only cheap projections."""
    return preset("tiny", ood_digit=8, **{"projection.methods": ("pca",)}, **(cfg_kwargs or {}), **kw)


# ---------------------------------------------------------------- layout and keys


def test_cache_root_follows_env(xdd_cache):
    assert store.cache_root() == xdd_cache
    assert store.runs_dir() == xdd_cache / "runs"
    assert store.run_dir("0123456789abcdef") == xdd_cache / "runs" / "0123456789abcdef"
    assert store.pretrain_dir("abc") == xdd_cache / "pretrain" / "abc"


@pytest.mark.parametrize("key", ["", "../etc", "ABCDEF0123456789", "xyz", "0" * 65, "a/b", "..",
                                 "12 34", None])
def test_malformed_keys_never_reach_the_file_system(key):
    with pytest.raises(ValueError, match="malformed"):
        store.run_dir(key)
    with pytest.raises(ValueError):
        store.pretrain_dir(key)
    with pytest.raises(ValueError):
        store.load_results(key)


# ---------------------------------------------------------------- atomic writes


def test_atomic_json_round_trip_leaves_no_temp_files(tmp_path):
    p = tmp_path / "sub" / "x.json"
    store.atomic_write_json(p, {"a": [1, 2.5], "b": None})
    assert store.read_json(p) == {"a": [1, 2.5], "b": None}
    assert [q.name for q in p.parent.iterdir()] == ["x.json"]
    assert store.read_json(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text('{"a": ')
    assert store.read_json(tmp_path / "bad.json") is None


def test_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    folder = tmp_path / "w"
    p = folder / "x.bin"
    store.atomic_write_bytes(p, b"old")

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        store.atomic_write_bytes(p, b"new content")
    assert p.read_bytes() == b"old"
    assert [q.name for q in folder.iterdir()] == ["x.bin"], "a temp file was left behind"


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    p = tmp_path / "ck.pt"
    store.save_checkpoint(p, {"D": {"w": torch.arange(5.0)}, "step": 3})
    got = store.load_checkpoint(p)
    assert got["step"] == 3 and torch.equal(got["D"]["w"], torch.arange(5.0))
    assert store.load_checkpoint(tmp_path / "none.pt") is None
    p.write_bytes(p.read_bytes()[:40])
    assert store.load_checkpoint(p) is None
    store.save_checkpoint(p, [1, 2])  # not a dict of state_dicts
    assert store.load_checkpoint(p) is None


def test_checkpoints_refuse_pickled_objects(tmp_path):
    """weights_only=True: a checkpoint smuggling an arbitrary object is not loaded."""
    p = tmp_path / "evil.pt"
    torch.save({"obj": Path("/")}, p)
    assert store.load_checkpoint(p) is None


# ---------------------------------------------------------------- run folders


def _commit_fake_run(key: str) -> dict:
    with store.RunWriter(key) as w:
        w.npz("scores.npz", a=np.arange(4))
        w.json("config.json", {"k": 1})
        return w.commit({"run_key": key, "methods": {}})


def test_run_writer_commit_and_verified_load():
    key = "00000000000000aa"
    res = _commit_fake_run(key)
    d = store.run_dir(key)
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "results.json", "scores.npz"]
    assert res["files"] == {n: store.sha256_file(d / n) for n in ("config.json", "scores.npz")}
    assert store.load_results(key) == res
    assert np.array_equal(store.load_npz(key, "scores.npz")["a"], np.arange(4))
    assert store.load_npz(key, "nothere.npz") is None
    assert not list(store.runs_dir().glob(".tmp-*"))
    assert [r["run_key"] for r in store.list_runs()] == [key]


def test_run_writer_failure_leaves_nothing():
    key = "00000000000000bb"
    with pytest.raises(RuntimeError):
        with store.RunWriter(key) as w:
            w.npz("scores.npz", a=np.arange(4))
            raise RuntimeError("killed")
    assert list(store.runs_dir().iterdir()) == []


def test_results_json_for_another_key_is_refused():
    key = "00000000000000cc"
    _commit_fake_run(key)
    other = store.run_dir("00000000000000dd")
    os.replace(store.run_dir(key), other)  # a folder renamed under a wrong key
    assert store.load_results("00000000000000dd") is None
    assert other.exists() and store.bad_run("00000000000000dd")  # reported, not deleted


def test_list_runs_skips_temp_and_broken_folders():
    _commit_fake_run("00000000000000ee")
    (store.runs_dir() / ".tmp-00000000000000ff-1-abc").mkdir()
    (store.runs_dir() / "0000000000000011").mkdir()  # no results.json
    assert [r["run_key"] for r in store.list_runs()] == ["00000000000000ee"]


def test_run_writer_temp_names_carry_host_and_pid():
    w = store.RunWriter("00000000000000ab")
    _, key, host, pid, rand = w.tmp.name.split("-")
    assert (key, host, pid) == ("00000000000000ab", store._HOST, str(os.getpid()))


def test_clean_tmp_removes_only_dead_writers_of_this_host():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runs = store.runs_dir()
    runs.mkdir(parents=True)
    host = store._HOST
    keep = [f".tmp-00000000000000bb-{host}-{os.getpid()}-cafecafe",  # alive writer
            f".tmp-00000000000000dd-otherhost-{dead.pid}-abcdabcd",  # another machine's
            "00000000000000cc"]  # a committed run
    for name in keep + [f".tmp-00000000000000aa-{host}-{dead.pid}-deadbeef"]:
        (runs / name).mkdir()
    store.clean_tmp()
    assert sorted(p.name for p in runs.iterdir()) == sorted(keep)


# ---------------------------------------------------------------- the cache with real runs


@pytest.mark.slow
def test_second_call_is_a_cache_hit(tiny_run, monkeypatch):
    before = snapshot(tiny_run.cache)
    forbid_training(monkeypatch)
    got = run_experiment(tiny_run.cfg, device="cpu")
    assert got == tiny_run.results
    assert cached_results(tiny_run.cfg) == tiny_run.results
    assert snapshot(tiny_run.cache) == before, "a cache hit wrote to the cache"


@pytest.mark.slow
def test_another_shot_count_reuses_the_pretrained_gan(tiny_run, monkeypatch):
    forbid_training(monkeypatch, pretrain=True, retrain=False)
    ck = next((tiny_run.cache / "pretrain").glob("*/checkpoint.pt"))
    ck_before = (ck.stat().st_mtime_ns, store.sha256_file(ck))
    cfg = fast(shots=3, methods=("before", "xdd"))
    res = run_experiment(cfg, device="cpu")
    assert res["pretrain_reused"] is True
    assert res["pretrain_key"] == tiny_run.results["pretrain_key"] == pretrain_key(cfg)
    assert res["run_key"] == run_key(cfg) != tiny_run.key
    assert res["shots"] == 3 and res["n_labeled"] == 27
    assert (ck.stat().st_mtime_ns, store.sha256_file(ck)) == ck_before
    assert set(res["methods"]) == {"before", "xdd"}
    # Another seed and another loss setting reuse it too.
    res2 = run_experiment(fast(seed=1, methods=("xdd",), **{"retrain.beta": 0.5}), device="cpu")
    assert res2["pretrain_reused"] is True
    assert len(list((tiny_run.cache / "pretrain").iterdir())) == 1


@pytest.mark.parametrize("name", ["scores.npz", "projections.npz", "checkpoint.pt", "config.json"])
def test_truncated_run_file_is_detected_and_removed(tiny_run, name):
    p = store.run_dir(tiny_run.key) / name
    assert p.is_file()
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    assert store.load_results(tiny_run.key) is None
    # a read only reads: the damaged folder stays until it is recomputed (or removed)
    assert store.run_dir(tiny_run.key).is_dir() and store.bad_run(tiny_run.key)
    assert cached_results(tiny_run.cfg) is None
    if name == "scores.npz":  # recomputing replaces the damaged folder whole
        run_experiment(tiny_run.cfg, device="cpu")
        assert not store.bad_run(tiny_run.key) and store.load_results(tiny_run.key) is not None


def test_flipped_byte_in_scores_is_detected(tiny_run):
    p = store.run_dir(tiny_run.key) / "scores.npz"
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x01  # same size, valid-looking file
    p.write_bytes(bytes(b))
    assert store.load_results(tiny_run.key) is None


def test_missing_run_file_is_detected(tiny_run):
    (store.run_dir(tiny_run.key) / "scores.npz").unlink()
    assert store.load_results(tiny_run.key) is None


def test_truncated_results_json_is_detected(tiny_run):
    p = store.run_dir(tiny_run.key) / "results.json"
    p.write_bytes(p.read_bytes()[:200])
    assert store.load_results(tiny_run.key) is None


def test_edited_results_json_is_detected(tiny_run):
    """results.json is the file the app and the CLI print from; an altered number in it must
    not be served as the run's result."""
    p = store.run_dir(tiny_run.key) / "results.json"
    res = json.loads(p.read_text())
    res["methods"]["xdd"]["auprc"] = 0.999
    p.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    got = store.load_results(tiny_run.key)
    assert got is None, ("an edited results.json (xdd auprc -> 0.999) was loaded: "
                         "xdd/storage/store.py hashes every file except results.json itself")


@pytest.mark.slow
def test_corrupt_run_is_recomputed_identically(tiny_run, monkeypatch):
    p = store.run_dir(tiny_run.key) / "scores.npz"
    p.write_bytes(p.read_bytes()[:100])
    forbid_training(monkeypatch, pretrain=True, retrain=False)
    retrains = count_calls(monkeypatch, xdd.train.retrain, "retrain")
    res = run_experiment(tiny_run.cfg, device="cpu")
    assert len(retrains) == len([m for m in tiny_run.cfg.methods if m in ("mcdd", "xdd")])
    assert res["pretrain_reused"] is True
    # Same config, same seeds, same pretrained GAN: the same numbers (float32 kernels are not
    # bit-reproducible across allocations, hence the tolerance; another seed moves AUPRC ~1e-2).
    for m, v in tiny_run.results["methods"].items():
        assert res["methods"][m] == pytest.approx(v, rel=1e-5, abs=1e-4), m
    assert store.load_results(tiny_run.key) == res
    scores = store.load_npz(tiny_run.key, "scores.npz")
    assert scores is not None and len(scores["test_index"]) == res["n_test"]


@pytest.mark.slow
def test_truncated_pretrain_checkpoint_is_retrained(tiny_run, monkeypatch):
    pdir = store.pretrain_dir(tiny_run.results["pretrain_key"])
    ck = pdir / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 3])
    pretrains = count_calls(monkeypatch, xdd.train.pretrain, "pretrain_gan")
    res = run_experiment(fast(shots=2, methods=("before",)), device="cpu")
    assert len(pretrains) == 1
    assert res["pretrain_reused"] is False
    assert store.load_checkpoint(ck) is not None, "the retrained GAN was not saved whole"


def _flip_tensor_byte(ck: Path) -> None:
    """Flip one byte inside the largest tensor's data (torch's zip entries are stored raw)."""
    with zipfile.ZipFile(ck) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(ck.read_bytes())
    name_len = int.from_bytes(raw[info.header_offset + 26: info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28: info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.file_size // 2] ^= 0x40
    ck.write_bytes(bytes(raw))


@pytest.mark.slow
def test_corrupt_pretrain_checkpoint_is_not_loaded(tiny_run, monkeypatch):
    """A checkpoint with a damaged weight still unpickles; the GAN must be retrained anyway."""
    ck = store.pretrain_dir(tiny_run.results["pretrain_key"]) / "checkpoint.pt"
    _flip_tensor_byte(ck)
    assert store.load_checkpoint(ck) is not None  # torch.load itself does not notice
    pretrains = count_calls(monkeypatch, xdd.train.pretrain, "pretrain_gan")
    res = run_experiment(fast(shots=2, methods=("before",)), device="cpu")
    assert len(pretrains) == 1 and res["pretrain_reused"] is False, (
        "a pretrained GAN checkpoint with a flipped weight byte was loaded and reused: "
        "xdd/pipeline/experiment.py load_pretrained does not verify a hash of checkpoint.pt")


class Stop(Exception):
    pass


@pytest.mark.slow
def test_progress_raising_mid_retrain_leaves_no_run(tiny_run):
    before = sorted(p.name for p in store.runs_dir().iterdir())
    seen = []

    def progress(stage, step, total, info):
        seen.append((stage, step))
        if stage == "retrain:xdd" and step > 0:
            raise Stop()

    cfg = fast(shots=4)
    with pytest.raises(Stop):
        run_experiment(cfg, device="cpu", progress=progress)
    assert ("retrain:xdd", 5) in seen
    assert sorted(p.name for p in store.runs_dir().iterdir()) == before == [tiny_run.key]
    assert cached_results(cfg) is None


@pytest.mark.slow
def test_progress_raising_mid_pretrain_leaves_no_gan():
    def progress(stage, step, total, info):
        if stage == "pretrain" and step > 0:
            raise Stop()

    cfg = preset("tiny", ood_digit=1, **{"projection.methods": ("pca",)})
    with pytest.raises(Stop):
        run_experiment(cfg, device="cpu", progress=progress)
    assert not store.pretrain_dir(pretrain_key(cfg)).exists() or not any(
        store.pretrain_dir(pretrain_key(cfg)).iterdir())
    runs = store.runs_dir()
    assert not runs.exists() or list(runs.iterdir()) == []
