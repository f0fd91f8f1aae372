"""Starting the calibration in the background, once per machine, and how old a process is.

A page with nothing measured yet starts ``python -m xdd calibrate`` in a process of its own
(:func:`ensure_calibration`); a lock file in the cache makes ten pages opened at once start
one.  :func:`process_age_s` reads /proc: the calibration's own start-up is what a job waits
for when no worker is running.
"""
from __future__ import annotations

import os
import time

from xdd.estimate.rates import load_calibration
from xdd.storage import store

# A lock older than this is left by a calibration that died: a calibration takes well under it.
LOCK_STALE_S = 300.0


def lock_path():
    return store.cache_root() / "calibration.lock"


def _take_lock(lock) -> bool | None:
    """True: taken; False: another page's calibration holds it; None: it cannot be taken
    (another page took it first, or a read-only cache)."""
    try:
        if lock.exists() and time.time() - lock.stat().st_mtime < LOCK_STALE_S:
            return False
        lock.unlink(missing_ok=True)
        lock.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except OSError:
        return None


def _start(kind: str, preset_names: str, lock) -> None:
    """``python -m xdd calibrate`` in a session of its own; it removes the lock when done."""
    import subprocess
    import sys

    code = ("import sys; from xdd.cli.main import main; "
            f"rc = main(['calibrate', '--device', {kind!r}, '--presets', {preset_names!r}]); "
            f"import pathlib; pathlib.Path({str(lock)!r}).unlink(missing_ok=True); sys.exit(rc)")
    subprocess.Popen([sys.executable, "-c", code], cwd=str(store.REPO_ROOT),
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


def ensure_calibration(kind: str = "cpu", preset_name: str = "quick") -> bool:
    """Start ``python -m xdd calibrate`` in the background when this machine has no
    calibration for the preset yet and no calibration is running.  Returns True when one is
    running or started."""
    cal = load_calibration(kind)
    if cal and preset_name in cal.get("presets", {}):
        return False
    if os.environ.get("XDD_CALIBRATE", "1") == "0":  # tests: never time the machine unasked
        return False
    lock = lock_path()
    taken = _take_lock(lock)
    if taken is None:
        return lock.exists()
    if taken:
        _start(kind, ",".join(dict.fromkeys(("tiny", "quick", preset_name))), lock)
    return True


def process_age_s() -> float | None:
    """Seconds since this process started (Linux: /proc), None where that is unknown."""
    try:
        with open("/proc/self/stat") as f:
            # after the command's name in parentheses: field 3 (state) onwards; 22 is starttime
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
