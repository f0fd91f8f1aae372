"""The generated results document: run variants, aggregation, `python -m xdd report`."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xdd.core.config import preset, to_dict, variant
from xdd.pipeline.experiment import run_experiment
from xdd.report.tables import (SD_DDOF, aggregate, cache_report, fmt_cell, over_digits, results_table,
                        run_metrics)


def test_variant_names_exactly_the_changed_settings():
    plain = to_dict(preset("quick", ood_digit=3, shots=5, seed=2, methods=("before", "xdd")))
    assert variant(plain) == []  # digit, shots, seed and methods are what a sweep varies
    assert variant(to_dict(preset("quick", **{"projection.n_samples": 0}))) == []
    # A repetition redraws the GAN: its pretraining seed is not a variant either.
    assert variant(to_dict(preset("quick", **{"pretrain.seed": 2}))) == []
    changed = to_dict(preset("quick", **{"retrain.pair_mode": "raw", "retrain.lr": 0.5}))
    assert variant(changed) == ["retrain.lr=0.5", "retrain.pair_mode=raw"]
    assert variant(dict(plain, preset="nope")) == ["preset='nope'"]


def _fake(key: str, digit: int, seed: int, auprc: dict, gan: int | None = None) -> dict:
    """A results dict shaped like run_experiment's, with chosen AUPRCs per (reference, method)."""
    cfg = to_dict(preset("quick", ood_digit=digit, seed=seed,
                         **{"pretrain.seed": seed if gan is None else gan}))
    refs: dict = {}
    for (ref, m), v in auprc.items():
        refs.setdefault(ref, {})[m] = {"auprc": v, "auroc": 0.5 + v / 2, "fpr95": 1 - v,
                                       "aupr_in": 0.9}
    return {"run_key": key, "preset": "quick", "ood_digit": digit, "shots": 10, "seed": seed,
            "config": cfg, "pretrain_key": f"p{digit}-{cfg['pretrain']['seed']}",
            "references": refs, "methods": refs.get("labeled", {}), "base_rate": 0.1,
            "wall_time_s": 1.0, "device": "cpu"}


def test_aggregate_states_the_sample_sd_and_counts_gans():
    vals = [0.55, 0.70, 0.69]
    runs = [_fake(f"k{s}", 0, s, {("labeled", "xdd"): v, ("unlabeled", "xdd"): v + 0.1})
            for s, v in enumerate(vals)]
    df = results_table(runs)
    assert set(df.reference) == {"labeled", "unlabeled"} and set(df.gan_seed) == {0, 1, 2}
    agg = aggregate(df, ["reference", "ood_digit", "method"]).set_index("reference")
    assert SD_DDOF == 1
    assert agg.auprc_sd["labeled"] == pytest.approx(np.std(vals, ddof=1), abs=1e-12)
    assert agg.auprc["unlabeled"] == pytest.approx(np.mean(vals) + 0.1, abs=1e-12)
    assert agg.gans["labeled"] == 3 and agg.runs["labeled"] == 3
    # A single run has s.d. 0, not NaN; one GAN shared by three runs counts once.
    shared = results_table([_fake(f"s{s}", 1, s, {("labeled", "xdd"): 0.3}, gan=0)
                            for s in range(3)])
    a = aggregate(shared, ["ood_digit"])
    assert a.gans[0] == 1 and a.runs[0] == 3
    assert aggregate(df[df.run_key == "k0"], ["reference", "method"]).auprc_sd[0] == 0.0


def test_mean_over_digits_is_the_mean_of_per_digit_means():
    runs = [_fake("a", 0, 0, {("labeled", "xdd"): 0.2}), _fake("b", 0, 1, {("labeled", "xdd"): 0.4}),
            _fake("c", 1, 0, {("labeled", "xdd"): 0.9})]
    avg = over_digits(results_table(runs)).iloc[0]
    assert avg.auprc == pytest.approx((0.3 + 0.9) / 2)
    assert avg.auprc_sd == pytest.approx((np.std([0.2, 0.4], ddof=1) + 0.0) / 2)
    assert avg.digits == 2 and avg.runs == 3


def test_old_runs_without_references_read_as_labeled():
    old = {"methods": {"xdd": {"auprc": 0.5}}}
    assert run_metrics(old) == {"labeled": {"xdd": {"auprc": 0.5}}}


def test_report_separates_preset_runs_shot_counts_and_ablations(tiny_run):
    cfg = dataclasses.replace(tiny_run.cfg, shots=5, methods=("before", "xdd"))
    five = run_experiment(cfg, device="cpu")
    raw_cfg = preset("tiny", ood_digit=8, methods=("before", "xdd"),
                     **{"retrain.pair_mode": "raw"})
    raw = run_experiment(raw_cfg, device="cpu")
    md = cache_report("tiny", command="python -m xdd report --preset tiny")
    refs = tiny_run.results["references"]
    main = refs["labeled"]
    # Both references' per-digit tables hold the plain 10-shot run: 1 run, 1 GAN.
    for ref in ("labeled", "unlabeled"):
        m = refs[ref]
        row = f"| 8 | 1 | 1 | {fmt_cell(m['before']['auprc'], 0.0, m['before']['auroc'])} |"
        assert row in md, (ref, row)
    assert "pixels [unlabeled]" in md and "XDD [labeled]" in md
    side = next(line for line in md.splitlines() if line.startswith("| XDD |"))
    assert side == (f"| XDD | {fmt_cell(main['xdd']['auprc'], 0.0)} | "
                    f"{fmt_cell(refs['unlabeled']['xdd']['auprc'], 0.0)} | 1 | 1 | 1 |")
    assert "## AUPRC against shots" in md
    shots_row = next(line for line in md.splitlines() if line.startswith("| xdd | labeled |"))
    assert f"{five['methods']['xdd']['auprc']:.3f}" in shots_row
    assert f"{main['xdd']['auprc']:.3f}" in shots_row
    ablation = next(line for line in md.splitlines()
                    if line.startswith("| retrain.pair_mode=raw | labeled |") and "| xdd |" in line)
    assert f"| {raw['methods']['xdd']['auprc']:.3f} | {main['xdd']['auprc']:.3f} |" in ablation
    above = raw["methods"]["xdd"]["auprc"] > main["before"]["auprc"]
    assert ablation.endswith(f"| {int(above)} of 1 |")
    d_loss = tiny_run.results["pretrain_losses"]["d_loss"]
    assert f"D's loss at the end lies between {d_loss:.2f} and {d_loss:.2f} over the 1 " in md
    assert "Paper protocol (labeled reference): XDD above `before` on" in md
    assert "1 pretrained GANs (GAN pretraining seeds 0)" in md
    # Targets come first, and a missed one says so.
    head = md.split("## Both references")[0]
    assert "Targets (10 shots)" in head and "**missed**" in head


def test_a_run_keeps_the_variant_it_ran_as_when_a_preset_default_changes(tiny_run, monkeypatch):
    """A run records what made it a variant when it ran: changing a preset's default later
    relabels no cached run (neither in the report nor on the pages)."""
    from xdd.core.fmt import config_group
    from xdd.core import config
    from xdd.report.tables import variant_of

    res = tiny_run.results
    assert res["variant"] == [] and variant_of(res) == "" and config_group(res) == "tiny"
    changed = dataclasses.replace(config._PRESETS["tiny"],
                                  retrain=dataclasses.replace(config._PRESETS["tiny"].retrain,
                                                              steps=11))
    monkeypatch.setitem(config._PRESETS, "tiny", changed)
    assert variant_of(res) == "" and config_group(res) == "tiny"
    # a run saved before runs recorded their variant is still derived from its config
    legacy = {k: v for k, v in res.items() if k != "variant"}
    assert variant_of(legacy) == "retrain.steps=10"
    assert config_group(legacy) == "tiny · custom (retrain.steps=10)"


def test_one_duration_format_for_cli_and_pages():
    from xdd.core.fmt import fmt_duration

    assert fmt_duration(44.6) == "45 s"
    assert fmt_duration(150) == "2.5 min"
    assert fmt_duration(7200) == "2.0 h"
    assert fmt_duration(150, compact=True) == "2.5m"
    assert fmt_duration(-3, compact=True) == "0s"
    assert fmt_duration(None) == "–" and fmt_duration(float("nan"), compact=True) == "-"
