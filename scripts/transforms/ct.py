"""MONAI transforms of the PerX2CT data protocol: load a CT, normalise it, make the target and the DRRs.

This module: loading and normalising the CT (``LoadCT``, ``NormalizeCT``, ``HUToInt16d``) and the MetaTensor
helpers the others share; :mod:`scripts.transforms.target` makes the target, :mod:`scripts.transforms.drr` the DRRs.

Array transforms do the work; each dictionary transform (``...d``) maps one over ``keys``.

===============  =====================================================  =========================================
transform        input                                                  output
===============  =====================================================  =========================================
``LoadCT``       path: file, DICOM series folder or patient folder      ``(1, X, Y, Z)`` float32 HU, LPS axes
``NormalizeCT``  ``(1, X, Y, Z)`` HU MetaTensor                         ``(1, 320, 320, 320)`` HU, 1 mm
``HUToInt16d``   ``(1, 320, 320, 320)`` HU, 1 mm                        a copy as int16 HU (``ct_1mm``)
``CTTarget``     ``(1, 320, 320, 320)`` HU, 1 mm                        ``(1, 128, 128, 128)`` in [0, 1], 2.5 mm
``DRR``          ``(1, X, Y, Z)`` HU MetaTensor, any spacing            one ``(1, H, W)`` image per view
===============  =====================================================  =========================================

Every volume is a :class:`~monai.data.MetaTensor` whose ``affine`` is in MONAI's RAS convention
(see :mod:`scripts.ct.loader`); the transforms move the affine with the data, so a landmark keeps its
world position through the chain (to within a fraction of the output voxel).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from scripts.ct.chest_check import ChestCTCheck
from scripts.ct.loader import AIR_HU, load_ct
from scripts.ct.lps import lps_affine, lps_to_ras, to_lps_axis_aligned
from scripts.frame import FRAME

__all__ = [
    "LoadCT",
    "LoadCTd",
    "NormalizeCT",
    "NormalizeCTd",
    "HUToInt16d",
    "as_metatensor",
    "set_spacing_meta",
    "linear_weights",
    "cubic_spline_weights",
    "separable_resample",
    "lps_grid",
]


def as_metatensor(img) -> MetaTensor:
    if isinstance(img, MetaTensor):
        return img
    return MetaTensor(torch.as_tensor(np.asarray(img) if not isinstance(img, torch.Tensor) else img))


def lps_grid(img) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(volume (X, Y, Z) float32, spacing_mm, origin_mm)`` of a ``(1, X, Y, Z)`` MetaTensor on the LPS
    axis-aligned grid (exactly permuted/flipped when its affine is a signed permutation; an oblique
    affine raises ``ValueError``: load it with :class:`LoadCT`, which resamples)."""
    img = as_metatensor(img)
    if img.ndim != 4 or img.shape[0] != 1:
        raise ValueError(f"expected a (1, X, Y, Z) volume, got shape {tuple(img.shape)}")
    a = lps_to_ras(np.asarray(img.affine, dtype=np.float64)[:4, :4])
    m = a[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    direction = m / spacing
    arr = img.detach().cpu().numpy()[0].astype(np.float32, copy=False)
    try:
        return to_lps_axis_aligned(arr, spacing, a[:3, 3], direction, source="DRR input")
    except ValueError as e:
        raise ValueError(f"{e}; load the CT with scripts.transforms.ct.LoadCT first") from None


def set_spacing_meta(img: MetaTensor) -> MetaTensor:
    aff = np.asarray(img.affine, dtype=np.float64)
    img.meta["spacing"] = np.linalg.norm(aff[:3, :3], axis=0)
    img.meta["spatial_shape"] = np.asarray(img.shape[1:])
    return img


# ------------------------------------------------------------------------------------------ LoadCT
def _as_check(check: ChestCTCheck | bool | None) -> ChestCTCheck | None:
    if check is True:
        return ChestCTCheck()
    return check or None


class LoadCT(Transform):
    """Load a CT as an LPS axis-aligned HU volume (see :func:`scripts.ct.loader.load_ct`).

    Input: a path (str or ``os.PathLike``): a NIfTI/MHA/MHD/NRRD file, a DICOM file, a DICOM series
    folder, or a patient folder in TCIA layout (the CT series with most slices is used).

    Args:
        check: chest-CT plausibility limits checked from the header before the pixels are read:
            ``True`` (default) for :class:`~scripts.ct.chest_check.ChestCTCheck`'s defaults, a ``ChestCTCheck``,
            or ``False`` for none.

    Output: ``MetaTensor`` ``(1, X, Y, Z)`` float32 HU, axes toward Left, Posterior, Superior,
    ``affine`` in RAS (MONAI convention), meta ``spacing`` (mm), ``filename_or_obj``, ``case_id``.
    Padding at or below -2000 HU becomes -1024. Raises :class:`scripts.errors.CTLoadError` with the fix.
    """

    def __init__(self, check: ChestCTCheck | bool = True) -> None:
        self.check = _as_check(check)

    def __call__(self, path) -> MetaTensor:
        return load_ct(path, check=self.check)


class LoadCTd(MapTransform):
    """Dictionary version of :class:`LoadCT`: replaces each path under ``keys`` (default ``"ct"``) by its volume."""

    def __init__(
        self, keys: KeysCollection = "ct", check: ChestCTCheck | bool = True, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadCT(check=check)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


# ------------------------------------------------------------------------------------------ resampling
def linear_weights(positions: np.ndarray, n_in: int) -> np.ndarray:
    """``(len(positions), n_in)`` weights of linear interpolation at continuous input indices ``positions``.

    A position within half a voxel of the input's extent (``-0.5 <= u <= n_in - 0.5``) takes the value
    linearly interpolated between its two neighbours (the edge voxel beyond the outer centres); a position
    outside gets an all-zero row (the caller fills it)."""
    u = np.asarray(positions, dtype=np.float64)
    w = np.zeros((u.size, n_in), dtype=np.float64)
    inside = (u >= -0.5 - 1e-6) & (u <= n_in - 0.5 + 1e-6)
    uc = np.clip(u, 0.0, n_in - 1.0)
    i0 = np.minimum(np.floor(uc).astype(np.int64), max(n_in - 2, 0))
    f = uc - i0
    rows = np.nonzero(inside)[0]
    w[rows, i0[rows]] += 1.0 - f[rows]
    if n_in > 1:
        w[rows, i0[rows] + 1] += f[rows]
    return w


def cubic_spline_weights(positions: np.ndarray, n_in: int) -> np.ndarray:
    """``(len(positions), n_in)`` weights that evaluate a cubic B-spline with coefficients ``c`` at continuous
    input indices ``positions``: ``W @ c`` = ``scipy.ndimage.map_coordinates(c, [positions], order=3,
    mode="nearest", prefilter=False)`` (each column is that call on a unit vector, so scipy's own boundary rule
    applies). Applied to :func:`scipy.ndimage.spline_filter` coefficients it is scipy's cubic interpolation
    (``ndimage.zoom(order=3, mode="nearest")``, the official 1 mm resampling). As :func:`linear_weights`, a
    position beyond half a voxel of the input's extent gets an all-zero row (the caller fills it)."""
    from scipy import ndimage  # heavy optional import, only for the cubic option

    u = np.asarray(positions, dtype=np.float64).reshape(-1)
    w = np.zeros((u.size, n_in), dtype=np.float64)
    inside = (u >= -0.5 - 1e-6) & (u <= n_in - 0.5 + 1e-6)
    if not inside.any():
        return w
    lo, hi = max(0, int(np.floor(u[inside].min())) - 2), min(n_in, int(np.ceil(u[inside].max())) + 3)
    for j in range(lo, hi):
        e = np.zeros(n_in, dtype=np.float64)
        e[j] = 1.0
        w[inside, j] = ndimage.map_coordinates(e, [u[inside]], order=3, mode="nearest", prefilter=False)
    return w


def separable_resample(vol: np.ndarray, weights: Sequence[np.ndarray], fill: float = 0.0) -> torch.Tensor:
    """``out[a, b, c] = fill + sum W0[a, i] W1[b, j] W2[c, k] (vol[i, j, k] - fill)`` (float32).

    Only the input range where the weights are non-zero is read, and the axes are contracted largest
    reduction first, so memory stays near the size of the larger of the input crop and the output.
    Rows of zeros give ``fill``. ``vol``: ``(X, Y, Z)``; ``weights[a]``: ``(n_out_a, n_in_a)``."""
    crops, ws = [], []
    for w in weights:
        cols = np.nonzero(np.abs(w).sum(axis=0))[0]
        lo, hi = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 1)
        crops.append(slice(lo, hi))
        ws.append(torch.as_tensor(w[:, lo:hi], dtype=torch.float32))
    x = torch.as_tensor(np.ascontiguousarray(vol[tuple(crops)]), dtype=torch.float32)
    if fill:
        x = x - fill
    order = sorted(range(3), key=lambda a: ws[a].shape[0] / ws[a].shape[1])  # biggest shrink first
    for a in order:
        x = torch.tensordot(ws[a], x.movedim(a, 0), dims=([1], [0])).movedim(0, a)
    if fill:
        x = x + fill
    return x.contiguous()


# ------------------------------------------------------------------------------------------ NormalizeCT
#: Crop rules of :class:`NormalizeCT`.
CROP_RULES = ("symmetric", "official")
#: Interpolations of :class:`NormalizeCT`: ``linear`` (trilinear, this bundle's) and ``cubic`` (cubic B-spline,
#: the official ``ndimage.zoom`` default order 3 with ``mode="nearest"``, ``1_ctpro_wo_mask.py:29`` @ be4c354).
INTERPOLATIONS = ("linear", "cubic")
#: Input voxels read beyond the cube on each side for the cubic prefilter (its error there decays as 0.268^n).
_SPLINE_MARGIN = 16
#: Edge voxels scipy pads an input with before prefiltering it for ``mode="nearest"`` (``_prepad_for_spline_filter``).
_SCIPY_PAD = 12


class NormalizeCT(Transform):
    """Cut the ``size_mm`` cube out of a CT and resample it to isotropic ``spacing_mm`` voxels, in one step.

    The output grid is axis-aligned in LPS, ``N = round(size_mm / spacing_mm)`` voxels per side, centred
    (``crop="symmetric"``, default) on the centre of the input's voxel-centre extent, so a volume longer
    than the cube loses the same length at both ends and a shorter one is padded equally. Each output
    voxel is the trilinear interpolation of the input at its centre (:func:`linear_weights`, separable);
    voxels outside the input (beyond half a voxel of its extent) read ``pad_hu``. The cube is cut
    *before* resampling: only the input voxels inside it are read, so memory is bounded by the cube and
    that crop, whatever the input's field of view (a 512 x 512 series with 2 mm pixels reads 160 x 160).

    ``crop="official"`` reproduces the official PerX2CT preprocessing (``crop_to_standard``): along the
    body axis, a volume longer than the cube keeps the 320 mm at the end where ``InstanceNumber`` is
    largest (the loader's ``instance_number_increases_toward``; for LIDC-IDRI-0001 the feet end), in-plane
    it is centred as the default. Without that meta (NIfTI input) the symmetric rule is used and said.
    The rule applied is ``meta["crop"]``; the cube's centre ``meta["cube_centre_lps_mm"]``.

    ``interpolation="cubic"`` replaces the trilinear step by scipy's cubic B-spline (``mode="nearest"``), the
    interpolation of the official ``ndimage.interpolation.zoom(image, factor, mode='nearest')``
    (``data_preprocessing/1_ctpro_wo_mask.py:29`` @ be4c354; scipy's default order 3), evaluated at the same 1 mm
    voxel centres: as scipy, the input padded by 12 edge voxels, prefiltered (:func:`scipy.ndimage.spline_filter`;
    only the part within 16 voxels of the cube is read), then :func:`cubic_spline_weights` per axis. Only the interpolation
    is the official one: ``zoom`` also stretches its grid so the first and last voxel centres stay put (133
    slices of 2.5 mm become 332 voxels of 0.997 mm), which this bundle does not (its voxels are 1 mm). Output
    ``meta["interpolation"]``.

    Args:
        spacing_mm: output voxel size, mm (default 1.0).
        size_mm: output cube side, mm (default :data:`scripts.frame.FRAME` ``.size_mm``, 320).
        pad_hu: value of padded voxels, HU (default :data:`scripts.ct.loader.AIR_HU`, -1024).
        crop: ``"symmetric"`` (default) or ``"official"``.
        interpolation: ``"linear"`` (default) or ``"cubic"``.

    Input: ``(1, X, Y, Z)`` HU MetaTensor whose affine is a signed permutation (``LoadCT``'s output).
    Output: ``(1, N, N, N)`` float32 HU MetaTensor, LPS axes, affine with ``spacing_mm`` voxels.
    """

    def __init__(
        self,
        spacing_mm: float = 1.0,
        size_mm: float = FRAME.size_mm,
        pad_hu: float = AIR_HU,
        crop: str = "symmetric",
        interpolation: str = "linear",
    ) -> None:
        if spacing_mm <= 0 or size_mm <= 0:
            raise ValueError(f"spacing_mm and size_mm must be > 0, got {spacing_mm}, {size_mm}")
        if crop not in CROP_RULES:
            raise ValueError(f"crop must be one of {CROP_RULES}, got {crop!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        self.interpolation = interpolation
        self.spacing_mm = float(spacing_mm)
        self.size_mm = float(size_mm)
        self.pad_hu = float(pad_hu)
        self.crop = crop
        self.size_vox = int(round(self.size_mm / self.spacing_mm))

    def cube_centre(self, shape, spacing, origin, meta: Mapping) -> tuple[np.ndarray, str]:
        """``(centre_lps_mm, rule)`` of the output cube for an LPS grid of ``shape`` voxels."""
        first = np.asarray(origin, dtype=np.float64)
        last = first + (np.asarray(shape) - 1) * np.asarray(spacing)
        centre = (first + last) / 2
        rule = "symmetric"
        if self.crop == "official":
            toward = str(meta.get("instance_number_increases_toward", "") or "")
            half = (self.size_vox - 1) / 2 * self.spacing_mm
            if not toward:
                rule = "symmetric (official crop asked, but the slice order is unknown: not a DICOM series)"
            elif last[2] - first[2] + self.spacing_mm <= self.size_mm:
                rule = "official (shorter than the cube: padded symmetrically)"
            else:
                centre[2] = last[2] - half if toward == "S" else first[2] + half
                end = "superior" if toward == "S" else "inferior"
                rule = f"official (last {self.size_mm:g} mm in InstanceNumber order: the {end} end kept)"
        return centre, rule

    def __call__(self, img) -> MetaTensor:
        img = as_metatensor(img)
        if img.ndim != 4 or img.shape[0] != 1:
            raise ValueError(f"NormalizeCT expects a (1, X, Y, Z) volume, got shape {tuple(img.shape)}")
        vol, spacing, origin = lps_grid(img)
        centre, rule = self.cube_centre(vol.shape, spacing, origin, img.meta)
        offsets = (np.arange(self.size_vox) - (self.size_vox - 1) / 2) * self.spacing_mm
        positions = [(centre[a] + offsets - origin[a]) / spacing[a] for a in range(3)]
        if self.interpolation == "cubic":
            out = self._cubic(vol, positions)
        else:
            out = separable_resample(vol, [linear_weights(u, n) for u, n in zip(positions, vol.shape)], self.pad_hu)
        first = centre - (self.size_vox - 1) / 2 * self.spacing_mm
        affine = lps_to_ras(lps_affine([self.spacing_mm] * 3, first))
        meta = {k: v for k, v in img.meta.items() if k not in ("affine", "original_affine")}
        meta.update(crop=rule, cube_centre_lps_mm=centre, interpolation=self.interpolation)
        x = MetaTensor(out[None], affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)
        return set_spacing_meta(x)

    def _cubic(self, vol: np.ndarray, positions: list[np.ndarray]) -> torch.Tensor:
        """Cubic B-spline values of ``vol`` (X, Y, Z) at continuous indices ``positions`` (one array per axis), as
        ``scipy.ndimage.map_coordinates(vol, ..., order=3, mode="nearest")`` (and ``zoom``) compute them: the input
        padded by 12 edge voxels per side, prefiltered, evaluated; here only the part of that padded input within
        :data:`_SPLINE_MARGIN` voxels of the cube is read. Positions beyond half a voxel of the input: ``pad_hu``."""
        from scipy import ndimage  # heavy optional import, only for the cubic option

        index, weights = [], []
        for u, n in zip(positions, vol.shape):
            inside = u[(u >= -0.5 - 1e-6) & (u <= n - 0.5 + 1e-6)]
            first, last = (float(inside.min()), float(inside.max())) if inside.size else (0.0, 0.0)
            lo = max(0, int(np.floor(first)) + _SCIPY_PAD - _SPLINE_MARGIN)
            hi = min(n + 2 * _SCIPY_PAD, int(np.ceil(last)) + _SCIPY_PAD + 1 + _SPLINE_MARGIN)
            index.append(np.clip(np.arange(lo, hi) - _SCIPY_PAD, 0, n - 1))  # edge padding, as scipy's
            w = cubic_spline_weights(u + _SCIPY_PAD - lo, hi - lo)
            w[(u < -0.5 - 1e-6) | (u > n - 0.5 + 1e-6)] = 0.0  # beyond the input: pad_hu
            weights.append(w)
        crop = np.asarray(vol, dtype=np.float64)[np.ix_(*index)]
        coeffs = ndimage.spline_filter(crop, order=3, mode="nearest", output=np.float64)
        return separable_resample(coeffs.astype(np.float32), weights, fill=self.pad_hu)


class NormalizeCTd(MapTransform):
    """Dictionary version of :class:`NormalizeCT` (default key ``"ct"``)."""

    def __init__(
        self,
        keys: KeysCollection = "ct",
        spacing_mm: float = 1.0,
        size_mm: float = FRAME.size_mm,
        pad_hu: float = AIR_HU,
        crop: str = "symmetric",
        allow_missing_keys: bool = False,
        interpolation: str = "linear",
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = NormalizeCT(
            spacing_mm=spacing_mm, size_mm=size_mm, pad_hu=pad_hu, crop=crop, interpolation=interpolation
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d


class HUToInt16d(MapTransform):
    """Copy a HU volume as int16 (rounded to the nearest HU, clipped to the int16 range) under ``output_key``.

    This is the 1 mm cube kept beside the target (``ct_1mm``): ground truth at 1 mm for slices, zoom-in
    and on-the-fly DRRs, 2 bytes per voxel. Input: ``(1, X, Y, Z)`` HU MetaTensor; output: the same grid
    and affine, dtype int16. The source key is left unchanged.
    """

    def __init__(
        self, keys: KeysCollection = "ct", output_key: str = "ct_1mm", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"HUToInt16d copies one volume; got keys {self.keys}")
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = as_metatensor(d[key])
            x = torch.round(img.as_tensor().to(torch.float32)).clamp(-32768, 32767).to(torch.int16)
            meta = {k: v for k, v in img.meta.items() if k != "affine"}
            d[self.output_key] = MetaTensor(x, affine=img.affine.clone(), meta=meta)
        return d


# ------------------------------------------------------------------------------------------ CTTarget
