"""The Run page served to a class: per-visitor and whole-queue limits, the cancel rule for a
shared job, the admin token, the read-only mode, and bad input (numbers out of range, no digit,
a bad ``?job=``, a cache folder that cannot be written) -- each one clear message, never a
traceback, nothing half-written in the cache.  AppTest, no worker process."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xdd.jobs import api as jobs
from xdd.jobs import workerproc

from _apptest import alerts, open_run
from xdd.storage import store
from xdd.core.config import preset



@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workerproc, "ensure_worker", lambda *a, **k: False)


def cache_files(root: Path) -> list[str]:
    """Everything in the cache but the job store's own files (what a run or a tmp leaves)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.parent.name != "jobs")


def tiny(**kw: Any):
    return preset("tiny", ood_digit=kw.pop("digit", 8), **kw)


# ---------------------------------------------------------------- limits and cancel rights


def test_visitor_limit_is_a_clear_message(xdd_cache: Path) -> None:
    at = open_run()
    at.pills(key="digits").set_value([3, 8])
    at.segmented_control(key="preset").set_value("tiny")
    at.number_input(key="reps").set_value(2)
    at.run()
    at.button(key="submit").click().run()
    assert not at.exception
    got = sorted((j["config"]["ood_digit"], j["config"]["seed"]) for j in jobs.list_jobs())
    assert got == [(3, 0), (3, 1), (8, 0)]  # the per-visitor limit is 3
    assert alerts(at)["error"] == [
        "Not submitted: digit 8 · 10 shots · seed 1 · tiny. Limit reached: you have 3 jobs "
        "queued or running, the limit per visitor is 3. Wait until one has finished (or cancel "
        "one), then submit again."]
    assert len(at.query_params["job"]) == 3  # the page follows the three it queued
    # The same config again is not a new job: it is followed, never refused.
    at.pills(key="digits").set_value([3])
    at.number_input(key="reps").set_value(1)
    at.run()
    at.button(key="submit").click().run()
    assert not at.exception and not alerts(at)["error"] and len(jobs.list_jobs()) == 3


def test_whole_queue_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    for s in range(jobs.MAX_ACTIVE_TOTAL):
        jobs.submit(tiny(seed=100 + s))  # the CLI: no limits
    at = open_run()
    at.segmented_control(key="preset").set_value("tiny").run()
    at.button(key="submit").click().run()
    assert not at.exception
    (err,) = alerts(at)["error"]
    assert "Limit reached: the queue is full: 20 jobs are queued or running" in err
    assert len(jobs.list_jobs(100)) == jobs.MAX_ACTIVE_TOTAL


def test_shared_job_cannot_be_cancelled_by_a_visitor_but_by_the_admin(monkeypatch) -> None:
    shared = jobs.submit(tiny(seed=1), visitor="someone-else")
    at = open_run()
    at.segmented_control(key="preset").set_value("tiny").run()
    at.button(key="submit").click().run()  # this visitor's own job (seed 0)
    own = next(j["id"] for j in jobs.list_jobs() if j["id"] != shared)
    assert at.query_params["job"] == own
    at.query_params["job"] = [own, shared]
    at.run()
    assert not at.exception
    assert jobs.status(shared)["followers"][0] == "someone-else"
    assert len(jobs.status(shared)["followers"]) == 2  # opening its link made us a follower
    btn = at.button(key=f"cancel-{shared}")
    assert btn.label == "Shared" and btn.disabled
    assert "started the app): only that person can cancel it." in btn.help
    mine = at.button(key=f"cancel-{own}")
    assert mine.label == "Cancel" and not mine.disabled
    mine.click().run()
    assert not at.exception and jobs.status(own)["status"] == "cancelled"
    with pytest.raises(jobs.NotAllowed):  # what the button would have asked for
        jobs.cancel(shared, visitor=at.session_state["_visitor"])

    monkeypatch.setenv("XDD_ADMIN_TOKEN", "s3cret")
    wrong = open_run(job=shared, admin="guess")
    assert "That admin token is not this app's; you are a visitor." in alerts(wrong)["error"]
    assert wrong.button(key=f"cancel-{shared}").disabled
    admin = open_run(job=shared, admin="s3cret")
    cancel = admin.button(key=f"cancel-{shared}")
    assert cancel.label == "Cancel" and not cancel.disabled
    cancel.click().run()
    assert not admin.exception and jobs.status(shared)["status"] == "cancelled"


def test_read_only_mode_shows_progress_but_no_submit_or_cancel(monkeypatch, tiny_run) -> None:
    running = jobs.submit(tiny(seed=3))
    done = jobs.submit(tiny_run.cfg)
    monkeypatch.setenv("XDD_READ_ONLY", "1")
    at = open_run(job=[running, done])
    assert not [b for b in at.button if b.key == "submit" or str(b.key).startswith("cancel-")]
    assert not at.get("number_input") and not at.get("segmented_control")
    assert any("This app is read-only" in i for i in alerts(at)["info"])
    assert [p.proto.text for p in at.get("progress")] == ["Queued: waits for the worker"]
    assert any(s.value.startswith("Already computed") for s in at.success)
    assert jobs.status(running)["followers"] == []  # a read-only page writes nothing
    assert "Read-only" in "\n".join(c.value for c in at.sidebar.caption)
    # The admin still may.
    monkeypatch.setenv("XDD_ADMIN_TOKEN", "s3cret")
    admin = open_run(job=running, admin="s3cret")
    assert admin.button(key="submit").label == "Submit 1 job"
    assert admin.button(key=f"cancel-{running}").label == "Cancel"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("key,value,message", [
    ("shots", 5000, "**Shots per digit** 5,000 is out of range; accepted: 1 to 1,000."),
    ("shots", 0, "**Shots per digit** 0 is out of range; accepted: 1 to 1,000."),
    ("reps", 11, "**Repetitions** 11 is out of range; accepted: 1 to 10."),
    ("reps", -2, "**Repetitions** -2 is out of range; accepted: 1 to 10."),
    ("seed0", 10000, "**First seed** 10,000 is out of range; accepted: 0 to 9,999."),
    ("seed0", -1, "**First seed** -1 is out of range; accepted: 0 to 9,999."),
])
def test_numbers_out_of_range(xdd_cache: Path, key: str, value: int, message: str) -> None:
    at = open_run()
    at.number_input(key=key).set_value(value).run()
    assert not at.exception
    assert alerts(at)["error"] == [f"These settings cannot run:\n\n- {message}"]
    assert not [b for b in at.button if b.key == "submit"]  # nothing can be submitted
    assert jobs.list_jobs() == [] and cache_files(xdd_cache) == []
    at.number_input(key=key).set_value({"shots": 10, "reps": 1, "seed0": 0}[key]).run()
    assert not alerts(at)["error"] and at.button(key="submit").label == "Submit 1 job"


def test_no_digit_selected(xdd_cache: Path) -> None:
    at = open_run()
    at.pills(key="digits").set_value([]).run()
    assert not at.exception
    msgs = alerts(at)
    assert msgs["info"] == ["Select at least one held-out digit."] and not msgs["error"]
    assert not [b for b in at.button if b.key == "submit"]
    assert jobs.list_jobs() == [] and cache_files(xdd_cache) == []


@pytest.mark.parametrize("bad,says", [
    ("../../etc/passwd", "malformed job id '../../etc/passwd'"),
    ("/etc/passwd", "malformed job id '/etc/passwd'"),
    ("0" * 31, "malformed job id"),
    ("<script>alert(1)</script>", "malformed job id"),
    ("F" * 32, "malformed job id"),
    ("f" * 32, f"no job '{'f' * 32}' in this app's queue"),
])
def test_bad_job_in_the_address_bar(xdd_cache: Path, bad: str, says: str) -> None:
    at = open_run(job=bad)
    msgs = alerts(at)
    assert len(msgs["warning"]) == 1 and not msgs["error"], msgs
    assert msgs["warning"][0].startswith("The job in the address bar is not known here")
    assert says in msgs["warning"][0]
    assert jobs.list_jobs() == [] and cache_files(xdd_cache) == []
    assert not (Path("/etc") / "passwd.tmp").exists()


def test_cache_folder_that_cannot_be_written(monkeypatch, tiny_run) -> None:
    reason = f"{tiny_run.cache}: Permission denied"
    monkeypatch.setattr(store, "check_writable", lambda root=None: reason)
    before = cache_files(tiny_run.cache)
    at = open_run()
    msgs = alerts(at)
    assert msgs["error"] == [f"The cache folder cannot be written ({reason}), so nothing can be "
                             "submitted and jobs cannot be followed; cached results are still "
                             "shown."], msgs
    assert not msgs["warning"]
    assert not [b for b in at.button if b.key == "submit"]
    assert "unavailable: the cache folder cannot be written" in "\n".join(
        m.value for m in at.sidebar.markdown)
    res = open_run()
    res.switch_page("pages/results.py").run()  # the cached run is still shown
    assert not res.exception and res.get("plotly_chart")
    assert cache_files(tiny_run.cache) == before


def test_check_writable_probe(tmp_path: Path) -> None:
    assert store.check_writable(tmp_path / "new") is None
    assert list((tmp_path / "new").iterdir()) == []  # the probe file is gone
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "Not a directory" in store.check_writable(blocker / "cache")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        got = store.check_writable(ro)
        import os

        if os.geteuid() != 0:  # root writes through permission bits
            assert got == f"{ro}: Permission denied"
    finally:
        ro.chmod(0o755)


def test_visitor_is_the_xsrf_token_not_its_mask() -> None:
    import secrets

    from pages._access import _xsrf_token

    token = secrets.token_bytes(16)

    def cookie() -> str:  # what Streamlit sets on each page load: a new mask, the same token
        mask = secrets.token_bytes(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(token))
        return f"2|{mask.hex()}|{masked.hex()}|1767225600"

    a, b = cookie(), cookie()
    assert a != b and _xsrf_token(a) == _xsrf_token(b) == token
    assert _xsrf_token("plain") == b"plain"
