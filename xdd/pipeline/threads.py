"""The thread policy of a run, stated once.

Work that scores no retrained network (the raw-pixel baseline, the pretrained D's scores) may
run in threads beside the retraining: torch, numpy and scikit-learn release the GIL in their
kernels, the pretrained D is only read, and a retraining trains a copy.  It does so only where
the retraining leaves a core free (the job worker's one torch thread on a CPU, or a GPU): with
torch on every core, as ``python -m xdd run`` has it, side threads only compete for the cores,
so the run does the same work one stage after the other.  At most two side threads: on a
2-core machine one, because a second starved the retraining (docs/PERFORMANCE.md).  The maps,
computed after the scores, take the cores the scoring held.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor


def side_threads(dev) -> int:
    """Threads for the scoring beside the retraining: the cores torch leaves free on a CPU
    (0 when it takes them all, at most 2), 2 beside a GPU."""
    import torch

    from xdd.core.device import usable_cores

    if dev.type != "cpu":
        return 2
    return max(0, min(2, usable_cores() - torch.get_num_threads()))


def side_by_side(dev) -> bool:
    """Whether a run's scoring threads may run beside its retraining."""
    return side_threads(dev) > 0


def map_threads(dev, n_side: int) -> int:
    """Threads for the maps: on a CPU, the cores the scoring held (torch's and the side
    threads'), so the worker's one torch thread does not leave a core idle."""
    import torch

    return torch.get_num_threads() + (n_side if dev.type == "cpu" else 0)


class InThisThread:
    """An executor that runs each task when it is submitted, in the calling thread; an error
    (a cancelled job's among them) is raised there at once."""

    def submit(self, fn, *args, **kwargs) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args, **kwargs))
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def side_pool(n_side: int):
    """Where the side stages run: a pool of ``n_side`` threads, or the calling thread."""
    return ThreadPoolExecutor(n_side, thread_name_prefix="score") if n_side else InThisThread()
