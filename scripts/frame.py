"""The output volume's frame: one owner for the reconstructed cube's size, voxel grid, affine and intensities.

Every module that places, scales or displays the reconstructed CT (the target transform, the network's
query points, slicing, inference and evaluation writers, the MONAI Label writer) asks
:data:`FRAME` (or a :class:`VolumeFrame` built from config) instead of restating the numbers.

Frame (the paper's protocol, inherited from X2CT-GAN):

* a cube of ``shape`` = 128 voxels per side covering ``size_mm`` = 320 mm: 2.5 mm voxels;
* array axes ``(x, y, z)`` toward the patient's Left, Posterior, Superior (DICOM LPS);
* voxel ``(i, j, k)`` centred at ``isocentre + ((i, j, k) - 63.5) * 2.5`` mm (LPS): the cube's centre is the
  X-ray isocentre;
* intensities in the *target scale* ``clip(HU + 1024, 0, 2500) / 2500`` (HU -1024 -> 0, 1476 -> 1).

NIfTI affines are RAS: :data:`LPS_TO_RAS` flips the first two world axes (the same matrix converts back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from scripts.utils.optional_torch import torch_of

__all__ = ["LPS_TO_RAS", "VolumeFrame", "FRAME"]

#: 4x4 matrix converting an LPS affine to RAS (and back): flips x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclasses.dataclass(frozen=True)
class VolumeFrame:
    """The reconstructed cube: voxel grid in mm (LPS) and the HU <-> target intensity scale.

    Args:
        shape: voxels per side (128).
        size_mm: side of the cube in mm (320).
        hu_offset: added to HU before clipping (1024: air at 0).
        hu_range: width of the clipped HU window and divisor (2500).
    """

    shape: int = 128
    size_mm: float = 320.0
    hu_offset: float = 1024.0
    hu_range: float = 2500.0

    def __post_init__(self) -> None:
        if int(self.shape) < 1 or not float(self.size_mm) > 0 or not float(self.hu_range) > 0:
            raise ValueError(
                f"invalid volume frame: shape={self.shape}, size_mm={self.size_mm}, hu_range={self.hu_range}"
            )
        object.__setattr__(self, "shape", int(self.shape))
        object.__setattr__(self, "size_mm", float(self.size_mm))
        object.__setattr__(self, "hu_offset", float(self.hu_offset))
        object.__setattr__(self, "hu_range", float(self.hu_range))

    # ------------------------------------------------------------------ grid
    @property
    def spacing_mm(self) -> float:
        """Voxel size in mm (2.5)."""
        return self.size_mm / self.shape

    @property
    def centre_voxel(self) -> float:
        """Index of the cube's centre along each axis (63.5): the isocentre in voxel coordinates."""
        return (self.shape - 1) / 2

    def voxel_to_mm(self, positions: Any) -> Any:
        """Voxel coordinates (..., 3) -> mm relative to the isocentre (same LPS axes); numpy or torch."""
        return (positions - self.centre_voxel) * self.spacing_mm

    def mm_to_voxel(self, points_mm: Any) -> Any:
        """mm relative to the isocentre (..., 3) -> voxel coordinates; numpy or torch."""
        return points_mm / self.spacing_mm + self.centre_voxel

    def lps_affine(self, isocentre_lps_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
        """4x4 voxel index -> LPS mm affine of the cube centred on ``isocentre_lps_mm``."""
        a = np.eye(4)
        a[:3, :3] *= self.spacing_mm
        a[:3, 3] = np.asarray(isocentre_lps_mm, dtype=np.float64) - self.centre_voxel * self.spacing_mm
        return a

    def ras_affine(self, isocentre_lps_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
        """4x4 NIfTI (RAS) affine of the cube centred on ``isocentre_lps_mm`` (LPS mm)."""
        return LPS_TO_RAS @ self.lps_affine(isocentre_lps_mm)

    # ------------------------------------------------------------------ intensities
    def hu_to_target(self, hu: Any) -> Any:
        """HU -> target scale ``clip(HU + offset, 0, range) / range``; numpy or torch."""
        x = hu + self.hu_offset
        # torch is not imported here: the DRR command (lps.py's LPS_TO_RAS) runs without it
        x = x.clamp(0.0, self.hu_range) if torch_of(x) is not None else np.clip(x, 0.0, self.hu_range)
        return x / self.hu_range

    def target_to_hu(self, x: Any) -> Any:
        """Target scale -> HU (``x * range - offset``, no clipping); numpy or torch."""
        return x * self.hu_range - self.hu_offset

    @property
    def intensity_description(self) -> str:
        return f"clip(HU + {self.hu_offset:g}, 0, {self.hu_range:g}) / {self.hu_range:g}"

    # ------------------------------------------------------------------ display
    @staticmethod
    def display_planes(vol: np.ndarray) -> list[np.ndarray]:
        """Central axial, coronal and sagittal planes of an LPS-ordered (X, Y, Z) volume, oriented as
        radiologists read them: axial with anterior at the top and the patient's right on the image's
        left; coronal and sagittal with superior at the top (sagittal: anterior on the left)."""
        x, y, z = (s // 2 for s in vol.shape)
        axial = vol[:, :, z].T  # rows = y (anterior first), columns = x (toward the patient's left)
        coronal = np.flipud(vol[:, y, :].T)  # rows = z, flipped so superior is at the top
        sagittal = np.flipud(vol[x, :, :].T)  # columns = y (anterior on the left)
        return [axial, coronal, sagittal]


#: The frame of every reconstruction of this bundle (the paper's 128^3 cube of 2.5 mm voxels).
FRAME = VolumeFrame()
