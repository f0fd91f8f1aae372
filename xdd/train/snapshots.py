"""Where a retraining keeps snapshots of its network, for the frames of the embedding moving
(torch-free: the estimate reads it too)."""
from __future__ import annotations

# As fractions of its steps: for 200 steps, 0, 10, 25, 50, 100 and 200 (early steps move the
# embedding most, so the frames crowd there).
SNAPSHOT_FRACTIONS = (0.0, 0.05, 0.125, 0.25, 0.5, 1.0)


def snapshot_steps(total: int) -> tuple[int, ...]:
    return tuple(sorted({round(f * total) for f in SNAPSHOT_FRACTIONS}))
