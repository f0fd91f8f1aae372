"""Settings picked in the browser: the Run page's Advanced panel (every field reaches the job's
config and run key; a value out of the config's range is one message and no job), sweeps over
one setting (n values = n jobs per digit and seed; the same sweep twice queues nothing new),
the estimate of exactly what would be submitted, and links that reproduce the page's view
(a bad link is one message and the defaults).  AppTest, no worker process; plus the field
metadata the panel and ``sweep --vary`` share (xdd/core/fields.py)."""
from __future__ import annotations

import re
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from xdd.core import config, fields, ranges, variants
from xdd.core.config import from_dict, preset, pretrain_key, run_key
from xdd.core.fmt import fmt_duration
from xdd.jobs import api as jobs
from xdd.jobs import workerproc

from _apptest import REPO, alerts, open_run

ADMIN = "t0ken"


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workerproc, "ensure_worker", lambda *a, **k: False)


def as_admin(monkeypatch: pytest.MonkeyPatch, **query: Any) -> AppTest:
    monkeypatch.setenv("XDD_ADMIN_TOKEN", ADMIN)
    return open_run(admin=ADMIN, **query)


def texts(at: AppTest) -> str:
    return "\n".join(str(e.value) for e in [*at.markdown, *at.caption])


def widget(at: AppTest, path: str):
    """The Advanced panel's widget of a field (a text box for floats: typed exactly)."""
    key = f"adv:{path}"
    kind = fields.kind(path)
    if kind == "choice":  # two options: buttons; more: a drop-down
        return at.segmented_control(key=key) if len(ranges.choices(path)) <= 2 else \
            at.selectbox(key=key)
    if kind == "int":
        return at.number_input(key=key)
    return at.text_input(key=key)


def submit_button(at: AppTest):
    found = [b for b in at.button if b.key == "submit"]
    return found[0] if found else None


# A value other than the tiny preset's for every Advanced field: (what is typed or picked,
# the value the config must hold).  "0" typed for a float field is 0.0, the value the CLI's
# --set gives too, so both reach the same run key.
NEW_VALUES: dict[str, tuple[Any, Any]] = {
    "retrain.beta": ("2.5", 2.5), "retrain.pair_weight": ("0", 0),
    "retrain.pair_mode": ("sphere", "sphere"), "retrain.pull_weight": ("5", 5),
    "retrain.steps": (15, 15), "retrain.lr": ("3e-4", 3e-4), "retrain.train_blocks": (2, 2),
    "retrain.anchor_weight": ("0.5", 0.5), "retrain.sigma_init": ("unit", "unit"),
    "retrain.l2sp": ("0.01", 0.01), "score.unlabeled_scorer": ("kde", "kde"),
    "score.knn_k": (5, 5),
}


def test_every_advanced_field_has_a_test_value_and_a_row_on_the_page() -> None:
    assert set(NEW_VALUES) == {f.path for f in fields.ADVANCED}
    assert sorted(p for _, row in fields.GROUPS for p in row) == sorted(NEW_VALUES)
    base = preset("tiny")
    for path, (_, value) in NEW_VALUES.items():
        assert value != fields.value_of(base, path), path
        assert fields.problem(base, path, value) is None, path


# ---------------------------------------------------------------- the Advanced panel


def test_every_advanced_field_reaches_the_jobs_config_and_run_key(monkeypatch) -> None:
    at = as_admin(monkeypatch)
    at.segmented_control(key="preset").set_value("tiny").run()
    assert "Variant: none, the plain tiny preset" in texts(at)
    for path, (typed, value) in NEW_VALUES.items():
        default = widget(at, path).value
        widget(at, path).set_value(typed).run()
        assert not at.exception and not alerts(at)["error"], (path, alerts(at))
        assert widget(at, path).label.endswith(":orange[●]"), path
        assert f"Changed: `{path}={fields.fmt(value)}`" in texts(at), path
        assert f"Variant: `{path}={value}`" in texts(at), path
        submit_button(at).click().run()
        assert not at.exception, path
        newest = jobs.list_jobs(1)[0]
        expected = preset("tiny", ood_digit=8, **{"pretrain.seed": 0, path: value})
        got = from_dict(newest["config"])
        assert got == expected, path
        assert fields.value_of(got, path) == value and type(fields.value_of(got, path)) is \
            type(value), path
        assert newest["run_key"] == run_key(expected), path
        assert variants.variant(newest["config"]) == [f"{path}={value}"], path
        widget(at, path).set_value(default).run()  # back to the preset for the next field
        assert "●" not in widget(at, path).label
    assert len(jobs.list_jobs()) == len(NEW_VALUES)  # one job per field, each its own key


@pytest.mark.parametrize("path,typed,says", [
    ("retrain.beta", "-1", "retrain.beta -1 is out of range; accepted: >= 0"),
    ("retrain.lr", "fast", "retrain.lr 'fast' is not a number"),
    ("retrain.lr", "", "is empty; accepted: a number >= 1e-12"),
    ("retrain.train_blocks", 5, "retrain.train_blocks 5 is out of range; accepted: 1-4"),
    ("score.knn_k", 0, "score.knn_k 0 is out of range; accepted: >= 1"),
    ("retrain.steps", -3, "retrain.steps -3 is out of range; accepted: >= 0"),
])
def test_an_out_of_range_value_is_one_message_and_no_job(path, typed, says) -> None:
    at = open_run()
    default = widget(at, path).value
    widget(at, path).set_value(typed).run()
    assert not at.exception
    msgs = alerts(at)
    assert len(msgs["error"]) == 1 and not msgs["warning"], msgs
    assert msgs["error"][0].startswith("These settings cannot run:")
    assert says in msgs["error"][0] and fields.BY_PATH[path].label in msgs["error"][0]
    assert widget(at, path).label.endswith(":red[●]")
    assert submit_button(at) is None and jobs.list_jobs() == []
    # the link keeps no value that cannot run
    assert path not in at.query_params
    widget(at, path).set_value(default).run()
    assert not alerts(at)["error"] and submit_button(at).label == "Submit 1 job"


def test_the_panels_ranges_and_options_are_the_configs() -> None:
    """One definition: the widget's options are ranges.choices, its help quotes
    ranges.accepted, and the page refuses exactly what validate() refuses."""
    at = open_run()
    for f in fields.ADVANCED:
        w = widget(at, f.path)
        assert ranges.accepted(f.path) in w.help, f.path
        assert re.search(r"docs/METHOD\.md §\d", w.help), f.path
        if f.kind == "choice":
            assert list(w.options) == list(ranges.choices(f.path)), f.path
    assert ranges.numeric_range("retrain.train_blocks")[1:3] == (1, 4)


def test_the_advanced_defaults_follow_the_preset_but_a_change_stays() -> None:
    at = open_run()
    assert widget(at, "retrain.steps").value == preset("quick").retrain.steps
    widget(at, "retrain.beta").set_value("2").run()
    at.segmented_control(key="preset").set_value("tiny").run()
    assert widget(at, "retrain.steps").value == preset("tiny").retrain.steps  # followed
    assert widget(at, "retrain.beta").value == "2"  # a change is kept
    at.button(key="adv-reset").click().run()
    assert widget(at, "retrain.beta").value == "1.0"
    assert "Nothing changed" in texts(at)


# ---------------------------------------------------------------- sweeps and estimates


def _calibrate() -> None:
    """A calibration of this machine, so that the page shows a number (as the app's own)."""
    import xdd.estimate as estimate
    from xdd.storage import store

    rates = {"pretrain_step_s": {"fp32": 0.02}, "retrain_step_s": 0.05, "score_image_s": 3e-4}
    entry = {"rates": {str(estimate.worker_threads()): rates},
             "project_point_s": {"pca": 1e-5, "tsne": 1e-2, "umap": 5e-3}}
    store.atomic_write_json(estimate.calibration_path(), {
        "version": estimate.CALIBRATION_VERSION, "code_version": config.CODE_VERSION,
        "cpu": {"presets": {"tiny": entry, "quick": entry}, "data_s": 1.0,
                "umap_compile_s": 20.0}})


def _page_estimate(at: AppTest) -> str:
    line = next(m.value for m in at.markdown if "**Runs on**" in m.value)
    return re.search(r"about \*\*(.+?)\*\* in all", line).group(1)


def _expected_estimate(cfgs) -> str:
    from xdd.estimate import estimate, gan_on_disk

    est = estimate(cfgs, [], "cpu", gan_available=gan_on_disk, umap_warm=False,
                   start_worker=True)
    return fmt_duration(est.seconds)


def test_a_sweep_queues_n_jobs_per_digit_and_seed_and_again_none(monkeypatch) -> None:
    _calibrate()
    at = as_admin(monkeypatch)
    at.segmented_control(key="preset").set_value("tiny")
    at.pills(key="digits").set_value([3, 8])
    at.number_input(key="reps").set_value(2)
    at.run()
    at.selectbox(key="sweep_field").set_value("retrain.beta").run()
    assert "Type the values of retrain.beta" in alerts(at)["info"][0]
    at.text_input(key="sweep_values").set_value("0.5, 1, 2").run()
    assert not at.exception and not alerts(at)["error"]
    assert submit_button(at).label == "Submit 12 jobs"  # 3 values x 2 digits x 2 seeds
    assert not alerts(at)["warning"]  # the admin has no cap
    # 12 runs, one GAN per digit and seed: the sweep's values share them
    assert "12 runs share 4 GANs: 4 to pretrain first" in texts(at)
    expected = [preset("tiny", ood_digit=d, seed=s, **{"pretrain.seed": s, "retrain.beta": b})
                for d in (3, 8) for s in (0, 1) for b in (0.5, 1.0, 2)]
    assert len({pretrain_key(c) for c in expected}) == 4
    assert _page_estimate(at) == _expected_estimate(expected)
    assert "3 variants: `retrain.beta=0.5` · retrain.beta at the tiny preset's value · " \
           "`retrain.beta=2`" in texts(at)
    submit_button(at).click().run()
    assert not at.exception
    listed = jobs.list_jobs()
    assert len(listed) == 12
    assert sorted(j["run_key"] for j in listed) == sorted(run_key(c) for c in expected)
    per = {}
    for j in listed:
        c = j["config"]
        per.setdefault((c["ood_digit"], c["seed"]), []).append(c["retrain"]["beta"])
    assert {k: sorted(v) for k, v in per.items()} == {
        k: [0.5, 1.0, 2.0] for k in [(3, 0), (3, 1), (8, 0), (8, 1)]}
    assert len(at.query_params["job"]) == 12
    assert "12 of these are queued or running already" in texts(at)
    # The same sweep again: identical submissions share their jobs; nothing new is queued.
    submit_button(at).click().run()
    assert not at.exception and not alerts(at)["error"]
    assert len(jobs.list_jobs()) == 12


def test_the_estimate_is_for_exactly_what_would_be_submitted() -> None:
    _calibrate()
    at = open_run()
    at.segmented_control(key="preset").set_value("tiny").run()
    one = _page_estimate(at)
    assert one == _expected_estimate([preset("tiny", ood_digit=8)])
    widget(at, "retrain.steps").set_value(3000).run()
    longer = _page_estimate(at)
    assert longer == _expected_estimate([preset("tiny", ood_digit=8,
                                                **{"retrain.steps": 3000})])
    assert longer != one  # more retraining steps cost more


def test_a_visitor_sees_how_many_of_a_sweep_they_may_queue() -> None:
    at = open_run(preset="tiny", vary="score.knn_k", values="1,2,3,4")
    assert submit_button(at).label == "Submit 4 jobs"
    (warn,) = alerts(at)["warning"]
    assert "These settings need 4 new jobs; you may queue **3** now" in warn
    submit_button(at).click().run()
    assert len(jobs.list_jobs()) == 3
    assert any("Limit reached" in e for e in alerts(at)["error"])
    assert any("you may queue **0** now" in w for w in alerts(at)["warning"])


def test_a_bad_sweep_value_is_one_message_and_no_job() -> None:
    at = open_run()
    at.selectbox(key="sweep_field").set_value("retrain.train_blocks").run()
    at.text_input(key="sweep_values").set_value("2, 9").run()
    (err,) = alerts(at)["error"]
    assert "**Sweep value** 9: retrain.train_blocks 9 is out of range; accepted: 1-4." in err
    assert submit_button(at) is None and jobs.list_jobs() == []


# ---------------------------------------------------------------- links


LINK = {"preset": "tiny", "digits": "3,8", "shots": "5", "reps": "2", "seed": "7",
        "precision": "bf16", "baselines": "svdd", "retrain.beta": "2.0",
        "score.unlabeled_scorer": "kde", "vary": "retrain.steps", "values": "5,20"}


def test_a_link_opens_the_same_settings(monkeypatch) -> None:
    at = as_admin(monkeypatch, **LINK)  # the admin: no cap to warn about
    assert alerts(at) == {"error": [], "warning": [], "info": []}, alerts(at)
    assert at.segmented_control(key="preset").value == "tiny"
    assert at.pills(key="digits").value == [3, 8]
    assert at.number_input(key="shots").value == 5
    assert at.number_input(key="reps").value == 2
    assert at.number_input(key="seed0").value == 7
    assert at.segmented_control(key="gan_precision").value == "bf16"
    assert at.pills(key="baselines").value == ["svdd"]
    assert widget(at, "retrain.beta").value == "2.0"
    assert widget(at, "score.unlabeled_scorer").value == "kde"
    assert at.selectbox(key="sweep_field").value == "retrain.steps"
    assert at.text_input(key="sweep_values").value == "5,20"
    assert submit_button(at).label == "Submit 8 jobs"  # 2 digits x 2 seeds x 2 values
    assert dict(at.query_params) == LINK  # the link stays as it was: every value is used


def test_a_copied_link_restores_the_view(monkeypatch) -> None:
    """Settings chosen with the widgets, the address bar copied into a new session: the same
    widgets, the same configs."""
    at = as_admin(monkeypatch)
    at.segmented_control(key="preset").set_value("tiny")
    at.pills(key="digits").set_value([1, 4])
    at.number_input(key="shots").set_value(3)
    at.pills(key="baselines").set_value(["pixels", "softmax"])
    at.run()
    widget(at, "retrain.pair_mode").set_value("raw")
    widget(at, "retrain.lr").set_value("2e-4")
    at.selectbox(key="sweep_field").set_value("retrain.anchor_weight")
    at.run()
    at.text_input(key="sweep_values").set_value("0, 0.5").run()
    link = {k: at.query_params[k] for k in at.query_params}
    assert link == {"preset": "tiny", "digits": "1,4", "shots": "3",
                    "baselines": "pixels,softmax", "retrain.pair_mode": "raw",
                    "retrain.lr": "2e-4", "vary": "retrain.anchor_weight",
                    "values": "0, 0.5"}
    view = {k: w.value for k, w in _view(at).items()}
    other = as_admin(monkeypatch, **link)  # someone else opens it
    assert not alerts(other)["warning"]
    assert {k: w.value for k, w in _view(other).items()} == view
    assert submit_button(other).label == submit_button(at).label == "Submit 4 jobs"
    submit_button(at).click().run()
    mine = sorted(j["run_key"] for j in jobs.list_jobs())
    submit_button(other).click().run()  # the same configs: the same four jobs
    assert sorted(j["run_key"] for j in jobs.list_jobs()) == mine and len(mine) == 4


def _view(at: AppTest) -> dict[str, Any]:
    keys = ["digits", "baselines"]
    out = {k: at.pills(key=k) for k in keys}
    out.update({k: at.number_input(key=k) for k in ("shots", "reps", "seed0")})
    out.update({k: at.segmented_control(key=k) for k in ("preset", "gan_precision")})
    out.update({f.path: widget(at, f.path) for f in fields.ADVANCED})
    out["sweep_field"] = at.selectbox(key="sweep_field")
    out["sweep_values"] = at.text_input(key="sweep_values")
    return out


@pytest.mark.parametrize("query,named", [
    ({"shots": "abc"}, "`shots=abc`: not a whole number"),
    ({"shots": "5000"}, "`shots=5000`: out of range; accepted: 1 to 1,000"),
    ({"digits": "3,12"}, "`digits=3,12`: out of range; accepted: 0 to 9"),
    ({"preset": "huge"}, "`preset=huge`: accepted: quick, paper, tiny"),
    ({"baselines": "magic"}, "`baselines=magic`: accepted:"),
    ({"retrain.beta": "-3"}, "`retrain.beta=-3`: retrain.beta -3 is out of range"),
    ({"retrain.pair_mode": "cube"}, "`retrain.pair_mode=cube`: retrain.pair_mode 'cube'"),
    ({"retrain.nope": "1"}, "`retrain.nope`: not a setting of this page"),
    ({"vary": "ood_digit"}, "`vary=ood_digit`: accepted:"),
    ({"vary": "retrain.beta", "values": "1,-2"}, "`values=1,-2`: **Sweep value** -2"),
])
def test_a_malformed_link_is_one_message_and_the_defaults(query, named) -> None:
    at = open_run(**query)
    msgs = alerts(at)
    assert len(msgs["warning"]) == 1 and not msgs["error"], msgs
    assert msgs["warning"][0].startswith("This link has settings that cannot be used here")
    assert named in msgs["warning"][0]
    defaults = {k: w.value for k, w in _view(open_run()).items()}
    view = {k: w.value for k, w in _view(at).items()}
    if "vary" in query and "values" in query:  # the field was fine; only its values fell
        defaults["sweep_field"] = query["vary"]
    assert view == defaults
    assert not [k for k in query if k in at.query_params and k != "vary"]  # gone from the link
    at.run()  # said once
    assert not alerts(at)["warning"]


def test_many_bad_values_in_a_link_are_still_one_message() -> None:
    at = open_run(shots="abc", preset="huge", **{"retrain.beta": "x", "retrain.nope": "1"})
    (warn,) = alerts(at)["warning"]
    assert warn.count("\n- ") == 4
    assert submit_button(at).label == "Submit 1 job"


# ---------------------------------------------------------------- fields (no app)


def test_every_field_value_round_trips_through_text() -> None:
    """What a link or a text box holds parses back to the very value (the run key hashes it)."""
    for name in config.PRESETS:
        cfg = preset(name)
        for path in fields.paths():
            v = fields.value_of(cfg, path)
            if isinstance(v, tuple):
                continue
            back = fields.parse(path, fields.fmt(v))
            assert back == v and type(back) is type(v), (name, path, v, back)
    # as the command line has always read it, so that runs cached with it keep their keys
    assert fields.parse("retrain.beta", "2") == 2 and isinstance(
        fields.parse("retrain.beta", "2"), int)
    base = preset("quick")  # a value equal to the preset's changes nothing, not even the type
    assert fields.with_value(base, "retrain.beta", 1) is base
    assert run_key(fields.with_value(base, "retrain.beta", 2)) == run_key(
        preset("quick", **{"retrain.beta": 2}))
    assert fields.parse("retrain.steps", "2") == 2
    assert fields.parse("score.n_reference", "none") is None
    assert fields.parse_list("retrain.lr", "1e-4, 0.0001, 2e-4") == [1e-4, 2e-4]


def test_sweepable_fields_and_vary() -> None:
    ok = fields.sweepable()
    for path in ("ood_digit", "seed", "pretrain.seed", "methods", "score.references",
                 "projection.methods", "preset"):
        assert path not in ok
        with pytest.raises(config.ConfigError):
            fields.check_sweepable(path)
    assert "shots" in ok and "pretrain.precision" in ok
    base = [preset("tiny", ood_digit=d) for d in (2, 5)]
    out = fields.vary(base, "retrain.pull_weight", [1.0, 20.0])
    assert [(c.ood_digit, c.retrain.pull_weight) for c in out] == [
        (2, 1.0), (2, 20.0), (5, 1.0), (5, 20.0)]
    with pytest.raises(config.ConfigError, match="accepted: 1-4"):
        fields.vary(base, "retrain.train_blocks", [7])


def test_the_help_cites_sections_that_exist() -> None:
    doc = (REPO / "docs" / "METHOD.md").read_text()
    sections = set(re.findall(r"^## (\d+)\.", doc, flags=re.M))
    page = (REPO / "pages" / "method.py").read_text()
    page_sections = set(re.findall(r'st\.subheader\("(\d+) ·', page))
    for f in fields.ADVANCED:
        assert f.docs in sections, f.path
        if f.method:
            assert f.method in page_sections, f.path
