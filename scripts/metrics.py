"""Image-quality metrics of reconstructed CT volumes: the paper's conventions and honest ones.

All functions take volumes in the *target scale*: ``[0, 1] = clip(HU + 1024, 0, 2500) / 2500``,
as numpy arrays or torch tensors of shape ``(X, Y, Z)`` (a leading singleton channel is accepted),
laid out as the rest of the bundle (LPS-ordered, see :mod:`scripts.slicing`): *axial* slices fix
array dim 2, *coronal* dim 1, *sagittal* dim 0.

Two families, reported side by side so users can compare with the paper and with reality:

========================  ===========================================================  ==========
name                      definition                                                   convention
========================  ===========================================================  ==========
``psnr_paper``            integer values in [0, 2500], peak **4095**, per 2D slice,     X2CT-GAN /
                          averaged; identical slices count as 100 dB                   PerX2CT
``ssim_paper``            3D SSIM, 7-voxel window, ``data_range`` **2**                 X2CT-GAN /
                                                                                       PerX2CT
``psnr``                  peak 2500 HU (1 on [0, 1]), MSE of the whole volume           honest
``ssim``                  3D SSIM, 7-voxel window, ``data_range`` 1                     honest
``mae_hu``                mean absolute error in HU (difference x 2500)                 honest
========================  ===========================================================  ==========

Why the paper's numbers are inflated: a peak of 4095 on data whose range is 2500 adds
``20 log10(4095 / 2500) = 4.29 dB``; scikit-image's SSIM called on float images without a
``data_range`` took the float dtype's range ``[-1, 1]``, i.e. 2, for data living in ``[0, 1]``,
which makes the stabilising constants ``C1, C2`` four times larger and SSIM higher.

Ignite / MONAI integration: :class:`CTVolumeMetric` is a ``monai.metrics.CumulativeIterationMetric``
computing one value per batch item, and :class:`PSNRHandler`, :class:`PSNRPaperHandler`,
:class:`SSIMHandler`, :class:`SSIMPaperHandler`, :class:`MAEHUHandler` wrap it in
``monai.handlers.IgniteMetricHandler`` for ``key_val_metric`` / ``additional_metrics`` of a
``SupervisedEvaluator`` fed with ``y_pred, y`` of shape ``(B, 1, X, Y, Z)`` in ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from skimage.metrics import structural_similarity

__all__ = [
    "HU_RANGE",
    "PAPER_PEAK",
    "PAPER_SSIM_DATA_RANGE",
    "IDENTICAL_SLICE_PSNR_DB",
    "METRIC_NAMES",
    "slice_dim",
    "psnr_paper",
    "psnr_true",
    "ssim_paper",
    "ssim_true",
    "mae_hu",
    "evaluate_volume",
    "evaluate_three_axes",
    "CTVolumeMetric",
    "CTMetricHandler",
    "PSNRHandler",
    "PSNRPaperHandler",
    "SSIMHandler",
    "SSIMPaperHandler",
    "MAEHUHandler",
    "PSNRTrue",
    "PSNRPaper",
]

#: Width of the target scale in HU: [0, 1] covers HU + 1024 in [0, 2500].
HU_RANGE = 2500.0
#: The peak X2CT-GAN's PSNR uses (12-bit maximum), although the data range is 2500.
PAPER_PEAK = 4095.0
#: The SSIM data range the paper's scikit-image call used implicitly (float dtype range, -1..1).
PAPER_SSIM_DATA_RANGE = 2.0
#: PSNR given to a slice with zero error by X2CT-GAN's metric code (and by :func:`psnr_paper`).
IDENTICAL_SLICE_PSNR_DB = 100.0
#: SSIM window, voxels per side (scikit-image's default for uniform windows).
SSIM_WIN_SIZE = 7
#: Names of the values :func:`evaluate_volume` returns.
METRIC_NAMES = ("psnr_paper", "ssim_paper", "psnr", "ssim", "mae_hu")

_AXES = ("axial", "coronal", "sagittal")
_AXIS_DIM = {"axial": 2, "coronal": 1, "sagittal": 0}
# values closer than this (in integer levels) to the next integer are that integer: see psnr_paper
_INT_TOLERANCE = 1e-3


# ---------------------------------------------------------------------------------------- helpers
def slice_dim(axis: str | int) -> int:
    """Array dim fixed by slices along ``axis`` of an ``(X, Y, Z)`` volume.

    ``axis`` is a name (``"axial"`` -> 2, ``"coronal"`` -> 1, ``"sagittal"`` -> 0) or the bundle's
    axis code (``0`` axial, ``1`` coronal, ``2`` sagittal, as :func:`scripts.slicing.axis_code`).
    Integer codes are *not* array dims: ``0`` means axial, i.e. array dim 2.
    """
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) and 0 <= int(axis) < 3:
        return _AXIS_DIM[_AXES[int(axis)]]
    if isinstance(axis, str) and axis.lower() in _AXIS_DIM:
        return _AXIS_DIM[axis.lower()]
    raise ValueError(f"unknown slice axis {axis!r}; use one of {_AXES} (or the codes 0, 1, 2)")


def _volume(x: Any, name: str) -> np.ndarray:
    """numpy float64 (X, Y, Z) from a numpy array / torch tensor, with a leading channel of 1 dropped."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"{name} must be a 3D volume (X, Y, Z), optionally with one leading channel; got shape {np.shape(x)}")
    return a


def _pair(pred: Any, target: Any, clip: bool) -> tuple[np.ndarray, np.ndarray]:
    p, t = _volume(pred, "pred"), _volume(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    if clip:
        p, t = np.clip(p, 0.0, 1.0), np.clip(t, 0.0, 1.0)
    return p, t


def _to_levels(x: np.ndarray) -> np.ndarray:
    """[0, 1] -> integer levels in [0, 2500] (float64 holding integers), truncating like ``.type(torch.int32)``.

    A value within ``1e-3`` of a level below the next integer is taken as that integer: values that are
    integers up to float rounding (a float32 ``(HU + 1024) / 2500`` times 2500 is often ``k - 1e-4``)
    keep their level instead of losing one to truncation.
    """
    v = np.clip(x * HU_RANGE, 0.0, HU_RANGE)
    return np.floor(v + _INT_TOLERANCE)


# ---------------------------------------------------------------------------------------- metrics
def psnr_paper(
    pred: Any,
    target: Any,
    axis: str | int = "axial",
    identical: str = "cap",
    clip: bool = True,
) -> float:
    """PSNR as X2CT-GAN and PerX2CT report it (inflated by 4.29 dB compared with :func:`psnr_true`).

    Steps: values back to HU + 1024 in ``[0, 2500]`` (``x * 2500``, clipped), cast to integers by
    truncation; per 2D slice along ``axis``: ``MSE``, ``PSNR = 20 log10(4095 / sqrt(MSE))``; the mean over
    slices.

    Args:
        pred, target: ``(X, Y, Z)`` volumes in [0, 1] (numpy or torch; a leading channel of 1 is dropped).
        axis: slicing direction, ``"axial"`` (default), ``"coronal"``, ``"sagittal"`` or code 0/1/2
            (see :func:`slice_dim`).
        identical: what a slice with zero error (infinite PSNR) counts as. ``"cap"`` (default):
            100 dB, as X2CT-GAN's metric code does (it inflates the mean when empty slices of air
            match exactly); ``"skip"``: left out of the mean (``inf`` when every slice is identical).
        clip: clip both inputs to [0, 1] first (the integer cast clips anyway).

    Returns:
        the mean PSNR in dB (a Python float).
    """
    if identical not in ("cap", "skip"):
        raise ValueError(f"identical must be 'cap' or 'skip', got {identical!r}")
    p, t = _pair(pred, target, clip)
    dim = slice_dim(axis)
    err = (_to_levels(p) - _to_levels(t)) ** 2
    mse = err.mean(axis=tuple(d for d in range(3) if d != dim))  # one value per slice
    zero = mse == 0
    with np.errstate(divide="ignore"):
        psnr = 20.0 * np.log10(PAPER_PEAK / np.sqrt(mse))
    if identical == "cap":
        psnr[zero] = IDENTICAL_SLICE_PSNR_DB
        return float(psnr.mean())
    kept = psnr[~zero]
    return float(kept.mean()) if kept.size else math.inf


def psnr_true(pred: Any, target: Any, clip: bool = True) -> float:
    """Honest PSNR: peak = the data range (2500 HU, i.e. 1 on the [0, 1] scale), MSE of the whole volume.

    No integer cast; ``PSNR = 20 log10(1 / sqrt(MSE))`` on the [0, 1] values, identical to peak 2500
    on HU. ``inf`` for identical volumes.
    """
    p, t = _pair(pred, target, clip)
    mse = float(np.mean((p - t) ** 2))
    return math.inf if mse == 0 else float(20.0 * math.log10(1.0 / math.sqrt(mse)))


def _ssim(p: np.ndarray, t: np.ndarray, data_range: float) -> float:
    if min(p.shape) < SSIM_WIN_SIZE:
        raise ValueError(f"SSIM needs a volume of at least {SSIM_WIN_SIZE} voxels per side, got {p.shape}")
    # argument order as the paper's call (ground truth second does not matter: SSIM is symmetric)
    return float(structural_similarity(p, t, win_size=SSIM_WIN_SIZE, data_range=data_range))


def ssim_paper(pred: Any, target: Any, clip: bool = True) -> float:
    """SSIM as X2CT-GAN and PerX2CT report it: scikit-image on the stacked 3D volume, 7-voxel window,
    ``data_range = 2``.

    The paper's code called ``structural_similarity`` on float images without ``data_range``; older
    scikit-image then used the float dtype's range, ``[-1, 1]``, i.e. 2, for data living in ``[0, 1]``.
    scikit-image 0.26 refuses that call (``ValueError``: float images need ``data_range``), so the
    convention is reproduced by passing ``data_range=2.0`` and ``win_size=7`` explicitly (the other
    arguments are scikit-image's defaults then and now: uniform window, sample covariance,
    K1 = 0.01, K2 = 0.03). The doubled range quadruples C1 and C2 and inflates SSIM.
    """
    p, t = _pair(pred, target, clip)
    return _ssim(p, t, PAPER_SSIM_DATA_RANGE)


def ssim_true(pred: Any, target: Any, clip: bool = True) -> float:
    """Honest 3D SSIM: as :func:`ssim_paper` but with ``data_range = 1`` (the range of the [0, 1] scale)."""
    p, t = _pair(pred, target, clip)
    return _ssim(p, t, 1.0)


def mae_hu(pred: Any, target: Any, clip: bool = True) -> float:
    """Mean absolute error in HU: ``mean(|pred - target|) * 2500`` (no integer cast)."""
    p, t = _pair(pred, target, clip)
    return float(np.mean(np.abs(p - t)) * HU_RANGE)


def evaluate_volume(pred: Any, target: Any, axis: str | int = "axial", clip: bool = True) -> dict[str, float]:
    """All metrics of one reconstruction: ``{"psnr_paper", "ssim_paper", "psnr", "ssim", "mae_hu"}``.

    ``axis`` is the slicing direction the reconstruction was made with; ``psnr_paper`` averages over
    slices along it. The other metrics are whole-volume and do not depend on it.
    """
    p, t = _pair(pred, target, clip)
    return {
        "psnr_paper": psnr_paper(p, t, axis=axis, clip=False),
        "ssim_paper": _ssim(p, t, PAPER_SSIM_DATA_RANGE),
        "psnr": psnr_true(p, t, clip=False),
        "ssim": _ssim(p, t, 1.0),
        "mae_hu": mae_hu(p, t, clip=False),
    }


def evaluate_three_axes(preds: Mapping[str | int, Any], target: Any, clip: bool = True) -> dict[str, float]:
    """The paper's protocol: a test volume reconstructed once per slicing direction, metrics averaged.

    Args:
        preds: slicing axis (``"axial"``, ``"coronal"``, ``"sagittal"`` or code 0/1/2) -> the ``(X, Y, Z)``
            volume reconstructed by slicing along it. One, two or three entries.
        target: the ground truth ``(X, Y, Z)`` volume.

    Returns:
        the mean over the entries of :func:`evaluate_volume` (each ``psnr_paper`` sliced along its own axis).
    """
    if not preds:
        raise ValueError("evaluate_three_axes needs at least one reconstruction (axis -> volume)")
    t = _volume(target, "target")
    results = [evaluate_volume(v, t, axis=a, clip=clip) for a, v in preds.items()]
    return {k: float(np.mean([r[k] for r in results])) for k in METRIC_NAMES}


_FUNCTIONS: dict[str, Callable[..., float]] = {
    "psnr_paper": psnr_paper,
    "ssim_paper": ssim_paper,
    "psnr": psnr_true,
    "ssim": ssim_true,
    "mae_hu": mae_hu,
}


# ---------------------------------------------------------------------------------------- MONAI / ignite
class CTVolumeMetric(CumulativeIterationMetric):
    """One of the metrics above as a MONAI cumulative metric (one value per batch item).

    Args:
        metric: one of :data:`METRIC_NAMES`.
        axis: slicing axis of ``psnr_paper`` when predictions have one channel.
        axes: when ``y_pred`` has ``A > 1`` channels they are reconstructions along ``axes[:A]``
            (default axial, coronal, sagittal, the evaluation layout); the item's value is their mean.
        clip: clip inputs to [0, 1].

    Call with ``y_pred`` ``(B, A, X, Y, Z)`` and ``y`` ``(B, 1, X, Y, Z)`` (or lists of channel-first
    tensors); each call appends a ``(B, 1)`` tensor; :meth:`aggregate` returns the mean over all items
    (non-finite values, e.g. the ``inf`` PSNR of a perfect case, are ignored; NaN when none is finite).
    """

    def __init__(
        self,
        metric: str = "psnr",
        axis: str | int = "axial",
        axes: Sequence[str | int] = _AXES,
        clip: bool = True,
    ) -> None:
        super().__init__()
        if metric not in _FUNCTIONS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {METRIC_NAMES}")
        slice_dim(axis)
        for a in axes:
            slice_dim(a)
        self.metric, self.axis, self.axes, self.clip = metric, axis, tuple(axes), clip

    def _value(self, pred: np.ndarray, target: np.ndarray, axis: str | int) -> float:
        fn = _FUNCTIONS[self.metric]
        if self.metric == "psnr_paper":
            return fn(pred, target, axis=axis, clip=self.clip)
        return fn(pred, target, clip=self.clip)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise ValueError(f"{type(self).__name__} needs the ground truth y")
        if y_pred.ndim != 5 or y.ndim != 5:
            raise ValueError(f"expected y_pred and y of shape (B, C, X, Y, Z); got {tuple(y_pred.shape)} and {tuple(y.shape)}")
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
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            return torch.tensor(math.nan, dtype=torch.float64)
        finite = data[torch.isfinite(data)]
        return finite.mean() if finite.numel() else torch.tensor(math.nan, dtype=torch.float64)


class CTMetricHandler(IgniteMetricHandler):
    """Ignite handler of :class:`CTVolumeMetric` for a ``SupervisedEvaluator``'s ``key_val_metric``.

    Example (bundle config)::

        "key_metric": {"val_psnr": {"_target_": "scripts.metrics.PSNRHandler",
                                    "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}}

    ``save_details`` (default True) stores every item's value in ``engine.state.metric_details[name]``.
    """

    metric_name = "psnr"

    def __init__(
        self,
        metric: str | None = None,
        axis: str | int = "axial",
        axes: Sequence[str | int] = _AXES,
        clip: bool = True,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        super().__init__(
            metric_fn=CTVolumeMetric(metric or self.metric_name, axis=axis, axes=axes, clip=clip),
            output_transform=output_transform,
            save_details=save_details,
        )


class PSNRHandler(CTMetricHandler):
    """Honest whole-volume PSNR (peak = data range) as an ignite metric; see :func:`psnr_true`."""

    metric_name = "psnr"

    def __init__(self, output_transform: Callable = lambda x: x, save_details: bool = True, clip: bool = True) -> None:
        super().__init__(self.metric_name, clip=clip, output_transform=output_transform, save_details=save_details)


class PSNRPaperHandler(CTMetricHandler):
    """The paper's PSNR (integers, peak 4095, per slice along ``axis``); see :func:`psnr_paper`."""

    metric_name = "psnr_paper"

    def __init__(
        self,
        axis: str | int = "axial",
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
        clip: bool = True,
    ) -> None:
        super().__init__(self.metric_name, axis=axis, clip=clip, output_transform=output_transform, save_details=save_details)


class SSIMHandler(PSNRHandler):
    """Honest 3D SSIM (data_range 1) as an ignite metric; see :func:`ssim_true`."""

    metric_name = "ssim"


class SSIMPaperHandler(PSNRHandler):
    """The paper's 3D SSIM (data_range 2) as an ignite metric; see :func:`ssim_paper`."""

    metric_name = "ssim_paper"


class MAEHUHandler(PSNRHandler):
    """Mean absolute error in HU as an ignite metric; see :func:`mae_hu` (lower is better)."""

    metric_name = "mae_hu"


#: Aliases.
PSNRTrue = PSNRHandler
PSNRPaper = PSNRPaperHandler
