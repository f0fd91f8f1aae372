"""The cache/ layout, atomic writes and safe loading.

Layout (``XDD_CACHE`` overrides the root, which defaults to ``<repo>/cache``)::

    cache/data/mnist-<tag>.npz             MNIST as uint8 arrays (first load converts)
    cache/pretrain/<pretrain_key>/         config.json, checkpoint.pt (G and D state_dicts)
    cache/runs/<run_key>/                  config.json, results.json, scores.npz,
                                           projections.npz, checkpoint.pt (retrained D)

Every file is written to a temporary name in its folder and renamed into place, so a reader
never sees half a file.  A run folder is assembled under a temporary name and renamed into
place whole, and ``results.json`` records the SHA-256 of every other file in it, so a run
with a truncated or altered file is detected, removed and recomputed, never loaded.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
# Host tag in temporary names, so a cache shared by several machines is cleaned per host.
_HOST = "".join(c for c in socket.gethostname() if c.isalnum())[:32] or "host"


def cache_root() -> Path:
    return Path(os.environ.get("XDD_CACHE", REPO_ROOT / "cache"))


def data_dir() -> Path:
    """Converted datasets; ``XDD_DATA_CACHE`` lets tests share one copy across temp caches."""
    return Path(os.environ.get("XDD_DATA_CACHE", cache_root() / "data"))


def runs_dir() -> Path:
    return cache_root() / "runs"


def run_dir(key: str) -> Path:
    _check_key(key)
    return runs_dir() / key


def pretrain_dir(key: str) -> Path:
    _check_key(key)
    return cache_root() / "pretrain" / key


def check_writable(root: Path | None = None) -> str | None:
    """Why the cache folder cannot be written (one line), or None when it can.

    Probes by creating and removing a file, which is what counts (a read-only mount refuses
    root too); the folder is created first if it does not exist.
    """
    root = cache_root() if root is None else Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".write-probe-", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        return f"{root}: {exc.strerror or type(exc).__name__}"
    return None


def _check_key(key: str) -> None:
    # Keys are hex hashes; anything else (a path, "..") must never reach the file system.
    if not (isinstance(key, str) and 1 <= len(key) <= 64 and all(c in "0123456789abcdef" for c in key)):
        raise ValueError(f"malformed key {key!r}: expected a hexadecimal run key")


# ---------------------------------------------------------------- atomic writes


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache must be readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """A dict of state_dicts (+ config, step, versions), written atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint, or None when it is missing, truncated or not a checkpoint."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return state if isinstance(state, dict) else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- run folders


class RunWriter:
    """Assembles a run folder under a temporary name; ``commit`` renames it into place.

    Used as a context manager: if the body raises (or the job is cancelled), the temporary
    folder is removed and the cache holds nothing of the run.
    """

    def __init__(self, key: str):
        self.key = key
        self.final = run_dir(key)
        self.tmp = runs_dir() / f".tmp-{key}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.files: dict[str, str] = {}

    def __enter__(self) -> "RunWriter":
        self.tmp.mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, name: str) -> Path:
        return self.tmp / name

    def json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.tmp / name, obj)

    def npz(self, name: str, **arrays: np.ndarray) -> None:
        atomic_save_npz(self.tmp / name, **arrays)

    def commit(self, results: dict[str, Any]) -> dict[str, Any]:
        """Write results.json (with the hashes of every other file) and move into place."""
        files = {p.name: sha256_file(p) for p in sorted(self.tmp.iterdir()) if p.is_file()
                 and p.name != "results.json"}
        results = dict(results, files=files)
        results["results_sha256"] = results_digest(results)
        atomic_write_json(self.tmp / "results.json", results)
        if self.final.exists():  # a stale or corrupt copy: replace it
            shutil.rmtree(self.final, ignore_errors=True)
        os.replace(self.tmp, self.final)
        return results


def results_digest(results: dict[str, Any]) -> str:
    """SHA-256 of results.json's content without its own digest field (detects edits)."""
    body = {k: v for k, v in results.items() if k != "results_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def load_results(key: str) -> dict[str, Any] | None:
    """The run's results if the folder is complete and every file matches its hash, else None.

    Only reads: a run that fails the check stays where it is (``bad_run`` says so) until it is
    recomputed, whose commit replaces the folder whole, or ``remove_run`` deletes it.
    """
    d = run_dir(key)
    if not d.is_dir():
        return None
    res = read_json(d / "results.json")
    ok = (isinstance(res, dict) and isinstance(res.get("files"), dict)
          and res.get("run_key") == key and res.get("results_sha256") == results_digest(res))
    if ok:
        for name, digest in res["files"].items():
            p = d / name
            if not p.is_file() or sha256_file(p) != digest:
                ok = False
                break
    return res if ok else None


def add_run_file(key: str, name: str, arrays: dict[str, np.ndarray], updates: dict[str, Any],
                 drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """Add an npz file to a committed run and record its hash: the file is written first,
    then results.json is rewritten (atomically) to list it, so a reader never sees a listed
    file that is not there.  ``updates`` are merged into the results, ``drop`` keys removed."""
    d = run_dir(key)
    res = read_json(d / "results.json")
    if not isinstance(res, dict):
        raise FileNotFoundError(f"run {key} is not in the cache")
    atomic_save_npz(d / name, **arrays)
    res = {k: v for k, v in res.items() if k not in drop and k != "results_sha256"}
    res.update(updates)
    res["files"] = dict(res.get("files") or {}, **{name: sha256_file(d / name)})
    res["results_sha256"] = results_digest(res)
    atomic_write_json(d / "results.json", res)
    return res


def bad_run(key: str) -> bool:
    """A run folder exists but fails its integrity check (a read says so, never deletes)."""
    return run_dir(key).is_dir() and load_results(key) is None


def remove_run(key: str) -> None:
    """Delete a run folder (the worker and the CLI, never a page read)."""
    shutil.rmtree(run_dir(key), ignore_errors=True)


def load_npz(key: str, name: str) -> dict[str, np.ndarray] | None:
    """An npz file of a verified run as a dict of arrays (None if absent)."""
    p = run_dir(key) / name
    if not p.is_file():
        return None
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def list_runs() -> list[dict[str, Any]]:
    """results.json of every complete run in the cache (cheap: hashes are not re-checked)."""
    out = []
    root = runs_dir()
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if d.name.startswith("."):
            continue
        res = read_json(d / "results.json")
        if isinstance(res, dict) and "run_key" in res:
            out.append(res)
    return out


def pid_alive(pid: int | None) -> bool:
    """True if a process with this pid exists on this host and is not a zombie."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child that nobody has waited for yet is a zombie: dead for our purpose
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def clean_tmp() -> None:
    """Remove temporary run folders (and temp files) whose writing process on this host died.

    Folders written by another host sharing the cache are left alone: their pid means nothing
    here.
    """
    root = runs_dir()
    if not root.is_dir():
        return
    for d in root.glob(".tmp-*"):
        parts = d.name.split("-")  # .tmp, key, host, pid, rand
        if len(parts) != 5 or parts[2] != _HOST or not parts[3].isdigit():
            continue
        if not pid_alive(int(parts[3])):
            shutil.rmtree(d, ignore_errors=True)
