"""Digitally reconstructed radiographs (DRRs) of a CT with a :class:`~scripts.geometry.ProjectionGeometry`.

The reference backend is ITK's ``RayCastInterpolateImageFunction`` used as the interpolator of a
``ResampleImageFilter`` whose output grid is the detector: the filter's output image has one
pixel per detector pixel, placed (origin, spacing, direction) exactly at
``geometry.pixel_to_world(view, (col, row))``, and the ray caster integrates along the line from the
focal point (``geometry.source_mm(view)``) to that pixel. ITK's ray caster ignores direction
cosines, so the CT is handed over as an LPS axis-aligned image with identity direction.

Attenuation follows plastimatch's default HU conversion: ``mu = mu_w * (1 + HU / 1000)`` per cm where
``HU > -800``, else 0, with ``mu_w = 0.022`` per cm. The often quoted ``mu_w = 0.0209`` is not what it uses; our
measurement with plastimatch 1.9.4 says otherwise: through water slabs of n voxels inside a larger
volume its line integral is ``0.022 * n * spacing`` (e.g. 10 cm of water -> 0.2200, not 0.209), except
that the last voxel before the volume's exit face is dropped, so a water cube of 20 voxels that fills
the whole volume gives 19 x 0.022 = 20 x 0.0209, which is probably where 0.0209 came from. On real
chest CTs the best-fitting scale between an ITK cast with 0.0209 and plastimatch is 1.057 (MAD 2-3 %
of the maximum); with 0.022 the MAD is 0.3-0.5 %. The ``-800`` HU cut-off was confirmed (-801 -> 0,
-799 -> 0.2 mu_w). The ray caster integrates
``(value - threshold) * step_mm`` over voxels above the threshold; with the attenuation volume as
value (all positive where not zero) and threshold 0, the line integral in cm is that sum / 10.
The result is the raw DRR: line integrals of attenuation (dimensionless, ``mu`` per cm x cm),
shape ``(rows, cols)`` of the geometry's detector, rows top to bottom (head to feet), columns
in the geometry's display convention.

A second backend, the batched differentiable torch projector (:mod:`scripts.projector`), renders the
same images; :func:`render_drr` picks either (``backend="itk"|"torch"``); both results go through the
one post-processing of radiographs (:func:`scripts.radiograph.postprocess_radiograph`).

Command line: ``python -m scripts drr --ct CT --view pa --preset perx2ct --output OUT.nii.gz [--backend torch]``
(:func:`drr_cli`).
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

import numpy as np
import torch

from scripts.atomic import save_nifti_atomic
from scripts.geometry import ProjectionGeometry

__all__ = [
    "MU_WATER_PER_CM",
    "HU_THRESHOLD",
    "hu_to_attenuation",
    "volume_centre_mm",
    "ray_cast_drr",
    "BACKENDS",
    "render_drr",
    "detector_affine_lps",
    "drr_cli",
]

#: Linear attenuation of water (per cm) of plastimatch 1.9.4's default HU conversion (measured; see above).
MU_WATER_PER_CM = 0.022
#: plastimatch's default conversion gives zero attenuation at or below this HU.
HU_THRESHOLD = -800.0


def hu_to_attenuation(volume_hu, mu_water_per_cm: float = MU_WATER_PER_CM, hu_threshold: float = HU_THRESHOLD):
    """plastimatch's default HU -> linear attenuation (per cm): ``mu_w * (1 + HU/1000)`` where
    ``HU > hu_threshold``, else 0. Same shape; numpy in -> float32 numpy; torch in -> torch (same dtype
    and device for floating input, float32 otherwise; differentiable where ``HU > hu_threshold``)."""
    if isinstance(volume_hu, torch.Tensor):
        hu = volume_hu if volume_hu.is_floating_point() else volume_hu.float()
        mu = mu_water_per_cm * (1.0 + hu / 1000.0)
        return torch.where(hu > hu_threshold, mu, torch.zeros_like(mu))
    hu = np.asarray(volume_hu, dtype=np.float32)
    mu = np.float32(mu_water_per_cm) * (np.float32(1.0) + hu / np.float32(1000.0))
    return np.where(hu > hu_threshold, mu, np.float32(0.0)).astype(np.float32, copy=False)


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
            :meth:`~scripts.geometry.ProjectionGeometry.with_isocentre`, e.g. to :func:`volume_centre_mm`).
        view: view name of ``geometry`` (e.g. ``"pa"``, ``"lateral"``).
        mu_water_per_cm, hu_threshold: the HU -> attenuation conversion (plastimatch defaults).
        attenuation: optional precomputed :func:`hu_to_attenuation` of ``volume_hu`` (saves time
            when casting several views); ``volume_hu`` is then not read.

    Returns:
        ``(rows, cols)`` float32 line integrals (attenuation per cm x length in cm) at the
        geometry's ``detector_shape``; pixel ``[r, c]`` is the ray through ``pixel_to_world(view, (c, r))``.
    """
    import itk

    geometry.view(view)  # raises on an unknown view
    mu = attenuation if attenuation is not None else hu_to_attenuation(volume_hu, mu_water_per_cm, hu_threshold)
    mu = np.asarray(mu, dtype=np.float32)
    if mu.ndim != 3:
        raise ValueError(f"volume must be 3D (X, Y, Z), got shape {mu.shape}")
    spacing = [float(s) for s in spacing_mm]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing_mm must be three positive numbers, got {spacing_mm!r}")
    image_type = itk.Image[itk.F, 3]
    # ITK arrays are (z, y, x); the image keeps identity direction (the ray caster ignores it anyway)
    image = itk.image_from_array(np.ascontiguousarray(mu.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin([float(o) for o in origin_mm])
    image.SetDirection(itk.matrix_from_array(np.eye(3)))

    transform = itk.Euler3DTransform[itk.D].New()  # identity: the volume stays where it is
    interp = itk.RayCastInterpolateImageFunction[image_type, itk.D].New()
    interp.SetTransform(transform)
    interp.SetThreshold(0.0)
    interp.SetFocalPoint([float(v) for v in geometry.source_mm(view)])

    rows, cols = geometry.detector_shape
    sr, sc = geometry.pixel_spacing_mm
    det_origin, col_step, row_step = geometry.detector_frame(view)
    v = geometry.view(view)
    direction = np.stack([np.asarray(v.col), np.asarray(v.row), np.asarray(v.normal)], axis=1)

    resample = itk.ResampleImageFilter[image_type, image_type].New(Input=image)
    resample.SetInterpolator(interp)
    resample.SetTransform(transform)
    resample.SetDefaultPixelValue(0.0)
    resample.SetSize([int(cols), int(rows), 1])
    resample.SetOutputSpacing([float(sc), float(sr), 1.0])
    resample.SetOutputOrigin([float(x) for x in det_origin])
    resample.SetOutputDirection(itk.matrix_from_array(np.ascontiguousarray(direction)))
    resample.Update()
    out = itk.array_from_image(resample.GetOutput())[0]  # (rows, cols)
    # integral of mu (per cm) over steps in mm -> per cm x cm
    return (out.astype(np.float64) / 10.0).astype(np.float32)


#: DRR backends: ``itk`` (the reference, :func:`ray_cast_drr`) and ``torch`` (:func:`scripts.projector.project`).
BACKENDS = ("itk", "torch")


def render_drr(
    volume_hu: np.ndarray,
    spacing_mm: Sequence[float],
    origin_mm: Sequence[float],
    geometry: ProjectionGeometry,
    views: Sequence[str] = ("pa", "lateral"),
    *,
    backend: str = "itk",
    attenuation: np.ndarray | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Raw DRRs of one volume for several views with either backend: ``(V, rows, cols)`` float32.

    Arguments as :func:`ray_cast_drr`; ``backend`` ``"itk"`` (reference) or ``"torch"`` (the batched
    projector, on ``device``). Both apply :func:`hu_to_attenuation` and return line integrals in the same
    unit and pixel order, so either result goes through the same post-processing
    (:func:`scripts.radiograph.postprocess_radiograph`) unchanged.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown DRR backend {backend!r}; choose one of {list(BACKENDS)}")
    views = (views,) if isinstance(views, str) else tuple(views)
    mu = attenuation if attenuation is not None else hu_to_attenuation(volume_hu)
    if backend == "itk":
        return np.stack([ray_cast_drr(None, spacing_mm, origin_mm, geometry, v, attenuation=mu) for v in views])
    from scripts.projector import project

    mu_t = torch.as_tensor(np.asarray(mu, dtype=np.float32), device=device)
    if mu_t.ndim != 3:
        raise ValueError(f"volume must be 3D (X, Y, Z), got shape {tuple(mu_t.shape)}")
    with torch.no_grad():
        out = project(mu_t[None, None], spacing_mm, origin_mm, geometry, views)
    return out[0].cpu().numpy().astype(np.float32, copy=False)


def _parse_isocentre(isocentre) -> tuple[float, float, float] | None:
    if isocentre is None:
        return None
    if isinstance(isocentre, str):
        try:
            isocentre = ast.literal_eval(isocentre.strip())
        except (ValueError, SyntaxError):
            isocentre = isocentre.replace(",", " ").strip("[]() ").split()
    vals = [float(v) for v in isocentre]
    if len(vals) != 3:
        raise ValueError(f"--isocentre needs three numbers [x,y,z] in LPS mm, got {isocentre!r}")
    return vals[0], vals[1], vals[2]


def drr_cli(
    ct: str,
    view: str = "pa",
    preset: str = "perx2ct",
    output: str = "drr.nii.gz",
    isocentre=None,
    backend: str = "itk",
    device: str = "cpu",
) -> str:
    """Raw DRR (line integrals, no normalisation or resampling) of one CT, written as NIfTI.

    Args:
        ct: CT file (NIfTI/MHA/NRRD/DICOM) or DICOM series / patient folder (see :func:`scripts.ct_io.load_ct`).
        view: ``pa`` or ``lateral`` (any view of the preset).
        preset: geometry preset (``perx2ct`` or ``x2ctgan``).
        output: output path (``.nii`` or ``.nii.gz``), written atomically (temp file + rename).
        isocentre: ``"[x,y,z]"`` in LPS mm; default the volume centre.
        backend: ``itk`` (the reference ray caster) or ``torch`` (the batched projector); same file layout.
        device: torch device of the ``torch`` backend (``cpu``, ``cuda``).

    Returns:
        the output path. The NIfTI holds a float32 ``(cols, rows, 1)`` array (NIfTI's i = detector column,
        j = detector row, k = a singleton axis along the view's normal) with pixel spacing = detector pixel
        size (1 mm along k) and a full, non-singular affine placing it on the physical detector plane
        (RAS), so ITK, nibabel and MONAI read it and a viewer shows PA as a frontal film with head up.
    """
    import nibabel as nib

    from scripts.ct_io import load_ct
    from scripts.lps import affine_to_lps_grid, lps_to_ras

    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {list(BACKENDS)}, got {backend!r}")
    vol = load_ct(ct)
    spacing, origin = affine_to_lps_grid(vol.affine)
    arr = vol.array[0] if hasattr(vol, "array") else np.asarray(vol[0])
    iso = _parse_isocentre(isocentre)
    geometry = ProjectionGeometry.from_preset(preset)
    if view not in geometry.views:
        raise ValueError(f"unknown view {view!r}; preset {preset!r} has {list(geometry.views)}")
    if iso is None:
        iso = tuple(volume_centre_mm(arr.shape, spacing, origin))
    geometry = geometry.with_isocentre(iso)
    drr = render_drr(np.asarray(arr), spacing, origin, geometry, view, backend=backend, device=device)[0]

    a = detector_affine_lps(geometry, view)
    # NIfTI data axes (i, j, k) = (column, row, normal): a 3D image with a singleton k axis and a full direction
    a_ijk = a[:, [1, 0, 2, 3]]
    img = nib.Nifti1Image(np.ascontiguousarray(drr.T[:, :, None], dtype=np.float32), lps_to_ras(a_ijk))
    sr, sc = geometry.pixel_spacing_mm
    img.header.set_zooms((sc, sr, 1.0))
    img.header["descrip"] = f"raw DRR {view} {preset} iso {[round(x, 2) for x in iso]}"[:79].encode()
    return str(save_nifti_atomic(img, output))
