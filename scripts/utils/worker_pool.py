"""A small process pool for batch jobs: a dead worker fails only its own task, and no worker outlives its parent.

:class:`WorkerPool` runs ``fn(*task)`` for each task in up to ``num_workers`` spawned processes and yields
``(task, ok, value)`` as tasks finish (``value``: ``fn``'s result, or a one-line reason when it raised or
its worker died). Compared with ``concurrent.futures.ProcessPoolExecutor``:

* a worker that dies (crash, out-of-memory kill) fails the one task it held and is replaced; the other
  tasks go on (the executor breaks as a whole and fails every task in flight);
* workers exit when the parent dies, even ``kill -9``: on Linux the kernel sends them ``SIGKILL``
  (``prctl(PR_SET_PDEATHSIG)``), elsewhere a watcher thread sees the parent change within a second,
  and an idle worker's pipe to the parent closes;
* workers ignore ``SIGINT``: Ctrl-C reaches the parent only, which stops them (``SIGTERM``) on leaving the
  ``with`` block, so one interrupt gives one message, not a traceback per process.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait
from typing import Any

__all__ = ["WorkerPool", "die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Make this process exit when ``parent_pid`` (its parent) dies, however it dies."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(poll_s)

    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker_main(conn, fn: Callable, initializer: Callable | None, initargs: tuple, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if task is None:
            return
        try:
            out = (True, fn(*task))
        except Exception as e:  # noqa: BLE001 - reported to the parent as the task's failure
            out = (False, f"{type(e).__name__}: {e}\n{''.join(traceback.format_exc(limit=3))}")
        conn.send(out)


class _Worker:
    def __init__(self, ctx, fn, initializer, initargs) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, fn, initializer, initargs, os.getpid()), daemon=True)
        try:  # ignored from birth (an ignored signal stays ignored across exec): Ctrl-C during start-up is the parent's
            old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread
            old = None
        try:
            self.proc.start()
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        child.close()
        self.task: Any = None

    def stop(self, graceful: bool) -> None:
        try:
            if graceful and self.proc.is_alive():
                self.conn.send(None)
                self.proc.join(5)
        except (OSError, ValueError):
            pass
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.conn.close()


class WorkerPool:
    """Run ``fn(*task)`` in ``num_workers`` spawned processes (see the module doc). Use as a context manager.

    Args:
        fn: a module-level function (picklable); its result must be picklable.
        num_workers: processes (>= 1); started as tasks need them.
        initializer, initargs: called once in each worker before its first task.
        start_method: multiprocessing start method (default ``"spawn"``: no fork of a threaded parent).

    Attributes:
        pids: process ids of every worker started (e.g. to clean their temporary files after an interrupt).
    """

    def __init__(
        self,
        fn: Callable,
        num_workers: int,
        initializer: Callable | None = None,
        initargs: tuple = (),
        start_method: str = "spawn",
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.fn = fn
        self.num_workers = int(num_workers)
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self._ctx = mp.get_context(start_method)
        self._workers: list[_Worker] = []
        self.pids: list[int] = []

    def _start(self) -> _Worker:
        w = _Worker(self._ctx, self.fn, self.initializer, self.initargs)
        self._workers.append(w)
        self.pids.append(w.proc.pid)
        return w

    def run(self, tasks: Iterable[tuple]) -> Iterator[tuple[tuple, bool, Any]]:
        """Yield ``(task, ok, value)`` for every task, in the order they finish."""
        pending = collections.deque(tuple(t) for t in tasks)
        idle: list[_Worker] = [w for w in self._workers if w.task is None and w.proc.is_alive()]
        busy: list[_Worker] = []
        while pending or busy:
            while pending and (idle or len(self._workers) < self.num_workers):
                w = idle.pop() if idle else self._start()
                w.task = pending.popleft()
                w.conn.send(w.task)
                busy.append(w)
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
            for w in list(busy):
                if w.conn not in ready and w.proc.sentinel not in ready:
                    continue
                task, msg = w.task, None
                if w.conn in ready or w.conn.poll():
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = None
                busy.remove(w)
                w.task = None
                if msg is None:  # the worker died with the task
                    w.proc.join(5)
                    code = w.proc.exitcode
                    self._workers.remove(w)
                    w.stop(graceful=False)
                    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    yield task, False, (
                        f"the worker process died while running this task ({how}: a crash or out of " "memory)"
                    )
                else:
                    idle.append(w)
                    yield task, msg[0], msg[1]

    def close(self, graceful: bool = True) -> None:
        """Stop every worker (``graceful``: let idle ones exit; else ``SIGTERM`` at once, then ``SIGKILL``)."""
        for w in self._workers:
            w.stop(graceful)
        self._workers.clear()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(graceful=exc_type is None)
