"""Links that reproduce a view: a page's settings in the address bar (st.query_params).

A page names each setting once as a :class:`Param` (its widget's session-state key, its query
parameter, how the parameter's text becomes a value, how a value is written, its default).
Before the widgets are drawn, :func:`restore` gives every widget that has no state yet its
value from the link, else from this session's last visit to the page, else its default; after
they are drawn, :func:`remember` writes the values back to the address bar (a value equal to
its default leaves the link) and keeps them for the next visit. A copied link then opens the
same view for someone else.

A value in a link that does not parse, is out of range or names a setting that no longer
exists is never a traceback: :func:`restore` returns one sentence per such value, the widget
takes its default, and :func:`warn` shows the sentences as one message.  Parameters a page does
not name (``job``, another page's) are left as they are.

Usage, on a page::

    PARAMS = [Param("res-shots", "shots", int_in(1, 1000), default=10), ...]
    warn(restore(PARAMS, saved="_results_view"))
    shots = st.selectbox("Shots", ..., key="res-shots")
    remember(PARAMS, saved="_results_view")
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import streamlit as st


@dataclass(frozen=True)
class Param:
    key: str  # the widget's session-state key
    name: str  # the query parameter
    parse: Callable[[str], Any]  # the parameter's text -> the widget's value; ValueError(why)
    default: Any
    fmt: Callable[[Any], str | None] = str  # value -> text (None: leave it out of the link)


# ---------------------------------------------------------------- parsers


def int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text.strip())
        except ValueError:
            raise ValueError(f"not a whole number; accepted: {low} to {high:,}") from None
        if not low <= v <= high:
            raise ValueError(f"out of range; accepted: {low} to {high:,}")
        return v
    return parse


def one_of(options: Sequence[Any], label: Callable[[Any], str] = str) -> Callable[[str], Any]:
    """A value whose text is one of the options' texts."""
    def parse(text: str) -> Any:
        for o in options:
            if label(o) == text.strip():
                return o
        raise ValueError("accepted: " + ", ".join(label(o) for o in options))
    return parse


def list_of(item: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """Comma-separated items, each parsed by ``item``; "" is the empty list."""
    def parse(text: str) -> list[Any]:
        out = []
        for part in text.split(","):
            if part.strip():
                v = item(part)
                if v not in out:
                    out.append(v)
        return out
    return parse


def join(values: Iterable[Any]) -> str:
    return ",".join(str(v) for v in values)


# ---------------------------------------------------------------- reading and writing


def get(name: str) -> str | None:
    """A query parameter's text (the last one when it is repeated), or None."""
    values = st.query_params.get_all(name)
    return values[-1] if values else None


def restore(params: Iterable[Param], saved: str) -> list[str]:
    """Seed every widget of ``params`` that has no state yet: from the link, else from what
    the session last had (``st.session_state[saved]``), else the default.  Returns one
    sentence per value of the link that could not be used (that widget takes its default)."""
    kept: dict[str, Any] = st.session_state.get(saved) or {}
    problems = []
    for p in params:
        if p.key in st.session_state:
            continue
        value = kept.get(p.key, p.default)
        text = get(p.name)
        if text is not None:
            try:
                value = p.parse(text)
            except ValueError as exc:
                problems.append(f"`{p.name}={_short(text)}`: {exc}")
                value = p.default
        st.session_state[p.key] = value
    return problems


_INITIAL = "_link_initial"


def initial(key: str, name: str, options: Sequence[Any], problems: list[str],
            label: Callable[[Any], str] = str, many: bool = False) -> Any:
    """For a widget whose options depend on the data (a page that reads the cache): the value
    the link gives it, to pass as the widget's index/default, or None (the page's default).

    The link is read when the widget ``key`` is drawn fresh (no state yet: a first visit, or a
    return to the page); the text read then is kept, so the argument the page passes stays
    the same on every rerun while the widget holds a state of its own.  A value that names no
    option adds one sentence to ``problems`` (on the fresh draw only).  ``many``: a
    comma-separated list, every item an option (a list back)."""
    kept = st.session_state.setdefault(_INITIAL, {})
    fresh = key not in st.session_state
    if fresh:
        kept[key] = get(name)
    text = kept.get(key)
    if text is None:
        return None
    parse = one_of(options, label)
    try:
        if not many:
            return parse(text)
        value = list_of(parse)(text)
        if not value:
            raise ValueError("an empty list; accepted: " + ", ".join(label(o) for o in options))
        return value
    except ValueError as exc:
        if fresh:
            problems.append(f"`{name}={_short(text)}`: not available here; {_short(str(exc), 160)}")
        return None


def stale(names: Iterable[str], known: Iterable[str]) -> list[str]:
    """One sentence per query parameter among ``names`` that the page no longer knows."""
    known = set(known)
    return [f"`{n}`: not a setting of this page (a link from another version?)"
            for n in names if n not in known]


def remember(params: Iterable[Param], saved: str,
             values: Mapping[str, Any] | None = None) -> None:
    """Write the widgets' values (or ``values``, by widget key) to the address bar, leaving
    out those equal to their default, and keep them for the session's next visit."""
    kept = dict(st.session_state.get(saved) or {})
    out: dict[str, str | None] = {}
    for p in params:
        v = values[p.key] if values is not None and p.key in values else \
            st.session_state.get(p.key, p.default)
        kept[p.key] = v
        out[p.name] = None if v == p.default else p.fmt(v)
    st.session_state[saved] = kept
    write(out)


def write(values: Mapping[str, str | None]) -> None:
    """Set these query parameters (None removes one); no write where nothing changes, and
    parameters not named are left alone."""
    for name, text in values.items():
        if text is None:
            if name in st.query_params:
                del st.query_params[name]
        elif st.query_params.get_all(name) != [text]:
            st.query_params[name] = text


def drop(names: Iterable[str]) -> None:
    write({n: None for n in names})


def warn(problems: Sequence[str], what: str = "This link") -> None:
    """The link's unusable values as one message (nothing when there are none)."""
    if problems:
        st.warning(f"{what} has settings that cannot be used here; they are at their "
                   "defaults:\n\n" + "\n".join(f"- {p}" for p in problems))


def _short(text: str, n: int = 40) -> str:
    text = text.replace("`", "'")
    return text if len(text) <= n else text[: n - 1] + "…"
