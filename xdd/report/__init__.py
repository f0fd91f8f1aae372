"""The one report: tables of cached runs, their aggregation, and the generated results document.

Used by the CLI (``python -m xdd report`` / ``sweep``), docs/RESULTS.md and the Results page, so
that the three cannot disagree.  Its modules, bottom to top:

- ``tables``: reading runs (results.json) into one long table, and aggregating it;
- ``targets``: the issue's targets checked on that table;
- ``views``: what the Results page shows beside the aggregation (pure functions on tables);
- ``document``: the markdown results document (docs/RESULTS.md).

Conventions, stated once:

- AUPRC = average precision (sklearn ``average_precision_score``), OOD digit = positive.
- A cell aggregates the runs of one (digit, method, reference): mean, and the **sample**
  standard deviation over those runs (``ddof = 1``; 0 for a single run).  Each run has its own
  labeled draw, retraining start and (in sweeps) its own GAN.
- A mean over digits is the mean of the per-digit means; its "±" is the mean of the per-digit
  s.d.s.
- Every number is shown with its scoring reference (``labeled``: the paper's KDE over the
  labeled embeddings; ``unlabeled``: k-NN to the unlabeled in-distribution training images).
- No method is named here: the methods compared (before, after, baselines) come from the
  method table (:mod:`xdd.core.methods`).
"""
