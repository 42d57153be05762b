"""MONAI transforms of the PerX2CT data protocol: load a CT, normalise it, make the target and the DRRs.

Array transforms do the work; each dictionary transform (``...d``) maps one over ``keys``.

===============  =====================================================  =========================================
transform        input                                                  output
===============  =====================================================  =========================================
``LoadCT``       path: file, DICOM series folder or patient folder      ``(1, X, Y, Z)`` float32 HU, LPS axes
``NormalizeCT``  ``(1, X, Y, Z)`` HU MetaTensor                         ``(1, 320, 320, 320)`` HU, 1 mm
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
from monai.transforms import MapTransform, ResizeWithPadOrCrop, Spacing, Transform

from scripts.ct_io import load_ct, lps_to_ras, to_lps_axis_aligned
from scripts.drr import detector_affine_lps, hu_to_attenuation, ray_cast_drr, volume_centre_mm
from scripts.geometry import ProjectionGeometry
from scripts.radiograph import postprocess_radiograph

__all__ = [
    "LoadCT",
    "LoadCTd",
    "NormalizeCT",
    "NormalizeCTd",
    "CTTarget",
    "CTTargetd",
    "DRR",
    "DRRd",
    "area_downsample",
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
class LoadCT(Transform):
    """Load a CT as an LPS axis-aligned HU volume (see :func:`scripts.ct_io.load_ct`).

    Input: a path (str or ``os.PathLike``): a NIfTI/MHA/MHD/NRRD file, a DICOM file, a DICOM series
    folder, or a patient folder in TCIA layout (the CT series with most slices is used).

    Output: ``MetaTensor`` ``(1, X, Y, Z)`` float32 HU, axes toward Left, Posterior, Superior,
    ``affine`` in RAS (MONAI convention), meta ``spacing`` (mm), ``filename_or_obj``, ``case_id``.
    Padding at or below -2000 HU becomes -1024. Raises :class:`scripts.ct_io.CTLoadError` with the fix.
    """

    def __call__(self, path) -> MetaTensor:
        return load_ct(path)


class LoadCTd(MapTransform):
    """Dictionary version of :class:`LoadCT`: replaces each path under ``keys`` (default ``"ct"``) by its volume."""

    def __init__(self, keys: KeysCollection = "ct", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadCT()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


# ------------------------------------------------------------------------------------------ NormalizeCT
class NormalizeCT(Transform):
    """Resample to isotropic voxels and centre-crop or pad to a cube, keeping world positions.

    Steps: MONAI ``Spacing`` (trilinear) to ``spacing_mm`` isotropic, then ``ResizeWithPadOrCrop``
    (symmetric about the array centre) to ``size_mm / spacing_mm`` voxels per side. Both move the
    affine with the data: a landmark at world position p lands at p in the output (within a voxel).
    Voxels outside the input's extent (resampling border or padding) read ``pad_hu``.

    Args:
        spacing_mm: output voxel size, mm (default 1.0).
        size_mm: output cube side, mm (default 320); the voxel count is ``round(size_mm / spacing_mm)``.
        pad_hu: value of padded voxels, HU (default -1024, air).

    Input: ``(1, X, Y, Z)`` HU MetaTensor (any orientation MONAI understands; LoadCT's LPS grid keeps LPS).
    Output: ``(1, N, N, N)`` float32 HU MetaTensor, ``N = round(size_mm / spacing_mm)`` (320 by default),
    affine with ``spacing_mm`` voxels, meta ``spacing`` updated.
    """

    def __init__(self, spacing_mm: float = 1.0, size_mm: float = 320.0, pad_hu: float = -1024.0) -> None:
        if spacing_mm <= 0 or size_mm <= 0:
            raise ValueError(f"spacing_mm and size_mm must be > 0, got {spacing_mm}, {size_mm}")
        self.spacing_mm = float(spacing_mm)
        self.size_mm = float(size_mm)
        self.pad_hu = float(pad_hu)
        self.size_vox = int(round(self.size_mm / self.spacing_mm))
        self._spacing = Spacing(pixdim=(self.spacing_mm,) * 3, mode="bilinear", padding_mode="zeros", dtype=torch.float32)
        self._crop_pad = ResizeWithPadOrCrop((self.size_vox,) * 3, mode="constant", value=self.pad_hu)

    def __call__(self, img) -> MetaTensor:
        img = _as_metatensor(img)
        if img.ndim != 4 or img.shape[0] != 1:
            raise ValueError(f"NormalizeCT expects a (1, X, Y, Z) volume, got shape {tuple(img.shape)}")
        x = img.to(torch.float32)
        # shift so that zero-padding of the resampler means pad_hu
        x = self._spacing(x - self.pad_hu) + self.pad_hu
        x = self._crop_pad(x)
        x = _as_metatensor(x).to(torch.float32)
        return _set_spacing_meta(x)


class NormalizeCTd(MapTransform):
    """Dictionary version of :class:`NormalizeCT` (default key ``"ct"``)."""

    def __init__(
        self,
        keys: KeysCollection = "ct",
        spacing_mm: float = 1.0,
        size_mm: float = 320.0,
        pad_hu: float = -1024.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = NormalizeCT(spacing_mm=spacing_mm, size_mm=size_mm, pad_hu=pad_hu)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
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
    r = np.asarray(n_in, dtype=np.float64) / np.asarray(shape, dtype=np.float64)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(r)
    scale[:3, 3] = (r - 1) / 2  # centre of output voxel 0 in input index units
    affine = np.asarray(img.affine, dtype=np.float64) @ scale
    meta = {k: v for k, v in img.meta.items() if k != "affine"}
    out = MetaTensor(y.contiguous(), affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)
    return _set_spacing_meta(out)


class CTTarget(Transform):
    """The training target: the 1 mm HU cube -> ``(1, 128, 128, 128)`` intensities in [0, 1] at 2.5 mm.

    Steps: exact area (box) downsampling (:func:`area_downsample`, anti-aliased; 320 -> 128 averages
    2.5 x 2.5 x 2.5 mm of input per voxel) of the HU volume, then ``clip(HU + 1024, 0, 2500) / 2500``
    (float32; HU -1024 -> 0, 1476 -> 1). The affine keeps the cube's outer edges and centre, with
    spacing ``input spacing x n_in / n_out`` (2.5 mm by default).

    Args:
        output_size: voxels per side of the target (default 128).
        hu_offset: added to HU before clipping (default 1024).
        max_value: upper clip and divisor (default 2500).

    Input: ``(1, N, N, N)`` HU MetaTensor (``NormalizeCT``'s output). Output: ``(1, S, S, S)`` float32 in [0, 1].
    """

    def __init__(self, output_size: int = 128, hu_offset: float = 1024.0, max_value: float = 2500.0) -> None:
        self.output_size = int(output_size)
        self.hu_offset = float(hu_offset)
        self.max_value = float(max_value)

    def __call__(self, img) -> MetaTensor:
        img = _as_metatensor(img)
        if img.ndim != 4:
            raise ValueError(f"CTTarget expects a (1, X, Y, Z) volume, got shape {tuple(img.shape)}")
        y = area_downsample(img, (self.output_size,) * 3)
        y = ((y + self.hu_offset).clamp(0.0, self.max_value) / self.max_value).to(torch.float32)
        y = _as_metatensor(y)
        y.meta["intensity"] = f"clip(HU + {self.hu_offset:g}, 0, {self.max_value:g}) / {self.max_value:g}"
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
        output_size: int = 128,
        hu_offset: float = 1024.0,
        max_value: float = 2500.0,
        keep_hu_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if keep_hu_key is not None and len(self.keys) != 1:
            raise ValueError("keep_hu_key needs exactly one key")
        self.target = CTTarget(output_size=output_size, hu_offset=hu_offset, max_value=max_value)
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

    The ray casting is :func:`scripts.drr.ray_cast_drr` (ITK ray caster, plastimatch's HU conversion).
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
        output_shape: ``(H, W)`` of the output (default ``(128, 128)``); ``None`` keeps the detector's.
        raw: return the raw line integrals (float32, the geometry's detector shape), ignoring the
            three options above.

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
        output_shape: Sequence[int] | None = (128, 128),
        raw: bool = False,
    ) -> None:
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
        mu = hu_to_attenuation(vol)
        outs = []
        for view in self.views:
            drr = ray_cast_drr(vol, spacing, origin, geometry, view, attenuation=mu)
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
    ``output_shape``, ``raw``).
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
        output_shape: Sequence[int] | None = (128, 128),
        raw: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"DRRd renders one volume; got keys {self.keys}")
        self.drr = DRR(geometry, views, isocentre_mm, normalize, quantize_bits, output_shape, raw)
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
