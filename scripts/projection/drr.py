"""Digitally reconstructed radiographs (DRRs) of a CT, by either renderer, and ``python -m scripts drr``.

Two interchangeable renderers take the same :class:`~scripts.projection.geometry.ProjectionGeometry` and the same
attenuation (:mod:`scripts.projection.attenuation`): the ITK reference ray caster
(:mod:`scripts.projection.itk_renderer`) and the batched differentiable torch projector
(:mod:`scripts.projection.torch_renderer`). :func:`render_drr` picks either (``backend="itk"|"torch"``); both results
go through the one post-processing of radiographs (:func:`scripts.transforms.radiograph.postprocess_radiograph`).

Command line: ``python -m scripts drr --ct CT --view pa --preset perx2ct --output OUT.nii.gz [--backend torch]``
(:func:`drr_cli`).
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scripts.ct.itk_modules import itk_without_torch
from scripts.ct.loader import load_ct_array
from scripts.ct.lps import affine_to_lps_grid, lps_to_ras
from scripts.projection.attenuation import hu_to_attenuation
from scripts.projection.geometry import ProjectionGeometry
from scripts.projection.itk_renderer import detector_affine_lps, ray_cast_drr, volume_centre_mm
from scripts.utils.atomic import save_nifti_atomic

if TYPE_CHECKING:
    import torch

__all__ = ["BACKENDS", "render_drr", "drr_cli"]


#: DRR backends: ``itk`` (the reference, :func:`ray_cast_drr`) and ``torch`` (:func:`scripts.projection.torch_renderer.project`).
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
    (:func:`scripts.transforms.radiograph.postprocess_radiograph`) unchanged.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown DRR backend {backend!r}; choose one of {list(BACKENDS)}")
    views = (views,) if isinstance(views, str) else tuple(views)
    mu = attenuation if attenuation is not None else hu_to_attenuation(volume_hu)
    if backend == "itk":
        return np.stack([ray_cast_drr(None, spacing_mm, origin_mm, geometry, v, attenuation=mu) for v in views])
    import torch  # only the torch backend needs torch (1.2-1.5 s to import on 2 cores; the ITK backend never does)
    from scripts.projection.torch_renderer import project  # imports torch

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
        ct: CT file (NIfTI/MHA/NRRD/DICOM) or DICOM series / patient folder (see :func:`scripts.ct.loader.load_ct_array`).
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

    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "itk":
        itk_without_torch()  # this command hands no torch tensor to ITK: its filters need not import torch
    # no MetaTensor: the command needs the array and its grid only, in the reader's memory order (no transposing
    # copy; ITK's ray caster views it as is, the torch projector samples it the same either way)
    arr, affine, _ = load_ct_array(ct, c_order=False)
    spacing, origin = affine_to_lps_grid(affine)
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
    sr, sc = geometry.view_pixel_spacing_mm(view)
    img.header.set_zooms((sc, sr, 1.0))
    img.header["descrip"] = f"raw DRR {view} {preset} iso {[round(x, 2) for x in iso]}"[:79].encode()
    return str(save_nifti_atomic(img, output))
