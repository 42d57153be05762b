"""Is this a chest CT? :class:`ChestCTCheck`: plausibility limits checked from the header alone.

Before any pixel is read (``LoadCT`` applies it through :func:`scripts.ct.loader.load_ct`'s ``check``), a CT that
cannot be a chest CT is refused with what was found and what is expected: too few slices, too short a z extent
(mm), too small an in-plane field of view (mm), pixel or slice spacing (mm) outside a plausible range. The
limits are configurable (``chest_ct_check`` in ``configs/prepare.json``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from scripts.errors import CTLoadError

__all__ = ["ChestCTCheck"]


@dataclasses.dataclass(frozen=True)
class ChestCTCheck:
    """Plausibility limits of a chest CT, checked from the header before any pixel is read.

    Args:
        min_slices: fewest slices (default 20).
        min_z_extent_mm: shortest coverage along the body axis (slices x slice spacing), mm (default 150:
            a chest is about 300 mm long; 150 mm is half of it).
        min_fov_mm: smallest in-plane field of view (rows x row spacing and columns x column spacing), mm
            (default 200).
        pixel_spacing_mm: accepted in-plane pixel spacing range, mm (default 0.2 to 5).
        slice_spacing_mm: accepted slice spacing range, mm (default 0.2 to 10).

    Raises (:meth:`__call__`): :class:`CTLoadError` naming what was found, what is expected, and the fix.
    """

    min_slices: int = 20
    min_z_extent_mm: float = 150.0
    min_fov_mm: float = 200.0
    pixel_spacing_mm: tuple[float, float] = (0.2, 5.0)
    slice_spacing_mm: tuple[float, float] = (0.2, 10.0)

    def __call__(self, shape_xyz: Sequence[int], spacing_xyz_mm: Sequence[float], source: str) -> None:
        """Check a volume of ``shape_xyz`` voxels (x, y in-plane; z along the body axis) and spacing, mm."""
        nx, ny, nz = (int(n) for n in shape_xyz)
        sx, sy, sz = (float(v) for v in spacing_xyz_mm)
        what = f"{source}: not a plausible chest CT:"
        fix = "give the full chest CT series (or change LoadCTd's check limits in configs/prepare.json)"
        lo, hi = self.pixel_spacing_mm
        for name, v in (("pixel spacing", sx), ("pixel spacing", sy)):
            if not lo <= v <= hi:
                raise CTLoadError(f"{what} {name} {v:.3g} mm, expected {lo:g} to {hi:g} mm; {fix}")
        lo, hi = self.slice_spacing_mm
        if not lo <= sz <= hi:
            raise CTLoadError(f"{what} slice spacing {sz:.3g} mm, expected {lo:g} to {hi:g} mm; {fix}")
        if nz < self.min_slices:
            raise CTLoadError(f"{what} {nz} slices, expected at least {self.min_slices}; {fix}")
        if nz * sz < self.min_z_extent_mm:
            raise CTLoadError(
                f"{what} z extent {nz * sz:.1f} mm ({nz} slices x {sz:.3g} mm), expected at least "
                f"{self.min_z_extent_mm:g} mm to cover a chest; {fix}"
            )
        fov = min(nx * sx, ny * sy)
        if fov < self.min_fov_mm:
            raise CTLoadError(
                f"{what} in-plane field of view {nx * sx:.0f} x {ny * sy:.0f} mm, expected at least "
                f"{self.min_fov_mm:g} mm; {fix}"
            )
