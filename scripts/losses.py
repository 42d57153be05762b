"""Training loss of PerX2CT: L1 + SSIM + (optional) LPIPS-VGG on rendered CT slices.

The paper trains with L1 + LPIPS (VGG, weight 1). LPIPS needs ImageNet-pretrained VGG16 weights, which
this bundle never downloads: :class:`PerX2CTLoss` takes a *local* file (``lpips_vgg_weights``) and,
when it is unset, trains with L1 + SSIM only. LPIPS is implemented here (:class:`LPIPSVGG`) without
torchvision or the ``lpips`` package, reading their weight files:

* the VGG16 backbone from a torchvision-format state dict (keys ``features.N.weight`` / ``.bias``,
  e.g. ``vgg16-397923af.pth``);
* the learned per-channel weights ("lin" layers) from the lpips package's ``vgg.pth`` layout
  (keys ``lin0.model.1.weight`` ... ``lin4.model.1.weight``, each ``(1, C, 1, 1)``), found either in
  the same file or in ``lpips_lin_weights``. Without them every channel weighs ``1 / C`` (a warning
  says so): a usable perceptual distance, but not the calibrated LPIPS.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from torch import nn

__all__ = ["VGG16_CONFIG", "LPIPS_TAPS", "LPIPSVGG", "PerX2CTLoss"]

logger = logging.getLogger(__name__)

#: torchvision's VGG16 ``features`` layout: conv widths, "M" = 2x2 max pooling (each conv is followed by ReLU).
VGG16_CONFIG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
#: Indices in ``features`` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (LPIPS's taps).
LPIPS_TAPS: tuple[int, ...] = (3, 8, 15, 22, 29)
_TAP_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)
# LPIPS's ScalingLayer: inputs in [-1, 1] -> (x - shift) / scale
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)

_NO_WEIGHTS_HELP = (
    "Give a local torchvision VGG16 state dict (keys 'features.N.weight', e.g. vgg16-397923af.pth), "
    "or leave lpips_vgg_weights unset (null): training then works with L1 + SSIM only. Nothing is downloaded."
)


def _vgg16_features() -> nn.Sequential:
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


class LPIPSVGG(nn.Module):
    """LPIPS distance with a VGG16 backbone, from local weight files only.

    ``d(x, y) = sum_l mean_hw( w_l . (n(f_l(x)) - n(f_l(y)))^2 )`` where ``f_l`` are the VGG16 activations at
    relu1_2 ... relu5_3, ``n`` divides each pixel's feature vector by its L2 norm, and ``w_l`` are the
    learned non-negative channel weights (the "lin" layers, 1x1 convolutions) or ``1 / C_l``.

    Args:
        vgg_weights: path of a torchvision-format VGG16 state dict (``features.N.weight``/``bias``); if it
            also holds ``linL.model.1.weight`` keys, those are the lin weights.
        lin_weights: optional path of the lpips package's ``vgg.pth`` (lin weights only).

    Input: ``(B, 1, H, W)`` grey images in [0, 1] (repeated to 3 channels) or ``(B, 3, H, W)`` in [0, 1];
    they are mapped to [-1, 1] and through LPIPS's scaling layer. Output: ``(B,)`` distances.
    The VGG and lin weights are frozen; gradients flow to the inputs.
    """

    def __init__(self, vgg_weights: str | Path, lin_weights: str | Path | None = None) -> None:
        super().__init__()
        sd = _load_state_dict(vgg_weights, "LPIPS VGG weights")
        self.features = _vgg16_features()[: LPIPS_TAPS[-1] + 1]
        feats = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
        wanted = self.features.state_dict()
        missing = sorted(set(wanted) - set(feats), key=lambda k: int(k.split(".")[0]))
        if missing:
            raise ValueError(
                f"{vgg_weights} is not a torchvision VGG16 state dict: missing {['features.' + k for k in missing[:4]]}"
                f"{' ...' if len(missing) > 4 else ''}. {_NO_WEIGHTS_HELP}"
            )
        for k, v in wanted.items():
            if feats[k].shape != v.shape:
                raise ValueError(f"{vgg_weights}: features.{k} has shape {tuple(feats[k].shape)}, VGG16 needs {tuple(v.shape)}")
        self.features.load_state_dict({k: feats[k] for k in wanted})

        lin_sd = sd if lin_weights is None else _load_state_dict(lin_weights, "LPIPS lin weights")
        lins = [lin_sd.get(f"lin{i}.model.1.weight") for i in range(len(LPIPS_TAPS))]
        if all(w is not None for w in lins):
            for i, (w, c) in enumerate(zip(lins, _TAP_CHANNELS)):
                if w.numel() != c:
                    raise ValueError(f"lin{i}.model.1.weight has {w.numel()} values, relu tap {i} has {c} channels")
            weights = [w.reshape(1, c, 1, 1).float() for w, c in zip(lins, _TAP_CHANNELS)]
            self.calibrated = True
        else:
            src = vgg_weights if lin_weights is None else lin_weights
            warnings.warn(
                f"no LPIPS lin weights (lin0.model.1.weight ...) in {src}: every VGG channel weighs 1/C, "
                "a perceptual distance but not the calibrated LPIPS",
                stacklevel=2,
            )
            weights = [torch.full((1, c, 1, 1), 1.0 / c) for c in _TAP_CHANNELS]
            self.calibrated = False
        for i, w in enumerate(weights):
            self.register_buffer(f"lin{i}", w)
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPSVGG:
        """Always in eval mode (frozen backbone); ``mode`` is ignored."""
        return super().train(False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"LPIPS expects (B, 1, H, W) or (B, 3, H, W) images, got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return ((x * 2.0 - 1.0) - self.shift) / self.scale

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
        ref = self.shift
        if ref.device != pred.device:
            self.to(pred.device)
        x = self._prepare(pred.float())
        y = self._prepare(target.float())
        n = x.shape[0]
        feats = self._taps(torch.cat([x, y], dim=0))  # one pass for both
        total = pred.new_zeros(n, dtype=torch.float32)
        for i, f in enumerate(feats):
            f = f / (torch.sqrt((f * f).sum(dim=1, keepdim=True)) + 1e-10)
            diff = (f[:n] - f[n:]) ** 2
            total = total + (diff * getattr(self, f"lin{i}")).sum(dim=1).mean(dim=(1, 2))
        return total


class PerX2CTLoss(nn.Module):
    """``l1_weight * L1 + ssim_weight * (1 - SSIM) + lpips_weight * LPIPS`` on rendered slices.

    Args:
        l1_weight: weight of the mean absolute error.
        ssim_weight: weight of MONAI's ``SSIMLoss`` (2D, ``data_range`` 1, Gaussian 11-pixel window).
            The paper used no SSIM term: set 0 to reproduce it.
        lpips_weight: weight of LPIPS-VGG; used only when ``lpips_vgg_weights`` is given.
        lpips_vgg_weights: local torchvision VGG16 state dict, or None (no LPIPS term). Never downloaded;
            a missing file raises ``FileNotFoundError`` naming it.
        lpips_lin_weights: optional local lpips ``vgg.pth`` with the lin weights (see :class:`LPIPSVGG`).

    ``forward(pred, target)`` takes ``(B, 1, H, W)`` slices in [0, 1] and returns the scalar total;
    ``last_components`` then holds the detached parts (``l1``, ``ssim``, ``lpips`` when used, ``total``)
    for logging.
    """

    def __init__(
        self,
        l1_weight: float = 1.0,
        ssim_weight: float = 1.0,
        lpips_weight: float = 1.0,
        lpips_vgg_weights: str | None = None,
        lpips_lin_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.l1_weight, self.ssim_weight, self.lpips_weight = float(l1_weight), float(ssim_weight), float(lpips_weight)
        self.ssim = SSIMLoss(spatial_dims=2, data_range=1.0)
        self.lpips: LPIPSVGG | None = None
        if lpips_vgg_weights:
            self.lpips = LPIPSVGG(lpips_vgg_weights, lpips_lin_weights)
        elif self.lpips_weight > 0:
            logger.info("lpips_vgg_weights not set: training with L1 + SSIM only (no LPIPS term)")
        self.last_components: dict[str, torch.Tensor] = {}

    def extra_repr(self) -> str:
        return f"l1_weight={self.l1_weight}, ssim_weight={self.ssim_weight}, lpips_weight={self.lpips_weight if self.lpips else 0.0}"

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape or pred.ndim != 4:
            raise ValueError(f"PerX2CTLoss expects pred and target (B, 1, H, W) of equal shape; got {tuple(pred.shape)} and {tuple(target.shape)}")
        parts: dict[str, torch.Tensor] = {}
        total = pred.new_zeros((), dtype=torch.float32)
        if self.l1_weight:
            parts["l1"] = F.l1_loss(pred.float(), target.float())
            total = total + self.l1_weight * parts["l1"]
        if self.ssim_weight:
            parts["ssim"] = self.ssim(pred.float(), target.float())
            total = total + self.ssim_weight * parts["ssim"]
        if self.lpips is not None and self.lpips_weight:
            parts["lpips"] = self.lpips(pred, target).mean()
            total = total + self.lpips_weight * parts["lpips"]
        parts["total"] = total
        self.last_components = {k: v.detach() for k, v in parts.items()}
        return total
