"""`python -m xdd`: bad input fails cleanly (exit 2, one line, nothing cached); run, sweep
and show work on the tiny preset."""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from xdd.storage import store
from xdd.core.config import preset, run_key

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _converted_mnist(mnist):
    """Convert MNIST once in-process so no CLI subprocess pays for the conversion."""


def cli(*args: str, timeout: float = 240, **extra_env: str) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess with this test's cache (env set by the xdd_cache fixture)."""
    env = dict(os.environ, **extra_env)
    assert env["XDD_CACHE"] != str(REPO / "cache")
    return subprocess.run([sys.executable, "-m", "xdd", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def cache_files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


def no_run_left(cache: Path) -> bool:
    runs, pre = cache / "runs", cache / "pretrain"
    return (not runs.exists() or not any(runs.iterdir())) and (not pre.exists() or not any(pre.iterdir()))


TINY = ["--preset", "tiny", "--device", "cpu"]

BAD_INPUTS = {
    "ood-digit-10": (["run", "--ood-digit", "10", *TINY], ["10", "0-9"]),
    "ood-digit-minus-1": (["run", "--ood-digit", "-1", *TINY], ["-1", "0-9"]),
    "shots-0": (["run", "--ood-digit", "8", "--shots", "0", *TINY], ["shots", "0", ">= 1"]),
    "shots-more-than-a-class": (["run", "--ood-digit", "8", "--shots", "6000", *TINY], ["6000"]),
    "seed-negative": (["run", "--ood-digit", "8", "--seed", "-1", *TINY], ["seed", "-1"]),
    "preset-nope": (["run", "--ood-digit", "8", "--preset", "nope"], ["nope", "tiny"]),
    "device-tpu": (["run", "--ood-digit", "8", "--preset", "tiny", "--device", "tpu"],
                   ["tpu", "cpu"]),
    "data-root-missing": (["run", "--ood-digit", "8", *TINY, "--data-root", "/nonexistent"],
                          ["/nonexistent"]),
    "method-unknown": (["run", "--ood-digit", "8", *TINY, "--methods", "xdd,magic"], ["magic"]),
    "sweep-reps-0": (["sweep", "--digits", "8", "--reps", "0", *TINY], ["repetitions", "0"]),
    "sweep-digit-12": (["sweep", "--digits", "3,12", "--reps", "1", *TINY], ["12", "0-9"]),
    "sweep-shots-0": (["sweep", "--digits", "8", "--reps", "1", "--shots", "0", *TINY], ["shots", "0"]),
    "show-malformed-key": (["show", "../../etc"], ["../../etc"]),
    "show-unknown-key": (["show", "0123456789abcdef"], ["0123456789abcdef"]),
    "set-garbage-number": (["run", "--ood-digit", "8", *TINY, "--set", "retrain.steps=abc"],
                           ["steps", "abc"]),
    "vary-unknown-field": (["sweep", "--digits", "8", "--reps", "1", *TINY,
                            "--vary", "retrain.nope=1,2"], ["retrain.nope"]),
    "vary-out-of-range": (["sweep", "--digits", "8", "--reps", "1", *TINY,
                           "--vary", "retrain.train_blocks=2,9"], ["train_blocks", "9", "1-4"]),
    "vary-a-sweep-axis": (["sweep", "--digits", "8", "--reps", "1", *TINY,
                           "--vary", "ood_digit=1,2"], ["ood_digit", "cannot be swept"]),
    "vary-no-values": (["sweep", "--digits", "8", "--reps", "1", *TINY, "--vary", "retrain.beta="],
                       ["--vary", "no values"]),
    "vary-and-set-one-field": (["sweep", "--digits", "8", "--reps", "1", *TINY,
                                "--vary", "retrain.beta=1,2", "--set", "retrain.beta=3"],
                               ["retrain.beta", "keep one"]),
}


def _check_clean_failure(proc: subprocess.CompletedProcess, needles: list[str], cache: Path):
    err = proc.stderr.strip()
    assert proc.returncode == 2, f"exit {proc.returncode}; stderr:\n{proc.stderr}"
    assert len(err.splitlines()) == 1, f"stderr is not one line:\n{proc.stderr}"
    assert err.startswith("error:"), err
    for n in needles:
        assert n in err, f"{n!r} not named in {err!r}"
    assert proc.stdout == ""
    assert no_run_left(cache), cache_files(cache)


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(name, xdd_cache):
    args, needles = BAD_INPUTS[name]
    _check_clean_failure(cli(*args), needles, xdd_cache)


def test_cuda_request_without_gpu(xdd_cache):
    # Hiding every GPU makes this the no-GPU situation on any machine, CPU-only or not.
    proc = cli("run", "--ood-digit", "8", "--preset", "tiny", "--device", "cuda",
               CUDA_VISIBLE_DEVICES="")
    _check_clean_failure(proc, ["cuda", "cpu"], xdd_cache)
    if not torch.cuda.is_available():  # and without hiding anything, where there is none
        _check_clean_failure(cli("run", "--ood-digit", "8", "--preset", "tiny", "--device", "cuda"),
                             ["cuda", "cpu"], xdd_cache)


def test_unreadable_data_folder(tmp_path, xdd_cache):
    folder = tmp_path / "notmnist"
    (folder / "MNIST" / "raw").mkdir(parents=True)
    (folder / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    proc = cli("run", "--ood-digit", "8", *TINY, "--data-root", str(folder))
    _check_clean_failure(proc, [str(folder)], xdd_cache)


def test_bad_input_leaves_an_existing_cache_untouched(tiny_run):
    before = {p: p.stat().st_mtime_ns for p in tiny_run.cache.rglob("*") if p.is_file()}
    proc = cli("run", "--ood-digit", "8", "--shots", "6000", *TINY)
    assert proc.returncode == 2
    after = {p: p.stat().st_mtime_ns for p in tiny_run.cache.rglob("*") if p.is_file()}
    assert after == before


def _write_idx(path: Path, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    path.write_bytes(bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", n) for n in arr.shape)
                     + arr.tobytes())


def test_sweep_checks_every_config_before_running_any(tmp_path, xdd_cache):
    """A torchvision-format folder whose digit 5 has 2 images: 3 shots are fine with 5 held out
    but not with 0 held out.  `sweep --digits 5,0` must refuse up front, not compute digit 5's
    run and then fail on digit 0."""
    raw = tmp_path / "small" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y_train = np.array([d for d in range(10) for _ in range(2 if d == 5 else 4)])
    _write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (len(y_train), 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", y_train)
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (30, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(30) % 10)
    proc = cli("sweep", "--digits", "5,0", "--reps", "1", "--shots", "3", *TINY,
               "--data-root", str(tmp_path / "small"), "--methods", "before",
               "--set", "projection.methods=pca", "--out", str(tmp_path / "sw"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert no_run_left(xdd_cache), (
        "sweep computed (and cached) digit 5 before failing on digit 0: xdd/cli/main.py cmd_sweep "
        f"checks only one config's splits; cache holds {cache_files(xdd_cache)}")
    assert proc.stderr.strip().splitlines()[-1].startswith("error:")


# ---------------------------------------------------------------- working commands


def _table(stdout: str, reference: str = "labeled") -> dict[str, list[float]]:
    """method -> [AUPRC, AUROC, FPR@95, AUPR-In] from the printed results table of a
    reference (each row names its reference)."""
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"^(\w+)\s+(\w+)\s+([01]\.\d{4})\s+([01]\.\d{4})\s+([01]\.\d{4})\s+"
                     r"([01]\.\d{4})\s*$", line)
        if m and m.group(2) == reference:
            rows[m.group(1)] = [float(v) for v in m.groups()[2:]]
    return rows


def test_run_prints_auprc_before_and_after(tiny_run):
    """A new shot count on the cached GAN: trains the retraining stages only."""
    proc = cli("run", "--ood-digit", "8", "--shots", "5", *TINY, "--set", "projection.methods=pca")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "AUPRC" in out and "average precision" in out
    rows = _table(out)
    assert {"before", "xdd"} <= set(rows), out
    res = store.load_results(run_key(preset("tiny", ood_digit=8, shots=5,
                                            **{"projection.methods": ("pca",)})))
    assert res is not None and res["pretrain_reused"] is True
    for m in ("before", "xdd"):
        assert rows[m][0] == round(res["methods"][m]["auprc"], 4)
        assert rows[m][1] == round(res["methods"][m]["auroc"], 4)
    # both protocols, each under a line naming its reference
    unl = _table(out, "unlabeled")
    assert set(unl) == set(res["references"]["unlabeled"]) >= {"before", "xdd", "pixels"}
    for m, v in unl.items():
        assert v[0] == round(res["references"]["unlabeled"][m]["auprc"], 4)
    assert "labeled reference: KDE over the 45 labeled embeddings" in out
    assert "unlabeled reference: 1-NN distance to 512 unlabeled" in out
    assert "GAN seed=0" in out
    assert "reused" in out  # the pretrained GAN
    assert len(list((tiny_run.cache / "pretrain").iterdir())) == 1
    # before it ran, the estimate for this machine at the CLI's thread count (or none)
    first = out.splitlines()[0]
    assert re.match(r"estimate: (about .+ \(cpu, \d+ threads?; from |none yet for cpu, \d+ thread)",
                    first), first


def test_the_run_estimate_is_the_machines_at_the_clis_thread_count(tiny_run):
    import xdd.estimate as E
    from xdd.cli.main import _run_estimate
    from xdd.core.fmt import fmt_duration

    res = tiny_run.results
    n = E.run_threads(res)
    cfg = preset("tiny", ood_digit=3)  # not cached, nor its GAN
    line = _run_estimate(cfg, "cpu", False, n)
    want = E.estimate([cfg], [res], "cpu", threads=n, gan_available=lambda c: False)
    assert line == (f"estimate: about {fmt_duration(want.seconds)} "
                    f"(cpu, {n} thread{'s' * (n != 1)}; from this machine's earlier runs)")
    # measured at another thread count only: no number
    assert _run_estimate(cfg, "cpu", False, n + 1).startswith("estimate: none yet for cpu")


def test_second_run_answers_from_the_cache(tiny_run):
    before = {p: p.stat().st_mtime_ns for p in tiny_run.cache.rglob("*") if p.is_file()}
    proc = cli("run", "--ood-digit", "8", "--shots", "10", *TINY)
    assert proc.returncode == 0, proc.stderr
    rows = _table(proc.stdout)
    assert rows["xdd"][0] == round(tiny_run.results["methods"]["xdd"]["auprc"], 4)
    after = {p: p.stat().st_mtime_ns for p in tiny_run.cache.rglob("*") if p.is_file()}
    assert after == before, "a cached run was recomputed"
    assert "cache" in proc.stdout.lower(), (
        "a cache hit prints the same text as a fresh run: the user is not told the answer came "
        f"from the cache (xdd/cli/main.py cmd_run):\n{proc.stdout}")


def test_show_prints_a_cached_run_and_lists_runs(tiny_run):
    proc = cli("show", tiny_run.key)
    assert proc.returncode == 0, proc.stderr
    rows = _table(proc.stdout)
    for m, v in tiny_run.results["methods"].items():
        assert rows[m][0] == round(v["auprc"], 4)
    listing = cli("show")
    assert listing.returncode == 0 and tiny_run.key in listing.stdout


def test_show_with_empty_cache():
    proc = cli("show")
    assert proc.returncode == 0 and "no cached runs" in proc.stdout


def test_sweep_writes_csv_and_markdown(tiny_run, tmp_path):
    out = tmp_path / "sweep" / "tiny"
    proc = cli("sweep", "--digits", "8,3", "--reps", "1", "--shots", "10", *TINY, "--out", str(out),
               "--set", "projection.methods=pca")
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out.with_suffix(".csv"))
    methods = list(preset("tiny").methods)
    assert len(df) == 2 * 2 * len(methods)  # 2 digits x 2 references x methods
    assert sorted(df.ood_digit.unique()) == [3, 8] and set(df.method) == set(methods)
    assert set(df.reference) == {"labeled", "unlabeled"}
    assert set(df.seed) == {0} and set(df.shots) == {10} and set(df.gan_seed) == {0}
    for key, sub in df.groupby("run_key"):
        res = store.load_results(key)
        assert res is not None
        for _, row in sub.iterrows():
            assert row.auprc == pytest.approx(res["references"][row.reference][row.method]["auprc"],
                                              abs=1e-12)
    # Digit 8 reused the shared run's pretrained GAN; digit 3 pretrained its own.
    reused = {int(sub.ood_digit.iloc[0]): store.load_results(k)["pretrain_reused"]
              for k, sub in df.groupby("run_key")}
    assert reused == {8: True, 3: False}
    before8 = df[(df.ood_digit == 8) & (df.method == "before")].iloc[0]
    assert before8.auprc == pytest.approx(tiny_run.results["methods"]["before"]["auprc"], abs=1e-6)
    md = out.with_suffix(".md").read_text()
    assert "| 8 |" in md and "| 3 |" in md and "**mean**" in md and "average precision" in md
    assert str(out.with_suffix(".csv")) in proc.stdout


def _sweep_args(*args: str):
    from xdd.cli.main import build_parser

    return build_parser().parse_args(["sweep", *args])


def test_sweep_vary_builds_one_config_per_value():
    """`sweep --vary FIELD=V1,V2` is every digit x seed once per value, parsed as --set parses
    one; a value equal to the preset's ("1" for its 1.0) is the preset's own run, as on the Run
    page."""
    from xdd.cli.main import sweep_plan

    cfgs = sweep_plan(_sweep_args("--digits", "3,8", "--reps", "2", "--preset", "tiny",
                                  "--vary", "retrain.beta=0.5,1,2", "--set", "retrain.steps=5"))
    expected = [preset("tiny", ood_digit=d, seed=s,
                       **{"pretrain.seed": s, "retrain.steps": 5, "retrain.beta": b})
                for d in (3, 8) for s in (0, 1) for b in (0.5, 1.0, 2)]
    assert cfgs == expected
    assert [run_key(c) for c in cfgs] == [run_key(c) for c in expected]
    assert run_key(cfgs[1]) == run_key(preset("tiny", ood_digit=3, **{"retrain.steps": 5}))
    assert [type(c.retrain.beta) for c in cfgs[:3]] == [float, float, int]
    # one GAN per digit and seed, shared by the values
    from xdd.core.config import pretrain_key
    assert len({pretrain_key(c) for c in cfgs}) == 4
    # a GAN setting: each value is its own GAN
    cfgs = sweep_plan(_sweep_args("--digits", "8", "--reps", "1", "--preset", "tiny",
                                  "--vary", "pretrain.precision=fp32,bf16"))
    assert [c.pretrain.precision for c in cfgs] == ["fp32", "bf16"]
    assert len({pretrain_key(c) for c in cfgs}) == 2
    # shots as the varied field, instead of --shots
    cfgs = sweep_plan(_sweep_args("--digits", "8", "--reps", "1", "--preset", "tiny",
                                  "--vary", "shots=1,5"))
    assert [c.shots for c in cfgs] == [1, 5]
    # without --vary: as before
    cfgs = sweep_plan(_sweep_args("--digits", "8", "--reps", "3", "--preset", "tiny"))
    assert [(c.seed, c.pretrain.seed, c.shots) for c in cfgs] == [(0, 0, 10), (1, 1, 10),
                                                                  (2, 2, 10)]


def test_set_parses_a_value_for_its_field():
    """--set reads text as it always has ("1" is an int, "none" None, a comma list a tuple), so
    the runs cached with a --set setting keep their keys."""
    from xdd.cli.common import config_from_args

    args = _sweep_args("--preset", "tiny", "--set", "retrain.beta=2", "--set", "retrain.steps=7",
                       "--set", "score.n_reference=none", "--set", "projection.methods=pca")
    cfg = config_from_args(args)
    assert cfg.retrain.beta == 2 and isinstance(cfg.retrain.beta, int)
    assert cfg.retrain.steps == 7 and cfg.score.n_reference is None
    assert cfg.projection.methods == ("pca",)


def test_set_keeps_the_run_keys_runs_were_cached_under():
    """The keys `run --set ...` gave before the Run page could set these fields (computed with
    that code): a cache made with them is hit, not recomputed."""
    from xdd.cli.common import config_from_args
    from xdd.cli.main import build_parser

    for extra, key in ((["--set", "retrain.anchor_weight=10"], "3ebfd213841933f4"),
                       (["--set", "retrain.beta=2", "--set", "retrain.pair_weight=0.5"],
                        "3fdf5cdf24834ea2"),
                       (["--set", "retrain.beta=1"], "0c1e01b516292311")):
        args = build_parser().parse_args(["run", "--ood-digit", "3", "--preset", "quick", *extra])
        assert run_key(config_from_args(args, ood_digit=3, shots=10, seed=0)) == key, extra


def test_sweep_vary_runs_and_reports_each_value(tiny_run, tmp_path):
    """A real sweep over one setting on the cached tiny GAN: one report section per value."""
    out = tmp_path / "sweep" / "vary"
    proc = cli("sweep", "--digits", "8", "--reps", "1", *TINY, "--out", str(out),
               "--methods", "before,xdd", "--set", "projection.methods=",
               "--vary", "retrain.steps=5,10", timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_csv(out.with_suffix(".csv"), keep_default_na=False)
    assert set(df.variant) == {"retrain.steps=5", ""}  # 10 is the tiny preset's own
    md = out.with_suffix(".md").read_text()
    assert "# Sweep: retrain.steps=5, 10 shots" in md
    assert "# Sweep: the preset, 10 shots" in md
    steps5 = store.load_results(run_key(preset("tiny", ood_digit=8, methods=("before", "xdd"),
                                               **{"retrain.steps": 5,
                                                  "projection.methods": ()})))
    assert steps5 is not None and steps5["pretrain_reused"] is True
