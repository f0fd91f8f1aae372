"""What each config field accepts, defined once: validate() checks a config against these
tables, and the Run page's Advanced panel reads them (numeric_range, choices, accepted) for its
widgets, its help and its checks, so the two cannot disagree.  Imports only the pairwise
term's forms."""
from __future__ import annotations

from typing import Any

from xdd.core.terms import PAIR_MODES

EVAL_SPLITS = ("test", "val")
SIGMA_INITS = ("mle", "unit")
PRECISIONS = ("fp32", "bf16")


class ConfigError(ValueError):
    """A bad value in a config: the message names the value and the accepted range."""


# Numeric fields: (type, lowest accepted, highest accepted or None, may be None).  Integers are
# accepted for floats.  The one definition of each range: validate() checks it, and the Run
# page's Advanced panel reads it (numeric_range, accepted) for its help and its checks.
_NUMERIC: dict[str, tuple[type, float, float | None, bool]] = {
    "data.n_pretrain": (int, 1, None, True), "data.n_test": (int, 10, None, True),
    "pretrain.z_dim": (int, 1, None, False), "pretrain.steps": (int, 0, None, False),
    "pretrain.batch_size": (int, 1, None, False), "pretrain.lr": (float, 1e-12, None, False),
    "pretrain.g_lr": (float, 1e-12, None, False),
    "pretrain.g_out_bias": (float, -1e9, None, False),
    "pretrain.beta1": (float, 0.0, None, False), "pretrain.seed": (int, 0, None, False),
    "retrain.steps": (int, 0, None, False), "retrain.lr": (float, 1e-12, None, False),
    "retrain.weight_decay": (float, 0.0, None, False), "retrain.beta": (float, 0.0, None, False),
    "retrain.pair_weight": (float, 0.0, None, False),
    "retrain.pull_weight": (float, 0.0, None, False),
    "retrain.l2sp": (float, 0.0, None, False), "retrain.augment_shift": (int, 0, None, False),
    "retrain.train_blocks": (int, 1, 4, False), "retrain.anchor_weight": (float, 0.0, None, False),
    "retrain.unlabeled_batch": (int, 1, None, False),
    "score.pixel_pca": (int, 1, None, False), "score.knn_k": (int, 1, None, False),
    "score.knn_pca": (int, 0, None, False), "score.knn_pca_fit": (int, 2, None, False),
    "score.pixel_knn_pca": (int, 1, None, False), "score.n_reference": (int, 1, None, True),
    "projection.n_samples": (int, 0, None, False), "projection.seed": (int, 0, None, False),
}
UNLABELED_SCORERS = ("knn", "kde")
KNN_BACKENDS = ("sklearn", "faiss")
# Fields with a closed set of values (the one definition, as _NUMERIC for the numbers).
_CHOICES: dict[str, tuple[str, ...]] = {
    "data.eval_split": EVAL_SPLITS, "pretrain.precision": PRECISIONS,
    "retrain.pair_mode": PAIR_MODES, "retrain.sigma_init": SIGMA_INITS,
    "score.unlabeled_scorer": UNLABELED_SCORERS, "score.knn_backend": KNN_BACKENDS,
}
_BOOLS = ("retrain.freeze_bn", "score.normalize", "pretrain.channels_last")


def numeric_range(path: str) -> tuple[type, float, float | None, bool] | None:
    """(type, lowest, highest or None, may be None) of a numeric field, as validate() checks it;
    None for a field that is not in the table."""
    return _NUMERIC.get(path)


def choices(path: str) -> tuple[str, ...] | None:
    """The accepted values of a field with a closed set of them, as validate() checks it."""
    return _CHOICES.get(path)


def is_bool(path: str) -> bool:
    return path in _BOOLS


def accepted(path: str) -> str:
    """What a field accepts, in the words of validate()'s messages ("an integer 1-4", ">= 0",
    "knn, kde"); "" for a field without a declared range."""
    if path in _NUMERIC:
        typ, low, high, nullable = _NUMERIC[path]
        return f"{_kind(typ)} {_span(low, high)}" + (" or none" if nullable else "")
    if path in _CHOICES:
        return ", ".join(_CHOICES[path])
    if path in _BOOLS:
        return "true, false"
    return ""


def _kind(typ: type) -> str:
    return "an integer" if typ is int else "a number"


def _span(low: float, high: float | None) -> str:
    return f">= {low:g}" if high is None else f"{low:g}-{high:g}"


def _field(cfg, path: str) -> Any:
    head, name = path.split(".")
    return getattr(getattr(cfg, head), name)


def check_numeric(cfg) -> None:
    for path, (typ, low, high, nullable) in _NUMERIC.items():
        value = _field(cfg, path)
        if value is None and nullable:
            continue
        ok_type = (isinstance(value, int) if typ is int else isinstance(value, (int, float)))
        if isinstance(value, bool) or not ok_type:
            raise ConfigError(f"{path} {value!r} is not {_kind(typ)}; accepted: {_kind(typ)} "
                              f"{_span(low, high)}")
        if value < low or (high is not None and value > high) or value != value:  # NaN
            raise ConfigError(f"{path} {value!r} is out of range; accepted: {_span(low, high)}")


def check_choices(cfg) -> None:
    for path, options in _CHOICES.items():
        value = _field(cfg, path)
        if value not in options:
            raise ConfigError(f"{path} {value!r}; accepted: " + ", ".join(options))
    for path in _BOOLS:
        if not isinstance(_field(cfg, path), bool):
            raise ConfigError(f"{path} {_field(cfg, path)!r}; accepted: true, false")


