"""Data preparation: raw chest CTs -> prepared cases (CT target, 1 mm cube, PA and lateral DRRs) + ``datalist.json``.

The workflow behind ``configs/prepare.json``::

    python -m monai.bundle run --config_file configs/prepare.json --dataset_dir RAW --output_dir OUT \\
        [--split "[0.8,0.1,0.1]"] [--split_file FILE] [--seed 0] [--num_workers 2]

    torchrun --standalone --nproc_per_node N -m monai.bundle run --config_file configs/prepare.json ...

:class:`PrepareWorkflow` is the sequence of the steps, each in its own module:

1. discovery (:mod:`scripts.data.case_discovery`): the cases of ``RAW``, and the entries skipped with a reason
   (looping links, links back into the dataset, unreadable entries);
2. sharding (:mod:`scripts.utils.shards`): under torchrun, rank ``r`` takes ``cases[r::world_size]``;
3. case writing (:mod:`scripts.prepare.case_batch`, :mod:`scripts.prepare.case_writer`), in this process or in ``num_workers``
   worker processes (:mod:`scripts.utils.worker_pool`): each case through the chain ``preprocessing`` into
   ``OUT/<case_id>/``;
4. on rank 0: ``OUT/failures.json`` (a list of ``{"case_id", "source", "reason", "error"}``, sorted by
   case id: the cases of the last run that are not prepared, and the skipped entries) and
   ``OUT/datalist.json`` (:mod:`scripts.data.datalist`) of every complete case folder.

A finished case folder is skipped on a rerun (delete it to prepare the case again); temporary folders
and rank files of an interrupted run are removed at start. A failing case never stops the batch. Ctrl-C
(or SIGTERM) stops the run with one line and exit status 130; the cases being written are removed, the
finished ones kept. Otherwise the exit status is non-zero only when no case is prepared at the end (none
succeeded and none was already done).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scripts.data.case_discovery import scan_dataset
from scripts.data.datalist import SPLIT_NAMES, build_datalist, check_split, read_split_file
from scripts.prepare.case_batch import prepare_cases
from scripts.prepare.case_writer import TMP_PREFIX, complete_cases
from scripts.utils.atomic import write_json_atomic
from scripts.utils.shards import RANK_FILE, Shards

__all__ = ["PrepareError", "PrepareWorkflow"]

logger = logging.getLogger(__name__)


class PrepareError(ValueError):
    """A problem with the whole preparation run (not one case), with what to do about it."""


def _count(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **{s: sum(r["status"] == s for r in results) for s in ("prepared", "skipped", "failed")},
        "cases": len(results),
    }


# ------------------------------------------------------------------------------------ workflow
class PrepareWorkflow:
    """The runner of ``configs/prepare.json``: ``initialize()``, ``run()``, ``finalize()``.

    Size: MONAI's workflow contract over the steps of :mod:`scripts.data.case_discovery`, :mod:`scripts.utils.shards`,
    :mod:`scripts.prepare.case_batch` and :mod:`scripts.data.datalist`; each method is one step.

    Args:
        dataset_dir: folder of raw CTs (see :mod:`scripts.data.case_discovery`).
        output_dir: folder of prepared cases (created).
        preprocessing: the transform chain applied to ``{"case_id", ct_key: path}``.
        split, split_file, seed: the datalist split (see :func:`scripts.data.datalist.assign_split`).
        num_workers: worker processes per rank (``0``: prepare in this process).
        ct_key, view_keys: keys of the target volume and of the DRRs in the chain's output.
        progress: show a tqdm progress bar (automatically off when stderr is not a terminal).
        dist_timeout_s: timeout of the gloo barriers under torchrun.

    ``run()`` returns ``{"prepared", "skipped", "failed", "cases"}`` (all ranks on rank 0, this rank's
    elsewhere); ``finalize()`` logs it and raises ``SystemExit`` with one line when no case is prepared.
    """

    def __init__(
        self,
        dataset_dir: str,
        output_dir: str,
        preprocessing: Callable,
        split: Any = (0.8, 0.1, 0.1),
        split_file: str | None = None,
        seed: int = 0,
        num_workers: int = 0,
        ct_key: str = "ct",
        view_keys: Sequence[str] = ("pa", "lateral"),
        progress: bool = True,
        dist_timeout_s: float = 48 * 3600,
    ) -> None:
        self.dataset_dir, self.output = str(dataset_dir), Path(output_dir)
        self.preprocessing = preprocessing
        self.split, self.split_file, self.seed = split, split_file or None, int(seed)
        self.num_workers = max(0, int(num_workers))
        self.ct_key, self.view_keys = ct_key, tuple(view_keys)
        self.progress = progress
        self.shards = Shards(dist_timeout_s)
        self.cases: list[tuple[str, str]] = []
        self.skipped: list[dict[str, str]] = []
        self.summary: dict[str, Any] = {}
        self._initialized = False

    def initialize(self) -> None:
        """Check the arguments, find the cases, join the process group under torchrun, and (rank 0)
        remove the temporary folders and rank files of an interrupted run."""
        _setup_logging()
        if os.path.realpath(self.output) == os.path.realpath(self.dataset_dir):
            raise PrepareError(f"output_dir {self.output} is the dataset_dir: give a separate --output_dir")
        check_split(self.split)
        if self.split_file:
            read_split_file(self.split_file)
        self.cases, skipped = scan_dataset(self.dataset_dir, exclude=[self.output])
        self.skipped = [s.as_failure() for s in skipped]
        self.shards.join()
        if self.shards.rank == 0:
            self.output.mkdir(parents=True, exist_ok=True)
            for e in os.scandir(self.output):
                if e.name.startswith(TMP_PREFIX) and e.is_dir():
                    logger.info("removing %s left by an interrupted run", e.path)
                    shutil.rmtree(e.path, ignore_errors=True)
                elif RANK_FILE.fullmatch(e.name) or (e.name.startswith(".") and e.name.endswith(".tmp")):
                    os.remove(e.path)
        self.shards.barrier()
        self._initialized = True

    def run(self) -> dict[str, Any]:
        """Prepare this rank's cases, then (rank 0, after all ranks) write failures.json and datalist.json."""
        if not self._initialized:
            self.initialize()
        mine = self.shards.mine(self.cases)
        logger.info(
            "%d case(s) in %s; this process prepares %d into %s (%d worker(s))",
            len(self.cases),
            self.dataset_dir,
            len(mine),
            self.output,
            self.num_workers,
        )
        results = self.shards.gather(
            prepare_cases(
                mine,
                self.output,
                self.preprocessing,
                self.shards,
                num_workers=self.num_workers,
                ct_key=self.ct_key,
                view_keys=self.view_keys,
                progress=self.progress,
                log=logger,
            ),
            self.output,
        )
        if self.shards.rank == 0:
            self._write_lists(results)
        self.summary = _count(results)
        self.shards.barrier()
        return self.summary

    def finalize(self) -> dict[str, Any]:
        """Leave the process group, print the summary, and raise ``SystemExit`` when no case is prepared."""
        self.shards.leave()
        n_ok = len({c for c, _ in self.cases}.intersection(complete_cases(self.output)))
        failures = self.output / "failures.json"
        if n_ok == 0:
            what = f"no case succeeded out of {len(self.cases)}" if self.cases else f"no CT found in {self.dataset_dir}"
            raise SystemExit(f"prepare: {what} (see {failures})")
        if self.shards.rank == 0 and self.summary:
            s = self.summary
            print(
                f"prepared {s['prepared']}, skipped {s['skipped']} (already done), failed {s['failed']} "
                f"(see {failures})",
                flush=True,
            )
        return self.summary

    def _write_lists(self, results: list[dict[str, Any]]) -> None:
        """Rank 0: failures.json (this run's failed cases and the skipped entries) and datalist.json."""
        failed = [
            {k: r[k] for k in ("case_id", "source", "reason", "error", "traceback") if k in r}
            for r in results
            if r["status"] == "failed"
        ]
        write_json_atomic(self.output / "failures.json", sorted(failed + self.skipped, key=lambda r: r["case_id"]))
        datalist = build_datalist(self.output, split=self.split, split_file=self.split_file, seed=self.seed)
        write_json_atomic(self.output / "datalist.json", datalist)
        logger.info(
            "datalist %s: %d training / %d validation / %d test",
            self.output / "datalist.json",
            *(len(datalist[k]) for k in SPLIT_NAMES),
        )


def _setup_logging() -> None:
    if not logging.getLogger().hasHandlers() and not logger.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s prepare %(levelname)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(h)
        logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
