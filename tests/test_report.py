"""The generated results document: run variants and `python -m xdd report`."""
from __future__ import annotations

import dataclasses

from xdd.config import preset, to_dict, variant
from xdd.experiment import run_experiment
from xdd.sweep import cache_report


def test_variant_names_exactly_the_changed_settings():
    plain = to_dict(preset("quick", ood_digit=3, shots=5, seed=2, methods=("before", "xdd")))
    assert variant(plain) == []  # digit, shots, seed and methods are what a sweep varies
    assert variant(to_dict(preset("quick", **{"projection.n_samples": 0}))) == []
    changed = to_dict(preset("quick", **{"retrain.pair_mode": "raw", "retrain.lr": 0.5}))
    assert variant(changed) == ["retrain.lr=0.5", "retrain.pair_mode=raw"]
    assert variant(dict(plain, preset="nope")) == ["preset='nope'"]


def test_report_separates_preset_runs_shot_counts_and_ablations(tiny_run):
    cfg = dataclasses.replace(tiny_run.cfg, shots=5, methods=("before", "xdd"))
    five = run_experiment(cfg, device="cpu")
    raw_cfg = preset("tiny", ood_digit=8, methods=("before", "xdd"),
                     **{"retrain.pair_mode": "raw"})
    raw = run_experiment(raw_cfg, device="cpu")
    md = cache_report("tiny", command="python -m xdd report --preset tiny")
    main = tiny_run.results["methods"]
    # The main table holds the plain 10-shot run, with its AUPRC to three decimals.
    assert f"| 8 | {main['pixels']['auprc']:.3f} ± 0.000" in md
    assert "## AUPRC against shots" in md
    shots_row = next(line for line in md.splitlines() if line.startswith("| xdd |"))
    assert f"{five['methods']['xdd']['auprc']:.3f}" in shots_row
    assert f"{main['xdd']['auprc']:.3f}" in shots_row
    ablation = next(line for line in md.splitlines()
                    if line.startswith("| retrain.pair_mode=raw") and "| xdd |" in line)
    assert f"| {raw['methods']['xdd']['auprc']:.3f} | {main['xdd']['auprc']:.3f} |" in ablation
    # ... and whether the variant's XDD is above the plain run's "before" on that one digit.
    above = raw["methods"]["xdd"]["auprc"] > main["before"]["auprc"]
    assert ablation.endswith(f"| {int(above)} of 1 |")
    # How the GAN game ended, from the run's recorded losses.
    d_loss = tiny_run.results["pretrain_losses"]["d_loss"]
    assert f"D's loss at the end lies between {d_loss:.2f} and {d_loss:.2f} over the 1 " in md
    assert "XDD beats `before` on mean AUPRC for" in md


def test_a_run_keeps_the_variant_it_ran_as_when_a_preset_default_changes(tiny_run, monkeypatch):
    """A run records what made it a variant when it ran: changing a preset's default later
    relabels no cached run (neither in the report nor on the pages)."""
    from pages._common import config_group
    from xdd import config
    from xdd.sweep import variant_of

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
