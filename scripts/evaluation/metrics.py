"""Image-quality metrics of reconstructed CT volumes: the paper's convention (the official metric code,
reproduced exactly) and honest ones.

All functions take volumes in the *target scale* ``[0, 1] = clip(HU + 1024, 0, 2500) / 2500``
(:data:`scripts.frame.FRAME`), as numpy arrays or torch tensors of shape ``(X, Y, Z)`` (a leading singleton
channel is accepted), in the bundle's frame: array axes toward the patient's Left, Posterior, Superior
(LPS); *axial* slices fix array dim 2, *coronal* dim 1, *sagittal* dim 0 (:mod:`scripts.slicing`).

========================  ===========================================================  ==========
name                      definition                                                   convention
========================  ===========================================================  ==========
``psnr_paper``            official ``Peak_Signal_to_Noise_Rate_2D``: ``x * 2500`` in   official
                          float32 cast to int32 (truncation, no clipping); on the      PerX2CT /
                          official (slice, row, col) stack of the slicing axis, MSE    X2CT-GAN
                          over (slice, row) for each col index, PSNR = 20 log10(4095
                          / sqrt(MSE)) (100 dB where MSE = 0), averaged over cols
``ssim_paper``            official ``Structural_Similarity_slice``: one 3D SSIM over   official
                          the stack, 7-voxel uniform window, ``data_range`` **2**, no
                          clipping
``lpips_paper``           LPIPS-VGG (eval mode, [0, 1] input) per slice of the stack,  official
                          averaged (only with local LPIPS weights)
``psnr``                  peak 2500 HU (1 on [0, 1]), MSE of the whole volume           honest
``ssim``                  3D SSIM, 7-voxel window, ``data_range`` 1                     honest
``mae_hu``                mean absolute error in HU (difference x 2500)                 honest
========================  ===========================================================  ==========

Why the paper's numbers are inflated: a peak of 4095 on data whose range is 2500 adds
``20 log10(4095 / 2500) = 4.29 dB``; scikit-image's SSIM called on float images without a
``data_range`` took the float dtype's range ``[-1, 1]``, i.e. 2, for data living in ``[0, 1]``,
which makes the stabilising constants ``C1, C2`` four times larger and SSIM higher.

Official frame and stacks (measured against the official pipeline, see the oracle README): the official
128^3 array ``(i0, i1, i2)`` runs along the bundle's ``(-Z, +Y, +X)``, i.e.
``official[i0, i1, i2] = bundle[i2, i1, 127 - i0]`` (:func:`bundle_to_official`). ``main_test.run_test``
stacks each axis's reconstruction as (slice, row, col): axial ``(i0, i1, i2)``, coronal ``(i1, i0, i2)``,
sagittal ``(i2, i0, i1)`` (:func:`official_stack`). So the PSNR "planes" (fixed col) are planes of fixed
bundle X for the axial and coronal reconstructions and of fixed bundle Y for the sagittal one, not the
slices the network rendered. Official index ``k`` of an axial slice is bundle axial index ``127 - k``
(coronal and sagittal indices are equal). The official ground truth differs per axis (each axis's
320^2 slices resized on their own); this bundle compares every axis with its one target volume.

Ignite / MONAI integration: :class:`CTVolumeMetric` is a ``monai.metrics.CumulativeIterationMetric``
computing one value per batch item (the mean over its slicing axes), and :class:`CTMetricHandler` wraps it in
``monai.handlers.IgniteMetricHandler`` for ``key_val_metric`` / ``additional_metrics`` of a
``SupervisedEvaluator`` fed with ``y_pred, y`` of shape ``(B, A, X, Y, Z)`` and ``(B, 1, X, Y, Z)``:
:class:`PSNRPaperHandler`, :class:`SSIMPaperHandler`, :class:`LPIPSPaperHandler`, :class:`PSNRHandler`,
:class:`SSIMHandler`, :class:`MAEHUHandler` (``configs/evaluate.json``; validation in ``configs/train.json``
uses the two PSNRs). MONAI's ``MetricsSaver`` writes their per-case values and summaries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from ignite.metrics.metric import reinit__is_reduced
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from skimage.metrics import structural_similarity

from scripts.frame import FRAME

__all__ = [
    "HU_RANGE",
    "PAPER_PEAK",
    "PAPER_SSIM_DATA_RANGE",
    "IDENTICAL_PLANE_PSNR_DB",
    "SSIM_WIN_SIZE",
    "AXES",
    "METRIC_NAMES",
    "slice_dim",
    "bundle_to_official",
    "official_to_bundle",
    "official_stack",
    "psnr_paper",
    "ssim_paper",
    "lpips_paper",
    "lpips_model",
    "psnr_true",
    "ssim_true",
    "mae_hu",
    "evaluate_volume",
    "evaluate_three_axes",
    "paper_metrics",
    "CTVolumeMetric",
    "CTMetricHandler",
    "PSNRHandler",
    "PSNRPaperHandler",
    "SSIMHandler",
    "SSIMPaperHandler",
    "MAEHUHandler",
    "LPIPSPaperHandler",
]

#: Width of the target scale in HU: [0, 1] covers HU + 1024 in [0, 2500].
HU_RANGE = FRAME.hu_range
#: The peak X2CT-GAN's PSNR uses (12-bit maximum), although the data range is 2500.
PAPER_PEAK = 4095.0
#: The SSIM data range the paper's scikit-image call used implicitly (float dtype range, -1..1).
PAPER_SSIM_DATA_RANGE = 2.0
#: PSNR the official code gives a plane with zero error.
IDENTICAL_PLANE_PSNR_DB = 100.0
#: SSIM window, voxels per side (scikit-image's default for uniform windows).
SSIM_WIN_SIZE = 7
#: Slicing axes in the paper's order.
AXES = ("axial", "coronal", "sagittal")
#: Names of the values :func:`evaluate_volume` returns (plus ``lpips_paper`` when given an LPIPS model).
METRIC_NAMES = ("psnr_paper", "ssim_paper", "psnr", "ssim", "mae_hu")

_AXIS_DIM = {"axial": 2, "coronal": 1, "sagittal": 0}
# official stack (slice, row, col) of each axis as a transpose of the official (i0, i1, i2) volume
_OFFICIAL_STACK = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}
_LPIPS_SLICES_PER_BATCH = 16


# ---------------------------------------------------------------------------------------- helpers
def _axis_name(axis: str | int) -> str:
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) and 0 <= int(axis) < 3:
        return AXES[int(axis)]
    if isinstance(axis, str) and axis.lower() in _AXIS_DIM:
        return axis.lower()
    raise ValueError(f"unknown slice axis {axis!r}; use one of {AXES} (or the codes 0, 1, 2)")


def slice_dim(axis: str | int) -> int:
    """Array dim fixed by slices along ``axis`` of an ``(X, Y, Z)`` volume.

    ``axis`` is a name (``"axial"`` -> 2, ``"coronal"`` -> 1, ``"sagittal"`` -> 0) or the bundle's
    axis code (``0`` axial, ``1`` coronal, ``2`` sagittal, as :func:`scripts.slicing.axis_code`).
    Integer codes are *not* array dims: ``0`` means axial, i.e. array dim 2.
    """
    return _AXIS_DIM[_axis_name(axis)]


def _array(x: Any, name: str) -> np.ndarray:
    """numpy array (dtype kept) of a 3D volume from numpy / torch, with leading channels of 1 dropped."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(
            f"{name} must be a 3D volume (X, Y, Z), optionally with one leading channel; got shape {np.shape(x)}"
        )
    return a


def _volume(x: Any, name: str) -> np.ndarray:
    """float64 (X, Y, Z) from a numpy array / torch tensor, with a leading channel of 1 dropped."""
    return _array(x, name).astype(np.float64, copy=False)


def _pair(pred: Any, target: Any, clip: bool) -> tuple[np.ndarray, np.ndarray]:
    p, t = _volume(pred, "pred"), _volume(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    if clip:
        p, t = np.clip(p, 0.0, 1.0), np.clip(t, 0.0, 1.0)
    return p, t


# ---------------------------------------------------------------------------------------- official frame
def bundle_to_official(volume: Any) -> np.ndarray:
    """Bundle ``(X, Y, Z)`` (LPS) volume -> the official code's ``(i0, i1, i2)`` array (a view, no copy).

    ``official[i0, i1, i2] = bundle[i2, i1, n - 1 - i0]``: i0 runs along -Z (head to feet), i1 along +Y
    (anterior to posterior), i2 along +X (patient right to left).
    """
    v = _array(volume, "volume")
    return v[:, :, ::-1].transpose(2, 1, 0)


def official_to_bundle(volume: Any) -> np.ndarray:
    """Inverse of :func:`bundle_to_official`: official ``(i0, i1, i2)`` -> bundle ``(X, Y, Z)`` (a view)."""
    v = _array(volume, "volume")
    return v.transpose(2, 1, 0)[:, :, ::-1]


def official_stack(volume: Any, axis: str | int) -> np.ndarray:
    """The (slice, row, col) stack ``main_test.run_test`` builds for slicing ``axis``, from a bundle volume.

    axial: official ``(i0, i1, i2)``; coronal ``(i1, i0, i2)``; sagittal ``(i2, i0, i1)`` (a view).
    """
    return bundle_to_official(volume).transpose(_OFFICIAL_STACK[_axis_name(axis)])


def _official_levels(stack: np.ndarray) -> np.ndarray:
    """``tensor * 2500`` in float32 cast to int32 (truncation toward zero, no clipping), as float64."""
    x = np.asarray(stack, dtype=np.float32)
    return (x * np.float32(HU_RANGE)).astype(np.int32).astype(np.float64)


# ---------------------------------------------------------------------------------------- paper metrics
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
    """
    t = _official_levels(official_stack(_array(target, "target"), axis))[None]
    p = _official_levels(official_stack(_array(pred, "pred"), axis))[None]
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape[1:]} vs {t.shape[1:]}")
    se = np.power(t - p, 2)
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
    t = np.asarray(official_stack(_array(target, "target"), axis), dtype=np.float32).astype(np.float64)
    p = np.asarray(official_stack(_array(pred, "pred"), axis), dtype=np.float32).astype(np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    if min(p.shape) < SSIM_WIN_SIZE:
        raise ValueError(f"SSIM needs a volume of at least {SSIM_WIN_SIZE} voxels per side, got {p.shape}")
    return float(structural_similarity(t, p, win_size=SSIM_WIN_SIZE, data_range=PAPER_SSIM_DATA_RANGE))


def lpips_model(
    lpips_vgg_weights: str | None, lpips_lin_weights: str | None = None, device: str | torch.device = "cpu"
) -> torch.nn.Module | None:
    """The LPIPS model of the paper metric (eval mode, [0, 1] input, on ``device``), or None without VGG weights.

    It is the ``lpips`` argument of :func:`evaluate_volume` / :func:`evaluate_three_axes` (None skips
    ``lpips_paper``); :class:`LPIPSPaperHandler` builds its model with it.
    """
    if not lpips_vgg_weights:
        return None
    from scripts.training.losses import LPIPSVGG

    return LPIPSVGG(lpips_vgg_weights, lpips_lin_weights, input_range="unit").eval().to(device)


@torch.no_grad()
def lpips_paper(pred: Any, target: Any, lpips: torch.nn.Module, axis: str | int = "axial") -> float:
    """The official per-axis LPIPS: ``LPIPS(target_slice, output_slice)`` for every slice of the ``axis``
    stack (grey repeated to 3 channels, [0, 1] values fed unchanged), averaged.

    ``lpips`` is a :class:`scripts.training.losses.LPIPSVGG` (built from local weights); it is used in eval mode
    (no dropout) on the device of its buffers.
    """
    t = np.ascontiguousarray(official_stack(_array(target, "target"), axis), dtype=np.float32)
    p = np.ascontiguousarray(official_stack(_array(pred, "pred"), axis), dtype=np.float32)
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
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


# ---------------------------------------------------------------------------------------- honest metrics
def psnr_true(pred: Any, target: Any, clip: bool = True) -> float:
    """Honest PSNR: peak = the data range (2500 HU, i.e. 1 on the [0, 1] scale), MSE of the whole volume.

    No integer cast; ``PSNR = 20 log10(1 / sqrt(MSE))`` on the [0, 1] values, identical to peak 2500
    on HU. ``inf`` for identical volumes.
    """
    p, t = _pair(pred, target, clip)
    mse = float(np.mean((p - t) ** 2))
    return math.inf if mse == 0 else float(20.0 * math.log10(1.0 / math.sqrt(mse)))


def ssim_true(pred: Any, target: Any, clip: bool = True) -> float:
    """Honest 3D SSIM: 7-voxel uniform window, ``data_range = 1`` (the range of the [0, 1] scale)."""
    p, t = _pair(pred, target, clip)
    if min(p.shape) < SSIM_WIN_SIZE:
        raise ValueError(f"SSIM needs a volume of at least {SSIM_WIN_SIZE} voxels per side, got {p.shape}")
    return float(structural_similarity(p, t, win_size=SSIM_WIN_SIZE, data_range=1.0))


def mae_hu(pred: Any, target: Any, clip: bool = True) -> float:
    """Mean absolute error in HU: ``mean(|pred - target|) * 2500`` (no integer cast)."""
    p, t = _pair(pred, target, clip)
    return float(np.mean(np.abs(p - t)) * HU_RANGE)


# ---------------------------------------------------------------------------------------- evaluation
def evaluate_volume(
    pred: Any, target: Any, axis: str | int = "axial", clip: bool = True, lpips: torch.nn.Module | None = None
) -> dict[str, float]:
    """All metrics of one reconstruction: ``psnr_paper, ssim_paper, psnr, ssim, mae_hu`` (+ ``lpips_paper``).

    ``axis`` is the slicing direction the reconstruction was made with (it selects the official stack of
    the paper metrics). ``clip`` applies to the honest metrics only (the official code does not clip).
    ``lpips``: an LPIPS model (:class:`scripts.training.losses.LPIPSVGG`) to add ``lpips_paper``; None skips it.
    """
    _pair(pred, target, clip=False)  # shape check with a clear message
    out = {
        "psnr_paper": psnr_paper(pred, target, axis=axis),
        "ssim_paper": ssim_paper(pred, target, axis=axis),
        "psnr": psnr_true(pred, target, clip=clip),
        "ssim": ssim_true(pred, target, clip=clip),
        "mae_hu": mae_hu(pred, target, clip=clip),
    }
    if lpips is not None:
        out["lpips_paper"] = lpips_paper(pred, target, lpips, axis=axis)
    return out


def evaluate_three_axes(
    preds: Mapping[str | int, Any],
    target: Any,
    clip: bool = True,
    lpips: torch.nn.Module | None = None,
    per_axis: bool = False,
) -> dict[str, float]:
    """The paper's protocol: a test volume reconstructed once per slicing direction, metrics averaged.

    Args:
        preds: slicing axis (``"axial"``, ``"coronal"``, ``"sagittal"`` or code 0/1/2) -> the ``(X, Y, Z)``
            volume reconstructed by slicing along it. One, two or three entries.
        target: the ground truth ``(X, Y, Z)`` volume.
        clip: clip inputs of the honest metrics to [0, 1].
        lpips: optional LPIPS model (adds ``lpips_paper``).
        per_axis: also return ``<metric>_<axis>`` for every entry.

    Returns:
        the mean over the entries of :func:`evaluate_volume` (each paper metric on its own axis's stack).
    """
    if not preds:
        raise ValueError("evaluate_three_axes needs at least one reconstruction (axis -> volume)")
    results = {_axis_name(a): evaluate_volume(v, target, axis=a, clip=clip, lpips=lpips) for a, v in preds.items()}
    names = list(next(iter(results.values())))
    out = {k: float(np.mean([r[k] for r in results.values()])) for k in names}
    if per_axis:
        out.update({f"{k}_{a}": r[k] for a, r in results.items() for k in names})
    return out


def paper_metrics(
    preds: Mapping[str | int, Any], targets: Any, lpips: torch.nn.Module | None = None
) -> dict[str, dict[str, float]]:
    """The official ``calculate_metric_per_patient`` on one case: per axis and averaged.

    Args:
        preds: axis -> bundle-frame ``(X, Y, Z)`` reconstruction made by slicing along that axis.
        targets: one ground-truth volume for every axis, or a mapping axis -> volume (the official code
            compares each axis with ground truth resampled from that axis's own slices).
        lpips: optional LPIPS model (adds ``lpips``).

    Returns:
        ``{"axial": {"psnr", "ssim"[, "lpips"]}, "coronal": ..., "sagittal": ..., "avg": {...}}`` with the
        layout of the oracle's ``expected_metrics.json``; ``avg`` is the mean over the given axes.
    """
    if not preds:
        raise ValueError("paper_metrics needs at least one reconstruction (axis -> volume)")
    out: dict[str, dict[str, float]] = {}
    for a, v in preds.items():
        name = _axis_name(a)
        t = targets[a] if isinstance(targets, Mapping) else targets
        out[name] = {"psnr": psnr_paper(v, t, axis=name), "ssim": ssim_paper(v, t, axis=name)}
        if lpips is not None:
            out[name]["lpips"] = lpips_paper(v, t, lpips, axis=name)
    keys = list(next(iter(out.values())))
    out["avg"] = {k: float(np.mean([out[a][k] for a in list(out)])) for k in keys}
    return out


# ---------------------------------------------------------------------------------------- MONAI / ignite
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "psnr_paper": psnr_paper,
    "ssim_paper": ssim_paper,
    "lpips_paper": lpips_paper,
    "psnr": psnr_true,
    "ssim": ssim_true,
    "mae_hu": mae_hu,
}
_PAPER = ("psnr_paper", "ssim_paper", "lpips_paper")


class CTVolumeMetric(CumulativeIterationMetric):
    """One of the metrics above as a MONAI cumulative metric (one value per batch item).

    Args:
        metric: one of :data:`METRIC_NAMES` or ``"lpips_paper"`` (which needs ``lpips``).
        axis: slicing axis of the paper metrics when predictions have one channel.
        axes: when ``y_pred`` has ``A > 1`` channels they are reconstructions along ``axes[:A]``
            (default axial, coronal, sagittal, the evaluation layout); the item's value is their mean.
        clip: clip inputs of the honest metrics to [0, 1] (the paper metrics never clip).
        lpips: the LPIPS model of ``lpips_paper`` (:class:`scripts.training.losses.LPIPSVGG`).

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
        if metric not in _FUNCTIONS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {tuple(_FUNCTIONS)}")
        if metric == "lpips_paper" and lpips is None:
            raise ValueError("lpips_paper needs an LPIPS model (scripts.training.losses.LPIPSVGG from local weights)")
        slice_dim(axis)
        for a in axes:
            slice_dim(a)
        self.metric, self.axis, self.axes, self.clip, self.lpips = metric, axis, tuple(axes), clip, lpips

    def _value(self, pred: np.ndarray, target: np.ndarray, axis: str | int) -> float:
        fn = _FUNCTIONS[self.metric]
        if self.metric == "lpips_paper":
            return fn(pred, target, self.lpips, axis=axis)
        if self.metric in _PAPER:
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
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            return torch.tensor(math.nan, dtype=torch.float64)
        finite = data[torch.isfinite(data)]
        return finite.mean() if finite.numel() else torch.tensor(math.nan, dtype=torch.float64)


class CTMetricHandler(IgniteMetricHandler):
    """Ignite handler of :class:`CTVolumeMetric` for a ``SupervisedEvaluator``'s ``key_val_metric`` /
    ``additional_metrics`` (one value per case: the mean over the slicing axes of its reconstructions).

    Besides MONAI's behaviour (the mean over cases in ``engine.state.metrics[name]``, every case's value in
    ``engine.state.metric_details[name]`` for ``MetricsSaver``), each iteration's values are published in
    ``engine.state.case_metrics[name]`` (a list, one float per case of the batch), so handlers attached after
    the metrics (the per-case log, the montages) show them without computing anything.

    Args:
        metric: one of :data:`METRIC_NAMES` or ``"lpips_paper"`` (:class:`CTVolumeMetric`).
        axis, axes, clip, lpips: as :class:`CTVolumeMetric`.
        output_transform: ``engine.state.output`` -> ``(y_pred, y)``, e.g.
            ``"$monai.handlers.from_engine(['pred', 'label'])"`` in a config.
        save_details: keep every case's value in ``engine.state.metric_details`` (default True).
    """

    def __init__(
        self,
        metric: str,
        axis: str | int = "axial",
        axes: Sequence[str | int] = AXES,
        clip: bool = True,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
        lpips: torch.nn.Module | None = None,
    ) -> None:
        super().__init__(
            metric_fn=CTVolumeMetric(metric, axis=axis, axes=axes, clip=clip, lpips=lpips),
            output_transform=output_transform,
            save_details=save_details,
        )

    def attach(self, engine: Any, name: str) -> None:  # type: ignore[override]
        super().attach(engine, name)
        if not hasattr(engine.state, "case_metrics"):
            engine.state.case_metrics = {}
        engine.add_event_handler(Events.ITERATION_STARTED, self._new_iteration)

    def _new_iteration(self, engine: Any) -> None:
        engine.state.case_metrics[self._name] = []

    @reinit__is_reduced
    def update(self, output: Sequence[torch.Tensor]) -> None:
        # ignite calls this once per iteration with a batch, or once per case with decollated lists
        if len(output) != 2:
            raise ValueError(f"output must be (y_pred, y), got {len(output)} items")
        values = self.metric_fn(*output)
        if self._engine is not None and self._name is not None:
            self._engine.state.case_metrics.setdefault(self._name, []).extend(float(v) for v in values.flatten())


class _NamedMetricHandler(CTMetricHandler):
    """A :class:`CTMetricHandler` of the metric ``metric_name`` (the subclasses below)."""

    metric_name = ""

    def __init__(
        self,
        *,
        axis: str | int = "axial",
        axes: Sequence[str | int] = AXES,
        clip: bool = True,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        super().__init__(
            self.metric_name,
            axis=axis,
            axes=axes,
            clip=clip,
            output_transform=output_transform,
            save_details=save_details,
        )


class PSNRPaperHandler(_NamedMetricHandler):
    """The paper's PSNR (official code: int32 levels, peak 4095, per col plane of each axis's stack; see
    :func:`psnr_paper`). ``axis``: slicing axis of one-channel predictions (multi-channel ones follow ``axes``)."""

    metric_name = "psnr_paper"


class SSIMPaperHandler(_NamedMetricHandler):
    """The paper's 3D SSIM (data_range 2, no clipping); see :func:`ssim_paper`."""

    metric_name = "ssim_paper"


class PSNRHandler(_NamedMetricHandler):
    """Honest whole-volume PSNR (peak = data range); see :func:`psnr_true`."""

    metric_name = "psnr"


class SSIMHandler(_NamedMetricHandler):
    """Honest 3D SSIM (data_range 1); see :func:`ssim_true`."""

    metric_name = "ssim"


class MAEHUHandler(_NamedMetricHandler):
    """Mean absolute error in HU (lower is better); see :func:`mae_hu`."""

    metric_name = "mae_hu"


class LPIPSPaperHandler(CTMetricHandler):
    """The paper's per-slice LPIPS (lower is better); see :func:`lpips_paper`.

    Args:
        lpips_vgg_weights, lpips_lin_weights: local files (``python -m scripts download_weights --name
            vgg16,lpips_lin``); the model is built once, here, in eval mode, on ``device``.
        axis, axes: as :class:`PSNRPaperHandler`.
        device: where LPIPS runs (default CPU).

    In a config, disable it when the weights are absent: ``"_disabled_": "$@lpips_vgg_weights is None"``
    (MONAI's config parser then leaves its key out of the metrics dict).
    """

    def __init__(
        self,
        lpips_vgg_weights: str,
        lpips_lin_weights: str | None = None,
        *,
        axis: str | int = "axial",
        axes: Sequence[str | int] = AXES,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        model = lpips_model(lpips_vgg_weights, lpips_lin_weights, device)
        if model is None:
            raise ValueError("LPIPSPaperHandler needs lpips_vgg_weights (a local VGG16 file); disable it without one")
        super().__init__(
            "lpips_paper",
            axis=axis,
            axes=axes,
            output_transform=output_transform,
            save_details=save_details,
            lpips=model,
        )
