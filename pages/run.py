"""Run page: choose a configuration, submit jobs, watch them progress, cancel them.

Beside digits, shots, repetitions and the preset, the Advanced panel reaches the loss, the
retraining and the scoring (xdd.core.fields.ADVANCED, each with the config's own range), and a
sweep runs every digit and seed once per value of one setting.  The page shows how many jobs,
how many GANs they share and how long they take before anything is submitted.

The page only submits jobs and reads job records; the worker process does the computing.
Its settings live in the address bar (pages/_links.py), so a copied link opens the same
settings; the ids of the jobs this tab follows are there too (``?job=...``), so a reload or a
second tab shows the same progress.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from pages import _links as links
from pages._access import MAX_JOBS_PER_VISITOR, MAX_QUEUED, can_submit, jobs_readable, \
    mode_banner
from pages._board import follow_another, job_board
from pages._common import require_router
from pages._jobs import device_info, estimate_seconds, first_visit_panel, queue_room, \
    submit_configs, track_jobs, tracked_job_ids, worker_device
from pages._messages import show_flash
from xdd.core import config, fields, ranges
from xdd.core.config import ConfigError, RunConfig, preset, pretrain_key, to_dict
from xdd.core.fields import ADVANCED, BY_PATH, GROUPS
from xdd.core.fmt import fmt_duration
from xdd.core.methods import BY_NAME, display_order, is_main, names, short
from xdd.core.variants import variant
from xdd.estimate import gan_on_disk

MAX_SHOTS = 1000  # well below the smallest digit's 5421 training images
MAX_REPS = 10
MAX_SEED = 9999
MAX_SWEEP_VALUES = 20
PRESET_ORDER = ["quick", "paper", "tiny"]
PRESET_HELP = {
    "tiny": "tiny: seconds; a smoke test on 512 images, numbers mean nothing",
    "quick": "quick: one digit on a laptop CPU; the default",
    "paper": "paper: the paper's network widths and training length",
}
# The pretraining mode the page offers beside fp32 (docs/PERFORMANCE.md, "Pretraining
# precision"): validated on the validation split, a setting of the run, never a default.
FAST_PRETRAIN = {"pretrain.precision": "bf16", "pretrain.channels_last": True}
PRECISION_HELP = (
    "**fp32**: as the committed results and the GANs shipped with the app. **bf16**: the GAN's "
    "forward passes in bf16 autocast, channels-last; on a CPU with AMX-BF16 a pretraining step "
    "takes 0.65-0.85x of fp32's time, and on the validation split it left the AUPRCs within "
    "±0.02 of fp32's (inside the spread between GAN seeds). It is a different setting: its GAN "
    "is pretrained here (none is shipped), and its results are labelled with it. Only the "
    "GAN's pretraining changes; on a CPU without bf16 support it can be slower.")
# The number inputs carry no min/max: Streamlit silently replaces an out-of-range value by
# the default, so the page checks the ranges itself and says what is wrong.
BOUNDS = {"shots": ("Shots per digit", 1, MAX_SHOTS), "reps": ("Repetitions", 1, MAX_REPS),
          "seed0": ("First seed", 0, MAX_SEED)}
SWEEPABLE = fields.sweepable(f.path for f in ADVANCED)
SAVED = "_run_settings"  # this session's last settings, for a return to the page


def out_of_range(values: dict[str, Any]) -> list[str]:
    """One sentence per number input whose value is missing or outside its range."""
    bad = []
    for key, (label, lo, hi) in BOUNDS.items():
        v = values.get(key)
        if v is None:
            bad.append(f"**{label}** is empty; enter a whole number from {lo} to {hi:,}.")
        elif not lo <= v <= hi:
            bad.append(f"**{label}** {v:,} is out of range; accepted: {lo} to {hi:,}.")
    return bad


def header() -> None:
    st.title("Run an experiment")
    st.caption("Hold one digit out as out-of-distribution, pretrain a GAN on the other nine, "
               "retrain its discriminator with the XDD loss on a few labeled images per digit, "
               "and score the whole test set. Every run is cached: asking again is instant.")
    show_flash()
    mode_banner()
    first_visit_panel("run")


# ---------------------------------------------------------------- the settings as state


def _baseline_options() -> list[str]:
    return [m for m in display_order() if not is_main(m)]


def _adv_key(path: str) -> str:
    return f"adv:{path}"


def _to_widget(path: str, value: Any) -> Any:
    """A field's value as its widget holds it (a float field is a text box: exact)."""
    return fields.fmt(value) if fields.kind(path) == "float" else value


def _basic_params(default_preset: str) -> list[links.Param]:
    P = links.Param
    opts = _baseline_options()
    return [
        P("digits", "digits", links.list_of(links.int_in(0, 9)), [8], links.join),
        P("shots", "shots", links.int_in(1, MAX_SHOTS), 10),
        P("reps", "reps", links.int_in(1, MAX_REPS), 1),
        P("seed0", "seed", links.int_in(0, MAX_SEED), 0),
        P("preset", "preset", links.one_of(PRESET_ORDER), default_preset),
        P("gan_precision", "precision", links.one_of(["fp32", "bf16"]), "fp32"),
        P("baselines", "baselines", links.list_of(links.one_of(opts)),
          [m for m in preset("quick").methods if m in opts], links.join),
        P("sweep_field", "vary", links.one_of(["", *SWEEPABLE]), ""),
    ]


def _adv_params(name: str) -> list[links.Param]:
    base = preset(name)

    def parser(path: str):
        def parse(text: str) -> Any:
            why = fields.problem(base, path, v := fields.parse(path, text))
            if why:
                raise ValueError(why)
            return text.strip() if fields.kind(path) == "float" else v  # as it was typed
        return parse

    return [links.Param(_adv_key(f.path), f.path, parser(f.path),
                        _to_widget(f.path, fields.value_of(base, f.path))) for f in ADVANCED]


def _values_param(name: str, field: str) -> links.Param:
    def parse(text: str) -> str:
        if field:
            _, bad = _sweep_values(name, field, text)
            if bad:
                raise ValueError(bad[0])
        return text.strip()
    return links.Param("sweep_values", "values", parse, "")


def _restore(default_preset: str) -> list[str]:
    """Seed the widgets from the link (or this session's last visit); what was unusable."""
    fresh = "digits" not in st.session_state
    basic = _basic_params(default_preset)
    problems = links.restore(basic, SAVED)
    name = st.session_state["preset"]
    problems += links.restore(_adv_params(name), SAVED)
    problems += links.restore([_values_param(name, st.session_state["sweep_field"])], SAVED)
    _follow_preset(name)
    if fresh:  # fields of a config that this version's panel does not offer
        gone = [n for n in st.query_params if "." in n and n not in BY_PATH]
        problems += links.stale(gone, BY_PATH)
        links.drop(gone)
        # A view that has changed settings opens with its panels open.
        base = preset(name)
        st.session_state["_adv_open"] = any(
            _read(base, f)[0] != fields.value_of(base, f.path) for f in ADVANCED)
        st.session_state["_sweep_open"] = bool(st.session_state["sweep_field"])
    return problems


def _follow_preset(name: str) -> None:
    """A new preset brings its own defaults to the Advanced fields left at the old one's."""
    old = st.session_state.get("_adv_preset")
    if old in config.PRESETS and old != name:
        before, after = preset(old), preset(name)
        for f in ADVANCED:
            v, why = _read(before, f)
            if why is None and v == fields.value_of(before, f.path):
                st.session_state[_adv_key(f.path)] = _to_widget(
                    f.path, fields.value_of(after, f.path))
    st.session_state["_adv_preset"] = name


def _remember(c: dict[str, Any], adv: dict[str, Any], default_preset: str, field: str,
              sweep_ok: bool) -> None:
    """The settings into the address bar: values at their defaults, and values that cannot
    run, are left out."""
    basic = _basic_params(default_preset)
    valid = {p.key: c[p.key] for p in basic if p.key in c}
    for key, (_, lo, hi) in BOUNDS.items():
        if c[key] is None or not lo <= c[key] <= hi:
            valid[key] = next(p.default for p in basic if p.key == key)
    links.remember(basic, SAVED, valid)
    base = preset(c["preset"])
    # A valid change as typed ("2e-4" stays 2e-4, parsed to the same float); anything else
    # as the default, which leaves the link.
    links.remember(_adv_params(c["preset"]), SAVED, {
        _adv_key(p): (st.session_state.get(_adv_key(p))
                      if v is not None and v != fields.value_of(base, p)
                      else _to_widget(p, fields.value_of(base, p)))
        for p, v in adv.items()})
    text = st.session_state.get("sweep_values") or ""
    links.remember([_values_param(c["preset"], field)], SAVED,
                   {"sweep_values": text.strip() if field and sweep_ok else ""})


# ---------------------------------------------------------------- the widgets


def _choices() -> dict[str, Any]:
    """The configuration widgets' values (digits, shots, reps, seed0, preset, precision,
    baselines); every widget's value was seeded by _restore."""
    c1, c2, c3, c4 = st.columns([3.2, 1, 1, 1])
    digits = c1.pills("Held-out (OOD) digits", list(range(10)), selection_mode="multi",
                      key="digits",
                      help="Each selected digit is one experiment: that digit is removed "
                           "from training and is the positive class at test time.")
    shots = c2.number_input("Shots per digit", step=1, key="shots",
                            help="Labeled training images per in-distribution digit "
                                 f"(the paper uses 10); 1 to {MAX_SHOTS:,}.")
    reps = c3.number_input("Repetitions", step=1,
                           key="reps", help="One job per seed: the seed changes the "
                                            "labeled draw, the retraining start and the GAN. "
                                            "Error bars on the Results page come from these. "
                                            f"1 to {MAX_REPS}.")
    seed0 = c4.number_input("First seed", step=1, key="seed0", help=f"0 to {MAX_SEED:,}.")
    c5, c5b, c5c = st.columns([1.9, 1.1, 2.6], vertical_alignment="bottom")
    name = c5.segmented_control(
        "Preset", PRESET_ORDER, key="preset", required=True,
        format_func=lambda p: {"quick": "quick", "paper": "paper", "tiny": "tiny (test)"}[p],
        help="\n\n".join(PRESET_HELP.values()))
    precision = c5b.segmented_control("GAN pretraining", ["fp32", "bf16"],
                                      key="gan_precision", required=True,
                                      help=PRECISION_HELP)
    if name:
        c5c.caption(PRESET_HELP[name] + ".")
    options = _baseline_options()  # a row of their own: six pills need the whole width
    chosen = st.pills(
        "Baselines (before and after XDD are always included)", options,
        selection_mode="multi", format_func=short, key="baselines",
        help="\n\n".join(f"**{short(m)}**: {BY_NAME[m].help}" for m in options))
    return dict(digits=digits, shots=shots, reps=reps, seed0=seed0, preset=name,
                gan_precision=precision, baselines=chosen)


def _read(base: RunConfig, f: fields.Field) -> tuple[Any, str | None]:
    """An Advanced field's value from its widget, and why it cannot run (None: it can)."""
    raw = st.session_state.get(_adv_key(f.path))
    if f.kind == "float":
        text = str(raw if raw is not None else "").strip()
        if not text:
            return None, f"**{f.label}** is empty; accepted: {ranges.accepted(f.path)}."
        value = fields.parse(f.path, text)
    elif raw is None:
        return None, f"**{f.label}** is empty; accepted: {ranges.accepted(f.path)}."
    else:
        value = raw
    why = fields.problem(base, f.path, value)
    return value, (f"**{f.label}**: {why}." if why else None)


def _reset_advanced(name: str) -> None:
    base = preset(name)
    for f in ADVANCED:
        st.session_state[_adv_key(f.path)] = _to_widget(f.path, fields.value_of(base, f.path))


def _widget(f: fields.Field, base: RunConfig, state: str) -> None:
    mark = {"changed": " :orange[●]", "bad": " :red[●]"}.get(state, "")
    helptext = f"{f.help} The {base.preset} preset's value: " \
               f"{fields.fmt(fields.value_of(base, f.path))}."
    key = _adv_key(f.path)
    options = list(ranges.choices(f.path) or ())
    if f.kind == "choice" and len(options) <= 2:
        st.segmented_control(f.label + mark, options, key=key, required=True, help=helptext)
    elif f.kind == "choice":  # three buttons do not fit a quarter of a laptop's width
        st.selectbox(f.label + mark, options, key=key, help=helptext)
    elif f.kind == "int":
        st.number_input(f.label + mark, step=1, key=key, help=helptext)
    else:
        st.text_input(f.label + mark, key=key, help=helptext)


def _advanced(name: str) -> tuple[dict[str, Any], list[str]]:
    """The Advanced panel: path -> value of every field (None where it cannot run), and one
    sentence per field that cannot run."""
    base = preset(name)
    read = {f.path: _read(base, f) for f in ADVANCED}
    changed = [p for p, (v, why) in read.items()
               if why is None and v != fields.value_of(base, p)]
    with st.expander("Advanced: the loss, the retraining, the scoring",
                     expanded=bool(st.session_state.get("_adv_open"))):
        top, reset = st.columns([3.4, 1], vertical_alignment="center")
        top.caption(f"Defaults are the **{name}** preset's values. :orange[●] marks a changed "
                    "setting (it makes the runs a variant of the preset), :red[●] one that "
                    "cannot run. Each **?** says what a setting does, what it accepts and "
                    "where the Method page and docs/METHOD.md explain it.")
        reset.button("Reset to the preset", key="adv-reset", on_click=_reset_advanced,
                     args=(name,), disabled=not changed, width="stretch")
        for title, group in GROUPS:
            st.markdown(f"<small>**{title}**</small>", unsafe_allow_html=True)
            for col, path in zip(st.columns(4), group):
                with col:
                    why = read[path][1]
                    _widget(BY_PATH[path], base, "bad" if why else
                            "changed" if path in changed else "")
        st.caption("Changed: " + " · ".join(
            f"`{p}={fields.fmt(read[p][0])}`" for p in changed) if changed else
            f"Nothing changed: these runs are the plain {name} preset's.")
    return ({p: None if why else v for p, (v, why) in read.items()},
            [why for _, why in read.values() if why])


def _sweep_values(name: str, field: str, text: str) -> tuple[list[Any], list[str]]:
    """The sweep's values, and one sentence per value that cannot run."""
    base = preset(name)
    values = fields.parse_list(field, text)
    bad = []
    for v in values:
        if field == "shots":
            ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SHOTS
            why = None if ok else f"shots {v!r} is out of range; accepted: 1 to {MAX_SHOTS:,}"
        else:
            why = fields.problem(base, field, v)
        if why:
            bad.append(f"**Sweep value** {fields.fmt(v)}: {why}.")
    if len(values) > MAX_SWEEP_VALUES:
        bad.append(f"**Sweep** of {len(values)} values; accepted: at most {MAX_SWEEP_VALUES}.")
    return values, bad


def _field_label(path: str) -> str:
    if not path:
        return "none: no sweep"
    return f"{path} · {BY_PATH[path].label}" if path in BY_PATH else path


def _accepts(field: str) -> str:
    if field == "shots":
        return f"an integer 1 to {MAX_SHOTS:,}"
    return ranges.accepted(field)


def _sweep(name: str) -> tuple[str, list[Any], list[str]]:
    """The sweep panel: the field ("" for none), its values, why they cannot run."""
    with st.expander("Sweep one setting", expanded=bool(st.session_state.get("_sweep_open"))):
        c1, c2 = st.columns([1.5, 2])
        field = c1.selectbox(
            "Setting", ["", *SWEEPABLE], key="sweep_field", format_func=_field_label,
            help="Any setting of the run's config (the names of `--set`): the Advanced "
                 "panel's first, then the rest. Each value is one run per digit and seed.")
        base = preset(name)
        example = ", ".join(fields.fmt(v) for v in _example(field, base)) if field else ""
        c2.text_input("Values, comma-separated", key="sweep_values", disabled=not field,
                      placeholder=f"e.g. {example}" if field else "choose a setting first",
                      help="Typed as for `python -m xdd sweep --vary FIELD=V1,V2,...`; "
                           f"at most {MAX_SWEEP_VALUES} values.")
        if not field:
            st.caption("Runs every selected digit and seed once per value of one setting; the "
                       "runs of a digit and seed share one GAN unless the setting is one of "
                       "the GAN's.")
            return "", [], []
        default = fields.fmt(fields.value_of(base, field))
        accepts = _accepts(field)
        replaced = (" It replaces the Advanced panel's value of this setting."
                    if field in BY_PATH else
                    " It replaces the Shots per digit above." if field == "shots" else "")
        st.caption((f"Accepted: {accepts}. " if accepts else "")
                   + f"The {name} preset's value: {default}.{replaced}")
    values, bad = _sweep_values(name, field, st.session_state.get("sweep_values") or "")
    return field, values, bad


def _example(field: str, base: RunConfig) -> list[Any]:
    """Three values around the preset's, for the placeholder."""
    if field == "shots":
        return [1, 5, 10]
    options = ranges.choices(field)
    if options:
        return list(options)
    v = fields.value_of(base, field)
    if isinstance(v, bool):
        return [True, False]
    if isinstance(v, int):
        return [max(1, v // 2), v, v * 2]
    if isinstance(v, float):
        return [v / 2, v, v * 2] if v else [0.0, 0.5, 1.0]
    return [v]


# ---------------------------------------------------------------- what would be submitted


def _what_is_missing(c: dict[str, Any], problems: list[str], field: str,
                     values: list[Any]) -> bool:
    """Say what keeps the choices from running (a bad number or setting, no digit, no sweep
    value)."""
    bad = out_of_range({"shots": c["shots"], "reps": c["reps"], "seed0": c["seed0"]})
    if field == "shots":  # the sweep's shot counts replace the box's
        bad = [b for b in bad if not b.startswith("**Shots per digit**")]
    bad += problems
    if bad:
        st.error("These settings cannot run:\n\n" + "\n".join(f"- {b}" for b in bad))
    elif not c["digits"]:
        st.info("Select at least one held-out digit.")
    elif not c["preset"]:
        st.info("Select a preset.")
    elif field and not values:
        st.info(f"Type the values of {field} to sweep, or choose none.")
    else:
        return False
    return True


def _configs(c: dict[str, Any], adv: dict[str, Any], field: str,
             values: list[Any]) -> list[RunConfig] | None:
    """One config per digit, seed and sweep value; None (and the reason) when they cannot
    run."""
    # In config.METHODS order, as the presets list them: the same choice gives the same
    # run key (and cache entry) as the command line's default.
    methods = tuple(m for m in names() if is_main(m) or m in c["baselines"])
    seed0, reps = int(c["seed0"]), int(c["reps"])
    base = preset(c["preset"])
    changed = {p: v for p, v in adv.items() if v != fields.value_of(base, p)}
    shots = int(c["shots"]) if field != "shots" else base.shots
    try:
        # A repetition redraws the GAN too (GAN pretraining seed = repetition seed), as
        # sweeps do: the error bars then include the GAN's variance (docs/DESIGN.md §2).
        fast = FAST_PRETRAIN if c["gan_precision"] == "bf16" else {}
        cfgs = [preset(c["preset"], ood_digit=int(d), shots=shots, seed=int(s),
                       methods=methods, **{"pretrain.seed": int(s), **fast, **changed})
                for d in sorted(c["digits"]) for s in range(seed0, seed0 + reps)]
        return fields.vary(cfgs, field, values) if field else cfgs
    except ConfigError as exc:
        st.error(f"These settings cannot run: {exc}")
        return None


def _variants(cfgs: list[RunConfig]) -> list[list[str]]:
    return list({tuple(v): v for v in (variant(to_dict(c)) for c in cfgs)}.values())


def _variant_text(vs: list[list[str]], name: str, field: str) -> str:
    """The runs' variant names (xdd.core.variants.variant): what they share, then what each
    sweep value adds."""
    if len(vs) == 1:
        return f"Variant: `{', '.join(vs[0])}`" if vs[0] else \
            f"Variant: none, the plain {name} preset"
    common = [x for x in vs[0] if all(x in v for v in vs)]
    each = [", ".join(x for x in v if x not in common) for v in vs]
    return (f"{len(vs)} variants: " + (f"`{', '.join(common)}` with " if common else "")
            + " · ".join(f"`{e}`" if e else f"{field or 'the setting'} at the {name} preset's "
                         "value" for e in each))


def _estimate_line(cfgs: list[RunConfig], est: Any, c: dict[str, Any],
                   dev: dict[str, str], field: str) -> None:
    """Where the jobs run, how many there are, how many GANs they share, how long they take
    (or why that is unknown), and the runs' variant."""
    n = len(cfgs)
    where = worker_device() or dev["name"]
    cached = (f" ({est.n_cached} already cached)" if 0 < est.n_cached < n
              else " (already cached: instant)" if est.n_cached == n else "")
    took = f" · about **{fmt_duration(est.seconds)}** in all" if est.seconds else ""
    st.markdown(f"**Runs on** {where} · **{n} job{'s' if n > 1 else ''}**{cached}{took}")
    gans = {pretrain_key(cfg): cfg for cfg in cfgs}
    here = sum(gan_on_disk(cfg) for cfg in gans.values())
    g = len(gans)
    share = (f"{n} runs share {g} GAN{'s' if g > 1 else ''}" if n > 1 else "Its GAN")
    where_gans = (f"{'both' if g == 2 else f'all {g}'} already pretrained here or shipped"
                  if here == g and g > 1
                  else "already pretrained here or shipped" if here == g
                  else f"{g - here} to pretrain first" + (f", {here} already here"
                                                          if here else ""))
    lines = [f"{share}: {where_gans} (a GAN is pretrained once per digit, GAN seed and GAN "
             "setting)."]
    if est.seconds is None:
        lines.append("No estimate yet: this machine is being timed (about half a minute on "
                     "a 2-core CPU, in the background); it appears on the next refresh.")
    elif est.seconds:
        lines.append(f"Estimate {est.basis}, for exactly these runs: their pretraining, "
                     "retraining steps, scoring and maps.")
    st.caption(" ".join(lines))
    st.caption(_variant_text(_variants(cfgs), c["preset"], field))
    if c["preset"] == "paper" and dev["kind"] == "cpu" and est.seconds:
        st.warning(f"The paper preset trains the full-width GAN for "
                   f"{cfgs[0].pretrain.steps:,} steps: about "
                   f"{fmt_duration(est.seconds / max(1, len(set(c['digits']))))} per digit "
                   "on this CPU. A GPU makes it practical; on a laptop use quick.")


def _room_line(cfgs: list[RunConfig]) -> None:
    """A visitor who asks for more jobs than they may queue is told how many they may."""
    new, running, room = queue_room(cfgs)
    if running:
        st.caption(f"{running} of these are queued or running already: submitting follows "
                   "them, it queues nothing new for them.")
    if room is not None and new > room:
        st.warning(f"These settings need {new} new jobs; you may queue **{room}** now "
                   f"(at most {MAX_JOBS_PER_VISITOR} of yours queued or running, {MAX_QUEUED} "
                   "in the whole queue). Submitting queues the first "
                   f"{room if room else 'none'}; submit again when they have finished.")


def settings(dev: dict[str, str]) -> None:
    """The configuration widgets and the submit button (the page checks the numbers' ranges)."""
    default_preset = "paper" if dev["kind"] == "cuda" else "quick"
    problems = _restore(default_preset)
    with st.container(border=True):
        links.warn(problems)
        c = _choices()
        adv, bad = _advanced(c["preset"])
        field, values, bad_values = _sweep(c["preset"])
        _remember(c, adv, default_preset, field, not bad_values)
        if _what_is_missing(c, bad + bad_values, field, values):
            return
        cfgs = _configs(c, adv, field, values)
        if cfgs is None:
            return
        est = estimate_seconds(cfgs)
        n = len(cfgs)
        c7, c8 = st.columns([3, 1], vertical_alignment="center")
        with c7:
            _estimate_line(cfgs, est, c, dev, field)
            _room_line(cfgs)
        if c8.button(f"Submit {n} job{'s' if n > 1 else ''}", type="primary",
                     width="stretch", key="submit"):
            ids = submit_configs(cfgs)
            if ids:  # follow them too, next to the jobs this tab already follows
                track_jobs(tracked_job_ids() + ids)
            # Rerun so that the sidebar, the first-visit panel and the job list all show the
            # new jobs; messages from the submission are shown by that rerun (show_flash).
            st.rerun()


# ---------------------------------------------------------------- the page


def render() -> None:
    require_router()
    header()
    if can_submit():
        settings(device_info())
    if not jobs_readable():
        return
    follow_another(job_board())


render()
