"""Settings compared (xdd.report.compare): the points against a field, the paired differences
and the report's section, on a hand-made long table whose answers are worked out here."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from xdd.report import compare


def _rows(setting: str, digit: int, gan: int, seed: int, auprc: dict[str, float],
          method: str = "xdd", shots: int = 10, split: str = "val") -> list[dict]:
    variant = ", ".join(x for x in (f"data.eval_split={split}" if split != "test" else "",
                                    setting) if x)
    key = f"{setting}|{digit}|{gan}|{seed}|{shots}"
    return [{"run_key": key, "variant": variant, "preset": "quick", "eval_split": split,
             "ood_digit": digit, "shots": shots, "seed": seed, "gan_seed": gan,
             "pretrain_key": f"g{digit}{gan}", "reference": ref, "method": method,
             "auprc": a} for ref, a in auprc.items()]


# AUPRC of xdd under the unlabeled reference: (setting, digit, GAN seed) -> value.  Labeled
# draw = GAN seed, as in a sweep's repetitions.
U = {("", 2, 100): 0.50, ("", 2, 101): 0.60, ("", 7, 100): 0.30, ("", 7, 101): 0.20,
     ("retrain.beta=3", 2, 100): 0.55, ("retrain.beta=3", 2, 101): 0.64,
     ("retrain.beta=3", 7, 100): 0.33, ("retrain.beta=3", 7, 101): 0.19,
     ("retrain.beta=0.1", 2, 100): 0.40, ("retrain.beta=0.1", 2, 101): 0.70,
     ("retrain.beta=0.1", 7, 100): 0.30, ("retrain.beta=0.1", 7, 101): 0.30}


@pytest.fixture
def table() -> pd.DataFrame:
    rows = []
    for (s, d, g), a in U.items():
        rows += _rows(s, d, g, g, {"unlabeled": a, "labeled": a / 2})
        if not s:
            rows += _rows(s, d, g, g, {"unlabeled": a - 0.1}, method="before")
    # A run only β = 3 has (digit 9): no other value covers it, so no point counts it, and
    # nothing pairs with it.
    rows += _rows("retrain.beta=3", 9, 100, 100, {"unlabeled": 0.99, "labeled": 0.99})
    # A run that changes two fields is in no single field's curve.
    rows += _rows("retrain.beta=3, retrain.lr=0.001", 2, 100, 100,
                  {"unlabeled": 0.0, "labeled": 0.0})
    return pd.DataFrame(rows)


def test_settings_of_leaves_the_split_out_and_types_the_values():
    assert compare.settings_of("data.eval_split=val, retrain.beta=0.1, "
                               "retrain.pair_mode=sphere") == {"retrain.beta": 0.1,
                                                              "retrain.pair_mode": "sphere"}
    assert compare.settings_of("data.eval_split=val") == {}
    assert compare.settings_of("") == {}
    assert compare.label_of({"retrain.steps": 400, "retrain.beta": 3}) == \
        "retrain.beta=3, retrain.steps=400"


def test_swept_fields(table):
    assert compare.swept_fields(table) == ["retrain.beta", "retrain.lr"]


def test_field_points_average_common_keys_with_gan_seed_error_bars(table):
    pts = compare.field_points(table, "retrain.beta", "quick", "xdd")
    u = pts[pts.reference == "unlabeled"].set_index("value")
    assert list(u.index) == [0.1, 1.0, 3]  # the preset's own value (1.0) among the swept ones
    assert u.loc[1.0, "is_preset"] and not u.loc[3, "is_preset"]
    for v, s in ((0.1, "retrain.beta=0.1"), (1.0, ""), (3, "retrain.beta=3")):
        per_digit = [np.mean([U[(s, d, g)] for g in (100, 101)]) for d in (2, 7)]
        per_gan = [np.mean([U[(s, d, g)] for d in (2, 7)]) for g in (100, 101)]
        assert u.loc[v, "auprc"] == pytest.approx(np.mean(per_digit))  # digit 9 left out
        assert u.loc[v, "sd_gan"] == pytest.approx(np.std(per_gan, ddof=1))
        assert u.loc[v, "keys"] == 4 and u.loc[v, "gans"] == 2 and u.loc[v, "digits"] == 2
    lab = pts[pts.reference == "labeled"].set_index("value")
    assert lab.loc[3, "auprc"] == pytest.approx(u.loc[3, "auprc"] / 2)


def test_paired_differences_and_leads(table):
    pr = compare.paired(table, "xdd")
    r = pr[(pr.setting == "retrain.beta=3") & (pr.reference == "unlabeled")].iloc[0]
    d = [U[("retrain.beta=3", dg, g)] - U[("", dg, g)] for dg in (2, 7) for g in (100, 101)]
    assert r["pairs"] == 4 and r["digits"] == 2 and r["gans"] == 2
    assert r["diff"] == pytest.approx(np.mean(d))
    assert r["se"] == pytest.approx(np.std(d, ddof=1) / math.sqrt(4))
    # GAN 100: +0.05, +0.03; GAN 101: +0.04, -0.01 -> leads on both seeds
    assert r["leads"] == 2
    assert r["per_gan"] == pytest.approx({100: 0.04, 101: 0.015})
    r01 = pr[(pr.setting == "retrain.beta=0.1") & (pr.reference == "unlabeled")].iloc[0]
    # GAN 100: -0.10, 0.00 (mean < 0); GAN 101: +0.10, +0.10
    assert r01["leads"] == 1
    assert r01["variant"] == pytest.approx(np.mean([0.4, 0.7, 0.3, 0.3]))
    assert r01["preset"] == pytest.approx(np.mean([0.5, 0.6, 0.3, 0.2]))
    # The two-field run pairs with digit 2, GAN 100 only.
    two = pr[(pr.setting == "retrain.beta=3, retrain.lr=0.001")
             & (pr.reference == "unlabeled")].iloc[0]
    assert two["pairs"] == 1 and two["diff"] == pytest.approx(-0.5) and math.isnan(two["se"])


def test_method_lines_are_the_plain_runs_baselines(table):
    lv = compare.method_lines(table, "retrain.beta", "quick", ["before"])
    assert lv[("unlabeled", "before")] == pytest.approx(
        np.mean([np.mean([0.4, 0.5]), np.mean([0.2, 0.1])]))


def test_parallel_table_fills_the_presets_values(table):
    pt = compare.parallel_table(table, "xdd", "unlabeled", "quick")
    assert list(pt.columns) == ["retrain.beta", "retrain.lr", "auprc", "run_key"]
    plain = pt[pt.run_key.str.startswith("|")]
    assert set(plain["retrain.beta"]) == {1.0} and set(plain["retrain.lr"]) == {1e-4}
    assert len(pt) == len(U) + 2


def test_compare_markdown_names_the_preset_and_the_pairs(table):
    md = "\n".join(compare.compare_markdown(table, "quick", ["xdd"], ["before"]))
    assert "## Settings compared" in md and "### `retrain.beta`, xdd" in md
    assert "| **1** |" in md  # the preset's value, in bold
    expected = np.mean([U[("retrain.beta=3", d, g)] - U[("", d, g)]
                        for d in (2, 7) for g in (100, 101)])
    assert f"| retrain.beta=3 | unlabeled | 4 | 2 | 2 |" in md
    assert f"{expected:+.3f} ±" in md and "2 of 2" in md
    assert compare.compare_markdown(table[table.variant == "data.eval_split=val"], "quick",
                                    ["xdd"], ["before"]) == []
