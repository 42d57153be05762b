"""Inferers: how ``SupervisedTrainer``, ``SupervisedEvaluator`` and the inference workflow call PerX2CT.

* :class:`SliceInferer` (training): the network's (B, S, h, w) slices as (B * S, 1, h, w), so 2D losses
  (L1, LPIPS) line up with :class:`scripts.data.slice_sampling.SliceBatch`'s labels.
* :class:`ReconstructionInferer` (validation, evaluation, inference): whole volumes along each slicing axis,
  optionally autocast in bfloat16.
* :class:`ZoomInferer` (inference): one zoomed region of one slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import Inferer
from scripts.slicing import axis_code

__all__ = ["SliceInferer", "ReconstructionInferer", "ZoomInferer", "autocast_dtype"]


class SliceInferer(Inferer):
    """Inferer for slice training: ``network(image, slice_axis=..., slice_index=..., zoom_box=...)``
    returns (B, S, h, w); this reshapes it to (B * S, 1, h, w) to line up with :class:`SliceBatch`'s labels."""

    def __call__(self, inputs: torch.Tensor, network, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = network(inputs, *args, **kwargs)
        return out.reshape(-1, 1, *out.shape[-2:])


class ReconstructionInferer(Inferer):
    """Whole-volume reconstruction, once per slicing axis (the paper evaluates each test volume three
    times, slicing along each axis). Returns (B, A, X, Y, Z): channel ``a`` is the volume rendered
    slice by slice along ``axes[a]``. The encoder runs once per case for all axes.

    A keyword ``geometry`` (the inputs' own acquisition, from
    :class:`scripts.inference.view_geometry.PrepareBatchWithGeometry`) is handed to the network's sampler.

    ``amp_dtype``: ``None``/``"fp32"`` (default: full precision) or ``"bf16"`` (``torch.autocast`` in
    bfloat16 on the inputs' device, CPU or CUDA; the output is returned as float32)."""

    def __init__(self, axes: Sequence[str] = ("axial", "coronal", "sagittal"), amp_dtype: str | None = None) -> None:
        self.axes = [axis_code(a) for a in axes]
        if not self.axes:
            raise ValueError("ReconstructionInferer needs at least one axis")
        self.amp_dtype = autocast_dtype(amp_dtype)

    def __call__(self, inputs: torch.Tensor, network, *args: Any, **kwargs: Any) -> torch.Tensor:
        net = getattr(network, "module", network)  # unwrap DistributedDataParallel
        extra = _camera_kwargs(net, kwargs)
        if self.amp_dtype is None:
            return net.reconstruct(inputs, axes=self.axes, **extra)
        with torch.autocast(inputs.device.type, dtype=self.amp_dtype):
            out = net.reconstruct(inputs, axes=self.axes, **extra)
        return out.float()


def _camera_kwargs(net: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``{"camera": ...}`` of the inputs' own geometry when the batch carries one (keyword ``geometry``), else
    nothing: the network's own (its sampler's) geometry."""
    geometry = kwargs.get("geometry")
    return {} if geometry is None else {"camera": net.sampler.camera(geometry)}


def autocast_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``None``/``"fp32"`` -> None (no autocast); ``"bf16"``/``"bfloat16"`` -> ``torch.bfloat16``."""
    if name is None or isinstance(name, torch.dtype) and name == torch.float32:
        return None
    if isinstance(name, torch.dtype):
        if name != torch.bfloat16:
            raise ValueError(f"amp_dtype must be fp32 or bf16, got {name}")
        return name
    key = str(name).strip().lower()
    if key in ("fp32", "float32", "none", ""):
        return None
    if key in ("bf16", "bfloat16"):
        return torch.bfloat16
    raise ValueError(f"amp_dtype must be 'fp32' or 'bf16', got {name!r}")


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
        # (B, 1, h, w): S = 1 slice per case; geometry: the inputs' own (issue 19), else the network's
        return network(inputs, axis, index, box, **_camera_kwargs(getattr(network, "module", network), kwargs))
