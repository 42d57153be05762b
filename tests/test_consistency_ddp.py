"""The re-projection consistency term under DistributedDataParallel (torchrun, 2 CPU processes, gloo): the term is
computed on the unwrapped network outside DDP's forward (:class:`scripts.training.losses.ConsistencySliceInferer`),
so its gradients must still be all-reduced with the rest. Each rank's gradients after the step must equal the mean,
over the two ranks' batches, of the same step without DDP (which includes the consistency term: it is checked to
change the gradients)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from ddp_consistency_worker import network, rank_batch, step  # noqa: E402

pytestmark = pytest.mark.slow  # two torchrun processes


def _grads(batch: dict, weight: float) -> dict[str, torch.Tensor]:
    net = network()
    step(net, batch, weight)
    return {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}


def test_consistency_gradients_are_all_reduced_under_ddp(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(REPO / "tests" / "ddp_consistency_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = [_grads(rank_batch(r), weight=0.5) for r in range(2)]
    without = [_grads(rank_batch(r), weight=0.0) for r in range(2)]
    assert set(ranks[0]) == set(ranks[1]) == set(single[0])
    changed = 0
    for name in single[0]:
        mean = (single[0][name] + single[1][name]) / 2
        for r in range(2):
            torch.testing.assert_close(ranks[r][name], mean, rtol=1e-4, atol=1e-7)
        changed += not torch.allclose(mean, (without[0][name] + without[1][name]) / 2, rtol=1e-3, atol=1e-6)
    # the consistency term reaches the encoder and decoder: most parameters' gradients differ without it
    assert changed > len(single[0]) // 2, f"{changed} of {len(single[0])} gradients changed by the term"
