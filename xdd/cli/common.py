"""What both halves of the CLI (:mod:`xdd.cli.main`, :mod:`xdd.cli.jobs`) share: the error they
report, the config that ``--preset`` / ``--methods`` / ``--data-root`` / ``--set`` describe (and
``--vary``'s values, parsed as ``--set``'s), the device check, and a run's results as text."""
from __future__ import annotations

import argparse
from typing import Any

from xdd.core import fields
from xdd.core.config import ConfigError, RunConfig, preset


class CLIError(Exception):
    pass


def _assignment(item: str, flag: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"{flag} {item!r}: expected FIELD=VALUE")
    k, v = item.split("=", 1)
    return k.strip(), v.strip()


def set_overrides(items: list[str]) -> dict[str, Any]:
    """``--set FIELD=VALUE`` items as overrides, each value parsed for its field
    (xdd.core.fields.parse, as the Run page reads them: "2" is an int, as it always was here,
    so the runs cached with it keep their keys)."""
    out: dict[str, Any] = {}
    for item in items:
        k, v = _assignment(item, "--set")
        out[k] = fields.parse(k, v)
    return out


def parse_vary(item: str) -> tuple[str, list[Any]]:
    """``--vary FIELD=V1,V2,...``: the field and its values, each parsed as --set parses one."""
    k, v = _assignment(item, "--vary")
    fields.check_sweepable(k)
    values = fields.parse_list(k, v)
    if not values:
        raise ConfigError(f"--vary {item!r}: no values; expected FIELD=V1,V2,...")
    return k, values


def config_from_args(args: argparse.Namespace, **given: Any) -> RunConfig:
    overrides: dict[str, Any] = dict(given)
    if args.methods:
        overrides["methods"] = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.data_root:
        overrides["data.root"] = args.data_root
    overrides.update(set_overrides(args.set))
    return preset(args.preset, **overrides)


def check_device(name: str) -> None:
    from xdd.core.device import resolve_device

    resolve_device(name)


def format_results(res: dict[str, Any]) -> str:
    """A run's metrics under each scoring reference, the reference named beside every number."""
    from xdd.core.methods import REFERENCES, display_key
    from xdd.report.tables import gan_seed, run_metrics
    from xdd.storage.bundle import gan_source

    lines = [f"run {res['run_key']}  preset={res['preset']}  OOD digit={res['ood_digit']}  "
             f"shots={res['shots']}  seed={res['seed']}  GAN seed={gan_seed(res)}  "
             f"device={res['device']}",
             f"test: {res['n_test']} images, {res['n_ood']} OOD (base rate {res['base_rate']:.3f});"
             f" wall {res['wall_time_s']:.1f} s; pretrained GAN "
             f"{gan_source(res)}",
             "AUPRC = average precision, OOD digit = positive"]
    by_ref = run_metrics(res)
    info = res.get("reference_info") or {}
    for ref in [r for r in REFERENCES if r in by_ref]:
        lines += ["", f"{ref} reference: {info.get(ref, '')}".rstrip(),
                  f"{'method':<10} {'reference':<10} {'AUPRC':>7} {'AUROC':>7} {'FPR@95':>7} "
                  f"{'AUPR-In':>8}"]
        for m in sorted(by_ref[ref], key=display_key):
            v = by_ref[ref][m]
            lines.append(f"{m:<10} {ref:<10} {v['auprc']:>7.4f} {v['auroc']:>7.4f} "
                         f"{v['fpr95']:>7.4f} {v['aupr_in']:>8.4f}")
    return "\n".join(lines)
