"""The app served and headless Chromium, for the benchmarks that drive a browser
(bench/app/app_render.py, bench/app/classroom.py, bench/first_demo.py).

tests/test_browser.py keeps its own copy of these (the flags, the port, the wait, the stop):
bench never imports from tests/.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench._common import REPO

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_app(env: dict[str, str], log: Path, address: str = "127.0.0.1",
              script: str = "app.py", cwd: Path = REPO) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` (or ``script`` in ``cwd``) on a free port in its own session,
    output to ``log``; returns the process and its local URL."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", script, "--server.port", str(port),
             "--server.headless", "true", "--server.address", address,
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_http(url: str, proc: subprocess.Popen, log: Path | None = None,
              timeout: float = 90) -> float:
    """Seconds until ``url`` answers 200; RuntimeError (with the server's log) when the
    server exits or stays silent for ``timeout`` seconds."""
    t0 = time.monotonic()
    tail = lambda: f":\n{log.read_text()[-3000:]}" if log and log.is_file() else ""  # noqa: E731
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}{tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"streamlit did not answer on {url} within {timeout} s{tail()}")


def stop(pids: set[int], group: bool = False) -> None:
    """SIGTERM, then SIGKILL after 10 s, to each pid (its process group with ``group``)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = set()
        for pid in pids:
            try:
                os.killpg(pid, sig) if group else os.kill(pid, sig)
                live.add(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while live and time.monotonic() < deadline:
            for pid in list(live):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # not our child: poll its existence instead
                    done = 0 if Path(f"/proc/{pid}").exists() else pid
                if done:
                    live.discard(pid)
            time.sleep(0.2)
        if not live:
            return
        pids = live
