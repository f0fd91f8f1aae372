"""Who may do what: visitors, the admin, read-only mode, and a cache folder that cannot be written.

Served beyond this machine (``--server.address 0.0.0.0``), anyone who reaches the port is a
*visitor*: they may have MAX_JOBS_PER_VISITOR jobs queued or running, the queue holds at most
MAX_QUEUED, and they may cancel only a job no one else follows.  The person who started the
app is the *admin* (``?admin=<token>`` once; the token is XDD_ADMIN_TOKEN, or one generated
and printed to the terminal): no limits, any cancel.  XDD_READ_ONLY=1 shows results and
progress but no Submit or Cancel to visitors.  The limits are enforced in xdd.jobs.api.submit
under the store's write lock, so ten tabs submitting at once cannot pass them.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid

import streamlit as st

from pages._messages import flash
from xdd.jobs import api as jobs
from xdd.jobs import store as jobstore
from xdd.storage import store


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return max(0, int(raw)) if raw else default
    except ValueError:
        return default


MAX_JOBS_PER_VISITOR = _env_int("XDD_MAX_JOBS_PER_VISITOR", jobs.MAX_ACTIVE_PER_VISITOR)
MAX_QUEUED = _env_int("XDD_MAX_QUEUED", jobs.MAX_ACTIVE_TOTAL)


def read_only_setting() -> bool:
    return os.environ.get("XDD_READ_ONLY", "").strip().lower() in ("1", "true", "yes", "on")


def admin_token() -> str:
    """XDD_ADMIN_TOKEN, or a token made once per server process, printed to its terminal and
    kept in cache/jobs/admin-token (readable by its owner only) for the person running it."""
    return os.environ.get("XDD_ADMIN_TOKEN", "").strip() or _generated_token()


@st.cache_resource(show_spinner=False)
def _generated_token() -> str:
    token = secrets.token_urlsafe(18)
    where = ""
    try:
        path = jobstore.jobs_dir() / "admin-token"
        store.atomic_write_bytes(path, (token + "\n").encode())
        os.chmod(path, 0o600)
        where = f" (also in {path})"
    except OSError:
        pass
    print(f"XDD Explorer admin token: {token}{where}\n  open the app once with "
          f"?admin={token} to submit without limits and cancel any job", flush=True)
    return token


def claim_admin() -> None:
    """``?admin=<token>`` makes this browser session the admin; the token leaves the URL."""
    given = st.query_params.get("admin")
    if given is None:
        return
    del st.query_params["admin"]
    if hmac.compare_digest(given.encode(), admin_token().encode()):
        st.session_state["_admin"] = True
    else:
        flash("error", "That admin token is not this app's; you are a visitor.")


def is_admin() -> bool:
    return bool(st.session_state.get("_admin"))


def visitor_id() -> str:
    """Who this browser is, for the limits and the cancel rule: a hash of Streamlit's XSRF
    cookie (one per browser profile, it survives reloads and new tabs), else this session."""
    if "_visitor" not in st.session_state:
        vid = None
        try:
            cookie = st.context.cookies.get("_streamlit_xsrf")
        except Exception:  # no browser (AppTest, bare mode)
            cookie = None
        if isinstance(cookie, str) and cookie:
            vid = "v-" + hashlib.sha256(_xsrf_token(cookie)).hexdigest()[:16]
        st.session_state["_visitor"] = vid or "s-" + uuid.uuid4().hex[:16]
    return st.session_state["_visitor"]


def _xsrf_token(cookie: str) -> bytes:
    """The token inside Streamlit's XSRF cookie, which is re-issued with a fresh 4-byte mask
    on every page load ("2|mask|masked token|timestamp", tornado's format): unmasked, it is
    the same for every load of one browser.  Any other form is used as it is."""
    parts = cookie.strip("\"'").split("|")
    if len(parts) == 4 and parts[0] == "2":
        try:
            mask, masked = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
            if mask:
                return bytes(b ^ mask[i % len(mask)] for i, b in enumerate(masked))
        except ValueError:
            pass
    return cookie.encode()


@st.cache_data(ttl=10, show_spinner=False)
def _cache_problem(root: str) -> str | None:
    return store.check_writable()


def cache_problem() -> str | None:
    """Why the cache folder cannot be written (checked every 10 s at most), or None."""
    return _cache_problem(str(store.cache_root()))


def jobs_readable() -> bool:
    """The job store can be used (it lives in the cache folder, which must be writable)."""
    return cache_problem() is None


def can_submit() -> bool:
    """Submit and Cancel are shown: a writable cache, and not read-only (the admin may)."""
    return cache_problem() is None and (is_admin() or not read_only_setting())


def mode_banner() -> None:
    """One message when this page cannot submit: why, and what it still shows."""
    problem = cache_problem()
    if problem:
        st.error(f"The cache folder cannot be written ({problem}), so nothing can be "
                 "submitted and jobs cannot be followed; cached results are still shown.")
    elif read_only_setting() and not is_admin():
        st.info("This app is read-only: it shows results and the progress of running jobs; "
                "only the person running it can submit or cancel jobs.")
