"""The metrics of :mod:`.paper_metrics` and :mod:`.honest_metrics` in MONAI / Ignite workflows: one metric class and
one handler class, each parameterised by the metric's name.

:class:`CTVolumeMetric` is a ``monai.metrics.CumulativeIterationMetric`` computing one value per batch item (the mean
over its slicing axes); :class:`CTMetricHandler` wraps it in ``monai.handlers.IgniteMetricHandler`` for
``key_val_metric`` / ``additional_metrics`` of a ``SupervisedEvaluator`` fed with ``y_pred`` ``(B, A, X, Y, Z)``
(one reconstruction per slicing axis) and ``y`` ``(B, 1, X, Y, Z)``, in the target scale [0, 1]. In a config::

    "ssim": {"_target_": "scripts.evaluation.metric_handler.CTMetricHandler", "metric": "ssim", "axes": "@eval_axes",
             "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}

``configs/evaluate.json`` declares every metric of :data:`METRICS` this way (``lpips_paper`` only with local LPIPS
weights); validation in ``configs/train.json`` uses the two PSNRs. MONAI's ``MetricsSaver`` writes their per-case
values and summaries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from ignite.metrics.metric import reinit__is_reduced
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from scripts.evaluation.honest_metrics import mae_hu, psnr_true, ssim_true
from scripts.evaluation.paper_metrics import lpips_model, lpips_paper, psnr_paper, ssim_paper
from scripts.slicing import AXES, axis_code

__all__ = ["METRICS", "CTVolumeMetric", "CaseValuesMixin", "CTMetricHandler"]

#: Metric name -> function ``(pred, target, ...) -> float`` on one ``(X, Y, Z)`` volume pair. The paper metrics
#: (``*_paper``) take the slicing ``axis`` (``lpips_paper`` also the LPIPS model); the honest ones take ``clip``.
METRICS: dict[str, Callable[..., float]] = {
    "psnr_paper": psnr_paper,
    "ssim_paper": ssim_paper,
    "lpips_paper": lpips_paper,
    "psnr": psnr_true,
    "ssim": ssim_true,
    "mae_hu": mae_hu,
}


class CTVolumeMetric(CumulativeIterationMetric):
    """One of :data:`METRICS` as a MONAI cumulative metric (one value per batch item).

    Args:
        metric: a name of :data:`METRICS` (``"lpips_paper"`` needs ``lpips``).
        axis: slicing axis of the paper metrics when predictions have one channel (a name or code of
            :mod:`scripts.slicing`).
        axes: when ``y_pred`` has ``A > 1`` channels they are reconstructions along ``axes[:A]``
            (default axial, coronal, sagittal, the evaluation layout); the item's value is their mean.
        clip: clip inputs of the honest metrics to [0, 1] (the paper metrics never clip).
        lpips: the LPIPS model of ``lpips_paper`` (:func:`scripts.evaluation.paper_metrics.lpips_model`).

    Call with ``y_pred`` ``(B, A, X, Y, Z)`` and ``y`` ``(B, 1, X, Y, Z)`` (or lists of channel-first
    tensors); each call appends a ``(B, 1)`` tensor; :meth:`aggregate` returns the mean over all items
    (non-finite values, e.g. the ``inf`` PSNR of a perfect case, are ignored; NaN when none is finite).
    """

    def __init__(
        self,
        metric: str = "psnr",
        axis: str | int = "axial",
        axes: Sequence[str | int] = AXES,
        clip: bool = True,
        lpips: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {tuple(METRICS)}")
        if metric == "lpips_paper" and lpips is None:
            raise ValueError("lpips_paper needs an LPIPS model (scripts.training.losses.LPIPSVGG from local weights)")
        axis_code(axis)
        for a in axes:
            axis_code(a)
        self.metric, self.axis, self.axes, self.clip, self.lpips = metric, axis, tuple(axes), clip, lpips

    def _value(self, pred: np.ndarray, target: np.ndarray, axis: str | int) -> float:
        fn = METRICS[self.metric]
        if self.metric == "lpips_paper":
            return fn(pred, target, self.lpips, axis=axis)
        if self.metric.endswith("_paper"):
            return fn(pred, target, axis=axis)
        return fn(pred, target, clip=self.clip)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise ValueError(f"{type(self).__name__} needs the ground truth y")
        if y_pred.ndim != 5 or y.ndim != 5:
            raise ValueError(
                f"expected y_pred and y of shape (B, C, X, Y, Z); got {tuple(y_pred.shape)} and {tuple(y.shape)}"
            )
        n_ch = y_pred.shape[1]
        if n_ch > 1 and n_ch > len(self.axes):
            raise ValueError(f"y_pred has {n_ch} channels but only {len(self.axes)} slicing axes are named")
        axes = [self.axis] if n_ch == 1 else list(self.axes[:n_ch])
        pred = y_pred.detach().float().cpu().numpy()
        target = y.detach().float().cpu().numpy()
        out = []
        for b in range(pred.shape[0]):
            vals = [self._value(pred[b, c], target[b, 0], axes[c]) for c in range(n_ch)]
            out.append(float(np.mean(vals)))
        return torch.tensor(out, dtype=torch.float64).unsqueeze(1)

    def aggregate(self) -> torch.Tensor:
        return finite_mean(self.get_buffer())


def finite_mean(values: Any) -> torch.Tensor:
    """The mean of the finite values of a metric's buffer (float64 scalar); NaN when there are none (no case, or
    every case undefined): the summary of one per-case value over the cases."""
    if not isinstance(values, torch.Tensor) or values.numel() == 0:
        return torch.tensor(math.nan, dtype=torch.float64)
    finite = values[torch.isfinite(values)]
    return finite.mean() if finite.numel() else torch.tensor(math.nan, dtype=torch.float64)


class CaseValuesMixin:
    """For an ``IgniteMetricHandler`` subclass: each iteration's per-case values published in
    ``engine.state.case_metrics[name]`` (a list, one float per case of the batch), so handlers attached after the
    metrics (the per-case log, the montages) show them without computing anything."""

    def attach(self, engine: Any, name: str) -> None:  # type: ignore[override]
        super().attach(engine, name)  # type: ignore[misc]
        if not hasattr(engine.state, "case_metrics"):
            engine.state.case_metrics = {}
        engine.add_event_handler(Events.ITERATION_STARTED, self._new_iteration)

    def _new_iteration(self, engine: Any) -> None:
        engine.state.case_metrics[self._name] = []  # type: ignore[attr-defined]

    @reinit__is_reduced
    def update(self, output: Sequence[torch.Tensor]) -> None:
        # ignite calls this once per iteration with a batch, or once per case with decollated lists
        if len(output) != 2:
            raise ValueError(f"output must be (y_pred, y), got {len(output)} items")
        values = self.metric_fn(*output)  # type: ignore[attr-defined]
        if self._engine is not None and self._name is not None:  # type: ignore[attr-defined]
            self._engine.state.case_metrics.setdefault(self._name, []).extend(  # type: ignore[attr-defined]
                float(v) for v in values.flatten()
            )


class CTMetricHandler(CaseValuesMixin, IgniteMetricHandler):
    """Ignite handler of the metric named ``metric`` (:class:`CTVolumeMetric`) for a ``SupervisedEvaluator``'s
    ``key_val_metric`` / ``additional_metrics``: one value per case, the mean over the slicing axes of its
    reconstructions.

    Besides MONAI's behaviour (the mean over cases in ``engine.state.metrics[name]``, every case's value in
    ``engine.state.metric_details[name]`` for ``MetricsSaver``), each iteration's values are published in
    ``engine.state.case_metrics[name]`` (a list, one float per case of the batch), so handlers attached after
    the metrics (the per-case log, the montages) show them without computing anything.

    Args:
        metric: a name of :data:`METRICS`: ``psnr_paper``, ``ssim_paper``, ``lpips_paper`` (the paper's, see
            :mod:`scripts.evaluation.paper_metrics`), ``psnr``, ``ssim``, ``mae_hu`` (lower is better; see
            :mod:`scripts.evaluation.honest_metrics`).
        axis, axes, clip: as :class:`CTVolumeMetric`.
        output_transform: ``engine.state.output`` -> ``(y_pred, y)``, e.g.
            ``"$monai.handlers.from_engine(['pred', 'label'])"`` in a config.
        save_details: keep every case's value in ``engine.state.metric_details`` (default True).
        lpips_vgg_weights, lpips_lin_weights: local weight files of ``lpips_paper`` (``python -m scripts
            download_weights --name vgg16,lpips_lin``); its model is built once, here, in eval mode, on ``device``.
            In a config, disable the handler when they are absent: ``"_disabled_": "$@lpips_vgg_weights is None"``
            (MONAI's config parser then leaves its key out of the metrics dict).
        device: where LPIPS runs (default CPU).
    """

    def __init__(
        self,
        metric: str,
        axis: str | int = "axial",
        axes: Sequence[str | int] = AXES,
        clip: bool = True,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
        lpips_vgg_weights: str | None = None,
        lpips_lin_weights: str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        lpips = lpips_model(lpips_vgg_weights, lpips_lin_weights, device) if metric == "lpips_paper" else None
        if metric == "lpips_paper" and lpips is None:
            raise ValueError(
                "lpips_paper needs lpips_vgg_weights (a local VGG16 file); disable the handler without one"
            )
        super().__init__(
            metric_fn=CTVolumeMetric(metric, axis=axis, axes=axes, clip=clip, lpips=lpips),
            output_transform=output_transform,
            save_details=save_details,
        )
