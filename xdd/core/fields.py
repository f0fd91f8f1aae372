"""The config's fields as people set them: typed text parsed into a field's value, a value
written back as text, the Run page's Advanced fields (what each does and where it is
explained), and what a sweep may vary.

Ranges are not defined here: they are the config's own (:func:`xdd.core.ranges.numeric_range`,
:func:`xdd.core.ranges.choices`, :func:`xdd.core.ranges.accepted`), the table validate() checks.
A value is checked by building the config it goes into, so a widget, a link and the command
line can accept nothing that a run would refuse.

One parser serves ``--set``, ``--vary``, the Run page and its links, and reads text as the
command line always has ("2" is an int even for a float field), so a setting typed in the browser
gets the run key the same setting got on the command line, and runs cached earlier are found.
A value equal to the one the config holds already (2 where the preset has 2.0) changes nothing:
the config, and so the run key, stay the preset's.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

from xdd.core import ranges
from xdd.core.config import ConfigError, RunConfig


# ---------------------------------------------------------------- values as text


def parse_value(text: str) -> Any:
    """Text as a value without knowing its field: true/false, none, an int, a float, else the
    text itself."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@lru_cache(maxsize=1)
def _annotations() -> dict[str, str]:
    """Dotted path -> the field's type annotation as written ("float", "int | None", ...)."""
    out: dict[str, str] = {}
    base = RunConfig()
    for f in dataclasses.fields(RunConfig):
        sub = getattr(base, f.name)
        if dataclasses.is_dataclass(sub):
            out.update({f"{f.name}.{g.name}": str(g.type) for g in dataclasses.fields(sub)})
        else:
            out[f.name] = str(f.type)
    return out


def paths() -> list[str]:
    """Every leaf field of a RunConfig, as a dotted path, in declaration order."""
    return list(_annotations())


def is_float(path: str) -> bool:
    return "float" in _annotations().get(path, "").split(" | ")


def parse(path: str, text: str) -> Any:
    """Typed text as the value of one field (``--set FIELD=TEXT``)."""
    return parse_value(text.strip())


def parse_list(path: str, text: str) -> list[Any]:
    """Comma-separated values of one field (``--vary FIELD=V1,V2``), in order, repeats dropped."""
    out: list[Any] = []
    for part in text.split(","):
        if part.strip():
            v = parse(path, part)
            if not any(v == o and type(v) is type(o) for o in out):
                out.append(v)
    return out


def fmt(value: Any) -> str:
    """A value as text that parse() turns back into the same value (repr keeps every bit of a
    float)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value)
    return str(value)


# ---------------------------------------------------------------- values in configs


def value_of(cfg: RunConfig, path: str) -> Any:
    obj: Any = cfg
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def with_value(cfg: RunConfig, path: str, value: Any) -> RunConfig:
    """cfg with one field replaced (validated: a RunConfig validates itself); cfg itself where
    the value equals the one it holds (2 for 2.0), so an unchanged setting keeps its run key."""
    if path not in _annotations():
        raise ConfigError(f"unknown config field {path!r}")
    current = value_of(cfg, path)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  for v in (value, current))
    if numbers and value == current:
        return cfg
    head, _, name = path.partition(".")
    if name:
        return dataclasses.replace(
            cfg, **{head: dataclasses.replace(getattr(cfg, head), **{name: value})})
    return dataclasses.replace(cfg, **{head: value})


def problem(cfg: RunConfig, path: str, value: Any) -> str | None:
    """Why ``value`` cannot go into ``path`` of cfg (validate()'s own message), or None."""
    try:
        with_value(cfg, path, value)
    except ConfigError as exc:
        return str(exc)
    except (TypeError, ValueError) as exc:  # a value of a type the check cannot compare
        return f"{path} {value!r}: {exc}"
    return None


# ---------------------------------------------------------------- the Advanced fields


@dataclass(frozen=True)
class Field:
    """A field the Run page's Advanced panel offers."""
    path: str
    label: str
    what: str  # one line: what it does
    method: str | None  # the Method page's section that explains it ("3"), if any
    docs: str  # the docs/METHOD.md section that explains it ("2")

    @property
    def kind(self) -> str:
        return kind(self.path)

    @property
    def where(self) -> str:
        page = f"Method page §{self.method} · " if self.method else ""
        return f"{page}docs/METHOD.md §{self.docs}"

    @property
    def help(self) -> str:
        """What it does, what it accepts (the config's range), where it is explained."""
        return f"{self.what} Accepted: {ranges.accepted(self.path)}. See {self.where}."


ADVANCED: tuple[Field, ...] = (
    Field("retrain.beta", "β, class-term weight",
          "Weight of I(Z;Y), the MCDD class term and its centre pull: L = I(X;Z) − β·I(Z;Y); "
          "0 leaves the pairwise term alone.", "2", "2"),
    Field("retrain.pair_weight", "Pairwise weight",
          "Weight of I(X;Z), the term that pushes images of different digits apart; 0 is the "
          "MCDD-only baseline.", "3", "2"),
    Field("retrain.pair_mode", "Pairwise form",
          "How the pairwise term is bounded: ratio (between- over within-class spread), sphere "
          "(distances on the unit sphere) or raw (the paper's formula, unbounded).", "4", "2"),
    Field("retrain.pull_weight", "Centre pull",
          "Pull of each labeled image to its class centre (times β); keeps the class term "
          "training once its cross-entropy is near 0.", "2", "2"),
    Field("retrain.steps", "Retraining steps",
          "Full-batch Adam steps on the labeled images; more steps take longer (the estimate "
          "below follows).", None, "3"),
    Field("retrain.lr", "Learning rate",
          "Adam's learning rate for the retrained blocks and the class Gaussians.", None, "3"),
    Field("retrain.train_blocks", "Retrained blocks",
          "How many of D's last conv blocks are retrained; the others stay as pretrained.",
          None, "3"),
    Field("retrain.anchor_weight", "Anchor weight",
          "Pull of unlabeled images' embeddings toward the pretrained D's, so they do not "
          "drift; 0 = off, as in the paper.", None, "6"),
    Field("retrain.sigma_init", "σ start",
          "Start of the class deviations: mle (their spread in the pretrained embedding) or "
          "unit (1).", None, "3"),
    Field("retrain.l2sp", "L2-SP pull",
          "Pull of the retrained weights toward the pretrained ones; 0 = off.", None, "3"),
    Field("score.unlabeled_scorer", "Unlabeled scorer",
          "How the unlabeled reference scores a test image: knn (distance to the k-th nearest "
          "training embedding) or kde (a Gaussian density).", "6", "4"),
    Field("score.knn_k", "k of the k-NN",
          "Which neighbour's distance the knn scorer takes (1 = the nearest).", "6", "4"),
)
BY_PATH = {f.path: f for f in ADVANCED}
# The panel's rows, four fields each (every field of ADVANCED once).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("The loss", ("retrain.beta", "retrain.pair_weight", "retrain.pair_mode",
                  "retrain.pull_weight")),
    ("The retraining", ("retrain.steps", "retrain.lr", "retrain.train_blocks",
                        "retrain.sigma_init")),
    ("Regularisers · the unlabeled reference's scorer",
     ("retrain.anchor_weight", "retrain.l2sp", "score.unlabeled_scorer", "score.knn_k")),
)


def kind(path: str) -> str:
    """"choice", "bool", "int", "float" or "text": which widget a field takes."""
    if ranges.choices(path):
        return "choice"
    if ranges.is_bool(path):
        return "bool"
    rng = ranges.numeric_range(path)
    if rng is not None:
        return "int" if rng[0] is int else "float"
    return "float" if is_float(path) else "text"


# ---------------------------------------------------------------- sweeps

# What a sweep sets itself (digits, seeds, the GAN seed of each repetition), what names the data
# rather than a setting, and projections (they change no metric); tuples (methods, references)
# would need a list per value.
_NOT_SWEPT = ("preset", "ood_digit", "seed", "pretrain.seed", "data.root")


def sweepable(first: Iterable[str] = ()) -> list[str]:
    """The fields a sweep may vary: ``first`` (those that exist), then the rest in declaration
    order."""
    ok = [p for p in paths() if p not in _NOT_SWEPT and not p.startswith("projection.")
          and not _annotations()[p].startswith("tuple")]
    head = [p for p in first if p in ok]
    return head + [p for p in ok if p not in head]


def check_sweepable(path: str) -> None:
    if path in sweepable():
        return
    if path not in _annotations():
        raise ConfigError(f"unknown config field {path!r}")
    why = {"ood_digit": "the digits are a sweep's own axis",
           "seed": "the repetitions are a sweep's own axis",
           "pretrain.seed": "each repetition's GAN seed is its seed"}.get(
        path, "not a setting a sweep varies")
    raise ConfigError(f"{path} cannot be swept: {why}")


def vary(cfgs: Iterable[RunConfig], path: str, values: Iterable[Any]) -> list[RunConfig]:
    """Every config once per value of ``path`` (config-major: one digit's values together)."""
    check_sweepable(path)
    values = list(values)
    return [with_value(c, path, v) for c in cfgs for v in values]
