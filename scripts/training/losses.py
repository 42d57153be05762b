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
* ``lpips_dropout=False``: deterministic LPIPS in training too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from torch import nn

__all__ = ["VGG16_CONFIG", "LPIPS_TAPS", "LPIPS_CHANNELS", "LPIPS_EPS", "LPIPSVGG", "PerX2CTLoss"]

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
    ``last_components`` then holds the detached parts (``l1``, ``lpips``, ``ssim`` as used, ``total``).
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
    ) -> None:
        super().__init__()
        self.l1_weight, self.lpips_weight = float(l1_weight), float(lpips_weight)
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
        parts["total"] = total
        self.last_components = {k: v.detach() for k, v in parts.items()}
        return total
