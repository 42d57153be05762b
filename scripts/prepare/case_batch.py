"""A batch of cases through :mod:`scripts.prepare.case_writer`: in this process or a worker pool, with a progress bar.

:func:`prepare_cases` is step 3 of :class:`scripts.prepare.workflow.PrepareWorkflow`: each ``(case_id, source)`` becomes
``<output_dir>/<case_id>/`` (finished folders are skipped), each result is logged as it comes, and an interrupt
leaves no partial case.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scripts.errors import acknowledge, stop
from scripts.prepare.case_writer import TMP_PREFIX, is_case_complete, prepare_case
from scripts.utils.shards import Shards
from scripts.utils.worker_pool import WorkerPool

__all__ = ["prepare_cases", "CaseProgress"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ worker side
_WORKER: dict[str, Any] = {}


def _init_worker(preprocessing: Callable, output_dir: str, ct_key: str, view_keys: tuple, threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(threads)))
    try:
        import itk

        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(max(1, int(threads)))
    except Exception:  # noqa: BLE001 - thread limits are an optimisation
        pass
    _WORKER.update(preprocessing=preprocessing, output_dir=output_dir, ct_key=ct_key, view_keys=view_keys)


def _worker_case(case_id: str, source: str) -> dict[str, Any]:
    w = _WORKER
    return prepare_case(case_id, source, w["output_dir"], w["preprocessing"], w["ct_key"], w["view_keys"])


def _failed(case_id: str, source: str, reason: str, error: str) -> dict[str, Any]:
    return {"case_id": case_id, "source": source, "status": "failed", "seconds": 0.0, "reason": reason, "error": error}


def prepare_cases(
    cases: list[tuple[str, str]],
    output_dir: Path,
    preprocessing: Callable,
    shards: Shards,
    num_workers: int = 0,
    ct_key: str = "ct",
    view_keys: tuple[str, ...] = ("pa", "lateral"),
    progress: bool = True,
    log: logging.Logger = logger,
) -> list[dict[str, Any]]:
    """Prepare ``cases`` (``(case_id, source)`` pairs) into ``output_dir``; one result dict per case, sorted by id.

    Finished case folders are skipped; the others go through :func:`scripts.prepare.case_writer.prepare_case` in this
    process (``num_workers`` 0, or a single case) or in a :class:`scripts.utils.worker_pool.WorkerPool` (a dead worker
    fails its case only). Each result is logged to ``log`` as it comes. Ctrl-C: the cases being written are
    removed, the finished ones kept, one line and exit status 130 (:func:`scripts.errors.stop`).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    done = [
        {"case_id": c, "source": s, "status": "skipped", "seconds": 0.0}
        for c, s in cases
        if is_case_complete(output_dir / c)
    ]
    todo = [(c, s) for c, s in cases if not is_case_complete(output_dir / c)]
    pool = None
    try:
        with CaseProgress(len(cases), shards, progress, log) as bar:
            for r in done:
                bar.add(r)
            if num_workers == 0 or len(todo) <= 1:
                for cid, src in todo:
                    done.append(bar.add(prepare_case(cid, src, output_dir, preprocessing, ct_key, view_keys)))
            else:
                threads = max(1, (os.cpu_count() or 1) // (num_workers * max(1, shards.local_world_size)))
                args = (preprocessing, str(output_dir), ct_key, view_keys, threads)
                with WorkerPool(_worker_case, num_workers, _init_worker, args) as pool:
                    for (cid, src), ok, value in pool.run(todo):
                        done.append(bar.add(value if ok else _failed(cid, src, value, "WorkerDied")))
    except KeyboardInterrupt:
        acknowledge()  # taken: the stop watchdog leaves the clean-up below alone
        pids = {str(p) for p in (os.getpid(), *(pool.pids if pool is not None else ()))}
        for e in os.scandir(output_dir):
            if e.name.startswith(TMP_PREFIX) and e.name.rsplit("-", 1)[-1] in pids:
                shutil.rmtree(e.path, ignore_errors=True)
        n = sum(r["status"] == "prepared" for r in done)
        # exit status 130 (scripts.errors.Interrupted), the one line on stderr
        raise stop(
            f"prepare: interrupted; {n} case(s) finished in this run are kept, the ones in progress "
            f"were removed; run the same command again to continue"
        ) from None
    return sorted(done, key=lambda r: r["case_id"])


class CaseProgress:
    """A tqdm bar over this rank's cases, with one log line per case (through the bar, so lines and bar do
    not mix; under torchrun each line names its rank, whatever logging configuration is in force)."""

    def __init__(self, total: int, shards: Shards, enabled: bool = True, log: logging.Logger = logger) -> None:
        self.total, self.shards, self.enabled, self.log = total, shards, enabled, log
        self.failed = 0

    def __enter__(self) -> CaseProgress:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        rank = self.shards.rank if self.shards.distributed else None
        self._bar = tqdm(
            total=self.total,
            desc="prepare" if rank is None else f"prepare rank {rank}",
            unit="case",
            disable=None if self.enabled else True,
            position=rank,
        )
        # the logger that owns the console handler (the root logger under configs/logging.conf): redirecting
        # a propagating logger would print every line twice
        self._redirect = logging_redirect_tqdm(loggers=[logging.getLogger() if self.log.propagate else self.log])
        self._redirect.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._redirect.__exit__(*exc)
        self._bar.close()

    def add(self, r: dict[str, Any]) -> dict[str, Any]:
        """Log one case's result and advance the bar; returns ``r``."""
        case = f"[rank {self.shards.rank}] {r['case_id']}" if self.shards.distributed else r["case_id"]
        if r["status"] == "failed":
            self.failed += 1
            self.log.warning("%s: FAILED (%s): %s", case, r.get("error"), r.get("reason"))
            if "traceback" in r:
                self.log.warning("%s: %s", case, "".join(r["traceback"]).rstrip())
        elif r["status"] == "skipped":
            self.log.info("%s: already prepared, skipped", case)
        else:
            self.log.info("%s: prepared in %.1f s", case, r["seconds"])
        for note in r.get("notes", ()):
            self.log.warning("%s: %s", case, note)
        self._bar.update(1)
        self._bar.set_postfix(failed=self.failed)
        return r
