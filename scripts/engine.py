"""Pieces that let MONAI's ``SupervisedTrainer`` train PerX2CT on random slices.

The trainer keeps its own iteration (AMP, gradient accumulation, events). Two components adapt
it to slice training:

* :class:`RandomSliceBatch` (the trainer's ``prepare_batch``): takes a batch of cases
  ``{"image": (B, 2, 128, 128), "label": (B, 1, 128, 128, 128)}``, draws ``slices_per_case`` slices per
  case (random axis per slice; random zoom boxes with probability ``zoom_prob``) and cuts the matching
  ground truth from the label volume with :func:`scripts.slicing.sample_volume`.
* :class:`SliceInferer` (the trainer's ``inferer``): calls the network once per case with the slice
  specification, so the encoder runs once per case however many slices are drawn.

Both return slices as (B * S, 1, 128, 128) so 2D losses (L1, SSIM, LPIPS) apply unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import Inferer
from monai.utils import CommonKeys

from scripts.slicing import axis_code, sample_volume, slice_positions

__all__ = ["RandomSliceBatch", "SliceInferer", "ReconstructionInferer", "ZoomInferer", "flag"]


def flag(value: Any, name: str = "flag") -> bool:
    """A command-line switch as a bool: fire passes ``--resume true`` as the string ``"true"``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off", "none", ""):
        return False
    raise ValueError(f"--{name} must be true or false, got {value!r}")


class RandomSliceBatch:
    """``prepare_batch`` for ``SupervisedTrainer``: random slices of each case and their ground truth.

    Args:
        slices_per_case: slices drawn per case per iteration (the encoder runs once per case).
        axes: the axes to draw from (names or codes); the paper uses all three.
        zoom_prob: probability that a slice is a zoomed sub-square (0.5 for the paper's global
            variant, 0 otherwise).
        zoom_min, zoom_max: side of a zoom box in voxels of the 128 grid (paper: 32..128).
        output_size: pixels per side of a rendered slice (the decoder's output, 128).
        seed: seed of the sampler's own generator (independent of global RNG state).
        image_key, label_key: batch keys.

    Returns (from ``__call__``): ``(image, target, (), kwargs)`` where image is (B, 2, H, W), target is
    (B * S, 1, output_size, output_size) in the label's units, and kwargs holds ``slice_axis`` (B, S)
    int64, ``slice_index`` (B, S) float32 voxels, ``zoom_box`` (B, S, 3) float32 ``(row0, col0, size)``.
    """

    def __init__(
        self,
        slices_per_case: int = 4,
        axes: Sequence[str | int] = ("axial", "coronal", "sagittal"),
        zoom_prob: float = 0.0,
        zoom_min: int = 32,
        zoom_max: int = 128,
        output_size: int = 128,
        seed: int = 0,
        image_key: str = CommonKeys.IMAGE,
        label_key: str = CommonKeys.LABEL,
    ) -> None:
        if slices_per_case < 1:
            raise ValueError(f"slices_per_case must be >= 1, got {slices_per_case}")
        if not 0.0 <= zoom_prob <= 1.0:
            raise ValueError(f"zoom_prob must be in [0, 1], got {zoom_prob}")
        if not 1 <= zoom_min <= zoom_max:
            raise ValueError(f"need 1 <= zoom_min <= zoom_max, got {zoom_min}, {zoom_max}")
        self.slices_per_case = int(slices_per_case)
        self.axes = torch.tensor([axis_code(a) for a in axes], dtype=torch.long)
        self.zoom_prob = float(zoom_prob)
        self.zoom_min, self.zoom_max = int(zoom_min), int(zoom_max)
        self.output_size = int(output_size)
        self.image_key, self.label_key = image_key, label_key
        self.generator = torch.Generator().manual_seed(int(seed))

    def draw(self, batch_size: int, volume_shape: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``(slice_axis (B, S), slice_index (B, S), zoom_box (B, S, 3))`` on the CPU."""
        g, shape = self.generator, (batch_size, self.slices_per_case)
        axis = self.axes[torch.randint(len(self.axes), shape, generator=g)]
        index = torch.randint(volume_shape, shape, generator=g).float()
        zoom_max = min(self.zoom_max, volume_shape)
        size = torch.randint(min(self.zoom_min, zoom_max), zoom_max + 1, shape, generator=g).float()
        zoomed = torch.rand(shape, generator=g) < self.zoom_prob
        size = torch.where(zoomed, size, torch.full_like(size, float(volume_shape)))
        row0 = torch.floor(torch.rand(shape, generator=g) * (volume_shape - size + 1))
        col0 = torch.floor(torch.rand(shape, generator=g) * (volume_shape - size + 1))
        return axis, index, torch.stack((row0, col0, size), dim=-1)

    def __call__(self, batchdata: dict, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any):
        try:
            image, label = batchdata[self.image_key], batchdata[self.label_key]
        except KeyError as e:
            raise KeyError(f"training batch needs keys {self.image_key!r} and {self.label_key!r}; got {sorted(batchdata)}") from e
        image = torch.as_tensor(image).to(device=device, non_blocking=non_blocking, **kwargs)
        label = torch.as_tensor(label).to(device=device, non_blocking=non_blocking, **kwargs)
        if label.ndim != 5 or label.shape[2] != label.shape[3] or label.shape[3] != label.shape[4]:
            raise ValueError(f"label must be (B, 1, n, n, n) volumes, got {tuple(label.shape)}")
        axis, index, box = self.draw(image.shape[0], label.shape[-1])
        axis, index, box = axis.to(label.device), index.to(label.device), box.to(label.device)
        positions = slice_positions(axis, index, box, self.output_size, label.shape[-1])
        target = sample_volume(label.float(), positions)  # (B, S, h, w)
        target = target.reshape(-1, 1, self.output_size, self.output_size)
        return image, target, (), {"slice_axis": axis, "slice_index": index, "zoom_box": box}


class SliceInferer(Inferer):
    """Inferer for slice training: ``network(image, slice_axis=..., slice_index=..., zoom_box=...)``
    returns (B, S, h, w); this reshapes it to (B * S, 1, h, w) to line up with :class:`RandomSliceBatch`."""

    def __call__(self, inputs: torch.Tensor, network, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = network(inputs, *args, **kwargs)
        return out.reshape(-1, 1, *out.shape[-2:])


class ReconstructionInferer(Inferer):
    """Whole-volume reconstruction, once per slicing axis (the paper evaluates each test volume three
    times, slicing along each axis). Returns (B, A, X, Y, Z): channel ``a`` is the volume rendered
    slice by slice along ``axes[a]``. The encoder runs once per case for all axes."""

    def __init__(self, axes: Sequence[str] = ("axial", "coronal", "sagittal")) -> None:
        self.axes = [axis_code(a) for a in axes]
        if not self.axes:
            raise ValueError("ReconstructionInferer needs at least one axis")

    def __call__(self, inputs: torch.Tensor, network, *args: Any, **kwargs: Any) -> torch.Tensor:
        net = getattr(network, "module", network)  # unwrap DistributedDataParallel
        return net.reconstruct(inputs, axes=self.axes)


class ZoomInferer(Inferer):
    """One region of one slice at the decoder's full resolution (zoom-in): pred (B, 1, 128, 128).

    Args:
        axis: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        index: slice position along that axis, voxels of the 128 grid.
        box: ``(row0, col0, size)`` of the region in voxels of the 128 grid (see :mod:`scripts.slicing`);
            a box of side 32 renders 4x finer than the volume (0.625 mm pixels).
    """

    def __init__(self, axis: str, index: float, box: Sequence[float]) -> None:
        self.axis = axis_code(axis)
        self.index = float(index)
        self.box = [float(v) for v in box]
        if len(self.box) != 3 or self.box[2] <= 0:
            raise ValueError(f"zoom box must be (row0, col0, size) with size > 0, got {box!r}")

    def __call__(self, inputs: torch.Tensor, network, *args: Any, **kwargs: Any) -> torch.Tensor:
        b, dev = inputs.shape[0], inputs.device
        axis = torch.full((b, 1), self.axis, dtype=torch.long, device=dev)
        index = torch.full((b, 1), self.index, device=dev)
        box = torch.tensor(self.box, device=dev).expand(b, 1, 3)
        return network(inputs, axis, index, box)  # (B, 1, h, w): S = 1 slice per case

