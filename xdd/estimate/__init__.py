"""Time estimates, from this machine's measurements only.

- :mod:`xdd.estimate.costs`: the cost model, each run costed stage by stage over
  :func:`xdd.pipeline.plan.plan` (pure: no torch, no file writes);
- :mod:`xdd.estimate.rates`: the typed per-stage rates, read from cached runs and from the
  calibration file;
- :mod:`xdd.estimate.calibration`: ``measure()`` (the torch timing) and ``calibrate()``;
- :mod:`xdd.estimate.launcher`: the background calibration, its lock file, a process's age.

The names below are the package's interface; none of these modules imports torch at import.
"""
from xdd.core.device import worker_threads  # the thread count an estimate is for by default
from xdd.estimate.calibration import MEASURED_MODES, calibrate, measure
from xdd.estimate.costs import Estimate, estimate, gan_on_disk, reference_on_disk
from xdd.estimate.launcher import ensure_calibration, process_age_s
from xdd.estimate.rates import (CALIBRATION_VERSION, Rates, calibration_path, load_calibration,
                                rates_from_runs, run_threads)

__all__ = ["CALIBRATION_VERSION", "Estimate", "MEASURED_MODES", "Rates", "calibrate",
           "calibration_path", "ensure_calibration", "estimate", "gan_on_disk",
           "load_calibration", "measure", "process_age_s", "rates_from_runs",
           "reference_on_disk", "run_threads", "worker_threads"]
