"""The generated results document: run variants, aggregation, `python -m xdd report`."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xdd.core.config import preset, to_dict
from xdd.core.variants import variant
from xdd.pipeline.experiment import run_experiment
from xdd.report.document import cache_report, fmt_cell
from xdd.report.tables import SD_DDOF, aggregate, over_digits, results_table, run_metrics


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
    # The variant beside the plain run it pairs with (same digit, GAN seed and draw), and
    # AUPRC against the field it changes, the preset's own value in bold.
    r_x, m_x = raw["methods"]["xdd"]["auprc"], main["xdd"]["auprc"]
    pair = next(line for line in md.splitlines()
                if line.startswith("| retrain.pair_mode=raw | labeled |"))
    assert pair.startswith(f"| retrain.pair_mode=raw | labeled | 1 | 1 | 1 | {r_x:.3f} | "
                           f"{m_x:.3f} | {r_x - m_x:+.3f} ± – | {int(r_x > m_x)} of 1 |")
    assert "### `retrain.pair_mode`, xdd" in md
    assert f"| raw | {r_x:.3f} ± 0.000 |" in md and f"| **ratio** | {m_x:.3f} ± 0.000 |" in md
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


# ---------------------------------------------------------------- the Results page's shaping


def _page_runs() -> list[dict]:
    """Digit 0 twice (XDD 0.5 / 0.0, before 0.2 / 0.4), digit 1 once, digit 2 with XDD only;
    at 1 thread, 2 threads and on a GPU."""
    runs = [_fake("a", 0, 0, {("labeled", "before"): 0.2, ("labeled", "xdd"): 0.5,
                              ("labeled", "pixels"): 0.3, ("unlabeled", "xdd"): 0.6}),
            _fake("b", 0, 1, {("labeled", "before"): 0.4, ("labeled", "xdd"): 0.0,
                              ("labeled", "pixels"): 0.1, ("unlabeled", "xdd"): 0.2}),
            _fake("c", 1, 0, {("labeled", "before"): 0.6, ("labeled", "xdd"): 0.9,
                              ("labeled", "pixels"): 0.2, ("unlabeled", "xdd"): 0.8}),
            _fake("d", 2, 0, {("labeled", "xdd"): 0.7})]
    for r, dev in zip(runs, ["cpu (1 thread)", "cpu (2 threads)", "cpu (1 thread)",
                             "cuda (NVIDIA H100)"]):
        r["device"] = dev
    return runs


def test_page_table_names_the_digit_the_variant_and_the_threads():
    from xdd.report.views import default_shots, page_table, presets_by_runs

    df = page_table(_page_runs())
    assert "digit" in df.columns and "ood_digit" not in df.columns
    assert set(df.preset) == {"quick"}
    assert df.groupby("run_key").threads.first().to_dict() == {"a": "1", "b": "2", "c": "1",
                                                                "d": "GPU"}
    assert default_shots(df) == 10
    three = df.assign(shots=[3 if k != "d" else 30 for k in df.run_key])
    assert default_shots(three) == 3  # no 10-shot run: the most common shot count
    two = df.assign(preset=["quick · custom (x=1)" if k == "d" else "quick" for k in df.run_key])
    assert presets_by_runs(two) == ["quick", "quick · custom (x=1)"]  # most runs first


def test_before_after_compares_the_digits_both_cover():
    from xdd.report.views import before_after, chance_per_digit, digit_cells, page_table

    df = page_table(_page_runs())
    cells = digit_cells(df[df.reference == "labeled"])
    xdd0 = cells[(cells.digit == 0) & (cells.method == "xdd")].iloc[0]
    assert xdd0.n == 2 and xdd0.auprc == pytest.approx(0.25)
    nums = before_after(cells)
    # digit 2 has no "before": left out of both means
    assert nums["digits"] == 2 and nums["wins"] == 1  # digit 1 (0.9 > 0.6), not digit 0
    assert nums["mean_before"] == pytest.approx((0.3 + 0.6) / 2)
    assert nums["mean_after"] == pytest.approx((0.25 + 0.9) / 2)
    assert nums["gain"] == pytest.approx(0.575 - 0.45)
    assert list(chance_per_digit(cells)) == pytest.approx([0.1, 0.1, 0.1])
    assert before_after(cells[cells.method != "before"]) is None


def test_side_by_side_rows_and_per_digit_table():
    from xdd.report.views import page_table, per_digit_table, side_by_side_rows

    df = page_table(_page_runs())
    rows = side_by_side_rows(df)
    assert [r["name"] for r in rows] == ["before", "xdd", "pixels"]  # display order
    xdd = rows[1]
    assert xdd["method"] == "After XDD retraining"
    assert xdd["auprc_labeled"] == pytest.approx((0.25 + 0.9 + 0.7) / 3)
    assert xdd["sd_labeled"] == pytest.approx(np.std([0.5, 0.0], ddof=1) / 3)
    assert xdd["auprc_unlabeled"] == pytest.approx((0.4 + 0.8) / 2)
    assert xdd["auroc_labeled"] == pytest.approx(0.5 + (0.25 + 0.9 + 0.7) / 6)
    assert (xdd["runs"], xdd["threads"]) == (4, "1, 2, GPU")
    assert (rows[0]["runs"], rows[0]["threads"], rows[0]["digits"]) == (3, "1, 2", 2)
    assert "auprc_unlabeled" not in rows[0]  # "before" has no unlabeled score here

    table = per_digit_table(df, "quick", 10)
    assert list(table.columns[:2]) == ["preset", "shots"] and table.columns[-1] == "threads"
    cell = table[(table.digit == 0) & (table.method == "xdd")
                 & (table.reference == "labeled")].iloc[0]
    assert (cell.preset, cell.shots, cell.runs, cell.gans, cell.threads) == ("quick", 10, 2, 2,
                                                                            "1, 2")
    assert cell.AUPRC == pytest.approx(0.25)
    assert cell.AUPRC_sd == pytest.approx(np.std([0.5, 0.0], ddof=1))
    assert cell.FPR95 == pytest.approx(0.75) and cell.chance == pytest.approx(0.1)
    assert len(table) == 3 + 3 + 2 + 1  # (digit, method, reference) cells


def test_run_choices_and_the_shots_curve():
    from xdd.report.views import page_table, run_choices, shots_curve

    runs = _page_runs()
    three = dict(_fake("e", 0, 0, {("labeled", "xdd"): 0.1}), shots=3)
    df = page_table(runs + [three])
    ten = df[df.shots == 10]
    picks = run_choices(ten[ten.reference == "labeled"])
    assert [(r["run_key"], r["digit"], r["seed"], r["threads"]) for r in picks] == [
        ("a", 0, 0, "1"), ("b", 0, 1, "2"), ("c", 1, 0, "1"), ("d", 2, 0, "GPU")]
    lab = df[(df.reference == "labeled") & (df.method == "xdd")]
    line = shots_curve(lab, None, 2)  # only digit 0 is cached at both shot counts
    assert list(line.shots) == [3, 10]
    assert list(line["mean"]) == pytest.approx([0.1, 0.25])
    assert list(line["std"]) == pytest.approx([0.0, np.std([0.5, 0.0], ddof=1)])
    assert list(line["count"]) == [1, 2]
    one = shots_curve(lab, 1, 2)
    assert list(one.shots) == [10] and list(one["mean"]) == pytest.approx([0.9])
    assert shots_curve(lab, None, 3).empty  # no digit at three shot counts


# ---------------------------------------------------------------- targets from the table


def test_targets_hold_after_against_the_baselines_the_table_names():
    """Ten digits: XDD above before on 9 (labeled), above pixels on all, above before on 8
    (unlabeled); the pyod baseline scores the pretrained network too, but is no target."""
    from xdd.core.methods import Method, register, unregister
    from xdd.report.targets import targets, unlabeled_baselines
    from xdd.report.tables import results_table

    runs = []
    for d in range(10):
        lab_before = 0.9 if d == 0 else 0.2
        unl_before = 0.9 if d < 2 else 0.2
        runs.append(_fake(f"r{d}", d, 0, {
            ("labeled", "xdd"): 0.5, ("labeled", "before"): lab_before,
            ("unlabeled", "xdd"): 0.8, ("unlabeled", "before"): unl_before,
            ("unlabeled", "pixels"): 0.3, ("unlabeled", "pyod"): 0.95,
            ("unlabeled", "rawknn"): 0.1}))
    df = results_table(runs)
    assert unlabeled_baselines() == [("pixels", "the raw-pixel k-NN"),
                                     ("before", "the pretrained-D k-NN")]
    got = targets(df)
    assert got == [
        (False, "GANs: 1 GAN seeds behind each digit's XDD cells; **10 of 10** digits have "
                "fewer than 3 (target: at least 3 GAN seeds per digit)."),
        (True, "Paper protocol (labeled reference): XDD above `before` on **9 of 10** digits "
               "(target: at least 9 of 10)."),
        (True, "Unlabeled reference: XDD above the raw-pixel k-NN on **10 of 10** digits "
               "(target: at least 9 of 10)."),
        (False, "Unlabeled reference: XDD above the pretrained-D k-NN on **8 of 10** digits "
                "(target: at least 9 of 10)."),
        (True, "Unlabeled reference: mean XDD AUPRC **0.800** (target >= 0.75; moonshot >= "
               "0.90).")]
    # A registered baseline that scores no network is held against too, named by its label
    # (and pixels by its own, since the phrase no longer names one method).
    register(Method("rawknn", "Raw k-NN (test)", "raw k-NN", "#000000", "a test baseline",
                    "pixels", {"unlabeled": "k-NN on raw pixels"}, network=None))
    try:
        assert [n for n, _ in unlabeled_baselines()] == ["pixels", "before", "rawknn"]
        texts = [t for _, t in targets(df)]
        assert ("Unlabeled reference: XDD above Raw k-NN (test) on **10 of 10** digits "
                "(target: at least 9 of 10).") in texts
        assert any("XDD above Raw pixels (no network) on **10 of 10**" in t for t in texts)
    finally:
        unregister("rawknn")
