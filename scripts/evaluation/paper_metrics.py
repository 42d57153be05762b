"""The paper's image-quality metrics: the official metric code, reproduced exactly, on the official frame's stacks.

Source: github.com/dek924/PerX2CT at commit be4c354c8a01520190929e267b5594421b6000eb, ``main_test.run_test`` ->
``calculate_metric_per_axis_2D`` -> ``utils/metrics.py`` (``Peak_Signal_to_Noise_Rate_2D``,
``Structural_Similarity_slice``), run with scikit-image 0.19.1 (the oracle's ``expected_metrics.json``, see its
README). Inputs are volumes in the *target scale* ``[0, 1] = clip(HU + 1024, 0, 2500) / 2500``
(:data:`scripts.frame.FRAME`), numpy arrays or torch tensors ``(X, Y, Z)`` (one leading channel accepted), in the
bundle's frame (array axes toward the patient's Left, Posterior, Superior).

=================  ============================================================================================
``psnr_paper``     ``x * 2500`` in float32 cast to int32 (truncation, no clipping); on the official (slice, row,
                   col) stack of the slicing axis, MSE over (slice, row) for each col index, PSNR =
                   ``20 log10(4095 / sqrt(MSE))`` (100 dB where MSE = 0), averaged over cols
``ssim_paper``     one 3D SSIM over the stack, 7-voxel uniform window, ``data_range`` **2**, no clipping
``lpips_paper``    LPIPS-VGG (eval mode, [0, 1] input) per slice of the stack, averaged (local LPIPS weights only)
=================  ============================================================================================

Why these numbers are inflated (compare with :mod:`.honest_metrics`): a peak of 4095 on data whose range is 2500
adds ``20 log10(4095 / 2500) = 4.29 dB``; scikit-image's SSIM called on float images without a ``data_range``
took the float dtype's range ``[-1, 1]``, i.e. 2, for data living in ``[0, 1]``, which makes the stabilising
constants ``C1, C2`` four times larger and SSIM higher.

Official frame and stacks (measured against the official pipeline, see the oracle README): the official 128^3 array
``(i0, i1, i2)`` runs along the bundle's ``(-Z, +Y, +X)``, i.e. ``official[i0, i1, i2] = bundle[i2, i1, 127 - i0]``
(:func:`bundle_to_official`). ``main_test.run_test`` stacks each axis's reconstruction as (slice, row, col): axial
``(i0, i1, i2)``, coronal ``(i1, i0, i2)``, sagittal ``(i2, i0, i1)`` (:func:`official_stack`). So the PSNR
"planes" (fixed col) are planes of fixed bundle X for the axial and coronal reconstructions and of fixed bundle Y
for the sagittal one, not the slices the network rendered. Official index ``k`` of an axial slice is bundle axial
index ``127 - k`` (coronal and sagittal indices are equal). The official ground truth differs per axis (each axis's
320^2 slices resized on their own); this bundle compares every axis with its one target volume.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scripts.evaluation.volumes import as_volume
from scripts.frame import FRAME
from scripts.slicing import axis_code
from scripts.training.losses import LPIPSVGG
from skimage.metrics import structural_similarity

__all__ = [
    "PAPER_PEAK",
    "PAPER_SSIM_DATA_RANGE",
    "IDENTICAL_PLANE_PSNR_DB",
    "SSIM_WIN_SIZE",
    "bundle_to_official",
    "official_stack",
    "psnr_paper",
    "ssim_paper",
    "lpips_model",
    "lpips_paper",
]

#: The peak X2CT-GAN's PSNR uses (12-bit maximum), although the data range is 2500.
PAPER_PEAK = 4095.0
#: The SSIM data range the paper's scikit-image call used implicitly (float dtype range, -1..1).
PAPER_SSIM_DATA_RANGE = 2.0
#: PSNR the official code gives a plane with zero error.
IDENTICAL_PLANE_PSNR_DB = 100.0
#: SSIM window, voxels per side (scikit-image's default for uniform windows, which the official call used).
SSIM_WIN_SIZE = 7

# official stack (slice, row, col) of each axis code (scripts.slicing: 0 axial, 1 coronal, 2 sagittal) as a
# transpose of the official (i0, i1, i2) volume
_OFFICIAL_STACK = {0: (0, 1, 2), 1: (1, 0, 2), 2: (2, 0, 1)}
_LPIPS_SLICES_PER_BATCH = 16


def bundle_to_official(volume: Any) -> np.ndarray:
    """Bundle ``(X, Y, Z)`` (LPS) volume -> the official code's ``(i0, i1, i2)`` array (a view, no copy).

    ``official[i0, i1, i2] = bundle[i2, i1, n - 1 - i0]``: i0 runs along -Z (head to feet), i1 along +Y
    (anterior to posterior), i2 along +X (patient right to left).
    """
    v = as_volume(volume, "volume")
    return v[:, :, ::-1].transpose(2, 1, 0)


def official_stack(volume: Any, axis: str | int) -> np.ndarray:
    """The (slice, row, col) stack ``main_test.run_test`` builds for slicing ``axis``, from a bundle volume.

    ``axis``: ``"axial"``, ``"coronal"``, ``"sagittal"`` or their codes 0, 1, 2 (:func:`scripts.slicing.axis_code`).
    axial: official ``(i0, i1, i2)``; coronal ``(i1, i0, i2)``; sagittal ``(i2, i0, i1)`` (a view).
    """
    return bundle_to_official(volume).transpose(_OFFICIAL_STACK[axis_code(axis)])


def _stacks(pred: Any, target: Any, axis: str | int) -> tuple[np.ndarray, np.ndarray]:
    """float32 official stacks of ``pred`` and ``target`` along ``axis`` (the official tensors were float32)."""
    t = np.asarray(official_stack(as_volume(target, "target"), axis), dtype=np.float32)
    p = np.asarray(official_stack(as_volume(pred, "pred"), axis), dtype=np.float32)
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    return p, t


def _official_levels(stack: np.ndarray) -> np.ndarray:
    """``tensor * 2500`` in float32 cast to int32 (truncation toward zero, no clipping), as float64."""
    return (stack * np.float32(FRAME.hu_range)).astype(np.int32).astype(np.float64)


def psnr_paper(pred: Any, target: Any, axis: str | int = "axial") -> float:
    """The official ``Peak_Signal_to_Noise_Rate_2D(target, output, 0, 2500, use_real_max=True)``.

    On the official (slice, row, col) stacks of ``axis`` (:func:`official_stack`): values ``x * 2500``
    computed in float32 and cast to int32 (truncation toward zero, no clipping: negative or > 1 values keep
    their level); squared error; mean over slices then rows, leaving one MSE per col index;
    ``PSNR = 20 log10(4095 / sqrt(MSE))`` per col (100 dB where MSE is 0); the mean over cols.

    Args:
        pred, target: ``(X, Y, Z)`` bundle-frame volumes in [0, 1] (numpy or torch; float64 input is
            rounded to float32 first, as the official tensors were float32).
        axis: the slicing direction the reconstruction was made with (``"axial"``, ``"coronal"``,
            ``"sagittal"`` or code 0/1/2); it selects the stack, hence the planes averaged over.

    Returns:
        PSNR in dB.
    """
    p, t = _stacks(pred, target, axis)
    se = np.power(_official_levels(t)[None] - _official_levels(p)[None], 2)
    mse = se.mean(axis=1, keepdims=True).mean(axis=2, keepdims=True).squeeze(2).squeeze(1)  # (1, cols)
    zero = mse == 0
    mse[zero] = 1e-10
    psnr = 20 * np.log10(PAPER_PEAK / np.sqrt(mse))
    psnr[zero] = IDENTICAL_PLANE_PSNR_DB
    return float(psnr.mean(1)[0])


def ssim_paper(pred: Any, target: Any, axis: str | int = "axial") -> float:
    """The official ``Structural_Similarity_slice(target, output, PIXEL_MAX=None, channel_axis=False)``.

    With scikit-image 0.19.1 that call is one 3D SSIM over the ``axis`` stack (the size-1 batch axis taken
    as the channel), uniform 7-voxel window, sample covariance, K1 0.01, K2 0.03, and ``data_range`` from
    the float64 dtype range [-1, 1], i.e. 2; no clipping. Newer scikit-image refuses float input without
    ``data_range``, so 2.0 is passed explicitly; the computation is otherwise the same (checked against the
    official figures in the tests). Inputs are rounded to float32 first, as the official tensors were.
    """
    p, t = _stacks(pred, target, axis)
    if min(p.shape) < SSIM_WIN_SIZE:
        raise ValueError(f"SSIM needs a volume of at least {SSIM_WIN_SIZE} voxels per side, got {p.shape}")
    return float(
        structural_similarity(
            t.astype(np.float64), p.astype(np.float64), win_size=SSIM_WIN_SIZE, data_range=PAPER_SSIM_DATA_RANGE
        )
    )


def lpips_model(
    lpips_vgg_weights: str | None, lpips_lin_weights: str | None = None, device: str | torch.device = "cpu"
) -> torch.nn.Module | None:
    """The LPIPS model of :func:`lpips_paper` (eval mode, [0, 1] input, on ``device``), or None without VGG weights.

    ``lpips_vgg_weights`` / ``lpips_lin_weights``: local files (``python -m scripts download_weights --name
    vgg16,lpips_lin``); :class:`scripts.evaluation.metric_handler.CTMetricHandler` builds its model with it.
    """
    if not lpips_vgg_weights:
        return None
    return LPIPSVGG(lpips_vgg_weights, lpips_lin_weights, input_range="unit").eval().to(device)


@torch.no_grad()
def lpips_paper(pred: Any, target: Any, lpips: torch.nn.Module, axis: str | int = "axial") -> float:
    """The official per-axis LPIPS: ``LPIPS(target_slice, output_slice)`` for every slice of the ``axis``
    stack (grey repeated to 3 channels, [0, 1] values fed unchanged), averaged.

    ``lpips`` is a :class:`scripts.training.losses.LPIPSVGG` (built from local weights, :func:`lpips_model`); it is
    used in eval mode (no dropout) on the device of its buffers, and its mode is restored afterwards.
    """
    p, t = (np.ascontiguousarray(s) for s in _stacks(pred, target, axis))
    was_training = lpips.training
    lpips.eval()
    device = next(iter(lpips.buffers())).device
    try:
        values = []
        for s in range(0, t.shape[0], _LPIPS_SLICES_PER_BATCH):
            tt = torch.from_numpy(t[s : s + _LPIPS_SLICES_PER_BATCH])[:, None].to(device)
            pp = torch.from_numpy(p[s : s + _LPIPS_SLICES_PER_BATCH])[:, None].to(device)
            values.append(lpips(tt, pp).double().cpu())
    finally:
        lpips.train(was_training)
    return float(torch.cat(values).mean())
