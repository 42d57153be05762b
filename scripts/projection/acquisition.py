"""Each view's own acquisition geometry: read from DX/CR DICOM tags or given as explicit options (issue 19).

A real chest radiograph is not taken at the training set-up (source-to-isocentre 700 mm, source-to-detector 949 mm,
a 500 mm detector). :func:`read_acquisition` finds, for one view, the values a
:class:`~scripts.projection.geometry.View` carries (``sad_mm``, ``sid_mm``, ``detector_size_mm``,
``detector_offset_mm``), its beam direction (``normal``), and how to turn the stored image into this bundle's
display convention; :meth:`Acquisition.apply` puts them on a geometry, which the sampler, the torch projector and
the ITK DRR all take.

Where each value comes from, in order (the first that applies):

1. explicit options (``--pa_geometry "{'sad_mm': 1650, 'sid_mm': 1800, 'detector_size_mm': [430, 430]}"``; keys
   :data:`GEOMETRY_OPTION_KEYS`, unknown keys refused with one line);
2. DICOM attributes (DICOM PS3.3, C.8.11.7 "DX Positioning Module" and C.8.11.4 "DX Detector Module"; PS3.6 for
   the tags):

   * ``sid_mm``: DistanceSourceToDetector (0018,1110);
   * ``sad_mm``: DistanceSourceToPatient (0018,1111), in the DX Positioning Module the distance from the source
     to the isocentre (centre of the field of view), "traditionally referred to as Source Object Distance";
     else SID / EstimatedRadiographicMagnificationFactor (0018,1114), defined there as SID / SOD;
   * ``detector_size_mm``: Rows x Columns times ImagerPixelSpacing (0018,1164), the spacing at the detector
     plane; else PixelSpacing (0028,0030) (times the magnification factor when PixelSpacingCalibrationType
     (0028,0A02) says it was calibrated to the patient, else taken as at the detector: recorded as assumed);
   * ``normal``: ViewPosition (0018,5101): ``PA`` source posterior, ``AP`` source anterior, ``LL`` (left side
     against the detector) source at the patient's right, ``RL`` source at the left;
   * display: PatientOrientation (0020,0020), the patient directions of the image's rows (left to right) and
     columns (top to bottom) (PS3.3 C.7.6.1.1.1): the image is transposed and flipped into this bundle's
     convention (PA: ``L\\F``, lateral: ``P\\F``; :mod:`scripts.projection.geometry`).

3. clinical defaults (:data:`CLINICAL_DEFAULTS`) for what a DICOM file or the options do not give, each reported
   as *assumed* in the output. A PNG/JPEG without options keeps the checkpoint's training geometry (no override).

The defaults: a chest PA and a lateral are taken at a source-to-image distance of 72 inches (1829 mm) on a 14 x 17
inch (356 x 432 mm) receptor (standard radiographic positioning, e.g. Clover Learning / Rad Tech Boot Camp, "Chest
PA and Lateral positioning": "SID: 72 inches" for both projections; radiography texts give 72 inches, 1.8 m, as the
routine PA chest SID to limit the heart's magnification). This bundle uses SID 1800 mm for both views, a 430 mm
square detector (17 x 17 inch flat panels; a non-square image keeps its aspect, 430 mm along its longer side), and
an isocentre 150 mm (PA) or 200 mm (lateral) in front of the detector (the chest's mid-plane, about half an adult
chest's depth or width plus the detector cover: an approximation, not a standard; the clinical set-up of issue 19).
"""

from __future__ import annotations

import ast
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom.misc
from scripts.projection.geometry import VIEW_ACQUISITION_FIELDS, ProjectionGeometry

__all__ = [
    "is_dicom_file",
    "GEOMETRY_OPTION_KEYS",
    "CLINICAL_DEFAULTS",
    "VIEW_POSITION_NORMALS",
    "Acquisition",
    "parse_geometry_option",
    "read_acquisition",
    "apply_acquisitions",
    "geometry_from_json",
]

#: Keys of an explicit view geometry (``--pa_geometry``), mm: the view's own acquisition fields plus
#: ``pixel_spacing_mm`` ``(row, column)`` of the image at the detector (with the image's size: the detector size).
GEOMETRY_OPTION_KEYS = (*VIEW_ACQUISITION_FIELDS, "pixel_spacing_mm")

#: Clinical defaults per view kind (module docstring): SID, isocentre-to-detector distance, detector's longer side.
CLINICAL_DEFAULTS: dict[str, dict[str, float]] = {
    "pa": {"sid_mm": 1800.0, "isocentre_to_detector_mm": 150.0, "detector_mm": 430.0},
    "lateral": {"sid_mm": 1800.0, "isocentre_to_detector_mm": 200.0, "detector_mm": 430.0},
}

#: Beam direction (from the isocentre toward the source, LPS) per DICOM ViewPosition (0018,5101).
VIEW_POSITION_NORMALS: dict[str, tuple[float, float, float]] = {
    "PA": (0.0, 1.0, 0.0),
    "AP": (0.0, -1.0, 0.0),
    "LL": (-1.0, 0.0, 0.0),
    "RL": (1.0, 0.0, 0.0),
}
_FRONTAL, _LATERAL = {"PA", "AP"}, {"LL", "RL", "LATERAL", "LAT"}
_LETTERS = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "H", (2, -1): "F"}


def _letter(vec: Sequence[float]) -> str:
    a = np.asarray(vec, dtype=np.float64)
    axis = int(np.abs(a).argmax())
    return _LETTERS[(axis, 1 if a[axis] > 0 else -1)]


def _axis(letter: str) -> int:
    return {"L": 0, "R": 0, "P": 1, "A": 1, "H": 2, "F": 2}[letter]


def _kind(view: str) -> str:
    return "lateral" if view.lower().startswith("lat") else "pa"


@dataclasses.dataclass
class Acquisition:
    """One view's acquisition as found by :func:`read_acquisition`.

    Attributes:
        view: the view's name (``"pa"``, ``"lateral"``).
        source: ``"dicom"``, ``"options"`` or ``"training"`` (nothing given: the checkpoint's geometry, no override).
        values: the view's own fields (``sad_mm``, ``sid_mm``, ``detector_size_mm`` (height, width),
            ``detector_offset_mm`` (col, row)), mm; empty for ``"training"``.
        normal: the beam direction from ViewPosition, or None (the geometry's).
        read: field -> where it was read (a DICOM attribute or ``"option"``).
        assumed: field -> the assumption made (a clinical default), reported in the output.
        transpose, flip_lr, flip_ud: turn the stored image into the display convention: transpose first, then
            flip columns, then rows.
        view_position: ViewPosition as stored, or None.
    """

    view: str
    source: str = "training"
    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    normal: tuple[float, float, float] | None = None
    read: dict[str, str] = dataclasses.field(default_factory=dict)
    assumed: dict[str, str] = dataclasses.field(default_factory=dict)
    transpose: bool = False
    flip_lr: bool = False
    flip_ud: bool = False
    view_position: str | None = None

    @property
    def own_detector(self) -> bool:
        """True when the image is this view's whole detector (its own size), not fitted to the training one."""
        return "detector_size_mm" in self.values

    def apply(self, geometry: ProjectionGeometry) -> ProjectionGeometry:
        """``geometry`` with this view's own acquisition (and direction) set."""
        fields = dict(self.values)
        if self.normal is not None:
            fields["normal"] = self.normal
        return geometry.with_view(self.view, **fields) if fields else geometry

    def orient(self, image: np.ndarray) -> np.ndarray:
        """The stored ``(rows, cols)`` image in the display convention (transpose, then flips)."""
        out = image.T if self.transpose else image
        out = out[:, ::-1] if self.flip_lr else out
        out = out[::-1, :] if self.flip_ud else out
        return np.ascontiguousarray(out)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON), accepted back by ``Acquisition(**d)``."""
        d = dataclasses.asdict(self)
        d["normal"] = None if self.normal is None else list(self.normal)
        return d

    def summary(self) -> str:
        """One line: the view's values and which were assumed."""
        vals = ", ".join(f"{k}={v}" for k, v in self.values.items()) or "the training geometry"
        assumed = f"; assumed: {', '.join(sorted(self.assumed))}" if self.assumed else ""
        return f"{self.view} geometry from {self.source}: {vals}{assumed}"


def parse_geometry_option(value: Any, flag: str = "--pa_geometry") -> dict[str, Any] | None:
    """An explicit view geometry: a mapping or its text (Python or JSON literal) -> dict of mm values, or None.

    Keys: :data:`GEOMETRY_OPTION_KEYS`. Raises ValueError (one line) for text that is no mapping, unknown keys or
    bad values."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(
                    f"{flag} must be a mapping like \"{{'sad_mm': 1650, 'sid_mm': 1800, 'detector_size_mm': "
                    f'[430, 430]}}", got {value!r}'
                ) from None
    if not isinstance(value, Mapping):
        raise ValueError(f"{flag} must be a mapping of {list(GEOMETRY_OPTION_KEYS)}, got {value!r}")
    unknown = sorted(set(map(str, value)) - set(GEOMETRY_OPTION_KEYS))
    if unknown:
        raise ValueError(f"{flag}: unknown keys {unknown}; known keys: {list(GEOMETRY_OPTION_KEYS)} (mm)")
    out: dict[str, Any] = {}
    for key, v in value.items():
        try:
            if key in ("sad_mm", "sid_mm"):
                out[key] = float(v)
                ok = np.isfinite(out[key]) and out[key] > 0
            else:
                out[key] = [float(x) for x in v]
                ok = len(out[key]) == 2 and all(np.isfinite(out[key]))
                ok = ok and (key == "detector_offset_mm" or min(out[key]) > 0)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(
                f"{flag}: {key} must be {'a positive number' if key.endswith('d_mm') else 'two numbers'}"
                f" in mm, got {v!r}"
            )
    return out


def _dicom_dataset(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), force=True, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, TypeError, EOFError):
        return None


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM file: a DICOM suffix, or the DICOM preamble and magic (``pydicom.misc.is_dicom``)."""
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    try:
        return pydicom.misc.is_dicom(path)
    except OSError:
        return False


def _positive(ds, keyword: str) -> float | None:
    value = getattr(ds, keyword, None)
    try:
        v = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return v if v is not None and np.isfinite(v) and v > 0 else None


def _pair_tag(ds, keyword: str) -> tuple[float, float] | None:
    value = getattr(ds, keyword, None)
    try:
        pair = tuple(float(v) for v in value) if value is not None else ()
    except (TypeError, ValueError):
        return None
    return pair if len(pair) == 2 and min(pair) > 0 else None  # type: ignore[return-value]


def _orientation(acq: Acquisition, ds, view_col: Sequence[float], view_row: Sequence[float], name: str) -> None:
    """Set the display transform from PatientOrientation (0020,0020)."""
    value = getattr(ds, "PatientOrientation", None)
    letters = [str(v).strip().upper()[:1] for v in value] if value is not None and len(value) == 2 else []
    if not letters or not all(x in "LRPAHF" and x for x in letters):
        acq.assumed["display"] = "no usable PatientOrientation (0020,0020): the image is taken as displayed"
        return
    want_c, want_r = _letter(view_col), _letter(view_row)
    c, r = letters
    if _axis(c) == _axis(want_r) and _axis(r) == _axis(want_c):
        acq.transpose, (c, r) = True, (r, c)
    if _axis(c) != _axis(want_c) or _axis(r) != _axis(want_r):
        shown = "\\".join(letters)
        raise ValueError(
            f"{name}: PatientOrientation {shown} does not fit a {acq.view} view "
            f"(expected {want_c}\\{want_r} or a flip of it): is this the right view?"
        )
    acq.flip_lr, acq.flip_ud = c != want_c, r != want_r
    acq.read["display"] = "PatientOrientation (0020,0020)"


def read_acquisition(
    path: str | Path | None,
    view: str,
    geometry: ProjectionGeometry,
    options: Mapping[str, Any] | str | None = None,
    image_shape: Sequence[int] | None = None,
) -> Acquisition:
    """One view's acquisition: explicit ``options`` over DICOM attributes over clinical defaults (module doc).

    Args:
        path: the view's image file (DICOM attributes are read when it is DICOM; other formats have none).
        view: the view's name in ``geometry`` (``"pa"``, ``"lateral"``).
        geometry: the network's geometry (the view's display directions and, without any input, its values).
        options: explicit values (:func:`parse_geometry_option`), or None.
        image_shape: ``(rows, cols)`` of the stored image (read from DICOM Rows/Columns when not given); needed
            for ``pixel_spacing_mm`` or a default detector of a non-DICOM image.

    Returns:
        the :class:`Acquisition`; ``source="training"`` (no override) for a non-DICOM image without options.

    Raises:
        ValueError: bad options, or DICOM attributes that contradict the view (a PA given as the lateral).
    """
    opts = parse_geometry_option(options, f"--{view}_geometry") or {}
    g_view = geometry.view(view)
    name = f"{view} image {path}"
    acq = Acquisition(view=view)
    ds = _dicom_dataset(Path(path)) if path is not None and is_dicom_file(path) else None
    if ds is None and not opts:
        return acq
    acq.source = "options" if ds is None else "dicom"
    defaults = CLINICAL_DEFAULTS[_kind(view)]
    spacing: tuple[float, float] | None = None
    if image_shape is None and ds is not None and _positive(ds, "Rows") and _positive(ds, "Columns"):
        image_shape = (int(ds.Rows), int(ds.Columns))
    sid = sad = None
    if ds is not None:
        vp = str(getattr(ds, "ViewPosition", "") or "").strip().upper()
        acq.view_position = vp or None
        kind = _kind(view)
        if (kind == "pa" and vp in _LATERAL) or (kind == "lateral" and vp in _FRONTAL):
            raise ValueError(f"{name} has ViewPosition {vp}: it is not a {view} view (are PA and lateral swapped?)")
        if vp in VIEW_POSITION_NORMALS:
            acq.normal, acq.read["normal"] = VIEW_POSITION_NORMALS[vp], "ViewPosition (0018,5101)"
        sid = _positive(ds, "DistanceSourceToDetector")
        if sid is not None:
            acq.read["sid_mm"] = "DistanceSourceToDetector (0018,1110)"
        sad = _positive(ds, "DistanceSourceToPatient")
        emf = _positive(ds, "EstimatedRadiographicMagnificationFactor")
        if sad is not None:
            acq.read["sad_mm"] = "DistanceSourceToPatient (0018,1111)"
        elif sid is not None and emf is not None and emf > 1:
            sad, acq.read["sad_mm"] = sid / emf, "DistanceSourceToDetector / EstimatedRadiographicMagnificationFactor"
        spacing = _pair_tag(ds, "ImagerPixelSpacing")
        if spacing is not None:
            acq.read["detector_size_mm"] = "Rows, Columns x ImagerPixelSpacing (0018,1164)"
        else:
            spacing = _pair_tag(ds, "PixelSpacing")
            if spacing is not None:
                calibrated = str(getattr(ds, "PixelSpacingCalibrationType", "") or "").strip()
                if calibrated and emf is not None:
                    spacing = (spacing[0] * emf, spacing[1] * emf)
                    acq.read["detector_size_mm"] = "PixelSpacing (0028,0030) x EstimatedRadiographicMagnificationFactor"
                else:
                    acq.assumed["detector_size_mm"] = (
                        "no ImagerPixelSpacing: PixelSpacing (0028,0030) taken as at the detector"
                    )
        _orientation(acq, ds, g_view.col, g_view.row, name)
    # explicit options win
    if "sid_mm" in opts:
        sid, acq.read["sid_mm"] = opts["sid_mm"], "option"
    if "sad_mm" in opts:
        sad, acq.read["sad_mm"] = opts["sad_mm"], "option"
    if sid is None and sad is None:
        sid = defaults["sid_mm"]
        acq.assumed["sid_mm"] = f"clinical default {sid:g} mm"
    if sid is None:
        sid = sad + defaults["isocentre_to_detector_mm"]  # type: ignore[operator]
        acq.assumed["sid_mm"] = f"sad_mm + {defaults['isocentre_to_detector_mm']:g} mm (clinical default)"
    if sad is None:
        sad = sid - defaults["isocentre_to_detector_mm"]
        acq.assumed["sad_mm"] = (
            f"sid_mm - {defaults['isocentre_to_detector_mm']:g} mm (isocentre in front of the detector, clinical default)"
        )
    if not sid > sad:
        raise ValueError(f"{name}: source-to-detector {sid:g} mm must exceed source-to-isocentre {sad:g} mm")
    # detector size, in the stored image's orientation first
    size: tuple[float, float] | None = None
    if "detector_size_mm" in opts:
        size, acq.read["detector_size_mm"] = tuple(opts["detector_size_mm"]), "option"  # type: ignore[assignment]
        acq.assumed.pop("detector_size_mm", None)
    else:
        if "pixel_spacing_mm" in opts:
            spacing, acq.read["detector_size_mm"] = tuple(opts["pixel_spacing_mm"]), "image size x option pixel_spacing_mm"  # type: ignore[assignment]
            acq.assumed.pop("detector_size_mm", None)
        if spacing is not None and image_shape is not None:
            size = (image_shape[0] * spacing[0], image_shape[1] * spacing[1])
        else:
            longer = defaults["detector_mm"]
            rows, cols = image_shape if image_shape is not None else (1, 1)
            size = (longer * rows / max(rows, cols), longer * cols / max(rows, cols))
            acq.assumed["detector_size_mm"] = f"clinical default: {longer:g} mm along the image's longer side"
        if acq.transpose:
            size = (size[1], size[0])
    offset = tuple(opts.get("detector_offset_mm", (0.0, 0.0)))
    if "detector_offset_mm" in opts:
        acq.read["detector_offset_mm"] = "option"
    acq.values = {
        "sad_mm": float(sad),
        "sid_mm": float(sid),
        "detector_size_mm": [float(size[0]), float(size[1])],
        "detector_offset_mm": [float(offset[0]), float(offset[1])],
    }
    return acq


def apply_acquisitions(geometry: ProjectionGeometry, acquisitions: Sequence[Acquisition]) -> ProjectionGeometry:
    """``geometry`` with every view's own acquisition set (:meth:`Acquisition.apply`)."""
    for acq in acquisitions:
        geometry = acq.apply(geometry)
    return geometry


def geometry_from_json(text: str | Mapping | None) -> ProjectionGeometry | None:
    """A geometry from :meth:`ProjectionGeometry.to_dict` or its JSON text; None or ``""`` -> None."""
    if text is None or (isinstance(text, str) and not text):
        return None
    data = json.loads(text) if isinstance(text, str) else dict(text)
    return ProjectionGeometry(**data)
