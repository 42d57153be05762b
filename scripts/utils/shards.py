"""torchrun sharding of a batch job: which items this process takes, barriers, and gathering results on rank 0.

Under ``torchrun`` (``WORLD_SIZE`` > 1) rank ``r`` takes ``items[r::world_size]``; each rank writes its
results to ``<folder>/results.rank<r>.json``; after a gloo barrier rank 0 reads and removes them. Without
torchrun every method is a no-op and the one process takes everything.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from scripts.utils.atomic import write_json_atomic

__all__ = ["Shards", "RANK_FILE", "is_rank0"]

#: Name pattern of the per-rank result files (removed by rank 0, and at the start of a run).
RANK_FILE = re.compile(r"results\.rank\d+\.json")


class Shards:
    """The process group of a batch job (gloo, joined only when ``WORLD_SIZE`` > 1).

    Args:
        timeout_s: barrier timeout (ranks wait for the slowest one).
    """

    def __init__(self, timeout_s: float = 48 * 3600) -> None:
        self.timeout_s = float(timeout_s)
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
        self._own_group = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def join(self) -> None:
        """Join (or adopt) the default process group when running under torchrun."""
        if not self.distributed:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=self.timeout_s))
            self._own_group = True
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def leave(self) -> None:
        """Destroy the process group if :meth:`join` created it."""
        if self._own_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._own_group = False

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def mine(self, items: Sequence[Any]) -> list[Any]:
        """This rank's share: ``items[rank::world_size]``."""
        return list(items[self.rank :: self.world_size])

    def gather(self, results: list[Any], folder: str | os.PathLike) -> list[Any]:
        """Every rank's ``results`` on rank 0 (in rank order), this rank's elsewhere; all ranks must call it."""
        if not self.distributed:
            return results
        folder = Path(folder)
        write_json_atomic(folder / f"results.rank{self.rank}.json", results)
        self.barrier()
        if self.rank != 0:
            return results
        out: list[Any] = []
        for r in range(self.world_size):
            f = folder / f"results.rank{r}.json"
            out.extend(json.loads(f.read_text()))
            f.unlink()
        return out


def is_rank0() -> bool:
    """True in a single process and on rank 0 of an initialised process group."""
    return (
        not (torch.distributed.is_available() and torch.distributed.is_initialized())
        or torch.distributed.get_rank() == 0
    )
