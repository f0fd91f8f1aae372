"""The config tree: presets, overrides, validation, round trips and the run/pretrain keys."""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterator

import pytest
import torch

from xdd.core import config, variants
from xdd.core.config import ConfigError, from_dict, preset, pretrain_key, run_key, to_dict, validate
from xdd.core.device import describe, resolve_device


def leaves(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every leaf field of a (nested) config dataclass."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from leaves(v, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", v


def replace_dotted(obj: Any, path: str, value: Any) -> Any:
    """dataclasses.replace at a dotted path (keys must see every field)."""
    head, _, rest = path.partition(".")
    if rest:
        return dataclasses.replace(obj, **{head: replace_dotted(getattr(obj, head), rest, value)})
    return dataclasses.replace(obj, **{head: value})


# Another accepted value for the fields whose choices are closed (a RunConfig validates itself,
# so the alternative must be valid too).
ALTERNATIVES = {"preset": "quick", "data.eval_split": "val", "retrain.pair_mode": "raw",
                "retrain.sigma_init": "unit", "score.bandwidth": 0.5, "retrain.train_blocks": 2,
                "score.unlabeled_scorer": "kde", "score.knn_backend": "faiss",
                "pretrain.precision": "bf16"}


def other_value(v: Any, path: str = "") -> Any:
    if path in ALTERNATIVES:
        assert ALTERNATIVES[path] != v, path
        return ALTERNATIVES[path]
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, float):
        return v * 2 + 0.5
    if isinstance(v, str):
        return v + "x"
    if v is None:
        return 7
    if isinstance(v, tuple):
        return v[:-1] if len(v) > 1 else v + ("pca",)
    raise AssertionError(f"no alternative value for {v!r}")


# ---------------------------------------------------------------- presets and overrides


def test_presets_exist_and_are_valid():
    assert config.PRESETS == ("tiny", "quick", "paper")
    for name in config.PRESETS:
        cfg = preset(name)
        assert cfg.preset == name and validate(cfg) is cfg
    assert preset("paper").pretrain.g_width == 1.0 and preset("paper").pretrain.d_width == 1.0
    tiny = preset("tiny")
    assert tiny.pretrain.steps < preset("quick").pretrain.steps < preset("paper").pretrain.steps
    assert tiny.data.n_test is not None and preset("quick").data.n_test is None


def test_dotted_overrides_reach_nested_fields_and_leave_the_rest():
    base = preset("tiny")
    cfg = preset("tiny", ood_digit=3, shots=5, **{"retrain.steps": 7, "data.n_test": 100,
                                                 "score.bandwidth": 0.25})
    assert (cfg.ood_digit, cfg.shots, cfg.retrain.steps, cfg.data.n_test) == (3, 5, 7, 100)
    assert cfg.score.bandwidth == 0.25
    assert cfg.retrain.lr == base.retrain.lr and cfg.data.n_pretrain == base.data.n_pretrain
    assert cfg.pretrain == base.pretrain and cfg.preset == "tiny"
    # A nested dict works like dotted keys.
    assert preset("tiny", retrain={"steps": 7}).retrain == dataclasses.replace(base.retrain, steps=7)
    # The preset itself is untouched (frozen, no shared mutation).
    assert preset("tiny") == base


def test_unknown_preset_and_fields_are_config_errors():
    with pytest.raises(ConfigError, match="nope"):
        preset("nope")
    with pytest.raises(ConfigError, match="bogus"):
        preset("tiny", bogus=1)
    with pytest.raises(ConfigError, match="bogus"):
        preset("tiny", **{"retrain.bogus": 1})


def test_dotted_key_below_a_plain_field_is_a_config_error():
    """`--set shots.x=1` must be a clear error, not a TypeError traceback from dataclasses."""
    try:
        preset("tiny", **{"shots.x": 1})
    except ConfigError:
        return
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"preset('tiny', **{{'shots.x': 1}}) raised {type(exc).__name__}: {exc} "
                    "instead of ConfigError (xdd/core/config.py _replace_nested recurses into a "
                    "non-dataclass field)")
    pytest.fail("preset('tiny', **{'shots.x': 1}) was accepted")


@pytest.mark.parametrize("field,value", [
    ("retrain.steps", "abc"),
    ("projection.n_samples", "many"),
    ("pretrain.batch_size", 0),
    ("data.n_pretrain", 0),
    ("retrain.lr", -1.0),
])
def test_bad_numeric_values_are_config_errors(field, value):
    """Values that can only crash a run later (a string where a number goes, a zero batch, an
    empty pretraining set, a negative learning rate) are refused up front, naming the field."""
    try:
        preset("tiny", **{field: value})
    except ConfigError as exc:
        assert field.split(".")[-1] in str(exc)
        return
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{field}={value!r} raised {type(exc).__name__}: {exc} instead of ConfigError "
                    "(xdd/core/config.py validate does not check this field's type/range)")
    pytest.fail(f"{field}={value!r} was accepted by validate (xdd/core/config.py); the run would fail later")


@pytest.mark.parametrize("overrides,needle", [
    ({"ood_digit": 10}, "10"), ({"ood_digit": -1}, "-1"), ({"shots": 0}, "0"),
    ({"seed": -2}, "-2"), ({"methods": ("xdd", "magic")}, "magic"), ({"methods": ()}, "method"),
    ({"retrain.pair_mode": "cube"}, "cube"), ({"data.eval_split": "train"}, "train"), ({"retrain.train_blocks": 5}, "5"),
    ({"score.bandwidth": -1.0}, "-1"), ({"score.bandwidth": "silverman"}, "silverman"),
    ({"pretrain.d_width": 0.0}, "d_width"), ({"projection.methods": ("pca", "mds")}, "mds"),
])
def test_validation_names_the_bad_value(overrides, needle):
    with pytest.raises(ConfigError) as err:
        preset("tiny", **overrides)
    assert needle in str(err.value)
    assert "accepted" in str(err.value) or "must be" in str(err.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", config.PRESETS)
def test_from_dict_inverts_to_dict(name):
    cfg = preset(name, ood_digit=4, shots=3, seed=2, methods=("before", "xdd", "svdd"),
                 **{"score.bandwidth": 0.5, "data.root": None, "projection.methods": ("pca",)})
    d = to_dict(cfg)
    assert from_dict(d) == cfg
    assert from_dict(json.loads(json.dumps(d))) == cfg  # what config.json holds
    assert run_key(from_dict(d)) == run_key(cfg)


def test_from_dict_missing_keys_take_defaults_and_unknown_keys_fail():
    cfg = from_dict({"preset": "tiny", "ood_digit": 2})
    assert cfg.ood_digit == 2 and cfg.retrain == config.RetrainConfig()
    with pytest.raises(ConfigError, match="nonsense"):
        from_dict({"preset": "tiny", "nonsense": 1})
    with pytest.raises(ConfigError, match="nonsense"):
        from_dict({"preset": "tiny", "retrain": {"nonsense": 1}})
    with pytest.raises(ConfigError, match="12"):
        from_dict({"preset": "tiny", "ood_digit": 12})


def test_configs_are_frozen():
    cfg = preset("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.shots = 3  # type: ignore[misc]


# ---------------------------------------------------------------- keys


def test_run_key_is_16_hex_and_stable():
    k = run_key(preset("tiny", ood_digit=8))
    assert re.fullmatch(r"[0-9a-f]{16}", k)
    assert run_key(preset("tiny", ood_digit=8)) == k
    assert run_key(from_dict(to_dict(preset("tiny", ood_digit=8)))) == k
    assert re.fullmatch(r"[0-9a-f]{16}", pretrain_key(preset("tiny")))


def test_run_key_changes_with_every_field():
    base = preset("tiny", ood_digit=8)
    k0 = run_key(base)
    paths = [p for p, _ in leaves(base)]
    assert len(paths) > 25  # the walk really reaches the nested fields
    for path, value in leaves(base):
        changed = replace_dotted(base, path, other_value(value, path))
        assert run_key(changed) != k0, f"run_key ignores {path}"


def test_run_key_changes_with_the_code_version(monkeypatch):
    cfg = preset("tiny")
    k0, p0 = run_key(cfg), pretrain_key(cfg)
    monkeypatch.setattr(config, "CODE_VERSION", config.CODE_VERSION + "-next")
    assert run_key(cfg) != k0 and pretrain_key(cfg) != p0


def test_pretrain_key_depends_on_exactly_the_pretraining_inputs():
    base = preset("tiny", ood_digit=8)
    p0 = pretrain_key(base)
    must_change = {"ood_digit", "data.root", "data.n_pretrain", "data.eval_split"}
    for path, value in leaves(base):
        changed = pretrain_key(replace_dotted(base, path, other_value(value, path)))
        if path in must_change or path.startswith("pretrain."):
            assert changed != p0, f"pretrain_key ignores {path}: a different GAN would be reused"
        elif not path.startswith("data."):
            assert changed == p0, f"pretrain_key depends on {path}: the GAN would be retrained"


def test_the_pretraining_mode_keys_only_when_it_departs_from_fp32():
    """precision / channels_last came after runs were cached and GANs shipped: at fp32 and
    the default layout a config hashes as before they existed (the keys below are those of
    the code before them), set otherwise they key like every field and name the variant."""
    base = preset("quick", ood_digit=8)
    assert pretrain_key(preset("quick")) == "d11ce9515d7edf17" or config.CODE_VERSION != "1"
    assert run_key(preset("quick")) == "f3270dbcce5a4372" or config.CODE_VERSION != "1"
    fast = preset("quick", ood_digit=8, **{"pretrain.precision": "bf16",
                                           "pretrain.channels_last": True})
    keys = {pretrain_key(c) for c in (base, fast, replace_dotted(base, "pretrain.precision", "bf16"),
                                      replace_dotted(base, "pretrain.channels_last", True))}
    assert len(keys) == 4
    assert variants.variant(to_dict(fast)) == ["pretrain.channels_last=True",
                                             "pretrain.precision=bf16"]
    assert variants.variant(to_dict(base)) == []
    assert config.pretrain_mode(fast.pretrain) == "bf16+cl"
    assert config.pretrain_mode({"steps": 3}) == "fp32"  # a config saved before the fields
    with pytest.raises(ConfigError, match="accepted: fp32, bf16"):
        preset("tiny", **{"pretrain.precision": "fp16"})
    with pytest.raises(ConfigError, match="channels_last"):
        preset("tiny", **{"pretrain.channels_last": "yes"})


def test_pretrain_key_shared_across_shots_seed_and_retraining():
    a = preset("tiny", ood_digit=8, shots=10, seed=0)
    b = preset("tiny", ood_digit=8, shots=5, seed=3, methods=("xdd",),
               **{"retrain.beta": 2.0, "retrain.pair_mode": "raw", "score.bandwidth": 1.0})
    assert pretrain_key(a) == pretrain_key(b) and run_key(a) != run_key(b)
    assert pretrain_key(preset("tiny", ood_digit=3)) != pretrain_key(a)
    assert pretrain_key(preset("tiny", ood_digit=8, **{"pretrain.steps": 21})) != pretrain_key(a)
    assert pretrain_key(preset("quick", ood_digit=8)) != pretrain_key(a)


# ---------------------------------------------------------------- device


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert describe(torch.device("cpu")).startswith("cpu")
    with pytest.raises(ConfigError, match="tpu"):
        resolve_device("tpu")


def test_cuda_without_gpu_is_a_config_error():
    # This suite runs on CPU-only machines (CI, the dev box); on a GPU box the request is valid.
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
        return
    with pytest.raises(ConfigError, match="cuda") as err:
        resolve_device("cuda")
    assert "accepted" in str(err.value)


def test_a_run_config_cannot_exist_invalid():
    """RunConfig validates itself on construction, and so does every dataclasses.replace."""
    from xdd.core.config import RetrainConfig, RunConfig

    with pytest.raises(ConfigError, match="shots 0 is out of range"):
        RunConfig(shots=0)
    with pytest.raises(ConfigError, match="OOD digit 10"):
        dataclasses.replace(preset("tiny"), ood_digit=10)
    with pytest.raises(ConfigError, match="retrain.pair_mode 'x'"):
        RunConfig(retrain=RetrainConfig(pair_mode="x"))
    assert RunConfig(shots=3).shots == 3
