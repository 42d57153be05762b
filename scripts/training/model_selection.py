"""Choosing ``models/model.pt``: the validation metric that selects the checkpoint and its direction.

:class:`SliceLossMetric` is the training loss as a validation metric (the official criterion); ``metric_sign``,
``metric_cmp`` and ``split_metrics`` turn ``--checkpoint_metric`` into the evaluator's key metric, its
comparison and the checkpoint saver's sign.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.metrics import Metric
from scripts.slicing import axis_code

__all__ = ["SliceLossMetric", "LOWER_IS_BETTER", "metric_sign", "metric_cmp", "split_metrics"]


class SliceLossMetric(Metric):
    """The training loss as a validation metric (the official checkpoint criterion ``val/rec_loss``).

    Fed ``(pred, label)`` by a ``SupervisedEvaluator``: ``pred`` (B, A, X, Y, Z), channel ``a`` the volume rendered
    slice by slice along ``axes[a]`` (:class:`scripts.inference.inferers.ReconstructionInferer`), ``label``
    (B, 1, X, Y, Z) the target. It evaluates ``loss_fn`` on the slices of each channel along its own axis, in the
    network's slice layout (axial: fixes k, rows i, cols j; coronal: fixes j, rows i, cols k; sagittal: fixes i,
    rows j, cols k), in chunks of ``batch_size`` slices, with the loss module in eval mode (LPIPS dropout off, as
    the official model in validation) and no gradients, and returns the mean over all slices of all axes.

    ``axes=("axial",)`` (the bundle's default, one third of the cost) or all three (the official criterion: its
    validation list holds the slices of all three axes, see the model card's training table).
    """

    def __init__(
        self,
        loss_fn: torch.nn.Module,
        batch_size: int = 20,
        output_transform=lambda x: x,
        device="cpu",
        axes: Sequence[str | int] = ("axial",),
    ) -> None:
        self.loss_fn, self.batch_size = loss_fn, int(batch_size)
        self.axes = [axis_code(a) for a in axes]
        if not self.axes:
            raise ValueError("SliceLossMetric needs at least one axis")
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._sum, self._count = 0.0, 0

    @staticmethod
    def _slices(vol: torch.Tensor, axis: int) -> torch.Tensor:
        """(B, X, Y, Z) -> (B * n, 1, rows, cols): the slices along ``axis`` in the network's layout."""
        if axis == 0:
            s = vol.permute(0, 3, 1, 2)  # axial: (B, k, i, j)
        elif axis == 1:
            s = vol.permute(0, 2, 1, 3)  # coronal: (B, j, i, k)
        else:
            s = vol  # sagittal: (B, i, j, k)
        return s.reshape(-1, 1, *s.shape[-2:])

    def update(self, output) -> None:
        pred, label = output
        pred = torch.stack(list(pred)) if isinstance(pred, (list, tuple)) else pred
        label = torch.stack(list(label)) if isinstance(label, (list, tuple)) else label
        if pred.ndim == 4:  # (B, X, Y, Z) without a channel
            pred = pred[:, None]
        if pred.shape[1] != len(self.axes):
            raise ValueError(
                f"SliceLossMetric: the prediction has {pred.shape[1]} channel(s), one per slicing axis expected "
                f"({len(self.axes)}: {self.axes}); give the validation inferer the same axes as the metric"
            )
        target = label.float().reshape(-1, *label.shape[-3:]).to(pred.device)  # (B, X, Y, Z)
        was_training = getattr(self.loss_fn, "training", False)
        if hasattr(self.loss_fn, "eval"):
            self.loss_fn.eval()
        try:
            with torch.no_grad():
                for a, axis in enumerate(self.axes):
                    p, t = self._slices(pred[:, a].float(), axis), self._slices(target, axis)
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
