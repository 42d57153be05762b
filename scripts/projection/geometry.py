"""Cone-beam projection geometry shared by the DRR generator and the network's sampler.

One :class:`ProjectionGeometry` describes how a chest CT is X-rayed: where each view's source
sits, where its flat detector lies, and how a 3D point maps to a detector pixel. The DRR
transform (:mod:`scripts.projection.drr`) casts rays with it and the network's
:class:`~scripts.networks.sampler.PerspectiveSampler` samples image features with it, so the
network reads each X-ray exactly where that X-ray imaged a point.

Frame and units
---------------
* World coordinates are DICOM patient coordinates (LPS) in millimetres: +x toward the patient's
  left, +y toward posterior, +z toward superior (head).
* ``isocentre_mm`` is the point the beams are centred on. Prepared cases put it at the centre of
  the CT cube; the network uses a geometry with the isocentre at the origin and query points in
  mm relative to the volume centre (see :meth:`ProjectionGeometry.centred`).
* A view is given by ``normal`` (unit vector from the isocentre toward the source, as
  plastimatch's ``-n``), and the detector's ``col`` and ``row`` directions. The source sits at
  ``isocentre + sad * normal``; the detector plane at ``isocentre - (sid - sad) * normal``.
* Detector pixel coordinates are continuous ``(x, y)`` = (column, row) with pixel *centres at
  integers* (pixel ``(0, 0)`` spans ``[-0.5, 0.5]``); row 0 is the top of the displayed image.
* Each view may carry its own acquisition (issue 19): ``sad_mm``, ``sid_mm``, ``detector_size_mm`` and
  ``detector_offset_mm`` on the :class:`View` override the geometry's values for that view (None = the
  geometry's), so a PA taken at 1800 mm and a lateral at 1500 mm, each on its own detector, are one geometry.
  ``detector_offset_mm = (along col, along row)`` moves the detector centre in its plane away from the central
  ray through the isocentre (the patient off the beam's centre). Every method answers per view
  (:meth:`ProjectionGeometry.view_acquisition`); ``detector_shape`` (the read-out grid) is common to all views,
  so a view's pixel pitch is its ``detector_size_mm / detector_shape`` (:meth:`ProjectionGeometry.view_pixel_spacing_mm`).
  Without overrides every number is computed exactly as before (the presets are bit-exact).
* Normalised coordinates (:meth:`project_normalized`) follow
  ``torch.nn.functional.grid_sample(..., align_corners=False)``: -1 and +1 are the outer edges of
  the detector, whatever its resolution. Feature maps of any size that cover the whole detector
  are sampled with the same numbers.

Display convention (pinned by tests)
------------------------------------
Both views display like chest radiographs, head up (row direction = -z).

* ``pa`` (detector normal (0, 1, 0), source posterior): viewed from the front, as a radiologist
  reads a PA film: the patient's right is on the image's left (column direction = +x, toward
  the patient's left). X2CT-GAN's PA images were flipped left-right relative to this.
* ``lateral`` (normal (1, 0, 0), source at the patient's left): viewed from the source side,
  anterior on the image's left, spine on the right (column direction = +y, toward posterior).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scripts.utils.optional_torch import torch_of  # torch only for tensors: the drr command runs without it

__all__ = [
    "View",
    "ViewAcquisition",
    "VIEW_ACQUISITION_FIELDS",
    "ProjectionGeometry",
    "GEOMETRY_PRESETS",
    "VIEW_PRESETS",
    "SAMPLING_ONLY_PRESETS",
    "preset_name",
    "drr_geometry",
    "data_pipeline",
]

_Vec = tuple[float, float, float]


def _unit(v: Sequence[float], what: str) -> _Vec:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{what} must be three finite numbers, got {v!r}")
    n = float(np.linalg.norm(a))
    if n == 0:
        raise ValueError(f"{what} must not be the zero vector")
    return tuple(float(x) for x in a / n)  # type: ignore[return-value]


#: The per-view acquisition fields of :class:`View` (None = the geometry's value), in mm.
VIEW_ACQUISITION_FIELDS = ("sad_mm", "sid_mm", "detector_size_mm", "detector_offset_mm")


def _pair(value: Any, what: str, positive: bool) -> tuple[float, float] | None:
    if value is None:
        return None
    a = np.asarray(value, dtype=np.float64).reshape(-1)
    if a.shape != (2,) or not np.all(np.isfinite(a)) or (positive and np.any(a <= 0)):
        raise ValueError(f"{what} must be two {'positive' if positive else 'finite'} numbers in mm, got {value!r}")
    return (float(a[0]), float(a[1]))


@dataclasses.dataclass(frozen=True)
class View:
    """One X-ray view: the beam direction and the orientation of its detector (LPS unit vectors), and optionally
    its own acquisition (each None = the :class:`ProjectionGeometry`'s value).

    Args:
        name: the view's key, e.g. ``"pa"``.
        normal: from the isocentre toward the source (plastimatch ``-n``).
        col: direction of increasing detector column (image x, left to right as displayed).
        row: direction of increasing detector row (image y, top to bottom as displayed).
        sad_mm: this view's source-to-isocentre distance, mm.
        sid_mm: this view's source-to-detector distance, mm (> its ``sad_mm``).
        detector_size_mm: this view's detector ``(height, width)``, mm.
        detector_offset_mm: ``(along col, along row)`` mm: where the detector's centre lies in its plane relative to
            the central ray through the isocentre (``(0, 0)``, the default, centres the isocentre on the detector).
    """

    name: str
    normal: _Vec
    col: _Vec
    row: _Vec
    sad_mm: float | None = None
    sid_mm: float | None = None
    detector_size_mm: tuple[float, float] | None = None
    detector_offset_mm: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "normal", _unit(self.normal, f"view {self.name!r} normal"))
        object.__setattr__(self, "col", _unit(self.col, f"view {self.name!r} col"))
        object.__setattr__(self, "row", _unit(self.row, f"view {self.name!r} row"))
        n, c, r = (np.asarray(x) for x in (self.normal, self.col, self.row))
        if max(abs(n @ c), abs(n @ r), abs(c @ r)) > 1e-6:
            raise ValueError(f"view {self.name!r}: normal, col and row must be orthogonal")
        for key in ("sad_mm", "sid_mm"):
            value = getattr(self, key)
            if value is not None:
                if not (np.isfinite(float(value)) and float(value) > 0):
                    raise ValueError(f"view {self.name!r}: {key} must be a positive number of mm, got {value!r}")
                object.__setattr__(self, key, float(value))
        size = _pair(self.detector_size_mm, f"view {self.name!r} detector_size_mm (height, width)", True)
        offset = _pair(self.detector_offset_mm, f"view {self.name!r} detector_offset_mm (col, row)", False)
        object.__setattr__(self, "detector_size_mm", size)
        object.__setattr__(self, "detector_offset_mm", offset)

    @property
    def overrides(self) -> dict[str, Any]:
        """The acquisition fields this view sets (not None), as plain data (mm)."""
        out: dict[str, Any] = {}
        for key in VIEW_ACQUISITION_FIELDS:
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


class ViewAcquisition(NamedTuple):
    """One view's effective acquisition (its own values, else the geometry's), mm.

    ``sad_mm``, ``sid_mm``: source to isocentre / detector; ``detector_size_mm``: ``(height, width)``;
    ``detector_offset_mm``: ``(along col, along row)`` of the detector centre from the central ray.
    """

    sad_mm: float
    sid_mm: float
    detector_size_mm: tuple[float, float]
    detector_offset_mm: tuple[float, float]


#: The two views of the paper (plastimatch normals (0,1,0) and (1,0,0)), as data.
VIEW_PRESETS: dict[str, dict[str, Any]] = {
    "pa": {"normal": (0.0, 1.0, 0.0), "col": (1.0, 0.0, 0.0), "row": (0.0, 0.0, -1.0)},
    "lateral": {"normal": (1.0, 0.0, 0.0), "col": (0.0, 1.0, 0.0), "row": (0.0, 0.0, -1.0)},
}

#: Geometry presets, as data. ``perx2ct``: the PerX2CT paper's DRRs; ``x2ctgan``: X2CT-GAN's;
#: ``perx2ct_official``: the *sampling camera* of the official code (dek924/PerX2CT), for its published
#: weights: a pinhole 320 mm (1 world unit) from the volume centre with a 60 degree field of view
#: (detector half-width / SID = tan 30 deg). Its 500 mm detector keeps the physical field of the DRRs the
#: weights were trained on (their magnification at the isocentre, 433 / 320 = 1.353, is close to the DRRs'
#: 949 / 700 = 1.356); only the source distance is the official camera's. It goes with the sampler options
#: ``align_corners=True, visibility_mask=False`` (set by the ``*_official`` model presets). Never make
#: DRRs with it: the authors' DRRs were made with ``perx2ct`` (:func:`drr_geometry`, :data:`SAMPLING_ONLY_PRESETS`).
GEOMETRY_PRESETS: dict[str, dict[str, Any]] = {
    "perx2ct": {"sad_mm": 700.0, "sid_mm": 949.0, "detector_size_mm": (500.0, 500.0), "detector_shape": (320, 320)},
    "x2ctgan": {"sad_mm": 541.0, "sid_mm": 949.0, "detector_size_mm": (500.0, 500.0), "detector_shape": (320, 320)},
    "perx2ct_official": {
        "sad_mm": 320.0,
        "sid_mm": 250.0 / math.tan(math.radians(30.0)),  # 433.01 mm: half-width 250 mm = SID x tan(fov / 2)
        "detector_size_mm": (500.0, 500.0),
        "detector_shape": (320, 320),
    },
}


@dataclasses.dataclass(frozen=True)
class ProjectionGeometry:
    """Cone-beam geometry of a two-view chest X-ray, in LPS millimetres.

    Size: the one owner of the projection geometry (the DRRs, the projector and the sampler all read it); its
    methods are the geometry's questions (source, detector pixel <-> world, projection, presets), a few lines each.

    Args:
        sad_mm: source-to-axis (isocentre) distance in mm.
        sid_mm: source-to-image (detector plane) distance in mm; must exceed ``sad_mm``.
        detector_size_mm: physical detector extent ``(height, width)`` in mm.
        detector_shape: detector pixels ``(rows, cols)``; may be changed with
            :meth:`with_detector_shape` without changing the physical detector.
        isocentre_mm: the point the beams are aimed at, ``(x, y, z)`` LPS mm.
        views: the views, keyed by name; default the paper's ``pa`` and ``lateral``.

    Example:
        >>> g = ProjectionGeometry.from_preset("perx2ct")
        >>> g.project(np.zeros((1, 3)), "pa")  # the isocentre hits the detector centre
        array([[159.5, 159.5]])
    """

    sad_mm: float = 700.0
    sid_mm: float = 949.0
    detector_size_mm: tuple[float, float] = (500.0, 500.0)
    detector_shape: tuple[int, int] = (320, 320)
    isocentre_mm: _Vec = (0.0, 0.0, 0.0)
    views: Mapping[str, View] | None = None

    def __post_init__(self) -> None:
        if not (self.sad_mm > 0 and self.sid_mm > self.sad_mm):
            raise ValueError(f"need 0 < sad_mm < sid_mm, got sad_mm={self.sad_mm}, sid_mm={self.sid_mm}")
        size = tuple(float(s) for s in self.detector_size_mm)
        shape = tuple(int(s) for s in self.detector_shape)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"detector_size_mm must be (height, width) > 0, got {self.detector_size_mm!r}")
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"detector_shape must be (rows, cols) >= 1, got {self.detector_shape!r}")
        iso = np.asarray(self.isocentre_mm, dtype=np.float64).reshape(-1)
        if iso.shape != (3,) or not np.all(np.isfinite(iso)):
            raise ValueError(f"isocentre_mm must be three finite numbers, got {self.isocentre_mm!r}")
        views = self.views if self.views is not None else VIEW_PRESETS
        views = {k: v if isinstance(v, View) else View(name=k, **dict(v)) for k, v in dict(views).items()}
        if not views:
            raise ValueError("a geometry needs at least one view")
        for v in views.values():
            sad = v.sad_mm if v.sad_mm is not None else float(self.sad_mm)
            sid = v.sid_mm if v.sid_mm is not None else float(self.sid_mm)
            if not sid > sad:
                raise ValueError(f"view {v.name!r}: need sad_mm < sid_mm, got sad_mm={sad:g}, sid_mm={sid:g}")
        object.__setattr__(self, "sad_mm", float(self.sad_mm))
        object.__setattr__(self, "sid_mm", float(self.sid_mm))
        object.__setattr__(self, "detector_size_mm", size)
        object.__setattr__(self, "detector_shape", shape)
        object.__setattr__(self, "isocentre_mm", tuple(float(x) for x in iso))
        object.__setattr__(self, "views", views)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_preset(cls, name: str = "perx2ct", **overrides: Any) -> ProjectionGeometry:
        """A geometry from :data:`GEOMETRY_PRESETS`, with any field overridden (e.g. ``isocentre_mm``)."""
        if name not in GEOMETRY_PRESETS:
            raise ValueError(f"unknown geometry preset {name!r}; choose one of {sorted(GEOMETRY_PRESETS)}")
        return cls(**{**GEOMETRY_PRESETS[name], **overrides})

    def with_isocentre(self, isocentre_mm: Sequence[float]) -> ProjectionGeometry:
        """The same geometry aimed at another isocentre (LPS mm)."""
        return dataclasses.replace(self, isocentre_mm=tuple(float(x) for x in isocentre_mm))

    def centred(self) -> ProjectionGeometry:
        """The same geometry with the isocentre at the origin (the network's frame)."""
        return self.with_isocentre((0.0, 0.0, 0.0))

    def with_detector_shape(self, detector_shape: Sequence[int]) -> ProjectionGeometry:
        """The same physical detector read out with ``(rows, cols)`` pixels (e.g. 128 x 128)."""
        return dataclasses.replace(self, detector_shape=tuple(int(s) for s in detector_shape))

    def with_view(self, name: str, **fields: Any) -> ProjectionGeometry:
        """The same geometry with fields of view ``name`` replaced (e.g. ``sid_mm=1800``; None restores the
        geometry's value). Fields: those of :class:`View` besides ``name``."""
        view = self.view(name)
        known = {f.name for f in dataclasses.fields(View)} - {"name"}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown view fields {unknown}; known: {sorted(known)}")
        views = dict(self.views)
        views[name] = dataclasses.replace(view, **fields)
        return dataclasses.replace(self, views=views)

    @property
    def has_view_overrides(self) -> bool:
        """True when some view carries its own acquisition (the geometry is then no preset)."""
        return any(v.overrides for v in self.views.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain-data description (JSON-serialisable), accepted back by ``ProjectionGeometry(**d)``. A view's own
        acquisition fields appear in its entry only when set (a preset's dict is as before)."""
        return {
            "sad_mm": self.sad_mm,
            "sid_mm": self.sid_mm,
            "detector_size_mm": list(self.detector_size_mm),
            "detector_shape": list(self.detector_shape),
            "isocentre_mm": list(self.isocentre_mm),
            "views": {
                k: {"normal": list(v.normal), "col": list(v.col), "row": list(v.row), **v.overrides}
                for k, v in self.views.items()
            },
        }

    # ------------------------------------------------------------------ derived quantities
    @property
    def view_names(self) -> tuple[str, ...]:
        return tuple(self.views)

    def view(self, name: str) -> View:
        try:
            return self.views[name]
        except KeyError:
            raise ValueError(f"unknown view {name!r}; this geometry has {list(self.views)}") from None

    def view_acquisition(self, view: str) -> ViewAcquisition:
        """The view's effective SAD, SID, detector size and offset (its own values, else the geometry's), mm."""
        v = self.view(view)
        return ViewAcquisition(
            self.sad_mm if v.sad_mm is None else v.sad_mm,
            self.sid_mm if v.sid_mm is None else v.sid_mm,
            self.detector_size_mm if v.detector_size_mm is None else v.detector_size_mm,
            (0.0, 0.0) if v.detector_offset_mm is None else v.detector_offset_mm,
        )

    def view_pixel_spacing_mm(self, view: str) -> tuple[float, float]:
        """The view's detector pixel size ``(row spacing, column spacing)`` in mm (its detector / ``detector_shape``)."""
        size = self.view_acquisition(view).detector_size_mm
        return (size[0] / self.detector_shape[0], size[1] / self.detector_shape[1])

    def view_magnification(self, view: str) -> float:
        """The view's magnification of an object at the isocentre (its SID / SAD)."""
        a = self.view_acquisition(view)
        return a.sid_mm / a.sad_mm

    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        """Detector pixel size ``(row spacing, column spacing)`` in mm (the geometry's; a view's own:
        :meth:`view_pixel_spacing_mm`)."""
        return (self.detector_size_mm[0] / self.detector_shape[0], self.detector_size_mm[1] / self.detector_shape[1])

    @property
    def magnification(self) -> float:
        """Magnification of an object at the isocentre (SID / SAD; a view's own: :meth:`view_magnification`)."""
        return self.sid_mm / self.sad_mm

    @property
    def half_fov_at_isocentre_mm(self) -> tuple[float, float]:
        """Half the field of view at the isocentre plane, ``(vertical, horizontal)`` mm."""
        return (self.detector_size_mm[0] / 2 / self.magnification, self.detector_size_mm[1] / 2 / self.magnification)

    def source_mm(self, view: str) -> np.ndarray:
        """Position of the view's X-ray source (focal spot), shape (3,), LPS mm."""
        return np.asarray(self.isocentre_mm) + self.view_acquisition(view).sad_mm * np.asarray(self.view(view).normal)

    def detector_centre_mm(self, view: str) -> np.ndarray:
        """Centre of the view's detector, shape (3,), LPS mm (on the central ray unless the view has an offset)."""
        a, v = self.view_acquisition(view), self.view(view)
        centre = np.asarray(self.isocentre_mm) - (a.sid_mm - a.sad_mm) * np.asarray(v.normal)
        if a.detector_offset_mm != (0.0, 0.0):
            centre = centre + a.detector_offset_mm[0] * np.asarray(v.col) + a.detector_offset_mm[1] * np.asarray(v.row)
        return centre

    def detector_frame(self, view: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(origin, col_step, row_step)``: the centre of pixel (0, 0) and the mm vectors to the next
        column and the next row, each shape (3,). Pixel (x, y) centre = origin + x*col_step + y*row_step."""
        v = self.view(view)
        rows, cols = self.detector_shape
        sr, sc = self.view_pixel_spacing_mm(view)
        col_step = sc * np.asarray(v.col)
        row_step = sr * np.asarray(v.row)
        origin = self.detector_centre_mm(view) - (cols - 1) / 2 * col_step - (rows - 1) / 2 * row_step
        return origin, col_step, row_step

    def pixel_to_world(self, view: str, xy: np.ndarray) -> np.ndarray:
        """Detector pixel coordinates (..., 2) as (column, row) -> points on the detector plane (..., 3) mm."""
        origin, col_step, row_step = self.detector_frame(view)
        xy = np.asarray(xy, dtype=np.float64)
        return origin + xy[..., :1] * col_step + xy[..., 1:2] * row_step

    # ------------------------------------------------------------------ projection
    def _project(self, points_mm, view: str):
        """Shared numpy/torch body: returns (column, row) pixel coordinates and depth along the beam."""
        v = self.view(view)
        a = self.view_acquisition(view)
        rows, cols = self.detector_shape
        sr, sc = self.view_pixel_spacing_mm(view)
        torch = torch_of(points_mm)
        if torch is not None:
            dtype = points_mm.dtype if points_mm.is_floating_point() else torch.float32

            def const(a):
                return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=dtype, device=points_mm.device)

            p = points_mm.to(dtype)
        else:
            const = np.asarray  # noqa: E731
            p = np.asarray(points_mm, dtype=np.float64)
        if p.shape[-1] != 3:
            raise ValueError(f"points_mm must have shape (..., 3), got {tuple(p.shape)}")
        rel = p - const(self.source_mm(view))  # from the source to the point
        # distance from the source along the beam axis (toward the detector is positive)
        depth = -(rel @ const(v.normal))
        scale = a.sid_mm / depth  # magnification of each point onto the detector plane
        u, w = (rel @ const(v.col)) * scale, (rel @ const(v.row)) * scale  # mm in the plane from the central ray
        if a.detector_offset_mm != (0.0, 0.0):
            u, w = u - a.detector_offset_mm[0], w - a.detector_offset_mm[1]
        x = u / sc + (cols - 1) / 2
        y = w / sr + (rows - 1) / 2
        return x, y, depth

    def project(self, points_mm, view: str):
        """Project 3D points onto a view's detector.

        Args:
            points_mm: (..., 3) LPS mm, numpy array or torch tensor (differentiable, any device).
            view: view name, e.g. ``"pa"``.

        Returns:
            (..., 2) continuous pixel coordinates ``(column, row)`` of this geometry's
            ``detector_shape``, pixel centres at integers; same array type as the input. Points at
            or behind the source give non-finite or meaningless values: see :meth:`in_front`.
        """
        x, y, _ = self._project(points_mm, view)
        torch = torch_of(x)
        if torch is not None:
            return torch.stack((x, y), dim=-1)
        return np.stack((x, y), axis=-1)

    def project_normalized(self, points_mm, view: str):
        """Like :meth:`project` but in ``grid_sample`` coordinates (align_corners=False): (..., 2) as
        (x, y) in [-1, 1] over the detector's outer edges, independent of the pixel count."""
        x, y, _ = self._project(points_mm, view)
        rows, cols = self.detector_shape
        xn = (2 * x + 1) / cols - 1
        yn = (2 * y + 1) / rows - 1
        torch = torch_of(xn)
        if torch is not None:
            return torch.stack((xn, yn), dim=-1)
        return np.stack((xn, yn), axis=-1)

    def in_front(self, points_mm, view: str):
        """Boolean (...,): True where the point lies between the source and the detector plane."""
        _, _, depth = self._project(points_mm, view)
        return (depth > 0) & (depth < self.view_acquisition(view).sid_mm)

    def __repr__(self) -> str:
        views = ", ".join(
            k + (f" {v.overrides}" if v.overrides else "") for k, v in self.views.items()  # type: ignore[union-attr]
        )
        return (
            f"ProjectionGeometry(sad_mm={self.sad_mm:g}, sid_mm={self.sid_mm:g}, "
            f"detector_size_mm={self.detector_size_mm}, detector_shape={self.detector_shape}, "
            f"isocentre_mm={self.isocentre_mm}, views=[{views}])"
        )


#: Geometry presets that only *sample* (the camera published weights were trained to sample with), with the preset
#: and the data pipeline (:data:`scripts.transforms.radiograph.RADIOGRAPH_PIPELINES`, plus the CT options of
#: ``configs/prepare.json``) their training DRRs were made with. ``perx2ct_official``: the authors' DRRs were
#: ``perx2ct`` DRRs made by the official preprocessing (HU + 24, truncation to 8 bits, Lanczos resize, cubic 1 mm
#: resampling, the official crop): the faithful default for the authors' weights.
SAMPLING_ONLY_PRESETS: dict[str, dict[str, str]] = {
    "perx2ct_official": {"drr_preset": "perx2ct", "pipeline": "official"}
}


def preset_name(geometry: ProjectionGeometry) -> str | None:
    """The :data:`GEOMETRY_PRESETS` name ``geometry`` is (whatever its isocentre and detector pixels), else None."""
    for name, fields in GEOMETRY_PRESETS.items():
        preset = ProjectionGeometry(**fields)
        same = dataclasses.replace(geometry, isocentre_mm=preset.isocentre_mm, detector_shape=preset.detector_shape)
        if same == preset:
            return name
    return None


def drr_geometry(geometry: ProjectionGeometry) -> ProjectionGeometry:
    """The geometry to make DRRs with for a network that samples with ``geometry``: itself, or for a sampling-only
    preset (:data:`SAMPLING_ONLY_PRESETS`) the preset its training DRRs were made with (same isocentre and pixels)."""
    legacy = SAMPLING_ONLY_PRESETS.get(preset_name(geometry) or "")
    if legacy is None:
        return geometry
    return ProjectionGeometry.from_preset(
        legacy["drr_preset"], isocentre_mm=geometry.isocentre_mm, detector_shape=geometry.detector_shape
    )


def data_pipeline(geometry: ProjectionGeometry) -> str:
    """``"official"`` for a sampling-only preset whose data the official pipeline made, else ``"bundle"``."""
    return SAMPLING_ONLY_PRESETS.get(preset_name(geometry) or "", {}).get("pipeline", "bundle")
