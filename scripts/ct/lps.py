"""LPS axis-aligned grids: affines between voxel indices and mm, and re-orienting an image onto such a grid.

The bundle's CT convention (:func:`scripts.ct.loader.load_ct`): array axes toward the patient's Left, Posterior,
Superior (DICOM LPS), identity direction cosines, positive spacing in mm; voxel ``[0, 0, 0]`` at the
right-anterior-inferior corner. Affines are 4x4 float64, voxel index -> mm. ITK (and DICOM) place images in
LPS world; MONAI's affines are RAS (what ``monai.data.ITKReader(affine_lps_to_ras=True)`` gives):
``affine_ras = diag(-1, -1, 1, 1) @ affine_lps`` (:func:`lps_to_ras`, the same operation both ways).

* :func:`lps_affine` - the LPS affine of ITK-style spacing, origin and direction;
* :func:`lps_to_ras` - LPS <-> RAS world;
* :func:`affine_to_lps_grid` - ``(spacing_mm, origin_mm)`` of an LPS axis-aligned grid from a MONAI affine;
* :func:`signed_permutation` / :func:`to_lps_axis_aligned` - an image whose direction matrix is a signed
  permutation (within 1e-3; the usual axial, coronal or sagittal acquisitions, any flips) re-oriented by
  permuting and flipping its array, which is exact (oblique images are resampled by :mod:`scripts.ct.loader`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scripts.errors import CTLoadError
from scripts.frame import LPS_TO_RAS

__all__ = ["lps_affine", "lps_to_ras", "affine_to_lps_grid", "signed_permutation", "to_lps_axis_aligned"]


def lps_affine(spacing_mm: Sequence[float], origin_mm: Sequence[float], direction=None) -> np.ndarray:
    """4x4 voxel-index -> LPS mm affine from ITK-style spacing, origin and direction (identity default)."""
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64).reshape(3, 3)
    a = np.eye(4)
    a[:3, :3] = d @ np.diag(np.asarray(spacing_mm, dtype=np.float64))
    a[:3, 3] = np.asarray(origin_mm, dtype=np.float64)
    return a


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """Convert a 4x4 affine between LPS and RAS world (the same operation both ways)."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def affine_to_lps_grid(affine_ras, tol: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """``(spacing_mm, origin_mm)`` of an LPS axis-aligned grid from a MONAI (RAS) affine.

    Raises:
        ValueError: when the affine is not axis-aligned with positive steps toward L, P, S
            (load the CT with :func:`scripts.ct.loader.load_ct` / ``LoadCT`` first).
    """
    a = lps_to_ras(np.asarray(affine_ras, dtype=np.float64)[:4, :4])
    m = a[:3, :3]
    spacing = np.diag(m).copy()
    off = m - np.diag(spacing)
    if np.any(spacing <= 0) or np.abs(off).max() > tol * spacing.max():
        raise ValueError(
            "the volume is not axis-aligned in LPS (array axes toward Left, Posterior, Superior with identity "
            f"direction); its LPS affine is\n{np.round(a, 4)}\nload it with scripts.ct.loader.load_ct / LoadCT first"
        )
    return spacing, a[:3, 3].copy()


def signed_permutation(direction: np.ndarray, tol: float = 1e-3) -> tuple[np.ndarray, np.ndarray] | None:
    """For a direction matrix (columns = image axes in LPS) close to a signed permutation, return
    ``(axis_of_world, sign_of_world)``: world axis ``w`` is image axis ``axis[w]`` with sign ``sign[w]``."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    axis = np.argmax(np.abs(d), axis=1)
    if sorted(axis.tolist()) != [0, 1, 2]:
        return None
    signs = np.sign(d[np.arange(3), axis])
    perm = np.zeros((3, 3))
    perm[np.arange(3), axis] = signs
    if np.abs(d - perm).max() > tol:
        return None
    return axis, signs


def to_lps_axis_aligned(
    array_ijk: np.ndarray, spacing_mm, origin_mm, direction, source: str = "volume", contiguous: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-orient an image whose direction matrix is a signed permutation to the LPS axis-aligned grid.

    Args:
        array_ijk: array indexed ``[i, j, k]`` along the image's own axes (ITK order reversed).
        spacing_mm, origin_mm, direction: ITK geometry (direction columns = image axes in LPS).
        source: name used in error messages.
        contiguous: return a C-contiguous copy (default); ``False``: a view of ``array_ijk`` where it can be.

    Returns:
        ``(array_xyz, spacing_mm, origin_mm)``: array indexed ``[x, y, z]`` (L, P, S), positive
        spacing, LPS position of voxel ``[0, 0, 0]``; exact (no interpolation).

    Raises:
        CTLoadError: when the direction is not a signed permutation (see :func:`scripts.ct.loader.load_ct`,
            which resamples).
    """
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    origin = np.asarray(origin_mm, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    sp = signed_permutation(d)
    if sp is None:
        raise CTLoadError(f"{source}: direction cosines {np.round(d, 4).tolist()} are oblique; resample it first")
    axis, signs = sp
    out = np.transpose(array_ijk, axis)
    first_index = np.zeros(3)
    for w in range(3):
        if signs[w] < 0:
            out = np.flip(out, axis=w)
            first_index[axis[w]] = array_ijk.shape[axis[w]] - 1
    new_origin = origin + d @ (spacing * first_index)
    return (np.ascontiguousarray(out) if contiguous else out), spacing[axis].copy(), new_origin
