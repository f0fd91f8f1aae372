"""A run's variant: the settings in which its config departs from its preset (what the report
and the pages name beside its numbers)."""
from __future__ import annotations

from typing import Any

from xdd.core.config import ConfigError, preset, to_dict


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"retrain": {"lr": 1}} -> {"retrain.lr": 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# What a sweep varies (a repetition redraws the GAN: pretrain.seed), and projections (they
# change no metric): not part of a run's variant.
_NOT_VARIANT = ("ood_digit", "seed", "shots", "methods", "pretrain.seed")


def variant(cfg: dict[str, Any]) -> list[str]:
    """The settings (as "field=value") in which a saved config departs from its preset, other
    than digit, seed, GAN seed, shots, methods and projections: [] for a plain preset run.  Fields the
    preset does not know (older configs) are ignored."""
    try:
        ref = flatten(to_dict(preset(str(cfg.get("preset")))))
    except ConfigError:
        return [f"preset={cfg.get('preset')!r}"]
    return [f"{k}={v}" for k, v in sorted(flatten(cfg).items())
            if k in ref and k not in _NOT_VARIANT and not k.startswith("projection.")
            and v != ref[k]]


def run_variant(res: dict[str, Any]) -> list[str]:
    """A run's variant as recorded in its results when it ran (so a later change of a preset's
    defaults relabels no old run); derived from its config only for runs saved before runs
    recorded it."""
    recorded = res.get("variant")
    if isinstance(recorded, list):
        return [str(v) for v in recorded]
    return variant(res.get("config") or {})
