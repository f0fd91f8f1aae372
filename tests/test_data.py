"""MNIST loading and the protocol's splits (docs/DESIGN.md §2)."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from xdd.storage import data as xdata
from xdd.core.config import ConfigError, preset

# The standard MNIST class counts (LeCun et al.), train and test.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------- bundled MNIST


def test_bundled_mnist_is_the_standard_60k_10k(mnist):
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_train.dtype == np.uint8
    assert mnist.x_test.shape == (10000, 28, 28) and mnist.x_test.dtype == np.uint8
    assert mnist.y_train.shape == (60000,) and mnist.y_test.shape == (10000,)
    assert np.bincount(mnist.y_train, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(mnist.y_test, minlength=10).tolist() == TEST_COUNTS
    # The first training image is the famous 5, the first test image a 7.
    assert mnist.y_train[0] == 5 and mnist.y_test[0] == 7
    assert mnist.x_train.min() == 0 and mnist.x_train.max() == 255


def test_bundled_conversion_is_lossless(mnist):
    """The pickle stores k/256 as float32: the uint8 arrays must recover k exactly, with the
    validation part appended after the 50k training part."""
    with gzip.open(xdata.bundled_path(), "rb") as fh:
        (xa, ya), (xb, yb), (xt, yt) = pickle.load(fh, encoding="latin1")
    for ours, raw in [(mnist.x_train[:50], xa[:50]), (mnist.x_train[50000:50050], xb[:50]),
                      (mnist.x_test[-50:], xt[-50:])]:
        assert np.array_equal(ours.reshape(50, -1).astype(np.float64) / 256.0, raw.astype(np.float64))
    assert np.array_equal(mnist.y_train, np.concatenate([ya, yb]))
    assert np.array_equal(mnist.y_test, yt)


def test_load_is_memoised_and_cached_on_disk(mnist, data_cache):
    assert xdata.load_mnist() is mnist
    assert list(Path(data_cache).glob("mnist-*.npz")), "the converted copy is not on disk"


def test_to_tensor_scales_to_minus_one_one():
    x = np.array([0, 1, 127, 128, 254, 255], dtype=np.uint8)
    x = np.tile(x, (28 * 28) // 6 + 1)[: 28 * 28].reshape(1, 28, 28)
    t = xdata.to_tensor(x)
    assert t.shape == (1, 1, 28, 28) and t.dtype == torch.float32
    expected = torch.from_numpy(x.astype(np.float64) / 127.5 - 1.0).float()
    assert torch.allclose(t[0, 0], expected, atol=1e-6)
    assert t.min().item() == -1.0 and t.max().item() == 1.0


def test_to_tensor_on_mnist_is_in_range(mnist):
    t = xdata.to_tensor(mnist.x_test[:200])
    assert t.min().item() == -1.0 and t.max().item() == 1.0


# ---------------------------------------------------------------- splits


@pytest.mark.parametrize("ood", range(10))
def test_pretraining_set_excludes_ood_digit(mnist, ood):
    idx = xdata.pretrain_indices(mnist.y_train, ood)
    assert len(idx) == 60000 - TRAIN_COUNTS[ood]
    assert not np.any(mnist.y_train[idx] == ood), "an OOD image is in the pretraining set"
    assert len(np.unique(idx)) == len(idx)


def test_pretraining_subsample_is_seeded_and_in_distribution(mnist):
    a = xdata.pretrain_indices(mnist.y_train, 3, n=512, seed=0)
    b = xdata.pretrain_indices(mnist.y_train, 3, n=512, seed=0)
    c = xdata.pretrain_indices(mnist.y_train, 3, n=512, seed=1)
    assert len(a) == 512 and len(np.unique(a)) == 512
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.any(mnist.y_train[a] == 3)


@pytest.mark.parametrize("ood", range(10))
@pytest.mark.parametrize("shots", [1, 10, 37])
def test_labeled_draw_is_per_class_exact(mnist, ood, shots):
    idx = xdata.labeled_indices(mnist.y_train, ood, shots, seed=0)
    counts = np.bincount(mnist.y_train[idx], minlength=10)
    expected = [0 if k == ood else shots for k in range(10)]
    assert counts.tolist() == expected
    assert len(np.unique(idx)) == len(idx), "the labeled draw has duplicates"
    assert idx.min() >= 0 and idx.max() < 60000


def test_labeled_draw_is_seed_stable(mnist):
    a = xdata.labeled_indices(mnist.y_train, 8, 10, seed=0)
    b = xdata.labeled_indices(mnist.y_train, 8, 10, seed=0)
    c = xdata.labeled_indices(mnist.y_train, 8, 10, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # Different seeds give (almost) disjoint draws from pools of ~6000.
    assert len(np.intersect1d(a, c)) < 10


def test_labeled_draw_at_max_shots(mnist):
    k = xdata.max_shots(mnist, 8)
    assert k == min(c for d, c in enumerate(TRAIN_COUNTS) if d != 8) == 5421
    idx = xdata.labeled_indices(mnist.y_train, 8, k, seed=0)
    assert len(idx) == 9 * k and len(np.unique(idx)) == 9 * k
    # Digit 5 is the smallest class: all of it is drawn.
    assert np.array_equal(np.sort(idx[mnist.y_train[idx] == 5]), np.flatnonzero(mnist.y_train == 5))


def test_too_many_shots_names_the_count_and_the_true_limit(mnist):
    with pytest.raises(ConfigError) as err:
        xdata.labeled_indices(mnist.y_train, 8, 6000, seed=0)
    msg = str(err.value)
    assert "6000" in msg
    # With digit 8 held out the largest valid shot count is 5421 (digit 5's size); the message's
    # accepted range must say so, not the size of whichever class failed first.
    assert "1-5421" in msg, f"accepted range in {msg!r} is not the true limit 1-5421"


def test_too_many_shots_fails_even_in_one_class(mnist):
    """5422 shots fail only because of digit 5 (5421 images)."""
    with pytest.raises(ConfigError, match="5422"):
        xdata.labeled_indices(mnist.y_train, 8, 5422, seed=0)
    xdata.labeled_indices(mnist.y_train, 5, 5422, seed=0)  # digit 5 held out: fine


def test_full_test_set_with_ood_positive(mnist):
    cfg = preset("quick", ood_digit=8)
    splits = xdata.make_splits(cfg, mnist)
    assert np.array_equal(splits.test, np.arange(10000))
    assert int((mnist.y_test[splits.test] == 8).sum()) == TEST_COUNTS[8]
    assert not np.any(mnist.y_train[splits.pretrain] == 8)
    assert np.bincount(mnist.y_train[splits.labeled], minlength=10)[8] == 0


def test_tiny_test_subsample_is_stratified_and_stable(mnist):
    cfg = preset("tiny", ood_digit=2)
    a = xdata.make_splits(cfg, mnist)
    b = xdata.make_splits(cfg, mnist)
    assert np.array_equal(a.test, b.test)
    assert len(np.unique(a.test)) == len(a.test)
    assert abs(len(a.test) - cfg.data.n_test) <= 10
    counts = np.bincount(mnist.y_test[a.test], minlength=10)
    expected = np.array(TEST_COUNTS) * cfg.data.n_test / 10000
    assert np.all(np.abs(counts - expected) <= 1), counts
    assert len(a.pretrain) == cfg.data.n_pretrain
    assert not np.any(mnist.y_train[a.pretrain] == 2)


def test_validation_split_never_touches_the_test_set_or_its_own_images(mnist):
    """eval_split="val": evaluation on the last 10k training images; pretraining and labeled
    images come from the first 50k only, so no evaluated image was trained on."""
    cfg = preset("quick", ood_digit=4, **{"data.eval_split": "val"})
    s = xdata.make_splits(cfg, mnist)
    assert s.pretrain.max() < 50000 and s.labeled.max() < 50000
    assert not np.any(mnist.y_train[s.pretrain] == 4)
    assert np.bincount(mnist.y_train[s.labeled], minlength=10).tolist() == [10] * 4 + [0] + [10] * 5
    x_eval, y_eval = xdata.eval_arrays(mnist, "val")
    assert np.array_equal(s.test, np.arange(10000)) and len(y_eval) == 10000
    assert np.array_equal(y_eval, mnist.y_train[50000:]) and np.shares_memory(x_eval, mnist.x_train)
    x_t, y_t = xdata.eval_arrays(mnist, "test")
    assert x_t is mnist.x_test and y_t is mnist.y_test


def test_make_splits_too_many_shots_is_config_error(mnist):
    cfg = preset("tiny", ood_digit=0, shots=7000)
    with pytest.raises(ConfigError, match="7000"):
        xdata.make_splits(cfg, mnist)


# ---------------------------------------------------------------- torchvision folders


def _write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", n) for n in arr.shape)
    blob = header + arr.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(blob))
    else:
        path.write_bytes(blob)


def _fake_mnist(root: Path, gz: bool, n_train: int = 30, n_test: int = 20, seed: int = 0,
                raw: Path | None = None):
    rng = np.random.default_rng(seed)
    raw = raw or root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }
    for name, arr in arrays.items():
        _write_idx(raw / name, arr, gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_torchvision_folder_loads(tmp_path, gz):
    arrays = _fake_mnist(tmp_path / "tv", gz)
    m = xdata.load_mnist(str(tmp_path / "tv"))
    assert np.array_equal(m.x_train, arrays["train-images-idx3-ubyte"].astype(np.uint8))
    assert np.array_equal(m.y_train, arrays["train-labels-idx1-ubyte"])
    assert np.array_equal(m.x_test, arrays["t10k-images-idx3-ubyte"].astype(np.uint8))
    assert np.array_equal(m.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert m.x_train.dtype == np.uint8 and m.y_train.dtype == np.int64


def test_torchvision_raw_folder_itself_loads(tmp_path):
    arrays = _fake_mnist(tmp_path, gz=False, raw=tmp_path / "rawonly")
    m = xdata.load_mnist(str(tmp_path / "rawonly"))
    assert np.array_equal(m.y_test, arrays["t10k-labels-idx1-ubyte"])


def test_corrupt_converted_copy_is_rebuilt(tmp_path, monkeypatch, data_cache):
    arrays = _fake_mnist(tmp_path / "tv", gz=True, seed=3)
    root = str(tmp_path / "tv")
    before = set(Path(data_cache).glob("mnist-*.npz"))
    xdata.load_mnist(root)
    new = set(Path(data_cache).glob("mnist-*.npz")) - before
    assert len(new) == 1
    npz = new.pop()
    npz.write_bytes(npz.read_bytes()[:100])  # truncated
    monkeypatch.setattr(xdata, "_MEMO", {})
    m = xdata.load_mnist(root)
    assert np.array_equal(m.x_train, arrays["train-images-idx3-ubyte"].astype(np.uint8))
    with np.load(npz) as z:  # rewritten whole
        assert np.array_equal(z["y_test"], arrays["t10k-labels-idx1-ubyte"])


def test_missing_folder_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nonexistent"):
        xdata.load_mnist(str(tmp_path / "nonexistent"))


def test_file_instead_of_folder_is_config_error(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ConfigError, match="afile"):
        xdata.load_mnist(str(f))


def test_empty_folder_is_config_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty"):
        xdata.load_mnist(str(tmp_path / "empty"))


def test_missing_test_file_is_config_error(tmp_path):
    _fake_mnist(tmp_path / "tv", gz=False)
    (tmp_path / "tv" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ConfigError, match="t10k-labels"):
        xdata.load_mnist(str(tmp_path / "tv"))


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_file_is_config_error(tmp_path, gz):
    _fake_mnist(tmp_path / "tv", gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    p = tmp_path / "tv" / "MNIST" / "raw" / name
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    with pytest.raises(ConfigError, match="tv"):
        xdata.load_mnist(str(tmp_path / "tv"))


def test_train_images_labels_mismatch_is_config_error(tmp_path):
    _fake_mnist(tmp_path / "tv", gz=False)
    _write_idx(tmp_path / "tv" / "MNIST" / "raw" / "train-labels-idx1-ubyte", np.zeros(7), gz=False)
    with pytest.raises(ConfigError):
        xdata.load_mnist(str(tmp_path / "tv"))


def test_test_images_labels_mismatch_is_config_error(tmp_path):
    """The test files need the same check as the training files: 20 test images with 7 labels
    must be refused up front, not fail (or silently misalign) later in a run."""
    _fake_mnist(tmp_path / "tv", gz=False)
    _write_idx(tmp_path / "tv" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.zeros(7), gz=False)
    try:
        m = xdata.load_mnist(str(tmp_path / "tv"))
    except ConfigError:
        return
    pytest.fail(f"a folder with {len(m.x_test)} test images and {len(m.y_test)} test labels "
                "was loaded without error (xdd/storage/data.py _read_torchvision checks only the train files)")
