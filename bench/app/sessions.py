"""Many sessions at once: the Streamlit server's CPU per render and the seconds to its last
message, apart from the browser's drawing.  Rewrites the "Many sessions at once" section of
docs/PERFORMANCE.md.

    python bench/app/sessions.py --cache CACHE                      # all pages, 1/10/30 sessions
    python bench/app/sessions.py --cache CACHE --sessions 1,3 --pages results,embeddings --no-doc
    python bench/app/sessions.py --cache CACHE --json out.json      # the figures, too
    python bench/app/sessions.py --cache CACHE --floor              # and Streamlit's own floor
    python bench/app/sessions.py --cache CACHE --protocol           # and the server alone

``--protocol`` adds, per page, N sessions that speak Streamlit's websocket protocol without a
browser (BackMsg rerun_script, ForwardMsgs read until script_finished): the server's part
alone, with no browser drawing on the same cores and no static files served.  The targets are
judged on those rows when they are measured.

``CACHE`` is an ``XDD_CACHE`` holding at least one finished run (``CACHE/runs`` not empty), e.g.
``XDD_CACHE=CACHE python -m xdd run --ood-digit 3 --preset quick``.

What it does: ``streamlit run app.py`` serves the cache (headless, on a free port or
``--port``); one Chromium (``/usr/bin/chromium``, never a downloaded one) drives the sessions.
For each page of ``--pages`` (its URL path as ``st.navigation`` gives it: ``results``,
``embeddings``, ``probe``, ``method``; ``run`` is the default page, served at ``/``):

1. **Warm-up.**  The page is opened once in a session of its own, untimed (imports, the app's
   ``st.cache_data``), and the number of plotly charts it draws is counted.  That session then
   reopens the page twice, one at a time, with the app's files in its browser cache: the
   least server CPU of the two is the **revisit** figure (a new visitor's minus it is what
   serving the static files costs).
2. For each N of ``--sessions``: N browser contexts (each a new visitor: own cookies, own
   empty browser cache, so each also fetches the app's HTML and JS from the server) are made
   ready, the server's CPU is let go quiet, its CPU time is read
   (``utime + stime`` of ``/proc/PID/stat`` for the streamlit process, plus its children's, live
   and reaped), all N navigate to the page at once (asyncio, ``gather``), and the CPU time is
   read again once every session is done.
3. Per session: **to last server message** is the time from ``goto`` to the last websocket
   frame received from the server (Playwright's ``framereceived`` events, stamped on arrival
   here), the session being done when no frame has come for 1.5 s and Streamlit's status
   widget (``[data-testid="stStatusWidget"]``) is gone, i.e. no script runs (at most
   ``--max-wait`` s).  **Drawn** is the time from ``goto`` until the page holds as many
   ``.js-plotly-plot`` as the warm-up counted, each laid out by plotly.js (``_fullLayout`` set
   and its ``.main-svg`` present; the test of ``bench/app/app_render.py``), stamped in the page
   by a 25 ms poll; pages without charts have no drawn time.
4. **Server CPU per render** = (CPU after - CPU before) / N; it includes serving the static
   files to each new context and Streamlit's idle cost over the window (``idle_cpu_per_s`` in
   the JSON).  Median and p95 (linear interpolation) over the N sessions.

Between the N the contexts are closed and the server's CPU is let go quiet again.  Ctrl-C or
an error closes the browser and stops the server (its process group).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench and xdd
from bench import _browser  # noqa: E402
from bench._browser import CHROMIUM, LAUNCH_ARGS, serve_app, stop, wait_http  # noqa: E402
from bench._common import DOC, REPO, loadavg, log, machine, write_json, write_section  # noqa: E402

BEGIN = "<!-- bench/app/sessions.py: begin (generated; edits between these markers are overwritten) -->"
END = "<!-- bench/app/sessions.py: end -->"
HEADING = "## 10. Many sessions at once (`bench/app/sessions.py`)\n\n"
INTRO = textwrap.fill(
    "N browser sessions (one Chromium, a context each, so each a new visitor) open the same "
    "page at the same moment; the streamlit process's CPU time over the burst divided by N is "
    "the server's cost per render, the time from navigation to the last websocket message of "
    "the server is what the server makes each visitor wait, and the time until every chart is "
    "laid out adds the browser's drawing. Targets: ≤ 0.08 s of server CPU per render, and with "
    "30 sessions a p95 of ≤ 3 s to the last server message.", 95) + "\n\n"

# The app's pages and their URL paths (pages/_common.py:run_app, st.navigation): the default
# page, Run, is served at the root.
PAGES = {"results": "results", "embeddings": "embeddings", "run": "", "probe": "probe",
         "method": "method"}
TARGET_CPU_S = 0.08
TARGET_P95_S = 3.0
TARGET_N = 30
QUIET_S = 1.5          # no websocket frame for this long (and no script running): done
STATUS = '[data-testid="stStatusWidget"]'

# In the top frame of each page: when did the page last come to hold n charts, all laid out by
# plotly.js (the test of app_render.py)?  window.__xddDrawn = {n, ok, t (epoch ms)}.
DRAWN_INIT_JS = """(() => {
  if (window !== window.top) return;
  const st = {n: 0, ok: false, t: null};
  window.__xddDrawn = st;
  const tick = () => {
    const plots = document.querySelectorAll('.js-plotly-plot');
    let ok = plots.length > 0;
    for (const p of plots) {
      if (!(p._fullLayout && p.querySelector('.main-svg'))) { ok = false; break; }
    }
    if (ok && (!st.ok || st.n !== plots.length)) st.t = performance.timeOrigin + performance.now();
    st.ok = ok;
    st.n = plots.length;
    if (!window.__xddStop) setTimeout(tick, 25);
  };
  tick();
})();"""
DRAWN_JS = "(n) => { const s = window.__xddDrawn; return !!s && s.ok && s.n >= n; }"


# ---------------------------------------------------------------- the server's CPU

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state is [0], ppid [1])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    """Live descendants of pid."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            f = _stat(int(d.name))
            if f:
                parent[int(d.name)] = int(f[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def server_cpu(pid: int) -> float:
    """CPU seconds of pid (utime + stime), its reaped children's (cutime + cstime) and its live
    descendants'."""
    f = _stat(pid)
    if f is None:
        raise RuntimeError(f"the streamlit process {pid} is gone")
    ticks = sum(int(x) for x in f[11:15])
    for c in _children(pid):
        g = _stat(c)
        if g:
            ticks += int(g[11]) + int(g[12])
    return ticks / CLK_TCK


async def cpu_quiet(pid: int, rate: float = 0.03, window: float = 1.0,
                    limit: float = 60.0) -> float:
    """Wait until pid uses under `rate` CPU seconds per second over `window` s (at most
    `limit` s); returns the last rate seen."""
    t0 = time.monotonic()
    while True:
        c0 = server_cpu(pid)
        await asyncio.sleep(window)
        r = (server_cpu(pid) - c0) / window
        if r < rate or time.monotonic() - t0 > limit:
            return r


# ---------------------------------------------------------------- one session


def pct(xs: list[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation between the order statistics)."""
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Session:
    """One browser context with one page, its websocket frames counted and stamped."""

    def __init__(self, ctx, page) -> None:
        self.ctx, self.page = ctx, page
        self.frames = 0
        self.last_frame: float | None = None
        page.on("websocket", self._on_ws)

    @classmethod
    async def open(cls, browser, max_wait: float) -> "Session":
        ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
        await ctx.add_init_script(DRAWN_INIT_JS)
        page = await ctx.new_page()
        page.set_default_timeout(max_wait * 1000)
        return cls(ctx, page)

    def _on_ws(self, ws) -> None:
        ws.on("framereceived", self._on_frame)

    def _on_frame(self, _payload) -> None:
        self.frames += 1
        self.last_frame = time.monotonic()

    async def close(self) -> None:
        try:
            await self.ctx.close()
        except Exception:  # the browser is gone already (Ctrl-C)
            pass

    async def visit(self, url: str, charts: int, max_wait: float) -> dict[str, Any]:
        """goto url; seconds to the last server message and to `charts` charts drawn."""
        self.frames, self.last_frame = 0, None
        t0, t0_wall = time.monotonic(), time.time()
        deadline = t0 + max_wait
        await self.page.goto(url, wait_until="commit")
        while True:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"{url}: the server was still talking after {max_wait:.0f} s "
                                   f"({self.frames} frames)")
            if (self.last_frame is not None and now - self.last_frame >= QUIET_S
                    and await self.page.locator(STATUS).count() == 0
                    and time.monotonic() - self.last_frame >= QUIET_S):
                break
            await asyncio.sleep(0.1)
        out: dict[str, Any] = {"last_message_s": self.last_frame - t0, "frames": self.frames,
                               "done_s": time.monotonic() - t0, "drawn_s": None}
        if charts:
            from playwright.async_api import TimeoutError as PlaywrightTimeout

            left = max(1.0, deadline - time.monotonic())
            try:
                await self.page.wait_for_function(DRAWN_JS, arg=charts, timeout=left * 1000)
                st = await self.page.evaluate("() => window.__xddDrawn")
                out["drawn_s"] = st["t"] / 1000.0 - t0_wall
            except PlaywrightTimeout:  # the server is done, the drawing is not: no drawn time
                out["drawn_timeout"] = True
        out["charts"] = await self.page.evaluate(
            "() => document.querySelectorAll('.js-plotly-plot').length")
        await self.page.evaluate("() => { window.__xddStop = true; }")
        return out


async def settle_charts(page, timeout_s: float, quiet_s: float = 2.0) -> int:
    """The number of charts once it has not changed for quiet_s with all of them laid out."""
    t0 = time.monotonic()
    last, since = None, time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        n = await page.evaluate("() => document.querySelectorAll('.js-plotly-plot').length")
        ok = n == 0 or await page.evaluate(DRAWN_JS, n)
        if (n, ok) != last or not ok:
            last, since = (n, ok), time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return n
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the charts did not settle within {timeout_s} s (last {last})")


# ---------------------------------------------------------------- the burst


async def burst(browser, pid: int, url: str, charts: int, n: int, max_wait: float
                ) -> dict[str, Any]:
    """n sessions opening url at once: the server's CPU over the burst and each one's times."""
    sessions = await asyncio.gather(*[Session.open(browser, max_wait) for _ in range(n)])
    try:
        idle = await cpu_quiet(pid)
        c0, t0 = server_cpu(pid), time.monotonic()
        visits = await asyncio.gather(*[s.visit(url, charts, max_wait) for s in sessions],
                                      return_exceptions=True)
        c1, wall = server_cpu(pid), time.monotonic() - t0
    finally:
        await asyncio.gather(*[s.close() for s in sessions])
    failed = [f"{type(v).__name__}: {v}" for v in visits if isinstance(v, BaseException)]
    ok = [v for v in visits if not isinstance(v, BaseException)]
    last = [v["last_message_s"] for v in ok]
    drawn = [v["drawn_s"] for v in ok if v["drawn_s"] is not None]
    r = lambda x: None if x is None else round(x, 3)  # noqa: E731
    return {"n": n, "server_cpu_s": round(c1 - c0, 3), "cpu_per_render_s": r((c1 - c0) / n),
            "idle_cpu_per_s": round(idle, 4), "wall_s": round(wall, 2),
            "last_message_median_s": r(pct(last, 50)), "last_message_p95_s": r(pct(last, 95)),
            "drawn_median_s": r(pct(drawn, 50)), "drawn_p95_s": r(pct(drawn, 95)),
            "sessions": [{k: r(v) if isinstance(v, float) else v for k, v in s.items()}
                         for s in ok],
            "drawn_timeouts": sum(1 for v in ok if v.get("drawn_timeout")),
            "failed": failed, "load": round(loadavg()[0], 2)}


async def measure(url: str, pid: int, pages: list[str], ns: list[int], max_wait: float,
                  chromium: list[str]) -> dict[str, Any]:
    """{page: its charts, warm-up and one burst per N}; chromium[0] gets the browser's version."""
    from playwright.async_api import async_playwright

    out: dict[str, Any] = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=LAUNCH_ARGS)
        try:
            chromium[0] = browser.version
            for name in pages:
                page_url = f"{url}/{PAGES[name]}"
                s = await Session.open(browser, max_wait)
                try:  # warm-up: untimed, counts the charts
                    warm = await s.visit(page_url, 0, max_wait)
                    charts = await settle_charts(s.page, max_wait)
                    cached = []  # the same visitor again: the app's files in its browser cache
                    for _ in range(2):
                        await s.page.goto("about:blank")
                        await cpu_quiet(pid)
                        c0 = server_cpu(pid)
                        await s.visit(page_url, charts, max_wait)
                        cached.append(server_cpu(pid) - c0)
                finally:
                    await s.close()
                cached_cpu = min(cached)
                log(f"{name}: warm-up {warm['last_message_s']:.2f} s to the last message, "
                    f"{charts} charts; a revisit costs the server {cached_cpu:.3f} s")
                res: dict[str, Any] = {"url_path": "/" + PAGES[name], "charts": charts,
                                       "warm_last_message_s": round(warm["last_message_s"], 3),
                                       "revisit_cpu_s": round(cached_cpu, 3), "runs": {}}
                out[name] = res
                for n in ns:
                    b = await burst(browser, pid, page_url, charts, n, max_wait)
                    res["runs"][str(n)] = b
                    drawn = (f", drawn median {b['drawn_median_s']:.2f} p95 {b['drawn_p95_s']:.2f} s"
                             if b["drawn_median_s"] is not None else "")
                    log(f"  N={n}: server CPU {b['cpu_per_render_s']:.3f} s/render, last message "
                        f"median {b['last_message_median_s']} p95 {b['last_message_p95_s']} s"
                        f"{drawn}" + (f"; {len(b['failed'])} failed: {b['failed'][0]}"
                                       if b["failed"] else ""))
        finally:
            try:
                await browser.close()
            except Exception:  # Ctrl-C reached the driver and the browser first
                pass
    return out


# ---------------------------------------------------------------- the server alone


async def protocol_visit(ws_url: str, page: str, max_wait: float) -> dict[str, float]:
    """One session as the browser's first message starts it, without a browser: connect to
    ``/_stcore/stream``, ask for the page's script run (BackMsg rerun_script, the page's URL
    path as its page_name) and read ForwardMsgs until ``script_finished``: the seconds to that
    last message and how many messages came."""
    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    t0 = time.monotonic()
    async with websockets.connect(ws_url, subprotocols=["streamlit"], max_size=None) as ws:
        msg = BackMsg()
        msg.rerun_script.page_name = page
        msg.rerun_script.query_string = ""
        await ws.send(msg.SerializeToString())
        n = 0
        while True:
            fm = ForwardMsg()
            fm.ParseFromString(await asyncio.wait_for(ws.recv(), max_wait))
            n += 1
            if fm.WhichOneof("type") == "script_finished":
                return {"last_message_s": time.monotonic() - t0, "messages": n}


async def protocol_burst(ws_url: str, pid: int, page: str, n: int, max_wait: float
                         ) -> dict[str, Any]:
    idle = await cpu_quiet(pid)
    c0, t0 = server_cpu(pid), time.monotonic()
    visits = await asyncio.gather(*[protocol_visit(ws_url, page, max_wait) for _ in range(n)],
                                  return_exceptions=True)
    c1, wall = server_cpu(pid), time.monotonic() - t0
    failed = [f"{type(v).__name__}: {v}" for v in visits if isinstance(v, BaseException)]
    last = [v["last_message_s"] for v in visits if not isinstance(v, BaseException)]
    r = lambda x: None if x is None else round(x, 3)  # noqa: E731
    return {"n": n, "server_cpu_s": round(c1 - c0, 3), "cpu_per_render_s": r((c1 - c0) / n),
            "idle_cpu_per_s": round(idle, 4), "wall_s": round(wall, 2),
            "last_message_median_s": r(pct(last, 50)), "last_message_p95_s": r(pct(last, 95)),
            "drawn_median_s": None, "drawn_p95_s": None, "drawn_timeouts": 0,
            "failed": failed, "load": round(loadavg()[0], 2)}


async def measure_protocol(url: str, pid: int, pages: list[str], ns: list[int],
                           max_wait: float) -> dict[str, Any]:
    """{"<page> · server alone": one burst per N} of protocol sessions (no browser: nothing
    competes with the server for the cores, and no static file is served)."""
    ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
    out: dict[str, Any] = {}
    for name in pages:
        await protocol_visit(ws_url, PAGES[name], max_wait)  # warm-up
        res: dict[str, Any] = {"url_path": "/" + PAGES[name], "charts": "–",
                               "revisit_cpu_s": None, "runs": {}}
        out[f"{name} · server alone"] = res
        for n in ns:
            b = await protocol_burst(ws_url, pid, PAGES[name], n, max_wait)
            res["runs"][str(n)] = b
            log(f"{name}, server alone, N={n}: {b['cpu_per_render_s']:.3f} s/render, last "
                f"message median {b['last_message_median_s']} p95 {b['last_message_p95_s']} s"
                + (f"; {len(b['failed'])} failed: {b['failed'][0]}" if b["failed"] else ""))
    return out


# ---------------------------------------------------------------- report


def _s(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def table(raw: dict[str, Any]) -> str:
    rows = []
    names = list(raw["results"])  # in the order measured
    for name in names:
        res = raw["results"][name]
        for n, b in res["runs"].items():
            fail = f" ({len(b['failed'])} failed)" if b["failed"] else ""
            fail += f" ({b['drawn_timeouts']} not drawn)" if b.get("drawn_timeouts") else ""
            rows.append(f"| {name} | {n}{fail} | {res['charts']} | {_s(b['cpu_per_render_s'], 3)} | "
                        f"{_s(res.get('revisit_cpu_s'), 3)} | "
                        f"{_s(b['last_message_median_s'])} | {_s(b['last_message_p95_s'])} | "
                        f"{_s(b['drawn_median_s'])} | {_s(b['drawn_p95_s'])} |")
    return ("| page | sessions | charts | server CPU / render (s) | the same, a revisit (s) | "
            "to last server message, median (s) | p95 (s) | drawn, median (s) | p95 (s) |\n"
            "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def _worst(results: dict[str, Any]) -> tuple[float | None, float | None]:
    """The largest server CPU per render over every N, and the largest p95 at TARGET_N."""
    cpu = [b["cpu_per_render_s"] for r in results.values() for b in r["runs"].values()]
    p95 = [r["runs"][str(TARGET_N)]["last_message_p95_s"] for r in results.values()
           if str(TARGET_N) in r["runs"]]
    return (max(cpu) if cpu else None), (max(p95) if p95 else None)


def _judged(value: float | None, target: float, digits: int) -> str:
    if value is None:
        return "not run"
    return f"{_s(value, digits)} s ({'met' if value <= target else 'not met'})"


def verdict(raw: dict[str, Any]) -> str:
    """The targets, judged on the server's part: the protocol sessions ("server alone") when
    they were measured, else the browser's sessions; the floor is reported, never judged."""
    ours = {k: r for k, r in raw["results"].items() if not k.startswith("floor")}
    alone = {k: r for k, r in ours.items() if k.endswith("· server alone")}
    browser = {k: r for k, r in ours.items() if k not in alone}
    lines = ["| | target | measured |", "|---|---|---|"]
    for what, group in ((("server alone (no browser on the cores, no static files)", alone),
                         ("with a browser per session (new visitors)", browser))
                        if alone else (("worst page and N", browser),)):
        cpu, p95 = _worst(group)
        lines.append(f"| server CPU per render, {what} | ≤ {TARGET_CPU_S} s | "
                     f"{_judged(cpu, TARGET_CPU_S, 3)} |")
        lines.append(f"| p95 to the last server message, {TARGET_N} sessions, {what} | "
                     f"≤ {TARGET_P95_S:g} s | {_judged(p95, TARGET_P95_S, 2)} |")
    return "\n".join(lines) + "\n"


def render(raw: dict[str, Any]) -> str:
    m = raw["machine"]
    about = textwrap.fill(
        f"Generated by `{raw['command'].strip()}` on {m['cpu']} ({m['affinity']} usable cores, "
        f"{m['ram_gib']} GiB), Chromium {raw.get('chromium', '?')} on the same machine; load "
        f"average {raw['load_before'][0]:.1f} before. Each session is a new browser context, so "
        "the server's CPU per render includes serving the app's static files (HTML, JS, fonts) "
        "to a new visitor; \"a revisit\" is the server's CPU for one session reopening the page "
        "with those files in its browser cache (the least of two, one session at a time): the "
        "difference is the static files' share. The drawn time starts at the same `goto` as the "
        "time to the last server message."
        + (" The row \"floor\" is a one-line Streamlit app (`st.write`) served the same way: "
           "what a session costs the server before any code of ours runs."
           if "floor" in raw["results"] else ""), 95, break_long_words=False,
        break_on_hyphens=False)
    return f"""{BEGIN}
{about}

{table(raw)}
{verdict(raw)}{END}
"""


# ---------------------------------------------------------------- main


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


FLOOR_APP = 'import streamlit as st\n\nst.write("One line: what any page costs.")\n'


def measure_floor(env: dict[str, str], logdir: Path, ns: list[int],
                  max_wait: float) -> dict[str, Any]:
    """The same bursts against a one-line app (served from ``logdir``, same flags): the
    server's cost of a session that runs nothing of ours."""
    (logdir / "floor_app.py").write_text(FLOOR_APP)
    logfile = logdir / "floor.log"
    proc, url = serve_app(env, logfile, script="floor_app.py", cwd=logdir)
    try:
        wait_http(f"{url}/_stcore/health", proc, logfile, timeout=120)
        PAGES["floor"] = ""
        out = asyncio.run(measure(url, proc.pid, ["floor"], ns, max_wait, [""]))
        out.update(asyncio.run(measure_protocol(url, proc.pid, ["floor"], ns, max_wait)))
        return out
    finally:
        stop({proc.pid}, group=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", required=True, help="XDD_CACHE holding at least one finished run")
    ap.add_argument("--pages", default="results,embeddings,run,method,probe",
                    help=f"comma-separated, of {', '.join(PAGES)} (default: all)")
    ap.add_argument("--sessions", default="1,10,30", help="the N, comma-separated")
    ap.add_argument("--port", type=int, default=None, help="serve on this port (default: a free one)")
    ap.add_argument("--max-wait", type=float, default=120.0,
                    help="seconds a session may take (default 120)")
    ap.add_argument("--json", default=None, help="write the figures here")
    ap.add_argument("--no-doc", action="store_true", help="print, do not rewrite docs/PERFORMANCE.md")
    ap.add_argument("--floor", action="store_true",
                    help="also serve a one-line Streamlit app (st.write) the same way: what a "
                         "session costs the server before any page of ours runs")
    ap.add_argument("--no-browser", action="store_true",
                    help="only the protocol sessions (implies --protocol)")
    ap.add_argument("--protocol", action="store_true",
                    help="also open each page with N protocol-level sessions (no browser): the "
                         "server alone, with no browser drawing on the same cores")
    args = ap.parse_args()
    args.protocol = args.protocol or args.no_browser
    pages = [p.strip() for p in args.pages.split(",") if p.strip()]
    bad = [p for p in pages if p not in PAGES]
    if bad:
        ap.error(f"unknown page(s) {', '.join(bad)}; choose from {', '.join(PAGES)}")
    try:
        ns = [int(x) for x in args.sessions.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--sessions wants integers, got {args.sessions!r}")
    if not ns or min(ns) < 1:
        ap.error("--sessions wants positive integers")
    cache = Path(args.cache).expanduser().resolve()
    runs = cache / "runs"
    if not runs.is_dir() or not any(runs.iterdir()):
        sys.exit(f"sessions.py: {runs} holds no run; compute one first, e.g.\n"
                 f"  XDD_CACHE={cache} python -m xdd run --ood-digit 3 --preset quick")
    if not Path(CHROMIUM).is_file():
        sys.exit(f"sessions.py: {CHROMIUM} is missing")

    signal.signal(signal.SIGTERM, _interrupt)
    raw: dict[str, Any] = {"command": "python bench/app/sessions.py " + " ".join(sys.argv[1:]),
                           "machine": machine(), "cache": str(cache), "pages": pages,
                           "sessions": ns, "quiet_s": QUIET_S, "load_before": loadavg(),
                           "targets": {"cpu_per_render_s": TARGET_CPU_S,
                                       "last_message_p95_s": TARGET_P95_S, "at_n": TARGET_N}}
    logdir = Path(tempfile.mkdtemp(prefix="xdd-bench-sessions-"))
    logfile = logdir / "streamlit.log"
    env = dict(os.environ, XDD_CACHE=str(cache))
    if args.port:  # serve_app's command, on the port asked for
        with mock.patch.object(_browser, "free_port", lambda: args.port):
            proc, url = serve_app(env, logfile)
    else:
        proc, url = serve_app(env, logfile)
    ok = False
    try:
        up = wait_http(f"{url}/_stcore/health", proc, logfile, timeout=120)
        log(f"streamlit (pid {proc.pid}) up in {up:.1f} s at {url}")
        chromium = [""]
        # Page by page, the server alone first, then the browsers: what one page leaves in the
        # server (the Probe page loads torch, after which every render costs more: section 10)
        # reaches only the pages measured after it, so list the probe page last.
        # A page named twice is measured twice (e.g. results,probe,results: before and after
        # the Probe page), its second rows named "<page>, again".
        raw["results"] = {}
        for i, page in enumerate(pages):
            got: dict[str, Any] = {}
            if args.protocol:
                got.update(asyncio.run(measure_protocol(url, proc.pid, [page], ns,
                                                        args.max_wait)))
            if not args.no_browser:
                got.update(asyncio.run(measure(url, proc.pid, [page], ns, args.max_wait,
                                               chromium)))
            again = page in pages[:i]
            raw["results"].update({(k.replace(page, f"{page}, again", 1) if again else k): v
                                   for k, v in got.items()})
        raw["chromium"] = chromium[0]
        if args.floor:
            raw["results"].update(measure_floor(env, logdir, ns, args.max_wait))
        raw["load_after"] = loadavg()
        ok = True
    except KeyboardInterrupt:
        log("interrupted: stopping the server")
        raise SystemExit(130)
    except Exception as exc:
        log(f"failed: {type(exc).__name__}: {exc}")
        log(f"the server's log: {logfile}")
        raise SystemExit(1)
    finally:
        stop({proc.pid}, group=True)
        if ok:
            shutil.rmtree(logdir, ignore_errors=True)

    print(table(raw))
    print(verdict(raw))
    if args.json:
        write_json(args.json, raw)
    if not args.no_doc:
        write_section(DOC, BEGIN, END, render(raw), HEADING + INTRO)
        log(f"wrote the Many-sessions section of {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()
