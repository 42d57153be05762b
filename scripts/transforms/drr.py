"""DRRs as a MONAI transform (``DRR(d)``): one ``(1, H, W)`` network-input image per view of a CT MetaTensor.

Rendered by either renderer of :mod:`scripts.projection.drr` with the one
:class:`~scripts.projection.geometry.ProjectionGeometry`, then post-processed as real radiographs are
(:func:`scripts.transforms.radiograph.postprocess_radiograph`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from scripts.ct.lps import lps_to_ras
from scripts.projection.drr import BACKENDS, render_drr
from scripts.projection.geometry import ProjectionGeometry
from scripts.projection.itk_renderer import detector_affine_lps, volume_centre_mm
from scripts.transforms.ct import as_metatensor, lps_grid
from scripts.transforms.radiograph import RADIOGRAPH_PIPELINES, VIEW_SHAPE, postprocess_radiograph

__all__ = ["DRR", "DRRd"]


class DRR(Transform):
    """DRRs of a HU volume, one per view, with a :class:`~scripts.projection.geometry.ProjectionGeometry`.

    The ray casting is :func:`scripts.projection.drr.render_drr`: the ITK ray caster (``backend="itk"``, the
    reference) or the batched torch projector (``backend="torch"``, :mod:`scripts.projection.torch_renderer`), both with
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
        output_shape: ``(H, W)`` of the output (default :data:`scripts.transforms.radiograph.VIEW_SHAPE`, 128 x 128); ``None``
            keeps the detector's.
        raw: return the raw line integrals (float32, the geometry's detector shape), ignoring the
            three options above.
        backend: ``"itk"`` (default) or ``"torch"``.
        device: torch device of the ``torch`` backend (default ``"cpu"``).
        pipeline: ``"bundle"`` (default, the steps above) or ``"official"``: the official PerX2CT
            preprocessing's DRRs, for the authors' weights (:data:`scripts.transforms.radiograph.RADIOGRAPH_PIPELINES`):
            the volume is ray cast as HU + 24 (``plastimatch adjust --pw-linear "0, -1000"`` on HU + 1024 data,
            ``data_preprocessing/2_xraypro.py:83`` @ be4c354), then truncated to 8 bits, passed through
            matplotlib's grey colormap and resized with Lanczos (``quantize_bits`` must be 8). ``raw`` line
            integrals include the offset.

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
        pipeline: str = "bundle",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown DRR backend {backend!r}; choose one of {list(BACKENDS)}")
        if pipeline not in RADIOGRAPH_PIPELINES:
            raise ValueError(f"unknown DRR pipeline {pipeline!r}; choose one of {sorted(RADIOGRAPH_PIPELINES)}")
        self.pipeline = pipeline
        self.hu_offset = float(RADIOGRAPH_PIPELINES[pipeline]["hu_offset"])
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
        :func:`scripts.transforms.radiograph.postprocess_radiograph`, the step real radiographs go through too."""
        return postprocess_radiograph(drr, self.output_shape, self.normalize, self.quantize_bits, self.pipeline)[None]

    def __call__(self, img) -> tuple[MetaTensor, ...]:
        img = as_metatensor(img)
        vol, spacing, origin = lps_grid(img)
        geometry = self._geometry(vol.shape, spacing, origin)
        if self.hu_offset:
            vol = vol + np.float32(self.hu_offset)
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
                "pipeline": self.pipeline,
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
    ``output_shape``, ``raw``, ``backend``, ``device``, ``pipeline``).
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
        pipeline: str = "bundle",
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"DRRd renders one volume; got keys {self.keys}")
        self.drr = DRR(
            geometry, views, isocentre_mm, normalize, quantize_bits, output_shape, raw, backend, device, pipeline
        )
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
