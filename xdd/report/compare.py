"""Settings compared: AUPRC against a swept field, and each variant beside its preset with
paired differences.  One code path for the Results page and the results document.

Input: the long table of :func:`xdd.report.tables.results_table` (one row per run, reference
and method), cut to one preset, one evaluation split and one shot count.  A run's settings are
its preset's, except the fields its variant names (``variant`` column: "field=value, ...", as
the run recorded it).  The evaluation split is a column of its own, so ``data.eval_split`` is
never counted as a swept field.

Conventions (beside those of :mod:`xdd.report`):

- **A point** of "AUPRC against a field" at one value: the mean over digits of the per-digit
  means, over the (digit, GAN seed, labeled draw) keys that every value of the field covers
  (so every point stands on the same draws); its error bar is the sample s.d. (ddof = 1) over
  GAN seeds of the per-GAN-seed mean over those digits: how much the answer moves when the
  GANs are drawn again.
- **A pair**: a variant's run and the plain preset's run of the same digit, GAN seed, labeled
  draw and shot count, scored by the same method under the same reference.  A paired
  difference is variant − preset; its standard error is the pairs' s.d. / sqrt(pairs).
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from xdd.core.config import ConfigError, preset
from xdd.core.fields import parse_value, value_of

SPLIT_FIELD = "data.eval_split"
_ITEM = re.compile(r",\s+(?=[A-Za-z_][\w]*(?:\.[\w]+)*=)")
PARALLEL_MIN_FIELDS = 2  # the parallel-coordinates view shows when this many fields vary


def _digit_col(df) -> str:
    return "digit" if "digit" in df.columns else "ood_digit"


def settings_of(variant: str) -> dict[str, Any]:
    """"retrain.beta=0.1, retrain.pair_mode=sphere" -> {"retrain.beta": 0.1, ...}; the
    evaluation split left out (it is a column of its own)."""
    out: dict[str, Any] = {}
    for item in _ITEM.split(variant or ""):
        name, sep, text = item.strip().partition("=")
        if sep and name != SPLIT_FIELD:
            out[name] = parse_value(text)
    return out


def label_of(settings: dict[str, Any]) -> str:
    """A variant's name without the evaluation split: "" for the plain preset."""
    return ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))


def with_settings(df):
    """The table with a ``setting`` column: the variant's name, split left out ("" = the
    preset)."""
    memo = {v: label_of(settings_of(v)) for v in df["variant"].dropna().unique()}
    return df.assign(setting=df["variant"].map(memo).fillna(""))


def swept_fields(df) -> list[str]:
    """The fields any run of the table changes from its preset, sorted."""
    out: set[str] = set()
    for v in df["variant"].dropna().unique():
        out.update(settings_of(v))
    return sorted(out)


def preset_value(preset_name: str, field: str) -> Any:
    """The preset's own value of a field (None when the preset or field is unknown)."""
    try:
        return value_of(preset(preset_name), field)
    except (ConfigError, AttributeError):
        return None


def _sort_key(v: Any) -> tuple:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, str(v))


def field_runs(df, field: str, preset_name: str):
    """The rows of the runs that differ from the preset in ``field`` alone, plus the plain
    preset's, with a ``value`` column (the preset's own value for the plain runs)."""
    df = with_settings(df)
    own = preset_value(preset_name, field)
    keep, values = [], []
    for s in df["setting"].unique():
        st = settings_of(s)
        if not st:
            keep.append(s)
            values.append(own)
        elif set(st) == {field}:
            keep.append(s)
            values.append(st[field])
    value_of_setting = dict(zip(keep, values))
    out = df[df["setting"].isin(keep)].copy()
    out["value"] = out["setting"].map(value_of_setting)
    return out


def field_points(df, field: str, preset_name: str, method: str):
    """AUPRC against one field for one method, per reference (module docstring: points over
    the keys every value covers, error bars = s.d. over GAN seeds).  Columns: reference, value,
    is_preset, auprc, sd_gan, gans, digits, keys, runs; rows in the values' order."""
    import pandas as pd

    cols = ["reference", "value", "is_preset", "auprc", "sd_gan", "gans", "digits", "keys",
            "runs"]
    rows = []
    fr = field_runs(df[df["method"] == method], field, preset_name)
    dcol = _digit_col(fr)
    key = [dcol, "gan_seed", "seed"]
    own = preset_value(preset_name, field)
    for ref in sorted(fr["reference"].unique()):
        sub = fr[fr["reference"] == ref]
        values = sorted({v for v in sub["value"]}, key=_sort_key)
        if not values:
            continue
        common = None
        for v in values:
            ks = set(map(tuple, sub[sub["value"] == v][key].to_numpy().tolist()))
            common = ks if common is None else common & ks
        in_common = np.array([tuple(k) in common for k in sub[key].to_numpy().tolist()],
                             dtype=bool)
        sub = sub[in_common]
        for v in values:
            a = sub[sub["value"] == v]
            if a.empty:
                continue
            per_gan = a.groupby(["gan_seed", dcol]).auprc.mean().groupby("gan_seed").mean()
            per_digit = a.groupby(dcol).auprc.mean()
            rows.append({"reference": ref, "value": v, "is_preset": v == own,
                         "auprc": float(per_digit.mean()),
                         "sd_gan": float(per_gan.std(ddof=1)) if len(per_gan) > 1 else 0.0,
                         "gans": int(a["gan_seed"].nunique()),
                         "digits": int(a[dcol].nunique()), "keys": len(common),
                         "runs": int(a["run_key"].nunique())})
    return pd.DataFrame(rows, columns=cols)


def method_lines(df, field: str, preset_name: str, methods: list[str]):
    """Per reference and method (one that no setting of ``field`` changes, e.g. a baseline):
    its mean AUPRC over the same keys as :func:`field_points`, to draw as a level line."""
    out = {}
    fr = field_runs(df, field, preset_name)
    dcol = _digit_col(fr)
    plain = fr[fr["setting"] == ""]
    for ref in sorted(plain["reference"].unique()):
        for m in methods:
            a = plain[(plain["reference"] == ref) & (plain["method"] == m)]
            if not a.empty:
                out[(ref, m)] = float(a.groupby(dcol).auprc.mean().mean())
    return out


def paired(df, method: str):
    """Every variant beside the plain preset, per reference: pairs (same digit, GAN seed,
    labeled draw and shots), the two means over the pairs, the mean difference and its standard
    error, and on how many GAN seeds the variant leads (mean difference over that seed's digits
    above zero).  Columns: setting, reference, pairs, digits, gans, variant, preset, diff, se,
    leads, per_gan (GAN seed -> mean difference)."""
    import pandas as pd

    cols = ["setting", "reference", "pairs", "digits", "gans", "variant", "preset", "diff",
            "se", "leads", "per_gan"]
    df = with_settings(df[df["method"] == method])
    dcol = _digit_col(df)
    key = [dcol, "gan_seed", "seed", "shots", "reference"]
    base = df[df["setting"] == ""].groupby(key).auprc.mean().rename("preset")
    rows = []
    def order(setting: str) -> list[tuple]:
        return [(k, _sort_key(v)) for k, v in sorted(settings_of(setting).items())]

    for s in sorted((x for x in df["setting"].unique() if x), key=order):
        var = df[df["setting"] == s].groupby(key).auprc.mean().rename("variant")
        both = pd.concat([var, base], axis=1, join="inner").reset_index()
        for ref in sorted(both["reference"].unique()):
            b = both[both["reference"] == ref]
            d = (b["variant"] - b["preset"]).to_numpy()
            n = len(d)
            per_gan = (b.assign(d=d).groupby("gan_seed").d.mean())
            rows.append({"setting": s, "reference": ref, "pairs": n,
                         "digits": int(b[dcol].nunique()), "gans": int(b["gan_seed"].nunique()),
                         "variant": float(b["variant"].mean()),
                         "preset": float(b["preset"].mean()), "diff": float(d.mean()),
                         "se": float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
                         "leads": int((per_gan > 0).sum()),
                         "per_gan": {int(k): float(v) for k, v in per_gan.items()}})
    return pd.DataFrame(rows, columns=cols)


def parallel_table(df, method: str, reference: str, preset_name: str):
    """One row per run of ``method`` under ``reference``: every swept field's value (the
    preset's where the run keeps it) and its AUPRC; what the parallel-coordinates view draws."""
    import pandas as pd

    fields = swept_fields(df)
    sub = with_settings(df[(df["method"] == method) & (df["reference"] == reference)])
    own = {f: preset_value(preset_name, f) for f in fields}
    rows = []
    for _, r in sub.iterrows():
        st = settings_of(r["setting"])
        rows.append({**{f: st.get(f, own[f]) for f in fields},
                     "auprc": float(r["auprc"]), "run_key": r["run_key"]})
    return pd.DataFrame(rows, columns=[*fields, "auprc", "run_key"])


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _signed(x: float) -> str:
    return "–" if x != x else f"{x:+.3f}"


def compare_markdown(df, preset_name: str, methods: list[str], baselines: list[str]) -> list[str]:
    """The "Settings compared" section of a results document: per swept field, AUPRC against
    its values (both references, the preset's value in bold, the baselines' levels), then the
    paired differences of every variant.  [] when no run departs from the preset."""
    fields = swept_fields(df)
    if not fields:
        return []
    md = ["## Settings compared", "",
          "Each point: mean over digits of the per-digit mean AUPRC, over the (digit, GAN seed, "
          "labeled draw) keys every value covers; ± = s.d. over GAN seeds of the mean over "
          "digits. The preset's own value in bold.", ""]
    for field in fields:
        for m in methods:
            pts = field_points(df, field, preset_name, m)
            if pts.empty or pts["value"].nunique() < 2:
                continue
            levels = method_lines(df, field, preset_name, baselines)
            refs = sorted(pts["reference"].unique())
            md += [f"### `{field}`, {m}", "",
                   "| value | " + " | ".join(f"AUPRC, {r} ref." for r in refs) +
                   " | keys | GANs |", "|---" * (len(refs) + 3) + "|"]
            for v in sorted(pts["value"].unique(), key=_sort_key):
                cells = []
                for r in refs:
                    p = pts[(pts["reference"] == r) & (pts["value"] == v)]
                    cells.append("–" if p.empty else
                                 f"{p.auprc.iloc[0]:.3f} ± {p.sd_gan.iloc[0]:.3f}")
                p0 = pts[pts["value"] == v].iloc[0]
                name = fmt_value(v)
                name = f"**{name}**" if p0["is_preset"] else name
                md.append(f"| {name} | " + " | ".join(cells) +
                          f" | {int(p0['keys'])} | {int(p0['gans'])} |")
            lv = [f"{b} {levels[(r, b)]:.3f} ({r})" for r in refs for b in baselines
                  if (r, b) in levels]
            if lv:
                md += ["", "Unchanged by the setting (plain runs, same digits): " + "; ".join(lv)
                       + "."]
            md.append("")
    for m in methods:
        pr = paired(df, m)
        if pr.empty:
            continue
        md += [f"### Paired with the preset, {m}", "",
               "Pairs: same digit, GAN seed, labeled draw and shots. diff = variant − preset, "
               "± its standard error; leads: GAN seeds on which the mean difference over the "
               "digits is above zero.", "",
               "| variant | reference | pairs | digits | GANs | variant AUPRC | preset AUPRC | "
               "diff ± s.e. | leads | diff per GAN seed |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in pr.iterrows():
            per = ", ".join(f"{k}: {_signed(v)}" for k, v in sorted(r["per_gan"].items()))
            se = "–" if r["se"] != r["se"] else f"{r['se']:.3f}"
            md.append(f"| {r['setting']} | {r['reference']} | {r['pairs']} | {r['digits']} | "
                      f"{r['gans']} | {r['variant']:.3f} | {r['preset']:.3f} | "
                      f"{_signed(r['diff'])} ± {se} | {r['leads']} of {r['gans']} | {per} |")
        md.append("")
    return md


def groups(df) -> list[tuple[str, str]]:
    """(preset, evaluation split) of the page's table (``base_preset`` column) whose runs
    change some setting, the test split first, then by runs."""
    col = "base_preset" if "base_preset" in df.columns else "preset"
    out = []
    for (p, s), g in df.groupby([col, "eval_split"]):
        if swept_fields(g):
            out.append((str(p), str(s), g["run_key"].nunique()))
    out.sort(key=lambda t: (t[1] != "test", -t[2], t[0], t[1]))
    return [(p, s) for p, s, _ in out]
