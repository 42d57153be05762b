"""Where a rendered CT slice lies in the volume: one definition for the network and the ground truth.

A slice is given by an ``axis`` code, an ``index`` along that axis and an optional in-plane
``zoom box``; :func:`slice_positions` turns that into a grid of positions in *voxel coordinates* of
the target volume. The network builds its 3D query points from it (32 x 32) and the trainer cuts
the matching ground truth from the label volume with it (128 x 128), so both always agree.

Conventions (the target volume is (X, Y, Z) = LPS-ordered, 128^3 at 2.5 mm by default):

* axis codes: ``0 = axial`` (fixes z / array dim 2; in-plane dims (x, y)), ``1 = coronal`` (fixes y
  / dim 1; in-plane (x, z)), ``2 = sagittal`` (fixes x / dim 0; in-plane (y, z)). A rendered slice's
  rows follow the first in-plane array dim, its columns the second, so ``volume[0, :, :, k]`` is
  the axial slice ``k`` as rendered.
* ``index``: position along the fixed axis in voxels (float allowed; integers hit voxel centres).
* ``zoom box``: ``(row0, col0, size)`` in voxels of the in-plane grid, the box's outer edges; the
  full slice is ``(0, 0, n)``. Output pixel ``p`` of an ``m``-pixel rendering lies at
  ``row0 + (p + 0.5) * size / m - 0.5``: the full slice rendered at ``m = n`` hits voxel centres
  exactly; a query grid of ``m = 32`` over 128 voxels sits at the centres of 4 x 4 voxel blocks.
"""

from __future__ import annotations

import torch
from scripts.frame import FRAME

__all__ = ["AXES", "axis_code", "slice_positions", "slice_positions_flat", "full_boxes", "voxel_to_mm", "sample_volume"]

AXES: tuple[str, str, str] = ("axial", "coronal", "sagittal")


def axis_code(axis: str | int) -> int:
    """``"axial"|"coronal"|"sagittal"`` (or 0/1/2) -> 0/1/2, with a clear error otherwise."""
    if isinstance(axis, int) and 0 <= axis < 3:
        return axis
    if isinstance(axis, str) and axis.lower() in AXES:
        return AXES.index(axis.lower())
    raise ValueError(f"unknown slice axis {axis!r}; use one of {AXES} (or 0, 1, 2)")


def slice_positions_flat(
    axis: torch.Tensor, index: torch.Tensor, box: torch.Tensor, grid: int, volume_shape: int
) -> torch.Tensor:
    """TorchScript-friendly core of :func:`slice_positions` on flat inputs: axis (M,), index (M,),
    box (M, 3) -> (M, grid, grid, 3) voxel positions."""
    m = index.shape[0]
    device = index.device
    index = index.to(torch.float32)
    box = box.to(torch.float32)
    p = (torch.arange(grid, device=device, dtype=torch.float32) + 0.5) / grid  # (grid,)
    size = box[:, 2:3]
    rows = (box[:, 0:1] + p * size - 0.5)[:, :, None].expand(m, grid, grid)
    cols = (box[:, 1:2] + p * size - 0.5)[:, None, :].expand(m, grid, grid)
    fixed = index[:, None, None].expand(m, grid, grid)
    axis = axis.to(device).long()[:, None, None]
    # (fixed dim, row dim, col dim) per axis code: axial (2, 0, 1), coronal (1, 0, 2), sagittal (0, 1, 2)
    i = torch.where(axis == 2, fixed, rows)
    j = torch.where(axis == 0, cols, torch.where(axis == 1, fixed, rows))
    k = torch.where(axis == 0, fixed, cols)
    return torch.stack((i, j, k), dim=-1)


def full_boxes(n: int, volume_shape: int, device: torch.device) -> torch.Tensor:
    """(n, 3) zoom boxes covering whole slices: ``(0, 0, volume_shape)``."""
    box = torch.zeros(n, 3, device=device)
    box[:, 2] = float(volume_shape)
    return box


def slice_positions(
    axis: torch.Tensor, index: torch.Tensor, box: torch.Tensor | None, grid: int, volume_shape: int = FRAME.shape
) -> torch.Tensor:
    """Voxel coordinates of a rendered slice grid.

    Args:
        axis: (...,) integer axis codes (0 axial, 1 coronal, 2 sagittal).
        index: (...,) position along the fixed axis, voxels.
        box: (..., 3) ``(row0, col0, size)`` zoom boxes in voxels, or None for whole slices.
        grid: pixels per side of the rendering (32 for query points, 128 for a target slice).
        volume_shape: voxels per side of the cubic volume (default :data:`scripts.frame.FRAME`'s).

    Returns:
        (..., grid, grid, 3) float positions ``(i, j, k)`` in voxel units of the volume.
    """
    lead = index.shape
    flat_index = index.reshape(-1)
    flat_box = full_boxes(flat_index.shape[0], volume_shape, index.device) if box is None else box.reshape(-1, 3)
    out = slice_positions_flat(axis.reshape(-1), flat_index, flat_box, grid, volume_shape)
    return out.reshape(*lead, grid, grid, 3)


def voxel_to_mm(
    positions: torch.Tensor, volume_shape: int = FRAME.shape, volume_size_mm: float = FRAME.size_mm
) -> torch.Tensor:
    """Voxel coordinates (..., 3) -> mm relative to the volume centre (same LPS axes).

    :meth:`scripts.frame.VolumeFrame.voxel_to_mm` on plain arguments (TorchScript-friendly, for the network);
    the defaults are :data:`scripts.frame.FRAME`'s."""
    spacing = volume_size_mm / volume_shape
    return (positions - (volume_shape - 1) / 2) * spacing


def sample_volume(volume: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of ``volume`` (B, C, X, Y, Z) at voxel ``positions`` (B, S, h, w, 3).

    Returns (B, S * C, h, w); positions outside the volume read zero. Integer positions return the
    voxel values exactly.
    """
    b, s, h, w, _ = positions.shape
    n = torch.tensor(volume.shape[2:], device=positions.device, dtype=torch.float32)
    norm = positions / (n - 1) * 2 - 1  # align_corners=True: -1/+1 at the first/last voxel centre
    # grid_sample's last dim is (x, y, z) = (W, H, D) = volume dims (4, 3, 2) for input (B, C, D, H, W)
    grid = norm.flip(-1).reshape(b, s * h, w, 1, 3)
    out = torch.nn.functional.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    # out: (B, C, s*h, w, 1)
    c = volume.shape[1]
    return out.reshape(b, c, s, h, w).transpose(1, 2).reshape(b, s * c, h, w)
