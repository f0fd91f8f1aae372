"""On an empty cache the Run page shows a number from the first visit: the shipped reference
calibration scaled by a one-second probe of this CPU, said to be a first guess."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from xdd.core.config import CODE_VERSION
from xdd.jobs import workerproc
from xdd.storage import store

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def test_the_run_page_shows_a_first_guess_on_an_empty_cache(monkeypatch, tmp_path):
    import xdd.estimate as E

    monkeypatch.setattr(workerproc, "ensure_worker", lambda *a, **k: False)
    rates = {"pretrain_step_s": {"fp32": 0.05}, "retrain_step_s": 0.05, "score_image_s": 3e-4}
    entry = {"rates": {str(E.worker_threads()): rates}, "pretrain_step_s": 0.05,
             "retrain_step_s": 0.05, "score_image_s": 3e-4,
             "project_point_s": {"pca": 1e-5, "tsne": 4e-3, "umap": 3e-3}}
    ref = tmp_path / "reference.json"
    store.atomic_write_json(ref, {"version": E.CALIBRATION_VERSION, "code_version": CODE_VERSION,
                                  "probe_s": 1e-3, "cpu": {"presets": {"quick": entry},
                                                           "data_s": 1.0}})
    monkeypatch.setenv("XDD_ESTIMATE_REFERENCE", str(ref))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/run.py").run()
    assert not at.exception
    shown = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "first guess" in shown and "own runs replace it" in shown  # a number, said to be one
    assert "being timed" not in shown  # nothing times the machine, so nothing says it does
    assert not E.calibration_path().exists()  # a guess writes nothing


def test_the_shipped_reference_is_a_current_calibration(monkeypatch):
    from xdd.estimate.first_guess import REFERENCE, first_guess

    monkeypatch.setenv("XDD_ESTIMATE_REFERENCE", str(REFERENCE))
    got = first_guess("cpu", 1)
    assert got is not None and "quick" in got["presets"] and "1" in got["presets"]["quick"]["rates"]
