"""Wall-clock timing shared by the benchmarks: the best of a few runs (the least disturbed by other processes)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(
    fn: Callable[[], object], repeat: int, sync: Callable[[], object] | None = None, warmup: bool = False
) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``fn``; ``sync`` (e.g. ``torch.cuda.synchronize``) runs after
    each call inside its time, and ``warmup`` makes one untimed call first (and its ``sync``)."""
    calls = [fn, sync] if sync is not None else [fn]
    if warmup:
        for c in calls:
            c()
    times = []
    for _ in range(max(1, int(repeat))):
        t = time.perf_counter()
        for c in calls:
            c()
        times.append(time.perf_counter() - t)
    return min(times)
