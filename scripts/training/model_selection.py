"""Choosing ``models/model.pt``: the validation metric that selects the checkpoint and its direction.

:class:`SliceLossMetric` is the training loss as a validation metric (the official criterion); ``metric_sign``,
``metric_cmp`` and ``split_metrics`` turn ``--checkpoint_metric`` into the evaluator's key metric, its
comparison and the checkpoint saver's sign.
"""

from __future__ import annotations

from typing import Any

import ignite.distributed as idist
import torch
from ignite.metrics import Metric

__all__ = ["SliceLossMetric", "LOWER_IS_BETTER", "metric_sign", "metric_cmp", "split_metrics"]


class SliceLossMetric(Metric):
    """The training loss as a validation metric (the official checkpoint criterion ``val/rec_loss``).

    Fed ``(pred, label)`` volumes (B, 1, X, Y, Z) by a ``SupervisedEvaluator``, it evaluates ``loss_fn`` on the
    axial slices (array dim 2) in chunks of ``batch_size`` slices, with the loss module in eval mode (LPIPS
    dropout off, as the official model in validation) and no gradients, and returns the mean over all slices.
    """

    def __init__(
        self, loss_fn: torch.nn.Module, batch_size: int = 20, output_transform=lambda x: x, device="cpu"
    ) -> None:
        self.loss_fn, self.batch_size = loss_fn, int(batch_size)
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._sum, self._count = 0.0, 0

    def update(self, output) -> None:
        pred, label = output
        pred = torch.stack(list(pred)) if isinstance(pred, (list, tuple)) else pred
        label = torch.stack(list(label)) if isinstance(label, (list, tuple)) else label
        p = pred.float().movedim(-1, 1).reshape(-1, 1, *pred.shape[-3:-1])  # (B * Z, 1, X, Y) axial slices
        t = label.float().to(p.device).movedim(-1, 1).reshape(-1, 1, *label.shape[-3:-1])
        was_training = getattr(self.loss_fn, "training", False)
        if hasattr(self.loss_fn, "eval"):
            self.loss_fn.eval()
        try:
            with torch.no_grad():
                for s in range(0, p.shape[0], self.batch_size):
                    m = min(self.batch_size, p.shape[0] - s)
                    self._sum += float(self.loss_fn(p[s : s + m], t[s : s + m])) * m
                    self._count += m
        finally:
            if was_training:
                self.loss_fn.train()

    def compute(self) -> float:
        if self._count == 0:
            raise RuntimeError("SliceLossMetric: no validation slices were seen")
        total = torch.tensor([self._sum, float(self._count)], dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            total = idist.all_reduce(total)
        return float(total[0] / total[1])


#: Validation metrics where lower is better (the checkpoint keeps the lowest).
LOWER_IS_BETTER = ("val_loss", "val_mae_hu")


def metric_sign(name: str) -> int:
    """+1 when a higher ``name`` is better, -1 when lower is better (``val_loss``)."""
    return -1 if name in LOWER_IS_BETTER else 1


def metric_cmp(name: str):
    """``metric_cmp_fn`` of a ``SupervisedEvaluator`` whose key metric is ``name``: is ``current`` better than
    ``best``?"""
    sign = metric_sign(name)
    return lambda current, best: sign * current > sign * best


def split_metrics(metrics: dict[str, Any], key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(key_val_metric, additional_metrics)`` of an evaluator from a dict of metrics and the name of the one
    that selects the checkpoint (``--checkpoint_metric``)."""
    if key not in metrics:
        raise ValueError(f"--checkpoint_metric {key!r} is not a validation metric; choose one of {sorted(metrics)}")
    return {key: metrics[key]}, {k: v for k, v in metrics.items() if k != key}
