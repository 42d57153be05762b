"""Are the two inputs a PA and a lateral chest radiograph, in this order and not mirrored? (issue 19, item 3).

Model-independent: only the input images are read. A re-projection of the reconstruction cannot tell swapped or
mirrored views from correct ones (a trained network reconstructs a CT that re-projects like whatever it is given:
:mod:`scripts.inference.selfcheck`); the anatomy in the inputs can.

Display convention of the network inputs (``(H, W)`` in [0, 1], bright = dense: a DRR's normalised line integrals,
MONOCHROME1 DICOM inverted, :mod:`scripts.transforms.radiograph`; orientation pinned in
:mod:`scripts.projection.geometry`, "Display convention"): head up; the PA viewed from the front, the patient's left
(heart) on the image's right; the lateral with the anterior on the image's left and the spine on the image's right.
The signs below were checked on the bundle's own DRRs of four real CTs and on plastimatch's renders of two of them
(all correct pairs of the measurement below have the signs stated).

Measures (:func:`view_measures`, per view, px of the ``(H, W)`` input). Body columns: mean intensity >=
:data:`BODY_FRACTION` of the brightest column's; centre line: their intensity-weighted centroid column; body rows the
same along rows (fractions of rows below are of the body rows, from the top). *Excess* over a band of rows: (mass
right of the centre line - mass left) / (sum), in the widest window symmetric about the centre line.

* ``symmetry``: Pearson correlation of the body window (all rows) with its own left-right mirror, the best over
  centre lines within +-:data:`CENTRE_SEARCH_PX`: a PA/AP chest is nearly symmetric about the spine, a lateral not;
* ``heart_side``: the excess of the high-pass image (the positive part of the image minus its Gaussian blur, sigma
  :data:`HEART_HIGHPASS_PX`) over rows :data:`HEART_ROWS`: positive when the heart border is on the image's right;
* ``diaphragm_side``: (row of the right dome - row of the left dome) / body rows, each dome the row of the steepest
  downward rise (lung to diaphragm) of the image smoothed by :data:`DOME_SMOOTH_PX`, over rows :data:`DOME_ROWS` and
  the column band :data:`DOME_COLUMNS` of the half width on its side: positive when the dome on the image's left
  (the patient's right, above the liver) is the higher one, as in most chests;
* ``spine_side``: the excess over rows :data:`SPINE_ROWS` (upper chest: spine, scapulae and posterior ribs against
  the aerated anterior) minus the excess over rows :data:`FRONT_ROWS` (lower chest: heart and liver anterior):
  positive when the posterior side is the image's right.

Rule (:func:`views_plausible`; every score in :data:`PLAUSIBILITY_MARGINS` must reach its margin):

* ``swap_margin`` = PA ``symmetry`` - lateral ``symmetry``: the view given as PA must be the more symmetric one (a
  relative test: a set-up or a processing that changes both views changes both symmetries);
* ``lateral_spine_side`` = the lateral's ``spine_side``: spine on the image's right;
* ``pa_laterality`` = the PA's ``heart_side`` / :data:`HEART_SCALE` + ``diaphragm_side`` / :data:`DIAPHRAGM_SCALE`
  (each term in units of its median over the correct PAs measured below): heart border on the image's right and the
  higher dome on its left. Mirroring the PA negates both terms. Two independent cues, so one of them may be weak
  (level domes, a small heart) without a false alarm;
* ``row_consistency`` = Pearson correlation of the two views' row profiles (mean of each row): both views integrate
  the same axial slab at each detector row (exactly for parallel beams; nearly at the magnifications met), so two
  views of one chest have nearly the same profile. A non-chest image, a photograph, or a view rotated or from
  another patient does not;
* a view without a body (constant, or nothing but background) is not plausible.

Measured (``tests/benchmarks/bench_view_plausibility.py``, 2026-12-02; 60 correct pairs: LIDC-IDRI-0001,
LungDx-A0001, LIDC-IDRI-0003, LungDx-A0002-8mm by the torch projector and LungDx-A0001, LIDC-IDRI-0003 by plastimatch,
at the five set-ups of ``bench_real_radiographs.py`` (training 700/949 mm, clinical PA/lateral 1800/1800 and
1800/1500 mm, 29 mm off-centre, processed appearance), each with and without its geometry (placed on the training
detector by pixel pitch); 15 non-chest pairs, ``bench_real_radiographs.non_chest_inputs`` at the five set-ups):

* ``swap_margin``: correct pairs >= +0.062 (median +0.17); swapped pairs are its negative: margin 0.03 flags 100 %
  of 60 swapped pairs, 0 % false alarms;
* ``lateral_spine_side``: correct >= +0.147 (median +0.24), mirrored laterals <= -0.147: margin 0.07 flags 100 % of
  60 mirrored laterals, 0 % false alarms;
* ``pa_laterality``: correct >= +0.51 (median +2.1), mirrored PAs <= -0.51: margin 0.25 flags 100 % of 60 mirrored
  PAs, 0 % false alarms. Neither term alone has a gap (``heart_side`` as low as -0.06, ``diaphragm_side`` -0.02:
  LungDx-A0001's domes are level). **Chosen on the same data it is measured on**: eight asymmetry measures and their
  pairs were tried on these 60 PAs (four CTs), and this pair was the one with a gap, so on unseen chests expect false
  alarms above 0 % (a chest with a left dome higher and a small heart; dextrocardia is flagged by design);
* ``row_consistency``: correct >= +0.81 (median +0.98); margin 0.6 flags the Shepp-Logan pairs (+0.30) and the
  photograph pairs (-0.63);
* non-chest pairs: 15 of 15 flagged (the limb phantom's DRRs by ``swap_margin``, ``lateral_spine_side`` and
  ``pa_laterality``, the Shepp-Logan phantom by ``row_consistency`` alone, the photograph by ``row_consistency`` and
  ``pa_laterality``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

__all__ = ["BODY_FRACTION", "PLAUSIBILITY_MARGINS", "PLAUSIBILITY_SCORES", "view_measures", "views_plausible"]

#: A column (row) belongs to the body when its mean intensity reaches this fraction of the brightest column's (row's).
BODY_FRACTION = 0.25
#: Centre lines tried around the centroid column (px, both sides) for the symmetry.
CENTRE_SEARCH_PX = 4
#: A body narrower than twice this (px) is no body.
MIN_HALF_WIDTH_PX = 4
#: Rows (fractions of the body rows, from the top) of ``heart_side``, and its high-pass Gaussian sigma (px).
HEART_ROWS, HEART_HIGHPASS_PX = (0.5, 0.9), 3.0
#: ``diaphragm_side``: rows searched for each dome (fractions of the body rows), the column bands on either side
#: (fractions of the half width from the centre line) and the Gaussian sigma (px) of the image it is read on.
DOME_ROWS, DOME_COLUMNS, DOME_SMOOTH_PX = (0.45, 0.97), (0.3, 0.7), 2.0
#: Scales of ``pa_laterality``: the median of each term over the measured correct PAs (module docstring).
HEART_SCALE, DIAPHRAGM_SCALE = 0.1, 0.08
#: Rows of the posterior-dense (upper) and anterior-dense (lower) bands of ``spine_side``.
SPINE_ROWS, FRONT_ROWS = (0.1, 0.5), (0.6, 0.9)
#: The default rule: score -> margin it must reach (module docstring: chosen from the measured rates, about half the
#: smallest correct score; for ``row_consistency`` between the smallest correct and the largest non-chest Shepp-Logan
#: score).
PLAUSIBILITY_MARGINS: dict[str, float] = {
    "swap_margin": 0.03,
    "lateral_spine_side": 0.07,
    "pa_laterality": 0.25,
    "row_consistency": 0.6,
}
#: Every score :func:`views_plausible` reports (any may be given a margin).
PLAUSIBILITY_SCORES = ("swap_margin", "lateral_spine_side", "pa_laterality", "row_consistency")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def _band_excess(x: np.ndarray, rows: slice, lo: int, hi: int, c: int, highpass_px: float = 0.0) -> float:
    """(mass right of column ``c`` - mass left) / (sum), over ``rows`` and the widest window symmetric about ``c``
    inside ``[lo, hi]``; with ``highpass_px`` on the positive part of ``x`` minus its Gaussian blur (sigma, px)."""
    h = min(c - lo, hi - c)
    y = np.clip(x - gaussian_filter(x, highpass_px, mode="nearest"), 0.0, None) if highpass_px else x
    left, right = float(y[rows, c - h : c].sum()), float(y[rows, c + 1 : c + h + 1].sum())
    return (right - left) / (right + left) if right + left > 0 else float("nan")


def _dome_rise(x: np.ndarray, rows: slice, cols: slice) -> int:
    """The row (px) in ``rows`` where the mean over ``cols`` of ``x`` grows most steeply downwards: the lung's
    lower border, where the aerated lung gives way to the diaphragm and the abdomen below it."""
    profile = np.diff(x[rows.start : rows.stop + 1, cols].mean(axis=1))
    return rows.start + int(np.argmax(profile))


def view_measures(image: np.ndarray | torch.Tensor) -> dict[str, float]:
    """The anatomy measures of one view (module docstring).

    Args:
        image: ``(H, W)`` radiograph, bright = dense (a network input in [0, 1]).

    Returns:
        ``{"symmetry", "heart_side", "diaphragm_side", "spine_side", "centre_px", "half_width_px"}``: the scores of
        the module docstring (each is computed for either view; the rule reads the PA's ``heart_side`` and
        ``diaphragm_side`` and the lateral's ``spine_side``); NaN scores and half width 0 when no body is found.
    """
    x = np.asarray(image.detach().cpu() if torch.is_tensor(image) else image, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"a view must be (H, W), got shape {x.shape}")
    out = dict.fromkeys(("symmetry", "heart_side", "diaphragm_side", "spine_side", "centre_px"), float("nan"))
    out["half_width_px"] = 0.0
    cols, rows = x.mean(axis=0), x.mean(axis=1)
    if not np.isfinite(x).all() or float(cols.max()) <= float(cols.min()):
        return out
    body = np.flatnonzero(cols >= BODY_FRACTION * float(cols.max()))
    lo, hi = int(body.min()), int(body.max())
    w = cols[lo : hi + 1] - float(cols.min())
    c = int(round(lo + float((np.arange(w.size) * w).sum() / max(float(w.sum()), 1e-12))))
    if min(c - lo, hi - c) < MIN_HALF_WIDTH_PX:
        return out
    best, best_c, best_h = float("nan"), c, 0
    for cc in range(c - CENTRE_SEARCH_PX, c + CENTRE_SEARCH_PX + 1):
        h = min(cc - lo, hi - cc)
        if h < MIN_HALF_WIDTH_PX:
            continue
        win = x[:, cc - h : cc + h + 1]
        r = _pearson(win, win[:, ::-1])
        if np.isfinite(r) and not r <= best:
            best, best_c, best_h = r, cc, h
    if best_h == 0:
        return out
    body_rows = np.flatnonzero(rows >= BODY_FRACTION * float(rows.max()))
    top, n = int(body_rows.min()), int(body_rows.max() - body_rows.min() + 1)

    def band(f0: float, f1: float) -> slice:
        return slice(top + int(f0 * n), top + int(f1 * n) + 1)

    smooth = gaussian_filter(x, DOME_SMOOTH_PX, mode="nearest")
    dome_rows = band(*DOME_ROWS)
    inner, outer = (int(f * best_h) for f in DOME_COLUMNS)
    right_dome = _dome_rise(smooth, dome_rows, slice(best_c + inner, best_c + outer + 1))
    left_dome = _dome_rise(smooth, dome_rows, slice(best_c - outer, best_c - inner + 1))
    out.update(
        symmetry=best,
        diaphragm_side=(right_dome - left_dome) / n,
        heart_side=_band_excess(x, band(*HEART_ROWS), lo, hi, c, HEART_HIGHPASS_PX),
        spine_side=_band_excess(x, band(*SPINE_ROWS), lo, hi, c) - _band_excess(x, band(*FRONT_ROWS), lo, hi, c),
        centre_px=float(best_c),
        half_width_px=float(best_h),
    )
    return out


def views_plausible(
    images: torch.Tensor | np.ndarray,
    views: Sequence[str] = ("pa", "lateral"),
    margins: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Whether the inputs look like a PA and a lateral chest radiograph, in order and not mirrored.

    Args:
        images: ``(V, H, W)`` network inputs, channel ``v`` = ``views[v]``; bright = dense.
        views: the views; must contain ``"pa"`` and ``"lateral"``.
        margins: score -> margin (keys of :data:`PLAUSIBILITY_SCORES`); None = :data:`PLAUSIBILITY_MARGINS`.

    Returns:
        JSON-ready ``{"plausible": bool, "scores": {PLAUSIBILITY_SCORES}, "views": {view: view_measures},
        "margins": {...}, "reasons": [str, ...]}`` (reasons empty when plausible).
    """
    margins = {str(k): float(v) for k, v in (PLAUSIBILITY_MARGINS if margins is None else margins).items()}
    unknown = sorted(set(margins) - set(PLAUSIBILITY_SCORES))
    if unknown:
        raise ValueError(f"unknown view-plausibility scores {unknown}; known: {list(PLAUSIBILITY_SCORES)}")
    imgs = np.asarray(images.detach().cpu() if torch.is_tensor(images) else images, dtype=np.float64)
    if imgs.ndim != 3 or imgs.shape[0] != len(views) or not {"pa", "lateral"} <= set(views):
        raise ValueError(f"images must be (V, H, W) with views including pa and lateral, got {imgs.shape}, {views}")
    m = {view: view_measures(imgs[i]) for i, view in enumerate(views)}
    pa, lat = imgs[list(views).index("pa")], imgs[list(views).index("lateral")]
    scores = {
        "swap_margin": m["pa"]["symmetry"] - m["lateral"]["symmetry"],
        "lateral_spine_side": m["lateral"]["spine_side"],
        "pa_laterality": m["pa"]["heart_side"] / HEART_SCALE + m["pa"]["diaphragm_side"] / DIAPHRAGM_SCALE,
        "row_consistency": _pearson(pa.mean(axis=1), lat.mean(axis=1)),
    }
    why = {
        "swap_margin": "the view given as PA is not clearly more left-right symmetric than the lateral (swapped?)",
        "lateral_spine_side": "the lateral's spine is not on the image's right, posterior (lateral mirrored?)",
        "pa_laterality": "the PA's heart border and higher diaphragm dome are not where the patient's left and right"
        " are (heart on the image's right, higher dome on its left; PA mirrored?)",
        "row_consistency": "the two views' row profiles disagree: not two views of one chest with a shared"
        " head-feet axis (a non-chest image, or a view rotated?)",
    }
    reasons = [
        f"no body found in the {v} view (constant or not a radiograph)" for v in views if not m[v]["half_width_px"]
    ]
    if not reasons:
        reasons = [
            f"{why[k]}: {k} {scores[k]:+.3f} < {t:+.3f}"
            for k, t in margins.items()
            if not (np.isfinite(scores[k]) and scores[k] >= t)
        ]
    return {
        "plausible": not reasons,
        "scores": {k: float(v) for k, v in scores.items()},
        "views": m,
        "margins": margins,
        "reasons": reasons,
    }
