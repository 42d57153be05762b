"""The worker pool (scripts.utils.worker_pool): a worker that dies fails only its own task."""

from __future__ import annotations

import os

from scripts.utils.worker_pool import WorkerPool


def test_worker_pool_a_dead_worker_fails_only_its_task():
    # the task function is the builtin eval, so the spawned workers import nothing heavy
    tasks = [("4 * 4",), ("__import__('os')._exit(7)",), ("int('x')",)] + [(f"{i} + 1",) for i in range(5)]
    with WorkerPool(eval, 2) as pool:
        got = {t[0]: (ok, v) for t, ok, v in pool.run(tasks)}
        pids = list(pool.pids)
    assert {k: v for k, (ok, v) in got.items() if ok} == {"4 * 4": 16, **{f"{i} + 1": i + 1 for i in range(5)}}
    ok, why = got["__import__('os')._exit(7)"]
    assert not ok and "died" in why and "exit code 7" in why
    ok, why = got["int('x')"]
    assert not ok and why.startswith("ValueError: invalid literal")
    for pid in pids:  # all workers stopped on leaving the block
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
