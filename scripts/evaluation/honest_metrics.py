"""Honest image-quality metrics of reconstructed CT volumes: the true peak, the true data range, errors in HU.

Inputs are volumes in the *target scale* ``[0, 1] = clip(HU + 1024, 0, 2500) / 2500`` (:data:`scripts.frame.FRAME`),
numpy arrays or torch tensors ``(X, Y, Z)`` (one leading channel accepted), computed in float64 and clipped to
[0, 1] by default (``clip``).

==========  =====================================================================  ================================
``psnr``    peak 2500 HU (1 on [0, 1]), MSE of the whole volume (:func:`psnr_true`)  ``monai.metrics.PSNRMetric``
``ssim``    3D SSIM, 7-voxel uniform window, ``data_range`` 1 (:func:`ssim_true`)    scikit-image (see below)
``mae_hu``  mean absolute error in HU, difference x 2500 (:func:`mae_hu`)            ``monai.metrics.MAEMetric``
==========  =====================================================================  ================================

SSIM stays scikit-image's ``structural_similarity``: MONAI's ``SSIMMetric`` computes in float32 and with the
population covariance, while scikit-image (and so the paper's :func:`scripts.evaluation.paper_metrics.ssim_paper`,
whose window this one shares) uses the sample covariance; keeping scikit-image makes the honest and paper SSIMs
differ only by their data range.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.metrics import MAEMetric, PSNRMetric
from scripts.evaluation.paper_metrics import SSIM_WIN_SIZE
from scripts.evaluation.volumes import volume_pair
from scripts.frame import FRAME
from skimage.metrics import structural_similarity

__all__ = ["psnr_true", "ssim_true", "mae_hu"]


def _tensors(pred: Any, target: Any, clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 ``(1, 1, X, Y, Z)`` tensors (one batch item, one channel) for MONAI's regression metrics."""
    p, t = volume_pair(pred, target, clip)
    return torch.from_numpy(np.ascontiguousarray(p))[None, None], torch.from_numpy(np.ascontiguousarray(t))[None, None]


def psnr_true(pred: Any, target: Any, clip: bool = True) -> float:
    """Honest PSNR in dB: peak = the data range (2500 HU, i.e. 1 on the [0, 1] scale), MSE of the whole volume.

    ``monai.metrics.PSNRMetric(max_val=1)``: ``20 log10(1) - 10 log10(MSE)`` on the [0, 1] values, identical to
    peak 2500 on HU; no integer cast; ``inf`` for identical volumes.
    """
    return float(PSNRMetric(max_val=1.0)(*_tensors(pred, target, clip)).item())


def ssim_true(pred: Any, target: Any, clip: bool = True) -> float:
    """Honest 3D SSIM: 7-voxel uniform window, ``data_range = 1`` (the range of the [0, 1] scale)."""
    p, t = volume_pair(pred, target, clip)
    if min(p.shape) < SSIM_WIN_SIZE:
        raise ValueError(f"SSIM needs a volume of at least {SSIM_WIN_SIZE} voxels per side, got {p.shape}")
    return float(structural_similarity(p, t, win_size=SSIM_WIN_SIZE, data_range=1.0))


def mae_hu(pred: Any, target: Any, clip: bool = True) -> float:
    """Mean absolute error in HU: ``monai.metrics.MAEMetric`` on the [0, 1] values times 2500 (no integer cast)."""
    return float(MAEMetric()(*_tensors(pred, target, clip)).item()) * FRAME.hu_range
