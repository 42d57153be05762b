"""MONAI transforms of the PerX2CT data protocol: load a CT, normalise it, make the target and the DRRs.

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
(see :mod:`scripts.ct_io`); the transforms move the affine with the data, so a landmark keeps its
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

from scripts.chest_ct_check import ChestCTCheck
from scripts.ct_io import AIR_HU, load_ct
from scripts.drr import BACKENDS, detector_affine_lps, render_drr, volume_centre_mm
from scripts.frame import FRAME, VolumeFrame
from scripts.geometry import ProjectionGeometry
from scripts.lps import lps_affine, lps_to_ras, to_lps_axis_aligned
from scripts.radiograph import VIEW_SHAPE, postprocess_radiograph

__all__ = [
    "LoadCT",
    "LoadCTd",
    "NormalizeCT",
    "NormalizeCTd",
    "HUToInt16d",
    "CTTarget",
    "CTTargetd",
    "DRR",
    "DRRd",
    "area_downsample",
    "point_downsample",
    "linear_weights",
    "separable_resample",
    "lps_grid",
]


def _as_metatensor(img) -> MetaTensor:
    if isinstance(img, MetaTensor):
        return img
    return MetaTensor(torch.as_tensor(np.asarray(img) if not isinstance(img, torch.Tensor) else img))


def lps_grid(img) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(volume (X, Y, Z) float32, spacing_mm, origin_mm)`` of a ``(1, X, Y, Z)`` MetaTensor on the LPS
    axis-aligned grid (exactly permuted/flipped when its affine is a signed permutation; an oblique
    affine raises ``ValueError``: load it with :class:`LoadCT`, which resamples)."""
    img = _as_metatensor(img)
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
        raise ValueError(f"{e}; load the CT with scripts.transforms.LoadCT first") from None


def _set_spacing_meta(img: MetaTensor) -> MetaTensor:
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
    """Load a CT as an LPS axis-aligned HU volume (see :func:`scripts.ct_io.load_ct`).

    Input: a path (str or ``os.PathLike``): a NIfTI/MHA/MHD/NRRD file, a DICOM file, a DICOM series
    folder, or a patient folder in TCIA layout (the CT series with most slices is used).

    Args:
        check: chest-CT plausibility limits checked from the header before the pixels are read:
            ``True`` (default) for :class:`~scripts.chest_ct_check.ChestCTCheck`'s defaults, a ``ChestCTCheck``,
            or ``False`` for none.

    Output: ``MetaTensor`` ``(1, X, Y, Z)`` float32 HU, axes toward Left, Posterior, Superior,
    ``affine`` in RAS (MONAI convention), meta ``spacing`` (mm), ``filename_or_obj``, ``case_id``.
    Padding at or below -2000 HU becomes -1024. Raises :class:`scripts.ct_errors.CTLoadError` with the fix.
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

    Args:
        spacing_mm: output voxel size, mm (default 1.0).
        size_mm: output cube side, mm (default :data:`scripts.frame.FRAME` ``.size_mm``, 320).
        pad_hu: value of padded voxels, HU (default :data:`scripts.ct_io.AIR_HU`, -1024).
        crop: ``"symmetric"`` (default) or ``"official"``.

    Input: ``(1, X, Y, Z)`` HU MetaTensor whose affine is a signed permutation (``LoadCT``'s output).
    Output: ``(1, N, N, N)`` float32 HU MetaTensor, LPS axes, affine with ``spacing_mm`` voxels.
    """

    def __init__(
        self, spacing_mm: float = 1.0, size_mm: float = FRAME.size_mm, pad_hu: float = AIR_HU, crop: str = "symmetric"
    ) -> None:
        if spacing_mm <= 0 or size_mm <= 0:
            raise ValueError(f"spacing_mm and size_mm must be > 0, got {spacing_mm}, {size_mm}")
        if crop not in CROP_RULES:
            raise ValueError(f"crop must be one of {CROP_RULES}, got {crop!r}")
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
        img = _as_metatensor(img)
        if img.ndim != 4 or img.shape[0] != 1:
            raise ValueError(f"NormalizeCT expects a (1, X, Y, Z) volume, got shape {tuple(img.shape)}")
        vol, spacing, origin = lps_grid(img)
        centre, rule = self.cube_centre(vol.shape, spacing, origin, img.meta)
        offsets = (np.arange(self.size_vox) - (self.size_vox - 1) / 2) * self.spacing_mm
        weights = [linear_weights((centre[a] + offsets - origin[a]) / spacing[a], vol.shape[a]) for a in range(3)]
        out = separable_resample(vol, weights, fill=self.pad_hu)
        first = centre - (self.size_vox - 1) / 2 * self.spacing_mm
        affine = lps_to_ras(lps_affine([self.spacing_mm] * 3, first))
        meta = {k: v for k, v in img.meta.items() if k not in ("affine", "original_affine")}
        meta.update(crop=rule, cube_centre_lps_mm=centre)
        x = MetaTensor(out[None], affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)
        return _set_spacing_meta(x)


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
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = NormalizeCT(spacing_mm=spacing_mm, size_mm=size_mm, pad_hu=pad_hu, crop=crop)

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
            img = _as_metatensor(d[key])
            x = torch.round(img.as_tensor().to(torch.float32)).clamp(-32768, 32767).to(torch.int16)
            meta = {k: v for k, v in img.meta.items() if k != "affine"}
            d[self.output_key] = MetaTensor(x, affine=img.affine.clone(), meta=meta)
        return d


# ------------------------------------------------------------------------------------------ CTTarget
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
    return _set_spacing_meta(MetaTensor(y, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta))


def area_downsample(img: MetaTensor, shape: Sequence[int]) -> MetaTensor:
    """Exact area (box-filter) downsampling of a ``(C, X, Y, Z)`` MetaTensor to ``shape``, any ratio >= 1.

    Each output voxel is the volume-weighted mean of the input voxels it covers (fractional overlaps,
    so no jitter for non-integer ratios such as 320 -> 128). The field of view (outer edges) is kept:
    spacing grows by ``n_in / n_out`` and the centre stays; the affine is updated accordingly.
    """
    img = _as_metatensor(img)
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
    img = _as_metatensor(img)
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
        img = _as_metatensor(img)
        if img.ndim != 4:
            raise ValueError(f"CTTarget expects a (1, X, Y, Z) volume, got shape {tuple(img.shape)}")
        down = point_downsample if self.mode == "point" else area_downsample
        y = down(img, (self.output_size,) * 3)
        y = _as_metatensor(self.frame.hu_to_target(y).to(torch.float32))
        y.meta["intensity"] = self.frame.intensity_description
        y.meta["target_resampling"] = self.mode
        return _set_spacing_meta(y)


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
class DRR(Transform):
    """DRRs of a HU volume, one per view, with a :class:`~scripts.geometry.ProjectionGeometry`.

    The ray casting is :func:`scripts.drr.render_drr`: the ITK ray caster (``backend="itk"``, the
    reference) or the batched torch projector (``backend="torch"``, :mod:`scripts.projector`), both with
    plastimatch's HU conversion.
    Post-processing (skipped when ``raw=True``), in this order:
    divide by the image's own maximum (``normalize``); quantise to ``quantize_bits`` levels
    (``round(x * (2**b - 1)) / (2**b - 1)``, 255 levels for 8 bits, as a saved 8-bit PNG);
    resize to ``output_shape`` (bilinear with antialiasing, ``torch.nn.functional.interpolate``);
    quantise again (the resized 8-bit image is 8-bit again), so after a resize the maximum may be
    slightly below 1.

    Args:
        geometry: the projection geometry (e.g. ``ProjectionGeometry.from_preset("perx2ct")``).
        views: names of the views to render, in output order.
        isocentre_mm: ``None`` (default): the volume centre in LPS mm (``geometry.isocentre_mm`` is
            replaced); ``(x, y, z)``: this LPS point.
        normalize: divide by the maximum (default True).
        quantize_bits: ``8`` (default) or ``None`` for no quantisation.
        output_shape: ``(H, W)`` of the output (default :data:`scripts.radiograph.VIEW_SHAPE`, 128 x 128); ``None``
            keeps the detector's.
        raw: return the raw line integrals (float32, the geometry's detector shape), ignoring the
            three options above.
        backend: ``"itk"`` (default) or ``"torch"``.
        device: torch device of the ``torch`` backend (default ``"cpu"``).

    Input: ``(1, X, Y, Z)`` HU MetaTensor (LoadCT / NormalizeCT output; signed-permutation affines are fine).
    Output: tuple of ``MetaTensor`` ``(1, H, W)`` float32, one per view; rows top to bottom = head to
    feet, columns per the geometry's display convention (PA: patient's right on the left; lateral:
    anterior on the left). Meta: ``view``, ``geometry`` (plain dict, with the isocentre used and the
    output's detector shape), ``spacing`` (pixel size (row, col) mm), ``raw``, and an ``affine`` placing
    pixel (row, col) on the physical detector plane (RAS).
    """

    def __init__(
        self,
        geometry: ProjectionGeometry | None = None,
        views: Sequence[str] = ("pa", "lateral"),
        isocentre_mm: Sequence[float] | None = None,
        normalize: bool = True,
        quantize_bits: int | None = 8,
        output_shape: Sequence[int] | None = VIEW_SHAPE,
        raw: bool = False,
        backend: str = "itk",
        device: str | torch.device = "cpu",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown DRR backend {backend!r}; choose one of {list(BACKENDS)}")
        self.backend, self.device = backend, device
        self.geometry = geometry if geometry is not None else ProjectionGeometry.from_preset("perx2ct")
        if isinstance(views, str):
            views = (views,)
        self.views = tuple(views)
        for v in self.views:
            self.geometry.view(v)
        self.isocentre_mm = None if isocentre_mm is None else tuple(float(x) for x in isocentre_mm)
        if self.isocentre_mm is not None and len(self.isocentre_mm) != 3:
            raise ValueError(f"isocentre_mm must be (x, y, z) LPS mm, got {isocentre_mm!r}")
        if quantize_bits is not None and not (1 <= int(quantize_bits) <= 16):
            raise ValueError(f"quantize_bits must be in 1..16 or None, got {quantize_bits!r}")
        self.normalize = bool(normalize)
        self.quantize_bits = None if quantize_bits is None else int(quantize_bits)
        self.output_shape = None if output_shape is None else tuple(int(s) for s in output_shape)
        self.raw = bool(raw)

    def geometry_for(self, img) -> ProjectionGeometry:
        """The geometry with the isocentre this transform uses for ``img``."""
        vol, spacing, origin = lps_grid(img)
        return self._geometry(vol.shape, spacing, origin)

    def _geometry(self, shape, spacing, origin) -> ProjectionGeometry:
        iso = self.isocentre_mm if self.isocentre_mm is not None else tuple(volume_centre_mm(shape, spacing, origin))
        return self.geometry.with_isocentre(iso)

    def postprocess(self, drr: np.ndarray) -> torch.Tensor:
        """Raw ``(rows, cols)`` line integrals -> ``(1, H, W)`` float32 per the options (not raw), by
        :func:`scripts.radiograph.postprocess_radiograph`, the step real radiographs go through too."""
        return postprocess_radiograph(drr, self.output_shape, self.normalize, self.quantize_bits)[None]

    def __call__(self, img) -> tuple[MetaTensor, ...]:
        img = _as_metatensor(img)
        vol, spacing, origin = lps_grid(img)
        geometry = self._geometry(vol.shape, spacing, origin)
        drrs = render_drr(vol, spacing, origin, geometry, self.views, backend=self.backend, device=self.device)
        outs = []
        for view, drr in zip(self.views, drrs):
            if self.raw:
                x = torch.as_tensor(drr)[None]
            else:
                x = self.postprocess(drr)
            out_geometry = geometry.with_detector_shape(x.shape[1:])
            meta = {
                "view": view,
                "geometry": out_geometry.to_dict(),
                "spacing": np.asarray(out_geometry.pixel_spacing_mm),
                "raw": self.raw,
                "filename_or_obj": img.meta.get("filename_or_obj", ""),
                "case_id": img.meta.get("case_id", ""),
            }
            affine = lps_to_ras(detector_affine_lps(out_geometry, view))
            outs.append(MetaTensor(x.contiguous(), affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta))
        return tuple(outs)


class DRRd(MapTransform):
    """Dictionary version of :class:`DRR`: renders the volume under ``keys`` (one key, default ``"ct"``)
    and stores view ``views[i]`` under ``output_keys[i]`` (default the view names). The volume stays.

    Other arguments as :class:`DRR` (``geometry``, ``isocentre_mm``, ``normalize``, ``quantize_bits``,
    ``output_shape``, ``raw``, ``backend``, ``device``).
    """

    def __init__(
        self,
        keys: KeysCollection = "ct",
        geometry: ProjectionGeometry | None = None,
        views: Sequence[str] = ("pa", "lateral"),
        output_keys: Sequence[str] | None = None,
        isocentre_mm: Sequence[float] | None = None,
        normalize: bool = True,
        quantize_bits: int | None = 8,
        output_shape: Sequence[int] | None = VIEW_SHAPE,
        raw: bool = False,
        backend: str = "itk",
        device: str | torch.device = "cpu",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"DRRd renders one volume; got keys {self.keys}")
        self.drr = DRR(geometry, views, isocentre_mm, normalize, quantize_bits, output_shape, raw, backend, device)
        self.output_keys = tuple(output_keys) if output_keys is not None else self.drr.views
        if isinstance(output_keys, str):
            self.output_keys = (output_keys,)
        if len(self.output_keys) != len(self.drr.views):
            raise ValueError(f"need one output key per view: views {self.drr.views}, output_keys {self.output_keys}")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            for out_key, image in zip(self.output_keys, self.drr(d[key])):
                d[out_key] = image
        return d
