"""Named settings of the on-the-fly training views (issue 19, item 2), as data, and the per-view acquisition draw.

:data:`VIEW_SETTINGS` is the preset table :class:`scripts.transforms.rigid_views.RandRigidViewsd` is built from
(``RandRigidViewsd.from_setting(name)``; ``configs/onthefly.json`` = ``fixed``, ``configs/clinical.json`` =
``clinical``):

* ``fixed``: today's on-the-fly views, bit-exact: a small rigid motion (5 mm, 3 degrees), per-view gain, gamma and
  noise, every view at the training geometry (the network's own, e.g. ``perx2ct``: SAD 700 mm, SID 949 mm, a 500 mm
  detector). It draws nothing more than before (same random stream, same images).
* ``clinical``: per sample and per view, the acquisition of a clinical chest radiograph (``geometry``) and a
  processed-radiograph appearance (``appearance``, :mod:`scripts.transforms.appearance`), on top of a larger
  patient motion. The views are rendered with the drawn per-view geometry and the network's sampler is handed the
  same geometry (the batch carries it: :class:`scripts.transforms.rigid_views.RandRigidViewsBatch`).

Where the clinical ranges come from (checked at the sources; the draws are uniform inside them):

* Source-to-image distance (SID). PA chest: 72 inches (1829 mm) is the routine SID (Clover Learning / Rad Tech
  Boot Camp, "Chest PA and Lateral positioning": "SID: 72 inches" for the PA *and* the lateral projection; the same
  course's question bank: "a 72-inch SID is standard for chest imaging ... shorter distances such as 60 inches are
  sometimes used"; Testbook/radiology MCQ: "180 cm is the standard distance used for the PA view"). So PA
  1700-1850 mm, lateral 1500-1850 mm (60-72 inches).
* Isocentre (mid-chest) to detector, which with the SID gives the source-to-isocentre distance and the magnification
  SID / SAD: half an adult chest's depth (PA, ~100-130 mm) or width (lateral, ~150-180 mm) plus the detector cover
  and grid (~20-50 mm): PA 100-200 mm, lateral 150-250 mm (magnification 1.06-1.13 PA, 1.09-1.20 lateral). An
  approximation, not a standard (as :data:`scripts.projection.acquisition.CLINICAL_DEFAULTS`, whose 150 / 200 mm
  are inside these ranges).
* Detector: the 14 x 17 inch (356 x 432 mm) receptor, PA crosswise and lateral lengthwise (Rad Tech Boot Camp
  above: "Image receptor: 14x 17 crosswise" / "lengthwise"), or a 43 x 43 cm flat panel (M. Spahn et al., "Digital
  radiography with a large-area, amorphous-silicon, flat-panel X-ray detector system", Invest Radiol 35(4):260-266,
  2000: 3000^2 pixels of 143 um, 43 x 43 cm). Sizes ``(height, width)`` mm: PA (350, 430) or (430, 430), lateral
  (430, 350) or (430, 430). Pixel pitch: the image is read out on the render grid and resized to the network's
  128 x 128, so a view's pitch is its detector size over the grid (:meth:`ProjectionGeometry.view_pixel_spacing_mm`;
  350-430 mm / 128 = 2.7-3.4 mm; a native pitch of 0.076-0.175 mm, as in general radiography detectors, only matters
  through the detector blur, drawn in mm below).
* Detector offset (the central ray off the detector's centre, centring and collimation): +-20 mm across, +-30 mm
  along the patient's long axis. Patient off-centre: up to 30 mm left-right and head-feet, 20 mm front-back (issue
  19's benchmark places patients up to 30 mm off-centre). Patient rotation: up to 5 degrees about each axis (a
  "rotated" chest film is judged on the clavicles' symmetry about the spinous processes; a few degrees are common).
* ``keep_base_prob``: the share of views kept at the network's training geometry, so the training set-up stays
  covered (the benchmark evaluates both).

Appearance ranges: :mod:`scripts.transforms.appearance` (with its sources).

Cost on the CPU (``tests/benchmarks/bench_clinical.py``: ``small`` preset, batch 8, views rendered in the loader at
128^2 from the 128^3 cube, 1 torch thread on 2 CPU cores with a load average of 11-13, two runs): seconds per
iteration, slice loader 1.7-1.8, ``fixed`` 2.1-2.5, ``clinical`` 2.5-2.6; rendering alone 0.08-0.09 s per sample
``fixed``, about 0.10 s ``clinical`` (the appearance adds ~7 ms; the rest is the same march at other distances).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scripts.projection.geometry import ProjectionGeometry

__all__ = [
    "VIEW_SETTINGS",
    "ACQUISITION_FIELDS",
    "view_setting",
    "draw_acquisitions",
    "acquisition_array",
    "geometry_from_array",
]

#: The per-view acquisition as the batch carries it, one row per view (mm): source-to-isocentre, source-to-detector,
#: detector height, width, offset along columns, along rows.
ACQUISITION_FIELDS = ("sad_mm", "sid_mm", "detector_height_mm", "detector_width_mm", "offset_col_mm", "offset_row_mm")

#: The named settings, as data (module docstring). ``geometry`` / ``appearance`` None: the view keeps the network's
#: geometry / only the gain-gamma-noise variation (the ``fixed`` behaviour).
VIEW_SETTINGS: dict[str, dict[str, Any]] = {
    "fixed": {
        "max_shift_mm": 5.0,
        "max_rotation_deg": 3.0,
        "gain_range": (0.9, 1.1),
        "gamma_range": (0.8, 1.25),
        "noise_std": 0.01,
        "geometry": None,
        "appearance": None,
    },
    "clinical": {
        "max_shift_mm": (30.0, 20.0, 30.0),
        "max_rotation_deg": 5.0,
        "gain_range": (0.9, 1.1),
        "gamma_range": (0.7, 1.4),
        "noise_std": 0.01,
        "geometry": {
            "keep_base_prob": 0.2,
            "pa": {
                "sid_mm": (1700.0, 1850.0),
                "isocentre_to_detector_mm": (100.0, 200.0),
                "detector_size_mm": ((350.0, 430.0), (430.0, 430.0)),
                "detector_offset_mm": (20.0, 30.0),
            },
            "lateral": {
                "sid_mm": (1500.0, 1850.0),
                "isocentre_to_detector_mm": (150.0, 250.0),
                "detector_size_mm": ((430.0, 350.0), (430.0, 430.0)),
                "detector_offset_mm": (20.0, 30.0),
            },
        },
        "appearance": "clinical",
    },
}


def view_setting(name_or_setting: str | Mapping[str, Any]) -> dict[str, Any]:
    """A setting of :data:`VIEW_SETTINGS` by name (a deep copy), or a mapping given as it is (checked keys)."""
    if isinstance(name_or_setting, str):
        if name_or_setting not in VIEW_SETTINGS:
            raise ValueError(f"unknown view setting {name_or_setting!r}; choose one of {sorted(VIEW_SETTINGS)}")
        return copy.deepcopy(VIEW_SETTINGS[name_or_setting])
    setting = dict(name_or_setting)
    unknown = sorted(set(setting) - set(VIEW_SETTINGS["fixed"]))
    if unknown:
        raise ValueError(f"unknown view setting keys {unknown}; known: {sorted(VIEW_SETTINGS['fixed'])}")
    return {**copy.deepcopy(VIEW_SETTINGS["fixed"]), **setting}


def _kind(view: str) -> str:
    return "pa" if view in ("pa", "ap") else "lateral"


def acquisition_array(geometry: ProjectionGeometry, views: Sequence[str]) -> np.ndarray:
    """``(V, 6)`` float64: each view's effective acquisition (:data:`ACQUISITION_FIELDS`) of ``geometry``."""
    rows = []
    for v in views:
        a = geometry.view_acquisition(v)
        rows.append([a.sad_mm, a.sid_mm, *a.detector_size_mm, *a.detector_offset_mm])
    return np.asarray(rows, dtype=np.float64)


def geometry_from_array(base: ProjectionGeometry, views: Sequence[str], acquisition) -> ProjectionGeometry:
    """``base`` with each view's acquisition set from a ``(V, 6)`` array (:data:`ACQUISITION_FIELDS`): the one
    geometry object the projector renders with and the sampler samples with."""
    a = np.asarray(acquisition, dtype=np.float64).reshape(len(views), len(ACQUISITION_FIELDS))
    g = base
    for v, row in zip(views, a):
        g = g.with_view(
            v,
            sad_mm=float(row[0]),
            sid_mm=float(row[1]),
            detector_size_mm=(float(row[2]), float(row[3])),
            detector_offset_mm=(float(row[4]), float(row[5])),
        )
    return g


def draw_acquisitions(
    rng: np.random.RandomState, ranges: Mapping[str, Any], base: ProjectionGeometry, views: Sequence[str]
) -> np.ndarray:
    """One draw of every view's acquisition from ``ranges`` (a ``geometry`` entry of :data:`VIEW_SETTINGS`).

    Returns ``(V, 6)`` float64 (:data:`ACQUISITION_FIELDS`). A view kept at ``base`` (probability
    ``keep_base_prob``) gets ``base``'s row. The same number of values is drawn either way (a stable stream)."""
    base_rows = acquisition_array(base, views)
    keep = float(ranges.get("keep_base_prob", 0.0))
    out = []
    for i, v in enumerate(views):
        r = ranges[_kind(v)]
        kept = rng.rand() < keep
        sid = rng.uniform(*r["sid_mm"])
        oid = rng.uniform(*r["isocentre_to_detector_mm"])
        sizes = r["detector_size_mm"]
        size = sizes[int(rng.randint(len(sizes)))]
        off = rng.uniform(-np.asarray(r["detector_offset_mm"], float), np.asarray(r["detector_offset_mm"], float))
        out.append(base_rows[i] if kept else np.asarray([sid - oid, sid, size[0], size[1], off[0], off[1]], float))
    return np.stack(out)
