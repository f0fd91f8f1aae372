"""The benchmark scripts, grouped like the package (run each by its path, see README.md):

- ``bench/run.py``: the driver of benchmarks 1-6 (rewrites its part of docs/PERFORMANCE.md);
- ``bench/gpu.py``: benchmark 7, on a GPU; ``bench/first_demo.py``: the first demo and the
  CLI runs against their estimates;
- ``bench/pipeline/``: a run and its stages (end to end, training loops, maps, scoring, the
  unlabeled reference, pretraining precision, numpy's BLAS, thread counts);
- ``bench/app/``: the served app (page rendering in Chromium, a class of open pages);
- ``bench/tuning/``: the settings searches (retraining, the unlabeled variants, the GAN's
  balance, the k-NN's k).

Shared helpers: ``bench/_common.py`` (the machine, timing, JSON, the marked sections of
docs/PERFORMANCE.md) and ``bench/_browser.py`` (the app served and headless Chromium).  A
script run by its path puts the repo root on ``sys.path`` first, then imports
``bench._common``; ``python -m bench.pipeline.e2e`` works as well.
"""
