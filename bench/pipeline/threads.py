"""Does a CPU run give the same numbers at 1 and at 2 torch threads?  The quick preset, each run
in a fresh process with ``OMP_NUM_THREADS`` set (torch's thread count follows it; the child
checks ``torch.get_num_threads()``) and an empty ``XDD_CACHE`` of its own (converted MNIST
included), so that nothing is shared between the two sides.

    python bench/pipeline/threads.py                     # digits 3,7,9, shipped GANs (~5-10 min)
    python bench/pipeline/threads.py --repeat-digit 3    # and digit 3 twice at 2 threads
    python bench/pipeline/threads.py --pretrain-digit 3  # and digit 3 with its GAN pretrained
                                                         # in the run at each count (+5-11 min)
    python bench/pipeline/threads.py --preset tiny       # a smoke run of the script (~1 min)
    python bench/pipeline/threads.py --from-json F       # re-render saved figures

Each run is ``preset("quick", ood_digit=D, shots=10, seed=0, projection.methods=())`` (the
preset's methods, no maps) through ``run_experiment(cfg, device="cpu")``: its GAN comes from
the bundle shipped in xdd/pretrained, the same weights on both sides, so a difference comes
from the retraining and the scoring.  ``--pretrain-digit`` adds ``force=True`` runs, which
pretrain the GAN in the run.  Besides the AUPRCs, the largest difference between the two
sides' per-sample scores and between their retrained (xdd) and pretrained weights is given.
Others may edit xdd/ while this runs: the children run a copy of xdd/ taken when the script
starts (its hash is in the output), so both sides of every pair run the same code.  Writes a
JSON file and a markdown table (``--json``, ``--md``); never touches docs/.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo: bench and xdd
from bench._common import REPO, loadavg, log, machine, write_json  # noqa: E402

THREADS = (1, 2)


# ---------------------------------------------------------------- the child: one run


def child(preset_name: str, digit: int, force: bool, out: Path, code: Path) -> None:
    """One run in this (fresh) process, with the copy of xdd/ in ``code``; its figures go to
    ``out``."""
    sys.path.insert(0, str(code))
    import torch

    import xdd

    if not Path(xdd.__file__).resolve().is_relative_to(code.resolve()):
        raise SystemExit(f"xdd imported from {xdd.__file__}, not from the copy in {code}")
    threads = torch.get_num_threads()
    from xdd.core.config import pretrain_key, preset, run_key
    from xdd.pipeline.experiment import run_experiment

    cfg = preset(preset_name, ood_digit=digit, shots=10, seed=0, **{"projection.methods": ()})
    t = time.perf_counter()
    res = run_experiment(cfg, device="cpu", force=force)
    write_json(out, {
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": threads,
        "xdd_imported_from": str(Path(xdd.__file__).parent),
        "torch_threads_after": torch.get_num_threads(), "device": res["device"],
        "preset": preset_name, "digit": digit, "force": force, "methods": list(cfg.methods),
        "run_key": run_key(cfg), "pretrain_key": pretrain_key(cfg),
        "pretrain_source": res["pretrain_source"], "wall_s": time.perf_counter() - t,
        "timings": res["timings"],
        "auprc": {ref: {m: v["auprc"] for m, v in ms.items()}
                  for ref, ms in res["references"].items()}})


# ---------------------------------------------------------------- the parent: pairs of runs


def snapshot_code(work: Path) -> dict[str, Any]:
    """A copy of xdd/ for the children, and what it is: the commit, the files of xdd/ that
    differ from it, and a hash of the copy."""
    code = work / "code"
    shutil.rmtree(code, ignore_errors=True)
    shutil.copytree(REPO / "xdd", code / "xdd", ignore=shutil.ignore_patterns("__pycache__"))
    h = hashlib.sha256()
    for f in sorted((code / "xdd").rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(code)).encode() + b"\0" + f.read_bytes())
    git = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True,  # noqa: E731
                                    text=True).stdout.strip()
    return {"dir": str(code), "sha256": h.hexdigest(), "commit": git("rev-parse", "HEAD"),
            "changed_from_commit": git("status", "--short", "--", "xdd").splitlines()}


def run_child(preset_name: str, digit: int, threads: int, force: bool, cache: Path,
              timeout: float, code: str) -> dict[str, Any]:
    out = cache.parent / f"{cache.name}.json"
    env = {k: v for k, v in os.environ.items() if k != "XDD_DATA_CACHE"}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), XDD_CACHE=str(cache))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(digit),
           "--child-out", str(out), "--preset", preset_name,
           "--code", code] + (["--force"] if force else [])
    log(f"digit {digit}, {threads} thread(s){', GAN pretrained here' if force else ''}")
    t = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, timeout=timeout)
    got = json.loads(out.read_text())
    got["process_s"] = time.perf_counter() - t
    if got["torch_threads"] != threads:
        raise SystemExit(f"the child ran torch at {got['torch_threads']} threads, not {threads}")
    log(f"  {got['process_s']:.0f} s, GAN from {got['pretrain_source']}, {got['device']}")
    return got


def _max_abs(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest absolute difference between two state dicts' floating-point tensors."""
    import torch

    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a
                if torch.is_tensor(a[k]) and a[k].is_floating_point() and a[k].numel()),
               default=0.0)


def compare_caches(one: Path, two: Path, run_key: str, pretrain_key: str) -> dict[str, Any]:
    """Per-sample score and weight differences between two sides' caches."""
    import numpy as np
    import torch

    out: dict[str, Any] = {"scores_max_abs": {}}
    sa = np.load(one / "runs" / run_key / "scores.npz")
    sb = np.load(two / "runs" / run_key / "scores.npz")
    for k in sa.files:
        if k.startswith("score_"):
            out["scores_max_abs"][k[len("score_"):]] = float(np.abs(sa[k] - sb[k]).max())
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
    ca, cb = (p / "runs" / run_key / "checkpoint.pt" for p in (one, two))
    if ca.is_file() and cb.is_file():
        out["retrained_xdd_weights_max_abs"] = _max_abs(load(ca)["D"], load(cb)["D"])
    pa, pb = (p / "pretrain" / pretrain_key / "checkpoint.pt" for p in (one, two))
    if pa.is_file() and pb.is_file():
        a, b = load(pa), load(pb)
        out["pretrained_D_weights_max_abs"] = _max_abs(a["D"], b["D"])
        out["pretrained_G_weights_max_abs"] = _max_abs(a["G"], b["G"])
        out["pretrain_losses"] = [a.get("losses"), b.get("losses")]
    return out


def pair(args: argparse.Namespace, digit: int, counts: tuple[int, int], force: bool,
         work: Path) -> dict[str, Any]:
    """The same config at counts[0] and counts[1] threads, each in an empty cache."""
    caches = [work / f"d{digit}-t{n}-{'pretrain' if force else 'bundle'}-{i}"
              for i, n in enumerate(counts)]
    runs = [run_child(args.preset, digit, n, force, c, args.timeout, args.code)
            for n, c in zip(counts, caches)]
    diffs = compare_caches(*caches, runs[0]["run_key"], runs[0]["pretrain_key"])
    if not args.keep:
        for c in caches:
            shutil.rmtree(c, ignore_errors=True)
    return {"digit": digit, "threads": list(counts), "force": force, "runs": runs, **diffs}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="xdd-threads-"))
    work.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = {
        "command": "python bench/pipeline/threads.py " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(),
        "load_before": loadavg(), "preset": args.preset, "digits": args.digits, "pairs": []}
    raw["code"] = snapshot_code(work)
    args.code = raw["code"]["dir"]
    log(f"xdd/ copied to {args.code} (sha256 {raw['code']['sha256'][:12]}, commit "
        f"{raw['code']['commit'][:10]}, {len(raw['code']['changed_from_commit'])} files changed)")
    t0 = time.perf_counter()
    for d in args.digits:
        raw["pairs"].append(pair(args, d, THREADS, False, work))
    if args.repeat_digit is not None:
        raw["repeat"] = pair(args, args.repeat_digit, (2, 2), False, work)
    if args.pretrain_digit is not None:
        t = time.perf_counter()
        raw["pretrained_here"] = pair(args, args.pretrain_digit, THREADS, True, work)
        raw["pretrained_here"]["pair_s"] = time.perf_counter() - t
    raw["wall_s"] = time.perf_counter() - t0
    raw["load_after"] = loadavg()
    raw["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return raw


# ---------------------------------------------------------------- the table


def _rows(p: dict[str, Any]) -> list[tuple[str, str, float, float]]:
    """(reference, method, AUPRC at the first count, at the second) of a pair, the methods in
    the config's order."""
    a, b = (r["auprc"] for r in p["runs"])
    return [(ref, m, a[ref][m], b[ref][m]) for ref in a for m in p["runs"][0]["methods"]
            if m in a[ref] and m in b.get(ref, {})]


def _diff(d: float) -> str:
    """An absolute difference: 4 decimals, or its order where it is below them."""
    return "0" if d == 0 else f"{d:.4f}" if d >= 5e-5 else f"{d:.0e}"


def _pair_table(p: dict[str, Any], heads: tuple[str, str]) -> list[str]:
    L = [f"| digit | reference | method | {heads[0]} | {heads[1]} | abs. difference |",
         "|---|---|---|---|---|---|"]
    L += [f"| {p['digit']} | {ref} | {m} | {x:.4f} | {y:.4f} | {_diff(abs(x - y))} |"
          for ref, m, x, y in _rows(p)]
    return L


def _weights_line(p: dict[str, Any]) -> str:
    parts = [f"{k.replace('_max_abs', '').replace('_', ' ')} {v:.2e}" for k, v in p.items()
             if k.endswith("weights_max_abs")]
    scores = p["scores_max_abs"]
    worst = max(scores, key=scores.get) if scores else None
    return ("Largest weight difference: " + (", ".join(parts) or "–") + "; largest per-sample "
            "score difference: " + (f"{scores[worst]:.2e} ({worst})" if worst else "–") + ".")


def _intro(raw: dict[str, Any]) -> str:
    """The command, the machine, the setting and the code the runs ran."""
    m = raw["machine"]
    sources = sorted({r["pretrain_source"] for p in raw["pairs"] for r in p["runs"]})
    code = raw.get("code")
    return (f"Generated by `{raw['command'].strip()}` ({raw['started']}, "
            f"{raw['wall_s'] / 60:.1f} min in all) on {m['cpu']} ({m['affinity']} usable "
            f"cores); load average before {raw['load_before'][0]:.1f}, after "
            f"{raw['load_after'][0]:.1f}.  {raw.get('preset', 'quick').capitalize()} preset, "
            "10 shots, seed 0, no maps; each run in a fresh process with `OMP_NUM_THREADS` = 1 "
            "or 2 (torch's thread count checked in the child) and an empty `XDD_CACHE`; the GAN "
            f"from the bundle where it has one (pretrain source: {', '.join(sources)})."
            + (f"  Code: xdd/ as copied at the start (commit {code['commit'][:10]} with "
               f"{len(code['changed_from_commit'])} files of xdd/ changed, sha256 "
               f"{code['sha256'][:12]})." if code else ""))


def render(raw: dict[str, Any]) -> str:
    pairs = raw["pairs"]
    L = [_intro(raw), "", "AUPRC (average precision, OOD = positive):", ""]
    L += _pair_table(pairs[0], ("1 thread", "2 threads"))[:2]
    for p in pairs:
        L += _pair_table(p, ("1 thread", "2 threads"))[2:]
    L += ["", "Per method, over the digits above:", "",
          "| reference | method | max abs. difference | mean abs. difference | runs that differ |",
          "|---|---|---|---|---|"]
    by: dict[tuple[str, str], list[float]] = {}
    for p in pairs:
        for ref, meth, x, y in _rows(p):
            by.setdefault((ref, meth), []).append(abs(x - y))
    for (ref, meth), ds in by.items():
        L.append(f"| {ref} | {meth} | {_diff(max(ds))} | {_diff(sum(ds) / len(ds))} | "
                 f"{sum(d > 0 for d in ds)} of {len(ds)} |")
    L += ["", "Seconds per run (process): " + "; ".join(
        f"digit {p['digit']}: " + ", ".join(f"{r['process_s']:.0f} s at {r['torch_threads']}"
                                            for r in p["runs"]) for p in pairs) + "."]
    for p in pairs:
        L += ["", f"Digit {p['digit']}. " + _weights_line(p)]
    rep = raw.get("repeat")
    if rep:
        same = all(x == y for _, _, x, y in _rows(rep))
        L += ["", f"Control: digit {rep['digit']} run twice at 2 threads, each in a fresh "
              f"process and cache: AUPRCs {'all equal' if same else 'NOT all equal'}.  "
              + _weights_line(rep)]
    ph = raw.get("pretrained_here")
    if ph:
        L += ["", f"Digit {ph['digit']} with its GAN pretrained in the run (`force=True`, "
              f"pretrain source: {', '.join(r['pretrain_source'] for r in ph['runs'])}), "
              f"1 vs 2 threads; the pair took {ph['pair_s'] / 60:.1f} min "
              "(" + ", ".join(f"{r['process_s']:.0f} s at {r['torch_threads']}" for r in ph["runs"])
              + "):", ""]
        L += _pair_table(ph, ("1 thread", "2 threads"))
        L += ["", _weights_line(ph)]
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--digits", default="3,7,9", help="held-out digits (default 3,7,9)")
    ap.add_argument("--preset", default="quick", help="quick (default); tiny for a smoke run")
    ap.add_argument("--repeat-digit", type=int, default=None,
                    help="also run this digit twice at 2 threads (the same count)")
    ap.add_argument("--pretrain-digit", type=int, default=None,
                    help="also run this digit with its GAN pretrained in the run, 1 vs 2")
    ap.add_argument("--workdir", default=None, help="folder for the caches (default: a temp one)")
    ap.add_argument("--keep", action="store_true", help="keep the caches")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    ap.add_argument("--json", default=None, help="write the raw figures here")
    ap.add_argument("--md", default=None, help="write the markdown table here (else print it)")
    ap.add_argument("--from-json", default=None, help="render saved figures; run nothing")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--force", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--code", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.preset, args.child, args.force, Path(args.child_out), Path(args.code))
        return
    args.digits = [int(d) for d in args.digits.split(",") if d.strip()]
    raw = json.loads(Path(args.from_json).read_text()) if args.from_json else measure(args)
    if args.json and not args.from_json:
        write_json(args.json, raw)
    text = render(raw)
    if args.md:
        Path(args.md).write_text(text)
        log(f"wrote {args.md}")
    else:
        print(text)


if __name__ == "__main__":
    main()
