"""Training loss of PerX2CT: L1 + 1.0 x LPIPS-VGG as the official code computes it, from local weights.

The official training loss (``x2ct_nerf/modules/losses/vqperceptual.py`` with the adversarial and codebook
terms weighted 0) is, per batch of ``B`` rendered slices::

    mean over (B, C, H, W) of |target - pred|  +  1.0 x mean over B of LPIPS(target, pred)

with taming's LPIPS (``taming/modules/losses/lpips.py``): VGG16 ``features`` tapped at relu1_2 ... relu5_3,
each tap divided by its per-pixel channel norm ``sqrt(sum c^2 + 1e-10) + 1e-10``, squared difference,
**dropout (p = 0.5) on that difference while training** (the "lin" layers are ``Dropout -> 1x1 conv``; the
model is in training mode during training, so dropout is active there and off in evaluation), the 1x1 conv
with the calibrated LPIPS v0.1 weights, spatial mean, sum over taps. Images in [0, 1] go to LPIPS's scaling
layer ``(x - shift) / scale`` **unchanged** (the layer was designed for [-1, 1] input; the official code does
not map), and the grey slice is repeated to 3 channels (the official ground truth is a 1-channel slice
repeated to 3; its decoder's 3 output channels become the bundle's single channel broadcast to 3).
:class:`PerX2CTLoss` with its defaults is exactly that.

Weights: never downloaded here. ``lpips_vgg_weights`` is a torchvision VGG16 state dict
(``vgg16-397923af.pth``) and ``lpips_lin_weights`` the LPIPS lin file (``lpips_vgg_v0.1.pth``, the lpips
package's ``weights/v0.1/vgg.pth``); ``python -m scripts download_weights --name vgg16,lpips_lin`` fetches
both (:mod:`scripts.assets.pretrained`). Without them training still works, but the loss is **not the paper's**:
construction logs a warning saying so and what it uses instead, and :attr:`PerX2CTLoss.is_paper_loss` /
:attr:`PerX2CTLoss.recipe` record it for the training log and the checkpoint sidecar.

Named options (the project's alternatives; all off in the paper recipe):

* ``ssim_weight``: add ``w x (1 - SSIM)`` (MONAI ``SSIMLoss``, 2D, 11-pixel Gaussian window, data range 1);
* ``fallback_ssim_weight`` (default 1): the SSIM weight used *instead of LPIPS* when no LPIPS weights are
  given (L1 alone trains blurrier); 0 = plain L1;
* ``lpips_input_range="signed"``: map [0, 1] to [-1, 1] before the scaling layer, the range LPIPS was
  calibrated for (the official code did not);
* ``lpips_dropout=False``: deterministic LPIPS in training too;
* ``consistency``: a :class:`ReprojectionConsistency` whose weight > 0 adds the re-projection consistency term
  (issue 19, item 4; ``consistency_weight`` in ``configs/train.json``, default 0) that the training step's inferer
  (:class:`ConsistencySliceInferer`) computed for the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from scripts.frame import FRAME, VolumeFrame
from scripts.inference.inferers import SliceInferer
from scripts.projection.attenuation import hu_to_attenuation
from scripts.projection.geometry import ProjectionGeometry
from scripts.projection.torch_renderer import project
from torch import nn

__all__ = [
    "VGG16_CONFIG",
    "LPIPS_TAPS",
    "LPIPS_CHANNELS",
    "LPIPS_EPS",
    "LPIPSVGG",
    "PerX2CTLoss",
    "ReprojectionConsistency",
    "ConsistencySliceInferer",
]

logger = logging.getLogger(__name__)

# conv widths of VGG16's five blocks
_VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
#: torchvision's VGG16 ``features`` layout: conv widths, "M" = 2x2 max pooling (each conv is followed by ReLU).
VGG16_CONFIG: tuple[int | str, ...] = tuple(
    v for i, block in enumerate(_VGG16_BLOCKS) for v in ((("M",) if i else ()) + block)
)
#: Indices in ``features`` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (LPIPS's taps).
LPIPS_TAPS: tuple[int, ...] = (3, 8, 15, 22, 29)
#: Channels of those taps (= the lin layers' widths).
LPIPS_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)
#: taming's ``normalize_tensor`` epsilon: ``x / (sqrt(sum x^2 + eps) + eps)``.
LPIPS_EPS = 1e-10
#: Dropout probability of the lin layers (``nn.Dropout()`` default) while training.
LPIPS_DROPOUT_P = 0.5
# LPIPS's ScalingLayer: (x - shift) / scale per RGB channel
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
_INPUT_RANGES = ("unit", "signed")

_DOWNLOAD_HINT = (
    "python -m scripts download_weights --name vgg16,lpips_lin --output_dir models/pretrained "
    "(then --lpips_vgg_weights models/pretrained/vgg16-397923af.pth "
    "--lpips_lin_weights models/pretrained/lpips_vgg_v0.1.pth)"
)
_NO_WEIGHTS_HELP = (
    "Give a local torchvision VGG16 state dict (keys 'features.N.weight', e.g. vgg16-397923af.pth; "
    f"to fetch it: {_DOWNLOAD_HINT}), or set lpips_vgg_weights to null to train without LPIPS (not the paper's loss)."
)


def _vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` layout (randomly initialised), indices as in its state dict."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in VGG16_CONFIG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            c_in = int(v)
    return nn.Sequential(*layers)


def _load_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}. {_NO_WEIGHTS_HELP}")
    try:
        sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report which file failed and why
        raise ValueError(f"{what} {p} could not be read as a PyTorch state dict: {e}") from e
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping):
        raise ValueError(f"{what} {p} holds a {type(sd).__name__}, not a state dict")
    return dict(sd)


def normalize_channels(f: torch.Tensor, eps: float = LPIPS_EPS) -> torch.Tensor:
    """taming's ``normalize_tensor``: ``f / (sqrt(sum_c f^2 + eps) + eps)`` over dim 1 of ``(B, C, H, W)``."""
    return f / (torch.sqrt((f * f).sum(dim=1, keepdim=True) + eps) + eps)


class LPIPSVGG(nn.Module):
    """LPIPS distance with a VGG16 backbone (taming's / the official code's variant), from local files only.

    ``d(x, y) = sum_l mean_hw( conv1x1_l( drop( (n(f_l(x)) - n(f_l(y)))^2 ) ) )`` where ``f_l`` are the VGG16
    activations at relu1_2 ... relu5_3, ``n`` is :func:`normalize_channels`, ``drop`` is dropout (p = 0.5)
    in training mode when ``dropout`` is True (identity in eval mode), and ``conv1x1_l`` has the calibrated
    lin weights (or ``1 / C_l`` each when none are given: a perceptual distance, not LPIPS).

    Args:
        vgg_weights: a torchvision-format VGG16 state dict (``features.N.weight``/``bias``); if it also
            holds ``linL.model.1.weight`` keys, those are the lin weights.
        lin_weights: the LPIPS lin file (lpips package ``weights/v0.1/vgg.pth``; keys ``lin0.model.1.weight``
            ... ``lin4.model.1.weight``, shapes ``(1, C, 1, 1)``).
        input_range: ``"unit"`` (official): images in [0, 1] go to the scaling layer unchanged;
            ``"signed"``: mapped to [-1, 1] first (LPIPS's calibration range).
        dropout: dropout on the lin layers' inputs in training mode (official: True).

    Input: ``(B, 1, H, W)`` grey images (repeated to 3 channels) or ``(B, 3, H, W)``, H and W >= 16.
    Output: ``(B,)`` distances, computed in float32 (autocast off). Weights are frozen buffers;
    gradients flow to the inputs. Train/eval mode switches only the dropout.
    """

    def __init__(
        self,
        vgg_weights: str | Path,
        lin_weights: str | Path | None = None,
        input_range: str = "unit",
        dropout: bool = True,
    ) -> None:
        super().__init__()
        if input_range not in _INPUT_RANGES:
            raise ValueError(f"lpips input_range must be one of {_INPUT_RANGES}, got {input_range!r}")
        self.input_range, self.dropout = input_range, bool(dropout)
        sd = _load_state_dict(vgg_weights, "LPIPS VGG weights")
        self.features = _vgg16_features()[: LPIPS_TAPS[-1] + 1]
        feats = {k[len("features.") :]: v for k, v in sd.items() if k.startswith("features.")}
        wanted = self.features.state_dict()
        missing = sorted(set(wanted) - set(feats), key=lambda k: int(k.split(".")[0]))
        if missing:
            raise ValueError(
                f"{vgg_weights} is not a torchvision VGG16 state dict: missing {['features.' + k for k in missing[:4]]}"
                f"{' ...' if len(missing) > 4 else ''}. {_NO_WEIGHTS_HELP}"
            )
        for k, v in wanted.items():
            if feats[k].shape != v.shape:
                raise ValueError(
                    f"{vgg_weights}: features.{k} has shape {tuple(feats[k].shape)}, VGG16 needs {tuple(v.shape)}"
                )
        self.features.load_state_dict({k: feats[k].float() for k in wanted})

        lin_sd = sd if lin_weights is None else _load_state_dict(lin_weights, "LPIPS lin weights")
        lins = [lin_sd.get(f"lin{i}.model.1.weight") for i in range(len(LPIPS_TAPS))]
        if all(w is not None for w in lins):
            for i, (w, c) in enumerate(zip(lins, LPIPS_CHANNELS)):
                if w.numel() != c:
                    raise ValueError(f"lin{i}.model.1.weight has {w.numel()} values, relu tap {i} has {c} channels")
            weights = [w.reshape(1, c, 1, 1).float() for w, c in zip(lins, LPIPS_CHANNELS)]
            self.calibrated = True
        else:
            src = vgg_weights if lin_weights is None else lin_weights
            logger.warning(
                "no LPIPS lin weights (lin0.model.1.weight ...) in %s: every VGG channel weighs 1/C, a perceptual "
                "distance but not the calibrated LPIPS. To fetch them: %s",
                src,
                _DOWNLOAD_HINT,
            )
            weights = [torch.full((1, c, 1, 1), 1.0 / c) for c in LPIPS_CHANNELS]
            self.calibrated = False
        for i, w in enumerate(weights):
            self.register_buffer(f"lin{i}", w)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"input_range={self.input_range!r}, dropout={self.dropout}, calibrated={self.calibrated}"

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"LPIPS expects (B, 1, H, W) or (B, 3, H, W) images, got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.input_range == "signed":
            x = x * 2.0 - 1.0
        return (x - self.shift) / self.scale

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in LPIPS_TAPS:
                out.append(x)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"LPIPS: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        if self.shift.device != pred.device:
            self.to(pred.device)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            fx = self._taps(self._prepare(pred.float()))
            # the target's features need no graph unless the target itself needs gradients (half the backward)
            with torch.set_grad_enabled(torch.is_grad_enabled() and target.requires_grad):
                fy = self._taps(self._prepare(target.float()))
            drop = self.dropout and self.training
            total = pred.new_zeros(pred.shape[0], dtype=torch.float32)
            for i, (f0, f1) in enumerate(zip(fx, fy)):
                diff = (normalize_channels(f0) - normalize_channels(f1)) ** 2
                if drop:
                    diff = F.dropout(diff, p=LPIPS_DROPOUT_P, training=True)
                total = total + (diff * getattr(self, f"lin{i}")).sum(dim=1).mean(dim=(1, 2))
        return total


class PerX2CTLoss(nn.Module):
    """``l1_weight * L1 + lpips_weight * LPIPS [+ ssim_weight * (1 - SSIM)]`` on rendered slices.

    Size: the official loss with its named options (weights, SSIM stand-in, LPIPS input range and dropout, the
    fallback without LPIPS weights and its warning) as one component a config declares with its weights visible.

    Defaults = the official loss (see the module docstring): ``l1_weight`` 1, ``lpips_weight`` 1, no SSIM,
    LPIPS on [0, 1] input with dropout in training mode.

    Args:
        l1_weight: weight of the mean absolute error over all pixels of the batch.
        lpips_weight: weight of the batch mean of LPIPS-VGG (used when ``lpips_vgg_weights`` is given).
        ssim_weight: weight of ``1 - SSIM`` (MONAI ``SSIMLoss``, 2D, data range 1); official: 0.
        lpips_vgg_weights: local torchvision VGG16 state dict, or None (no LPIPS: not the paper's loss).
            A path that does not exist raises ``FileNotFoundError`` naming it (nothing is downloaded).
        lpips_lin_weights: local LPIPS lin file (``lpips_vgg_v0.1.pth``); without it every channel weighs
            ``1 / C`` (not the paper's loss).
        lpips_input_range: ``"unit"`` (official) or ``"signed"`` (see :class:`LPIPSVGG`).
        lpips_dropout: dropout on LPIPS's lin layers in training mode (official: True). The loss module
            is in training mode after construction (PyTorch's default); ``.eval()`` turns dropout off.
        fallback_ssim_weight: weight of ``1 - SSIM`` used instead of LPIPS when ``lpips_vgg_weights`` is
            None and ``lpips_weight`` > 0 (0: L1 only).

    ``forward(pred, target)`` takes ``(B, 1, H, W)`` slices in [0, 1] and returns the scalar total;
    ``last_components`` then holds the detached parts (``l1``, ``lpips``, ``ssim``, ``consistency`` as used,
    ``total``). ``consistency``: a :class:`ReprojectionConsistency`; its pending term (computed by the training
    step's :class:`ConsistencySliceInferer`, weighted) is added once; weight 0 or none pending: the loss as without.
    :attr:`is_paper_loss` says whether this is the official loss; :attr:`recipe` describes it (JSON-able).
    """

    def __init__(
        self,
        l1_weight: float = 1.0,
        lpips_weight: float = 1.0,
        ssim_weight: float = 0.0,
        lpips_vgg_weights: str | None = None,
        lpips_lin_weights: str | None = None,
        lpips_input_range: str = "unit",
        lpips_dropout: bool = True,
        fallback_ssim_weight: float = 1.0,
        consistency: ReprojectionConsistency | None = None,
    ) -> None:
        super().__init__()
        self.l1_weight, self.lpips_weight = float(l1_weight), float(lpips_weight)
        self.consistency = consistency
        self.lpips: LPIPSVGG | None = None
        if lpips_vgg_weights and self.lpips_weight:
            self.lpips = LPIPSVGG(
                lpips_vgg_weights, lpips_lin_weights, input_range=lpips_input_range, dropout=lpips_dropout
            )
        elif lpips_input_range not in _INPUT_RANGES:
            raise ValueError(f"lpips_input_range must be one of {_INPUT_RANGES}, got {lpips_input_range!r}")
        self.fallback = self.lpips is None and self.lpips_weight > 0 and float(fallback_ssim_weight) > 0
        # weight of (1 - SSIM): the optional extra term plus, without LPIPS weights, the stand-in for LPIPS
        self.ssim_weight = float(ssim_weight) + (float(fallback_ssim_weight) if self.fallback else 0.0)
        self.ssim = SSIMLoss(spatial_dims=2, data_range=1.0) if self.ssim_weight else None
        self.last_components: dict[str, torch.Tensor] = {}

        deviations = []
        if self.lpips is None and self.lpips_weight:
            deviations.append("no LPIPS term (lpips_vgg_weights not set)")
        elif self.lpips is not None and not self.lpips.calibrated:
            deviations.append(
                "LPIPS without its calibrated lin weights (lpips_lin_weights not set): channels weigh 1/C"
            )
        if self.fallback:
            deviations.append(f"(1 - SSIM) x {float(fallback_ssim_weight):g} in place of LPIPS (fallback_ssim_weight)")
        if float(ssim_weight):
            deviations.append(f"extra (1 - SSIM) x {float(ssim_weight):g} term (ssim_weight)")
        if self.l1_weight != 1.0:
            deviations.append(f"l1_weight {self.l1_weight:g} (paper 1)")
        if self.lpips_weight != 1.0:
            deviations.append(f"lpips_weight {self.lpips_weight:g} (paper 1)")
        if lpips_input_range != "unit":
            deviations.append("LPIPS input mapped to [-1, 1] (lpips_input_range 'signed'; official feeds [0, 1])")
        if not lpips_dropout:
            deviations.append("LPIPS dropout off in training (official: on)")
        if consistency is not None and consistency.enabled:
            deviations.append(f"re-projection consistency x {consistency.weight:g} (consistency_weight; paper 0)")
        #: True when this is the official loss: L1 + 1.0 x calibrated LPIPS, [0, 1] input, dropout, no SSIM.
        self.is_paper_loss = not deviations
        #: JSON-able description for the training log and the checkpoint sidecar.
        self.recipe: dict[str, Any] = {
            "formula": self._formula(),
            "paper_loss": self.is_paper_loss,
            "deviations": deviations,
            "lpips_vgg_weights": str(lpips_vgg_weights) if self.lpips is not None else None,
            "lpips_lin_weights": str(lpips_lin_weights) if self.lpips is not None and lpips_lin_weights else None,
        }
        if not self.is_paper_loss:
            logger.warning(
                "\n%s\nTHIS IS NOT THE PAPER'S LOSS. Training with %s.\nDifferences from the official "
                "L1 + 1.0 x LPIPS: %s.\nFor the paper's loss: %s\n%s",
                "=" * 100,
                self.recipe["formula"],
                "; ".join(deviations),
                _DOWNLOAD_HINT,
                "=" * 100,
            )
        else:
            logger.info("loss: %s (the paper's loss)", self.recipe["formula"])

    def _formula(self) -> str:
        parts = []
        if self.l1_weight:
            parts.append(f"{self.l1_weight:g} x L1")
        if self.lpips is not None:
            name = "LPIPS-VGG" if self.lpips.calibrated else "uncalibrated VGG perceptual distance"
            extra = [] if self.lpips.input_range == "unit" else ["[-1, 1] input"]
            extra += [] if self.lpips.dropout else ["no dropout"]
            parts.append(f"{self.lpips_weight:g} x {name}" + (f" ({', '.join(extra)})" if extra else ""))
        if self.ssim_weight:
            parts.append(f"{self.ssim_weight:g} x (1 - SSIM)")
        if self.consistency is not None and self.consistency.enabled:
            parts.append(f"{self.consistency.weight:g} x (1 - NCC) re-projection consistency")
        return " + ".join(parts) or "0"

    def extra_repr(self) -> str:
        return f"{self.recipe['formula']}, paper_loss={self.is_paper_loss}"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape or pred.ndim != 4:
            raise ValueError(
                "PerX2CTLoss expects pred and target (B, 1, H, W) of equal shape; "
                f"got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        parts: dict[str, torch.Tensor] = {}
        total = pred.new_zeros((), dtype=torch.float32)
        if self.l1_weight:
            parts["l1"] = F.l1_loss(pred.float(), target.float())
            total = total + self.l1_weight * parts["l1"]
        if self.lpips is not None:
            parts["lpips"] = self.lpips(pred, target).mean()
            total = total + self.lpips_weight * parts["lpips"]
        if self.ssim is not None:
            parts["ssim"] = self.ssim(pred.float(), target.float())
            total = total + self.ssim_weight * parts["ssim"]
        pending = self.consistency.pop() if self.consistency is not None else None
        if pending is not None:  # weighted already (ReprojectionConsistency.compute)
            parts["consistency"] = pending
            total = total + pending
        parts["total"] = total
        self.last_components = {k: v.detach() for k, v in parts.items()}
        return total


class ReprojectionConsistency(nn.Module):
    """Re-projection consistency (issue 19, item 4): predicted slice stacks projected through the input views'
    geometry by the torch projector and compared with the input views.

    What is projected, and why. A training step of PerX2CT predicts one slice per sample, not a volume, and a single
    slice does not determine any detector pixel (each ray crosses every slice along the beam). Predicting the whole
    volume per step (128 slices) would multiply the step's cost by ~100. The cheap stand-in: for ``cases`` samples of
    the batch, the network predicts ``slices`` slices *across each view's beam* (coronal planes for the PA view,
    sagittal planes for the lateral: the planes the beam crosses) at the centres of ``slices`` equal slabs of the cube,
    with the sample's own encoded views and camera. Each stack is projected through that sample's geometry by
    :func:`scripts.projection.torch_renderer.project` marching along the stack's axis (one sample per predicted plane,
    bilinear inside the plane: every detector pixel keeps the planes' full in-plane resolution; the quadrature along
    the beam is ``slices`` points), on a coarse detector (``detector_shape``). The projection (target scale -> HU ->
    attenuation, :func:`scripts.projection.attenuation.hu_to_attenuation`) is compared with the input view resized to
    that detector by ``1 - NCC`` (normalised cross-correlation: insensitive to the views' normalisation, gain and
    offset) over the pixels whose rays cross the cube along most of its depth (the cube's footprint: outside it the
    input shows anatomy the cube does not hold). Differentiable in the predicted slices (the projector is).

    Size: one class because the planes the network predicts, where they lie in mm for the projector and the
    footprint they are compared over are one convention (slab centres, beam axis per view) that must not drift apart.

    Args:
        weight: the term's weight in the training loss (0 = off: nothing is computed, the loss is unchanged).
        geometry: the network's training geometry (the views' geometry when the batch carries none).
        views: the views, in the order of the images' channels.
        slices: predicted planes per view and case (default 8: 40 mm slabs of the 320 mm cube).
        cases: samples of the batch that get the term per step (the first ones; default 1).
        detector_shape: the coarse detector ``(rows, cols)`` the stacks are projected on (default 64 x 64).
        frame: the target's :class:`~scripts.frame.VolumeFrame`.
        footprint: a pixel counts when its ray's length inside the cube is at least this fraction of the longest.
        interval: compute the term every ``interval`` training steps (1: every step): its cost (``2 x slices`` more
            slices through the decoder per case, plus one encoding) is then spread over that many steps.

    Cost (``tests/benchmarks/bench_clinical.py``, ``small`` preset, batch 8, 1 torch thread on 2 CPU cores with a load
    average of 11-13): +2.4 to +3.2 s per step with the defaults (16 more slices per step; two runs) over a 1.7 s step.
    """

    def __init__(
        self,
        weight: float = 0.0,
        geometry: ProjectionGeometry | None = None,
        views: tuple[str, ...] | list[str] = ("pa", "lateral"),
        slices: int = 8,
        cases: int = 1,
        detector_shape: tuple[int, int] | list[int] = (64, 64),
        frame: VolumeFrame = FRAME,
        footprint: float = 0.5,
        interval: int = 1,
    ) -> None:
        super().__init__()
        self.weight = float(weight)
        if self.weight < 0:
            raise ValueError(f"consistency weight must be >= 0, got {weight}")
        if int(slices) < 2 or int(cases) < 1:
            raise ValueError(f"consistency needs slices >= 2 and cases >= 1, got slices={slices}, cases={cases}")
        base = geometry if geometry is not None else ProjectionGeometry.from_preset("perx2ct")
        self.views = tuple(views)
        self.geometry = base.centred().with_detector_shape(detector_shape)
        self.slices, self.cases = int(slices), int(cases)
        self.frame = frame
        self.footprint = float(footprint)
        self.interval = max(1, int(interval))
        self._calls = 0
        # per view: the array axis its beam runs along (x for a normal (1, 0, 0)) and the slice code across it
        self.beam_axes = {v: int(np.argmax(np.abs(self.geometry.view(v).normal))) for v in self.views}
        self.pending: torch.Tensor | None = None
        self.last_value: float | None = None

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    @property
    def recipe(self) -> dict[str, Any]:
        """JSON-able description (the checkpoint sidecar records it)."""
        return {
            "weight": self.weight,
            "slices": self.slices,
            "cases": self.cases,
            "detector_shape": list(self.geometry.detector_shape),
            "interval": self.interval,
            "measure": "1 - NCC over the cube's footprint",
        }

    def plane_positions(self, grid: int) -> torch.Tensor:
        """``(slices,)`` voxel indices, on a ``grid``-voxel cube, of the predicted planes: the centres of ``slices``
        equal slabs of the cube."""
        return (torch.arange(self.slices, dtype=torch.float64) + 0.5) * grid / self.slices - 0.5

    def project_stack(self, stack: torch.Tensor, view: str, geometries: list[ProjectionGeometry]) -> torch.Tensor:
        """Raw line integrals ``(n, rows, cols)`` of stacks ``(n, 1, X, Y, Z)`` in the target scale, centred on the
        isocentre and filling the frame's cube (``size_mm``), whose beam axis holds ``slices`` planes at the slab
        centres (:meth:`plane_positions`) and the other axes any number of voxels, through each case's geometry."""
        axis = self.beam_axes[view]
        size = self.frame.size_mm
        spacing = [size / int(stack.shape[2 + a]) for a in range(3)]
        origin = [-(int(stack.shape[2 + a]) - 1) / 2 * spacing[a] for a in range(3)]
        mu = hu_to_attenuation(self.frame.target_to_hu(stack.float()))
        return project(mu, spacing, origin, geometries, (view,), march_axes={view: axis})[:, 0]

    def term(
        self, stacks: dict[str, torch.Tensor], images: torch.Tensor, geometries: list[ProjectionGeometry]
    ) -> torch.Tensor:
        """The mean over cases and views of ``1 - NCC(projection, input view)`` over the cube's footprint.

        Args:
            stacks: per view the predicted planes across its beam, ``(n, 1, X, Y, Z)`` in the target scale, with
                ``slices`` planes on the view's beam axis (:meth:`plane_positions`).
            images: the input views ``(n, V, H, W)`` (the network's input, [0, 1]).
            geometries: each case's geometry (its views' acquisitions).
        """
        shape = self.geometry.detector_shape
        geometries = [g.centred().with_detector_shape(shape) for g in geometries]
        losses = []
        for v, view in enumerate(self.views):
            stack = stacks[view]
            proj = self.project_stack(stack, view, geometries)  # (n, h, w)
            with torch.no_grad():
                ones = self.project_stack(torch.ones_like(stack[:1]).expand_as(stack), view, geometries)
                mask = (ones >= self.footprint * ones.flatten(1).amax(1)[:, None, None]).to(proj.dtype)
            x = F.interpolate(images[:, v : v + 1].float(), size=shape, mode="area")[:, 0]
            losses.append(1.0 - _masked_ncc(proj, x.to(proj.device), mask))
        return torch.stack(losses).mean()

    def stacks_of(self, network: nn.Module, images: torch.Tensor, camera=None) -> dict[str, torch.Tensor]:
        """The network's planes across each view's beam for cases ``images (n, V, H, W)``, ``(n, 1, X, Y, Z)``."""
        maps, glob = network.encode(images)
        n = images.shape[0]
        index = self.plane_positions(int(network.volume_shape)).to(images.device, torch.float32)
        index = index[None].expand(n, self.slices)
        out = {}
        for view in self.views:
            axis = self.beam_axes[view]
            code = 2 - axis  # slice codes: 0 axial (fixes z), 1 coronal (fixes y), 2 sagittal (fixes x)
            codes = torch.full((n, self.slices), code, device=images.device, dtype=torch.long)
            s = network.render(maps, glob, codes, index, None, camera)  # (n, K, rows, cols)
            # rows / cols of a slice (scripts.networks.perx2ct.PerX2CT.reconstruct): axial (i, j), coronal (i, k),
            # sagittal (j, k)
            vol = s.permute(0, 2, 3, 1) if code == 0 else (s.permute(0, 2, 1, 3) if code == 1 else s)
            out[view] = vol[:, None]
        return out

    def compute(self, network: nn.Module, inputs: torch.Tensor, geometry=None, camera=None) -> torch.Tensor:
        """The term for the first ``cases`` samples of a batch; kept as :attr:`pending` for the loss."""
        n = min(self.cases, inputs.shape[0])
        geometries = list(geometry)[:n] if geometry is not None else [self.geometry] * n
        cam = None
        if camera is not None:
            cam = tuple(c[:n] if c.shape[0] > 1 else c for c in camera)
        value = self.weight * self.term(self.stacks_of(network, inputs[:n], cam), inputs[:n], geometries)
        self.pending = value
        self.last_value = float(value.detach())
        return value

    def pop(self) -> torch.Tensor | None:
        """The pending weighted term (once), or None."""
        value, self.pending = self.pending, None
        return value

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.recipe.items())


def _masked_ncc(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-case normalised cross-correlation of ``(n, h, w)`` images over ``mask``, averaged over cases."""
    w = mask / mask.flatten(1).sum(1).clamp(min=1.0)[:, None, None]
    am = (a * w).flatten(1).sum(1)[:, None, None]
    bm = (b * w).flatten(1).sum(1)[:, None, None]
    ac, bc = (a - am) * mask, (b - bm) * mask
    num = (ac * bc).flatten(1).sum(1)
    den = torch.sqrt((ac * ac).flatten(1).sum(1) * (bc * bc).flatten(1).sum(1) + eps)
    return (num / den).mean()


class ConsistencySliceInferer(SliceInferer):
    """The training step's inferer: :class:`scripts.inference.inferers.SliceInferer`, plus

    * a keyword ``geometry`` (each sample's :class:`~scripts.projection.geometry.ProjectionGeometry`, from
      :class:`scripts.transforms.rigid_views.RandRigidViewsBatch` in the ``clinical`` setting) handed to the network's
      sampler as its ``camera`` (``net.sampler.camera(geometry)``: the geometry the views were rendered with);
    * with a ``consistency`` whose weight is > 0, the re-projection term of the batch
      (:meth:`ReprojectionConsistency.compute`), which :class:`PerX2CTLoss` adds. Weight 0: nothing more runs.
    """

    def __init__(self, consistency: ReprojectionConsistency | None = None) -> None:
        super().__init__()
        self.consistency = consistency

    def __call__(self, inputs: torch.Tensor, network, *args: Any, **kwargs: Any) -> torch.Tensor:
        geometry = kwargs.pop("geometry", None)
        net = getattr(network, "module", network)
        if geometry is not None:
            kwargs["camera"] = net.sampler.camera(geometry)
        out = super().__call__(inputs, network, *args, **kwargs)
        c = self.consistency
        if c is not None and c.enabled and torch.is_grad_enabled():
            c._calls += 1
            if (c._calls - 1) % c.interval == 0:
                c.compute(net, inputs, geometry, kwargs.get("camera"))
        return out
