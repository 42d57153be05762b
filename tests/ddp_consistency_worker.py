"""One rank of tests/test_consistency_ddp.py, started by ``torch.distributed.run`` (gloo, CPU): one training step
of the ``small`` network wrapped as ``configs/multi_gpu_train.json`` wraps it (DistributedDataParallel,
``find_unused_parameters=False``), through the training step's inferer with the re-projection consistency term on,
and the loss; writes this rank's gradients (after DDP's all-reduce) to ``OUT/rank<r>.pt``.

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_consistency_worker.py OUT``.
The batch of rank ``r`` is :func:`rank_batch` ``(r)``, so the test can compute the same step without DDP.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.networks import PerspectiveSampler, build_perx2ct  # noqa: E402
from scripts.projection.geometry import ProjectionGeometry  # noqa: E402
from scripts.training.losses import ConsistencySliceInferer, PerX2CTLoss, ReprojectionConsistency  # noqa: E402

BASE = ProjectionGeometry.from_preset("perx2ct")
CLINICAL = BASE.with_view("pa", sad_mm=1650.0, sid_mm=1800.0, detector_size_mm=(430.0, 430.0)).with_view(
    "lateral", sad_mm=1600.0, sid_mm=1800.0, detector_size_mm=(430.0, 430.0)
)


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_perx2ct("small", PerspectiveSampler(BASE), query_grid=8, volume_shape=32, volume_size_mm=320.0)


def rank_batch(rank: int) -> dict:
    """Rank ``rank``'s batch: 2 samples of random views and targets, each with its own (clinical) geometry."""
    g = torch.Generator().manual_seed(100 + rank)
    return {
        "image": torch.rand(2, 2, 32, 32, generator=g),
        "target": torch.rand(2, 1, 32, 32, generator=g),
        "slice_axis": torch.zeros(2, 1, dtype=torch.long),
        "slice_index": torch.full((2, 1), 5.0 + 7 * rank),
        "geometry": [CLINICAL, BASE],
    }


def step(net: torch.nn.Module, batch: dict, weight: float) -> None:
    """Forward through the training inferer (consistency ``weight``), the loss, backward."""
    on = ReprojectionConsistency(weight=weight, geometry=BASE, slices=3, detector_shape=(16, 16))
    kw = {k: batch[k] for k in ("slice_axis", "slice_index", "geometry")}
    pred = ConsistencySliceInferer(on)(batch["image"], net, **kw)
    PerX2CTLoss(lpips_vgg_weights=None, consistency=on)(pred, batch["target"]).backward()


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    ddp = torch.nn.parallel.DistributedDataParallel(network(), find_unused_parameters=False)
    step(ddp, rank_batch(rank), weight=0.5)
    grads = {n: p.grad.detach().clone() for n, p in ddp.module.named_parameters() if p.grad is not None}
    torch.save(grads, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
