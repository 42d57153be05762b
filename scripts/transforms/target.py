"""The network's target: a CT cube in HU -> ``(1, 128, 128, 128)`` in [0, 1] at 2.5 mm (``CTTarget(d)``).

Point sampling (the official code's) or area averaging from the 1 mm cube; the affine moves with the data.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from scripts.frame import FRAME, VolumeFrame
from scripts.transforms.ct import as_metatensor, linear_weights, separable_resample, set_spacing_meta

__all__ = ["CTTarget", "CTTargetd", "TARGET_MODES", "area_downsample", "point_downsample"]


def _area_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of exact area (box) averaging: output voxel i averages the input interval
    ``[i * r, (i + 1) * r)`` (in input voxel widths, r = n_in / n_out) with fractional overlaps."""
    r = n_in / n_out
    lo = np.arange(n_out)[:, None] * r
    hi = lo + r
    j = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None)
    return torch.as_tensor(overlap / r, dtype=torch.float32)


def _downsampled_like(img: MetaTensor, y) -> MetaTensor:
    """``y`` (1, *shape), a resampling of ``img`` (1, *n_in) that keeps its outer edges and centre, as a
    MetaTensor with ``img``'s affine scaled by ``r = n_in / shape`` (spacing x r, voxel 0 centred at input index
    ``(r - 1) / 2``) and ``img``'s other metadata."""
    n_in = np.asarray(img.shape[1:], dtype=np.float64)
    r = n_in / np.asarray(y.shape[1:], dtype=np.float64)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(r)
    scale[:3, 3] = (r - 1) / 2  # centre of output voxel 0 in input index units
    affine = np.asarray(img.affine, dtype=np.float64) @ scale
    meta = {k: v for k, v in img.meta.items() if k != "affine"}
    return set_spacing_meta(MetaTensor(y, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta))


def area_downsample(img: MetaTensor, shape: Sequence[int]) -> MetaTensor:
    """Exact area (box-filter) downsampling of a ``(C, X, Y, Z)`` MetaTensor to ``shape``, any ratio >= 1.

    Each output voxel is the volume-weighted mean of the input voxels it covers (fractional overlaps,
    so no jitter for non-integer ratios such as 320 -> 128). The field of view (outer edges) is kept:
    spacing grows by ``n_in / n_out`` and the centre stays; the affine is updated accordingly.
    """
    img = as_metatensor(img)
    x = img.as_tensor().to(torch.float32)
    n_in = tuple(int(s) for s in x.shape[1:])
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(o > i or o < 1 for o, i in zip(shape, n_in)):
        raise ValueError(f"area_downsample needs 1 <= output <= input per axis, got {n_in} -> {shape}")
    mx, my, mz = (_area_matrix(i, o) for i, o in zip(n_in, shape))
    y = torch.einsum("cxyz,ax->cayz", x, mx)
    y = torch.einsum("cayz,by->cabz", y, my)
    y = torch.einsum("cabz,dz->cabd", y, mz)
    return _downsampled_like(img, y.contiguous())


def point_downsample(img: MetaTensor, shape: Sequence[int]) -> MetaTensor:
    """Point sampling of a ``(1, X, Y, Z)`` MetaTensor to ``shape``: each output voxel is the trilinear
    interpolation of the input at the output voxel's centre (input index ``(i + 0.5) * r - 0.5``,
    ``r = n_in / n_out``; as ``interpolate(mode="trilinear", align_corners=False)`` without antialiasing).
    The field of view (outer edges) and the centre are kept, spacing grows by ``r``; the affine follows."""
    img = as_metatensor(img)
    if img.ndim != 4 or img.shape[0] != 1:
        raise ValueError(f"point_downsample expects a (1, X, Y, Z) volume, got shape {tuple(img.shape)}")
    n_in = tuple(int(v) for v in img.shape[1:])
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or any(o < 1 for o in shape):
        raise ValueError(f"point_downsample needs a 3D output shape, got {shape}")
    weights = [linear_weights((np.arange(o) + 0.5) * (i / o) - 0.5, i) for i, o in zip(n_in, shape)]
    y = separable_resample(img.as_tensor()[0].detach().cpu().numpy(), weights)[None]
    return _downsampled_like(img, y)


#: Resampling modes of :class:`CTTarget`.
TARGET_MODES = ("point", "area")


class CTTarget(Transform):
    """The training target: the 1 mm HU cube -> ``(1, 128, 128, 128)`` intensities in [0, 1] at 2.5 mm.

    Steps: resample the HU cube to ``output_size`` voxels per side, then map HU to the target scale of
    :data:`scripts.frame.FRAME` (``clip(HU + 1024, 0, 2500) / 2500``, float32; -1024 HU -> 0, 1476 -> 1).
    The affine keeps the cube's outer edges and centre, with spacing ``input spacing x n_in / n_out``.

    Resampling (``mode``):

    * ``"point"`` (default, as the official PerX2CT targets): trilinear interpolation of the 1 mm cube at
      the centres of the 128 output voxels (:func:`point_downsample`); 320 -> 128 reads the 1 mm voxels
      nearest to each 2.5 mm centre, so fine structure keeps its contrast (and can alias);
    * ``"area"``: exact area (box) averaging (:func:`area_downsample`): each voxel is the mean of the
      2.5 x 2.5 x 2.5 mm it covers, anti-aliased and smoother (thin vessels lose contrast).

    Args:
        output_size: voxels per side of the target (default ``FRAME.shape``, 128).
        hu_offset: added to HU before clipping (default ``FRAME.hu_offset``, 1024).
        max_value: upper clip and divisor (default ``FRAME.hu_range``, 2500).
        mode: ``"point"`` (default) or ``"area"``.

    Input: ``(1, N, N, N)`` HU MetaTensor (``NormalizeCT``'s output). Output: ``(1, S, S, S)`` float32 in [0, 1].
    """

    def __init__(
        self,
        output_size: int = FRAME.shape,
        hu_offset: float = FRAME.hu_offset,
        max_value: float = FRAME.hu_range,
        mode: str = "point",
    ) -> None:
        if mode not in TARGET_MODES:
            raise ValueError(f"mode must be one of {TARGET_MODES}, got {mode!r}")
        self.output_size = int(output_size)
        self.frame = VolumeFrame(shape=self.output_size, hu_offset=hu_offset, hu_range=max_value)
        self.mode = mode

    def __call__(self, img) -> MetaTensor:
        img = as_metatensor(img)
        if img.ndim != 4:
            raise ValueError(f"CTTarget expects a (1, X, Y, Z) volume, got shape {tuple(img.shape)}")
        down = point_downsample if self.mode == "point" else area_downsample
        y = down(img, (self.output_size,) * 3)
        y = as_metatensor(self.frame.hu_to_target(y).to(torch.float32))
        y.meta["intensity"] = self.frame.intensity_description
        y.meta["target_resampling"] = self.mode
        return set_spacing_meta(y)


class CTTargetd(MapTransform):
    """Dictionary version of :class:`CTTarget` (default key ``"ct"``).

    Args:
        keep_hu_key: if given, the input HU volume (before the target mapping) is kept under this key
            (only valid with a single key).
    """

    def __init__(
        self,
        keys: KeysCollection = "ct",
        output_size: int = FRAME.shape,
        hu_offset: float = FRAME.hu_offset,
        max_value: float = FRAME.hu_range,
        keep_hu_key: str | None = None,
        mode: str = "point",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if keep_hu_key is not None and len(self.keys) != 1:
            raise ValueError("keep_hu_key needs exactly one key")
        self.target = CTTarget(output_size=output_size, hu_offset=hu_offset, max_value=max_value, mode=mode)
        self.keep_hu_key = keep_hu_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.keep_hu_key is not None:
                d[self.keep_hu_key] = d[key]
            d[key] = self.target(d[key])
        return d


# ------------------------------------------------------------------------------------------ DRR
