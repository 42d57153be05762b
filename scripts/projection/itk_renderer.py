"""The reference DRR renderer: ITK ray casting through a CT with a :class:`~scripts.projection.geometry.ProjectionGeometry`.

ITK's ``RayCastInterpolateImageFunction`` is the interpolator of a ``ResampleImageFilter`` whose output grid is the
detector: the filter's output image has one pixel per detector pixel, placed (origin, spacing, direction) exactly at
``geometry.pixel_to_world(view, (col, row))``, and the ray caster integrates along the line from the focal point
(``geometry.source_mm(view)``) to that pixel. ITK's ray caster ignores direction cosines, so the CT is handed over as
an LPS axis-aligned image with identity direction. Attenuation: :mod:`scripts.projection.attenuation`. The ray caster
integrates ``(value - threshold) * step_mm`` over voxels above the threshold; with the attenuation volume as value
(all positive where not zero) and threshold 0, the line integral in cm is that sum / 10.

The result is the raw DRR: line integrals of attenuation (dimensionless, ``mu`` per cm x cm), shape ``(rows, cols)``
of the geometry's detector, rows top to bottom (head to feet), columns in the geometry's display convention.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
from scripts.ct.itk_modules import array_image_view, array_to_matrix, image_array_view, itk_class
from scripts.projection.attenuation import HU_THRESHOLD, MU_WATER_PER_CM, hu_to_attenuation
from scripts.projection.geometry import ProjectionGeometry

__all__ = ["volume_centre_mm", "detector_affine_lps", "ray_cast_drr"]


def volume_centre_mm(shape: Sequence[int], spacing_mm: Sequence[float], origin_mm: Sequence[float]) -> np.ndarray:
    """LPS mm centre of an axis-aligned volume: ``origin + (n - 1) / 2 * spacing`` (voxel-centre convention)."""
    return np.asarray(origin_mm, dtype=np.float64) + (np.asarray(shape[-3:], dtype=np.float64) - 1) / 2 * np.asarray(
        spacing_mm, dtype=np.float64
    )


def detector_affine_lps(geometry: ProjectionGeometry, view: str) -> np.ndarray:
    """4x4 affine from array index ``(row, col, 0)`` of a ``(H, W)`` DRR to LPS mm on the detector plane."""
    origin, col_step, row_step = geometry.detector_frame(view)
    normal = np.asarray(geometry.view(view).normal)
    a = np.eye(4)
    a[:3, 0] = row_step
    a[:3, 1] = col_step
    a[:3, 2] = normal
    a[:3, 3] = origin
    return a


@functools.lru_cache(maxsize=1)
def _ray_caster_types() -> SimpleNamespace:
    """The ITK classes of the ray caster (float 3D image, double transform), each from its own wrapper module
    (:func:`scripts.ct.itk_modules.itk_class`): ``euler``, ``ray_cast``, ``resample``."""
    import itk

    image = itk_class("itkImagePython", "itkImageF3", lambda: itk.Image[itk.F, 3])
    return SimpleNamespace(
        euler=itk_class("itkEuler3DTransformPython", "itkEuler3DTransformD", lambda: itk.Euler3DTransform[itk.D]),
        ray_cast=itk_class(
            "itkRayCastInterpolateImageFunctionPython",
            "itkRayCastInterpolateImageFunctionIF3D",
            lambda: itk.RayCastInterpolateImageFunction[image, itk.D],
        ),
        resample=itk_class(
            "itkResampleImageFilterPython",
            "itkResampleImageFilterIF3IF3",
            lambda: itk.ResampleImageFilter[image, image],
        ),
    )


def ray_cast_drr(
    volume_hu: np.ndarray,
    spacing_mm: Sequence[float],
    origin_mm: Sequence[float],
    geometry: ProjectionGeometry,
    view: str,
    *,
    mu_water_per_cm: float = MU_WATER_PER_CM,
    hu_threshold: float = HU_THRESHOLD,
    attenuation: np.ndarray | None = None,
) -> np.ndarray:
    """Raw DRR (line integrals) of one view by ITK ray casting.

    Args:
        volume_hu: ``(X, Y, Z)`` HU, array axes toward Left, Posterior, Superior (LPS axis-aligned).
        spacing_mm: voxel size ``(sx, sy, sz)`` mm, positive.
        origin_mm: LPS mm position of the centre of voxel ``[0, 0, 0]``.
        geometry: the projection geometry; its ``isocentre_mm`` is used as is (set it with
            :meth:`~scripts.projection.geometry.ProjectionGeometry.with_isocentre`, e.g. to :func:`volume_centre_mm`).
        view: view name of ``geometry`` (e.g. ``"pa"``, ``"lateral"``).
        mu_water_per_cm, hu_threshold: the HU -> attenuation conversion (plastimatch defaults).
        attenuation: optional precomputed :func:`hu_to_attenuation` of ``volume_hu`` (saves time
            when casting several views); ``volume_hu`` is then not read.

    Returns:
        ``(rows, cols)`` float32 line integrals (attenuation per cm x length in cm) at the
        geometry's ``detector_shape``; pixel ``[r, c]`` is the ray through ``pixel_to_world(view, (c, r))``.
    """
    geometry.view(view)  # raises on an unknown view
    mu = attenuation if attenuation is not None else hu_to_attenuation(volume_hu, mu_water_per_cm, hu_threshold)
    mu = np.asarray(mu, dtype=np.float32)
    if mu.ndim != 3:
        raise ValueError(f"volume must be 3D (X, Y, Z), got shape {mu.shape}")
    spacing = [float(s) for s in spacing_mm]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing_mm must be three positive numbers, got {spacing_mm!r}")
    itk_types = _ray_caster_types()
    # ITK arrays are (z, y, x): an (X, Y, Z) array in Fortran order (what load_ct_array(c_order=False) gives) is
    # viewed as is, any other is copied once; the image keeps identity direction (the ray caster ignores it anyway)
    mu_zyx = np.ascontiguousarray(mu.transpose(2, 1, 0))
    image = array_image_view(mu_zyx)
    image.SetSpacing(spacing)
    image.SetOrigin([float(o) for o in origin_mm])

    transform = itk_types.euler.New()  # identity: the volume stays where it is
    interp = itk_types.ray_cast.New()
    interp.SetTransform(transform)
    interp.SetThreshold(0.0)
    interp.SetFocalPoint([float(v) for v in geometry.source_mm(view)])

    rows, cols = geometry.detector_shape
    sr, sc = geometry.view_pixel_spacing_mm(view)  # the view's own detector pitch (issue 19)
    det_origin, col_step, row_step = geometry.detector_frame(view)
    v = geometry.view(view)
    direction = np.stack([np.asarray(v.col), np.asarray(v.row), np.asarray(v.normal)], axis=1)

    resample = itk_types.resample.New()
    resample.SetInput(image)
    resample.SetInterpolator(interp)
    resample.SetTransform(transform)
    resample.SetDefaultPixelValue(0.0)
    resample.SetSize([int(cols), int(rows), 1])
    resample.SetOutputSpacing([float(sc), float(sr), 1.0])
    resample.SetOutputOrigin([float(x) for x in det_origin])
    resample.SetOutputDirection(array_to_matrix(direction))
    resample.Update()
    output = resample.GetOutput()
    out = image_array_view(output)[0].copy()  # (rows, cols)
    # integral of mu (per cm) over steps in mm -> per cm x cm
    return (out.astype(np.float64) / 10.0).astype(np.float32)
