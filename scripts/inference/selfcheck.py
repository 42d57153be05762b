"""A self-check of every reconstruction by re-projection (issue 19, item 3).

There is never a ground-truth CT beside a user's radiographs, but there are the radiographs themselves. The
reconstructed CT (HU, in the output frame :data:`scripts.frame.FRAME`, centred on the isocentre) is projected
through each input view's own geometry with the torch projector (:func:`scripts.projection.torch_renderer.project_hu`,
the same attenuation as the training DRRs), put through the same post-processing as the input
(:func:`scripts.transforms.radiograph.postprocess_radiograph`: divided by its maximum, 8-bit, resized to the input's
pixels), and compared with the input radiograph the network was given.

Where: only the detector pixels whose rays cross the reconstructed cube (its *footprint*: the chord through the cube
at least 10 % of the longest) are compared; the input shows anatomy beyond the 320 mm cube that the reconstruction
cannot contain.

Scores per view (:func:`view_scores`), over the footprint:

* ``ncc``: normalised cross-correlation (Pearson's r) of input and re-projection, in [-1, 1]; insensitive to the
  intensity scale and offset (an input normalised by a maximum outside the footprint is scaled differently);
* ``ssim``: 2D SSIM (Wang et al. 2004, IEEE TIP 13(4): Gaussian window sigma 1.5 px, 11 px wide, K1 = 0.01,
  K2 = 0.03, data range 1) of the input and the re-projection mapped onto it by the least-squares gain and offset
  over the footprint, averaged over the footprint;
* ``gc``: gradient correlation (Penney et al. 1998, IEEE TMI 17(4): the mean NCC of the two images' Sobel
  gradients), which weighs edges rather than the broad intensity;
* the difference image: input minus that mapped re-projection (0 outside the footprint).

Scores per case (:func:`case_scores`, :data:`SCORE_KEYS`): the lowest view's ``ncc``, ``ssim``, ``gc``, and two
relative tests on the same reconstruction: ``swap_margin`` (each re-projection matches its own input better than the
other view's input by this much) and ``mirror_margin`` (each input matches its re-projection better than its own
mirror image does).

The re-projection rule (:func:`is_consistent`, :data:`THRESHOLDS`; ``consistent`` also needs plausible views, below):
every view's NCC >= 0.55 and ``mirror_margin`` >= 0.
Chosen from the rates measured by ``tests/benchmarks/bench_real_radiographs.py`` (2026-12-01: two test CTs rendered by
plastimatch at five set-ups, the ``small`` models trained in ``fixed`` mode for 100 and in ``clinical`` mode for 50
iterations on two other CTs): no false alarm on the 20 correct inputs (their lowest NCC 0.56, lowest mirror margin
0.006), and flagged: 75 % of non-chest inputs (12), 62 % of PAs rotated 90 degrees (8), **0 %** of swapped views,
of mirrored PAs or laterals (8 each) and of wrong geometries (20). By re-projection alone the target (95 % of
swapped, mirrored and non-chest inputs at 5 % false alarms) is **not met**: a trained network reconstructs a CT
that re-projects like whatever it is given (swapped or mirrored views score NCC 0.56-0.84, a limb phantom's DRRs
0.94-0.96), so consistency
between input and re-projection cannot tell these inputs apart from correct ones; only an anatomical prior could.
What re-projection does catch: inputs the network cannot reproduce (non-radiographs, rotated views), and, with an
exact reconstruction, swaps and mirrors (ground truth CT as the reconstruction, tests/test_selfcheck*.py: correct
views NCC 0.968-0.995, swapped 0.32-0.67, PA mirrored 0.81-0.89 with mirror margin -0.18, lateral mirrored
-0.38-0.77). Scores and the true 3D error (Spearman over the 40 unperturbed reconstructions, with and without their
geometry): ``swap_margin`` rho +0.72 with honest PSNR (-0.77 with MAE), ``mirror_margin`` +0.69 (-0.71), ``gc_min``
+0.45, ``ncc_min`` -0.37 (a wrong geometry raises NCC while it lowers PSNR). The threshold fits under-trained CPU
models; a better-trained model scores its correct inputs higher, and may deserve a higher one
(``--selfcheck_threshold "{'ncc_min': 0.8, 'mirror_margin': 0}"``).

Input plausibility (``views_plausible`` in the result, :mod:`scripts.inference.view_plausibility`): because
re-projection cannot catch swapped or mirrored views, ``consistent`` also needs the two inputs to look like a PA and
a lateral chest radiograph in this order and orientation (model-independent anatomy: the PA more left-right symmetric
than the lateral, the lateral's dense posterior side on the image's right, the PA's heart border on the image's right
and its higher diaphragm dome on the left, and the two views' row profiles alike). Measured by
``tests/benchmarks/bench_view_plausibility.py`` (2026-12-02, 60 correct pairs: four real CTs by the torch projector
and two by plastimatch, five set-ups, with and without geometry; 15 non-chest pairs): 0 % false alarms (0 of 60),
100 % of swapped pairs, mirrored PAs and mirrored laterals (60 each) and of non-chest pairs (15) flagged, with a gap
between correct and perturbed scores on every test (the PA's laterality test was chosen on these same pairs: see
that module). Combined with the re-projection rule: the rule's false alarms stay at most the sum of both. The
benchmark rerun with both checks (2026-12-02, both models at 100 iterations; the model card's table): 0 of 20
correct inputs flagged; swapped, PA mirrored, lateral mirrored and non-chest 100 %, PA rotated 90 degrees 75 %,
wrong geometry 0 %.

Outputs beside each reconstruction (:class:`SelfCheckd`): ``<case_id>.selfcheck.json`` (``consistent``, per view
``ncc``, ``ssim`` and ``gc``, the case ``scores``, ``views_plausible`` (scores, margins, reasons), the rule as
``threshold``, the geometry values used and which were assumed) and ``<case_id>.selfcheck.png`` (per view: input,
re-projection, difference), and one log line.
"""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scripts.evaluation.montage import label_grid
from scripts.frame import FRAME, VolumeFrame
from scripts.inference.view_plausibility import PLAUSIBILITY_SCORES, views_plausible
from scripts.projection.acquisition import geometry_from_json
from scripts.projection.geometry import ProjectionGeometry, data_pipeline, drr_geometry
from scripts.projection.torch_renderer import project, project_hu
from scripts.transforms.radiograph import RADIOGRAPH_PIPELINES, VIEW_SHAPE, postprocess_radiograph
from scripts.utils.atomic import save_grey_png, to_uint8, write_json_atomic

__all__ = [
    "NCC_THRESHOLD",
    "THRESHOLDS",
    "SCORE_KEYS",
    "FOOTPRINT_FRACTION",
    "reproject",
    "view_scores",
    "case_scores",
    "is_consistent",
    "self_check",
    "SelfCheckd",
]

logger = logging.getLogger(__name__)

#: Every view's NCC must reach this (module docstring: set from the rates measured by
#: tests/benchmarks/bench_real_radiographs.py, no false alarm on its 20 correct inputs).
NCC_THRESHOLD = 0.55
#: The case-level scores of :func:`case_scores` (each: higher = more consistent).
SCORE_KEYS = ("ncc_min", "ssim_min", "gc_min", "swap_margin", "mirror_margin")
#: The rule of :func:`is_consistent`: every named score must reach its threshold (module docstring).
THRESHOLDS: dict[str, float] = {"ncc_min": NCC_THRESHOLD, "mirror_margin": 0.0}
#: A detector pixel is compared when its ray's chord through the cube is at least this fraction of the longest.
FOOTPRINT_FRACTION = 0.1


def reproject(
    volume_hu: np.ndarray | torch.Tensor,
    geometry: ProjectionGeometry,
    views: Sequence[str] = ("pa", "lateral"),
    output_shape: Sequence[int] = VIEW_SHAPE,
    frame: VolumeFrame = FRAME,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Radiographs of a reconstruction as the inputs were made, and the cube's footprint.

    Args:
        volume_hu: ``(X, Y, Z)`` HU in the output frame (LPS axes, centred on the isocentre), e.g. 128^3 of 2.5 mm.
        geometry: the network's geometry with each view's own acquisition (its isocentre is ignored). A
            sampling-only preset renders with its DRR preset and data pipeline (:func:`drr_geometry`).
        views: the views, in the inputs' channel order.
        output_shape: the inputs' ``(H, W)``.
        frame: the output frame (voxel size).

    Returns:
        ``(images, footprint)``: ``(V, H, W)`` float32 in [0, 1] post-processed as the inputs
        (:func:`postprocess_radiograph`), and ``(V, H, W)`` bool, True where the pixel's ray crosses the cube.
    """
    vol = torch.as_tensor(np.asarray(volume_hu, dtype=np.float32) if not torch.is_tensor(volume_hu) else volume_hu)
    vol = vol.detach().float().cpu()
    if vol.ndim != 3:
        raise ValueError(f"the reconstruction must be (X, Y, Z) HU, got shape {tuple(vol.shape)}")
    g = drr_geometry(geometry).centred()
    pipeline = data_pipeline(geometry)
    spacing = [frame.spacing_mm] * 3
    origin = [float(frame.voxel_to_mm(0.0))] * 3
    hu = vol + RADIOGRAPH_PIPELINES[pipeline]["hu_offset"]
    with torch.no_grad():
        raw = project_hu(hu[None, None], spacing, origin, g, tuple(views))[0]
        chord = project(torch.ones_like(vol)[None, None], spacing, origin, g.with_detector_shape(output_shape), views)
    images = torch.stack([postprocess_radiograph(r, output_shape, True, 8, pipeline) for r in raw])
    chord = chord[0]
    footprint = chord >= FOOTPRINT_FRACTION * chord.flatten(1).amax(1)[:, None, None].clamp(min=1e-12)
    return images, footprint


def _ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """2D SSIM map (Wang et al. 2004) of two (H, W) images of data range 1, same size ('same' padding)."""
    k = torch.arange(11, dtype=torch.float64) - 5
    w = torch.exp(-(k**2) / (2 * 1.5**2))
    w = (w / w.sum())[:, None] * (w / w.sum())[None, :]
    w = w[None, None]

    def blur(a):
        return F.conv2d(F.pad(a[None, None], (5, 5, 5, 5), mode="reflect"), w)[0, 0]

    x, y = x.double(), y.double()
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def _ncc(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson's r of two equal-length 1D float64 tensors (0 when one is constant)."""
    xc, yc = x - x.mean(), y - y.mean()
    denom = float(torch.sqrt((xc**2).sum() * (yc**2).sum()))
    return float((xc * yc).sum()) / denom if denom > 0 else 0.0


def _gradient_correlation(x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> float:
    """Gradient correlation (Penney et al. 1998, IEEE TMI 17(4), 586-595): the mean of the NCCs of the two images'
    horizontal and vertical Sobel gradients, over the footprint shrunk by one pixel (no gradient across its edge)."""
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    kernels = torch.stack([sobel, sobel.T])[:, None]
    gx = F.conv2d(F.pad(x[None, None], (1, 1, 1, 1), mode="replicate"), kernels)[0]
    gy = F.conv2d(F.pad(y[None, None], (1, 1, 1, 1), mode="replicate"), kernels)[0]
    inner = -F.max_pool2d(-m[None, None].double(), 3, stride=1, padding=1)[0, 0] > 0.5
    if int(inner.sum()) < 16:
        return float("nan")
    return 0.5 * (_ncc(gx[0][inner], gy[0][inner]) + _ncc(gx[1][inner], gy[1][inner]))


def view_scores(
    image: torch.Tensor, reprojection: torch.Tensor, footprint: torch.Tensor
) -> tuple[dict[str, float], torch.Tensor]:
    """``({"ncc", "ssim", "gc"}, difference)`` of one view over its footprint (module docstring); all ``(H, W)``.

    The difference is ``image - (a * reprojection + b)``, the least-squares gain and offset over the footprint, and 0
    outside it."""
    x, y, m = image.double(), reprojection.double(), footprint.bool()
    if int(m.sum()) < 16:
        return {"ncc": float("nan"), "ssim": float("nan"), "gc": float("nan")}, torch.zeros_like(x)
    xm, ym = x[m], y[m]
    ncc = _ncc(xm, ym)
    xc, yc = xm - xm.mean(), ym - ym.mean()
    a = float((xc * yc).sum() / (yc**2).sum().clamp(min=1e-12))
    b = float(xm.mean() - a * ym.mean())
    fitted = (a * y + b).clamp(0.0, 1.0)
    ssim = float(_ssim_map(x, fitted)[m].mean())
    diff = torch.where(m, x - fitted, torch.zeros_like(x))
    return {"ncc": ncc, "ssim": ssim, "gc": _gradient_correlation(x, y, m)}, diff


def case_scores(
    images: torch.Tensor, reprojections: torch.Tensor, footprints: torch.Tensor, views: dict[str, dict[str, float]]
) -> dict[str, float]:
    """The case-level scores :data:`SCORE_KEYS` (higher = more consistent), from the views' own scores and two
    relative tests on the same reconstruction (no second reconstruction):

    * ``ncc_min``, ``ssim_min``, ``gc_min``: the lowest view's ``ncc``, ``ssim``, ``gc``;
    * ``swap_margin``: the lowest over the views of ``ncc(input v, re-projection v) - ncc(input of the other view,
      re-projection v)``: does the given pairing score better than the swapped one? (a network given swapped views
      tends to render a chest whose re-projection resembles the view that belongs there);
    * ``mirror_margin``: the lowest over the views of ``ncc(input v, re-projection v) - ncc(input v mirrored
      left-right, re-projection v)``: does the image as given score better than its mirror image?

    Args:
        images, reprojections, footprints: ``(V, H, W)`` as in :func:`self_check`.
        views: the per-view scores of :func:`view_scores`, in channel order; ``swap_margin`` needs two views.
    """
    names = list(views)
    out = {f"{k}_min": min((views[v][k] for v in names), default=float("nan")) for k in ("ncc", "ssim", "gc")}
    swap, mirror = [], []
    for i, v in enumerate(names):
        m = footprints[i].bool()
        if int(m.sum()) < 16:
            swap.append(float("nan"))
            mirror.append(float("nan"))
            continue
        rep = reprojections[i].double()[m]
        own = views[v]["ncc"]
        mirror.append(own - _ncc(images[i].double().flip(-1)[m], rep))
        if len(names) == 2:
            swap.append(own - _ncc(images[1 - i].double()[m], rep))
    out["swap_margin"] = min(swap) if swap else float("nan")
    out["mirror_margin"] = min(mirror) if mirror else float("nan")
    return {k: float(v) for k, v in out.items()}


def is_consistent(scores: Mapping[str, float], thresholds: Mapping[str, float] = THRESHOLDS) -> bool:
    """True when every score named in ``thresholds`` is finite and reaches its threshold (:data:`THRESHOLDS`)."""
    return all(np.isfinite(scores.get(k, float("nan"))) and scores[k] >= t for k, t in thresholds.items())


def self_check(
    volume_hu: np.ndarray | torch.Tensor,
    images: torch.Tensor | np.ndarray,
    geometry: ProjectionGeometry,
    views: Sequence[str] = ("pa", "lateral"),
    threshold: float | Mapping[str, float] | None = None,
    frame: VolumeFrame = FRAME,
    view_margins: Mapping[str, float] | None | bool = None,
) -> dict[str, Any]:
    """Re-project ``volume_hu`` through each view of ``geometry`` and score it against the input ``images``.

    Args:
        volume_hu: ``(X, Y, Z)`` HU in the output frame.
        images: the network's inputs ``(V, H, W)`` in [0, 1], channel ``v`` = ``views[v]``.
        geometry: the geometry the network was given (each view's own acquisition).
        threshold: the rule of ``consistent``: a mapping score -> threshold over :data:`SCORE_KEYS`, or a number (the
            NCC every view must reach); None = :data:`THRESHOLDS`.
        view_margins: the input plausibility check (:func:`scripts.inference.view_plausibility.views_plausible`,
            model-independent: swapped or mirrored views): its margins, None = its defaults, False = not checked
            (also skipped when ``views`` lack ``pa`` or ``lateral``).

    Returns:
        ``{"consistent", "threshold", "views": {view: {"ncc", "ssim", "gc"}}, "scores": {SCORE_KEYS},
        "views_plausible": {"plausible", "scores", "views", "margins", "reasons"} or None,
        "images": {view: (input, reprojection, difference)}}`` (the images as float numpy ``(H, W)``; not JSON).
        ``consistent`` needs both the re-projection rule and plausible views.
    """
    if threshold is None:
        thresholds = dict(THRESHOLDS)
    elif isinstance(threshold, Mapping):
        thresholds = {str(k): float(v) for k, v in threshold.items()}
    else:
        thresholds = {"ncc_min": float(threshold)}
    unknown = sorted(set(thresholds) - set(SCORE_KEYS))
    if unknown:
        raise ValueError(f"unknown self-check scores {unknown}; known: {list(SCORE_KEYS)}")
    imgs = torch.as_tensor(np.asarray(images, dtype=np.float32) if not torch.is_tensor(images) else images)
    imgs = imgs.detach().float().cpu()
    if imgs.ndim != 3 or imgs.shape[0] != len(views):
        raise ValueError(f"images must be ({len(views)}, H, W) for views {list(views)}, got {tuple(imgs.shape)}")
    reproj, footprint = reproject(volume_hu, geometry, views, tuple(imgs.shape[1:]), frame)
    scores, panels = {}, {}
    for v, view in enumerate(views):
        s, diff = view_scores(imgs[v], reproj[v], footprint[v])
        scores[view] = s
        panels[view] = (imgs[v].numpy(), reproj[v].numpy(), diff.float().numpy())
    case = case_scores(imgs, reproj, footprint, scores)
    plausible = None
    if view_margins is not False and {"pa", "lateral"} <= set(views):
        plausible = views_plausible(imgs, views, None if view_margins is True else view_margins)
    return {
        "consistent": bool(is_consistent(case, thresholds)) and (plausible is None or plausible["plausible"]),
        "threshold": thresholds,
        "views": scores,
        "scores": case,
        "views_plausible": plausible,
        "images": panels,
    }


#: Characters per title line of the self-check PNG (the montage's font: about 6 px each; panels 3 x 128 px).
TITLE_CHARS = 72


def _score_line(result: Mapping[str, Any]) -> str:
    """The scores in one line: per view NCC and SSIM, then the swap and mirror margins."""
    views = ", ".join(f"{v} NCC {s['ncc']:.3f} SSIM {s['ssim']:.3f}" for v, s in result["views"].items())
    case = result["scores"]
    line = f"{views}; swap margin {case['swap_margin']:+.3f}, mirror margin {case['mirror_margin']:+.3f}"
    plausible = result.get("views_plausible")
    if plausible and plausible["reasons"]:
        line += "; implausible views: " + "; ".join(plausible["reasons"])
    return line


def _rule(result: Mapping[str, Any]) -> str:
    """The rule a result was judged by, in words, e.g. ``ncc_min >= 0.55 and mirror_margin >= 0.00 and plausible
    views`` (the last when the inputs' plausibility was checked)."""
    rule = " and ".join(f"{k} >= {v:.2f}" for k, v in result["threshold"].items())
    return rule + (" and plausible views" if result.get("views_plausible") is not None else "")


class SelfCheckd(MapTransform):
    """Post-processing: the self-check of each reconstruction, written beside it (module docstring).

    Args:
        keys: the prediction key, ``(1, X, Y, Z)`` or ``(X, Y, Z)`` in the target scale (as the network outputs).
        image_key: the network's inputs ``(V, H, W)``.
        geometry: the network's geometry (used when the item has no ``view_geometry``).
        geometry_key: the item's own geometry (JSON text, :class:`scripts.transforms.acquisition.ReadAcquisitiond`).
        acquisition_key: the views' acquisitions (JSON text): copied into the JSON (values used, values assumed).
        output_dir: where ``<case_id>.selfcheck.json`` and ``.png`` go.
        threshold: the rule of ``consistent`` (:func:`self_check`): None = :data:`THRESHOLDS`, a mapping score ->
            threshold, or a number (every view's NCC).
        views: the views, in channel order.
        enabled: False skips the check (e.g. a zoomed slice, which is no volume).
        frame: the output frame.
        view_margins: the input plausibility part of the rule (:func:`self_check`): None = its default margins
            (:data:`scripts.inference.view_plausibility.PLAUSIBILITY_MARGINS`), a mapping score -> margin (only those
            tests), or False (not checked: e.g. for a patient with dextrocardia, which ``pa_laterality`` flags).

    Adds ``selfcheck`` (the JSON's content) and ``selfcheck_path`` to the item.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        image_key: str = "image",
        geometry: ProjectionGeometry | None = None,
        geometry_key: str = "view_geometry",
        acquisition_key: str = "acquisition",
        output_dir: str = "eval/inference",
        threshold: float | Mapping[str, float] | None = None,
        views: Sequence[str] = ("pa", "lateral"),
        enabled: bool = True,
        frame: VolumeFrame = FRAME,
        view_margins: Mapping[str, float] | None | bool = None,
    ) -> None:
        super().__init__(keys)
        if view_margins is True:
            view_margins = None
        if not (view_margins is None or view_margins is False or isinstance(view_margins, Mapping)):
            raise ValueError(f"view_margins must be null, false or a mapping score -> margin, got {view_margins!r}")
        unknown = sorted(set(view_margins or ()) - set(PLAUSIBILITY_SCORES))
        if unknown:  # refused when the config is built, not at the first case
            raise ValueError(
                f"unknown view-plausibility scores {unknown} in view_margins; known: {list(PLAUSIBILITY_SCORES)}"
            )
        self.view_margins = dict(view_margins) if isinstance(view_margins, Mapping) else view_margins
        self.image_key, self.geometry_key, self.acquisition_key = image_key, geometry_key, acquisition_key
        self.geometry = geometry if geometry is not None else ProjectionGeometry.from_preset("perx2ct")
        self.output_dir = Path(output_dir)
        self.threshold = dict(threshold) if isinstance(threshold, Mapping) else threshold
        self.views, self.enabled, self.frame = tuple(views), bool(enabled), frame

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        if not self.enabled:
            return d
        case_id = str(d.get("case_id", "reconstruction"))
        own = geometry_from_json(d.get(self.geometry_key) or None)
        geometry = own if own is not None else self.geometry
        acq = d.get(self.acquisition_key)
        acq = json.loads(acq) if isinstance(acq, str) and acq else (acq or {})
        for key in self.key_iterator(d):
            vol = torch.as_tensor(d[key]).detach().float().cpu()
            vol = vol[0] if vol.ndim == 4 else vol
            hu = self.frame.target_to_hu(vol.clamp(0.0, 1.0))
            result = self_check(
                hu,
                torch.as_tensor(d[self.image_key]),
                geometry,
                self.views,
                self.threshold,
                self.frame,
                view_margins=self.view_margins,
            )
            panels = result.pop("images")
            result["case_id"] = case_id
            result["geometry"] = {
                view: {
                    "sad_mm": a.sad_mm,
                    "sid_mm": a.sid_mm,
                    "detector_size_mm": list(a.detector_size_mm),
                    "detector_offset_mm": list(a.detector_offset_mm),
                    "source": acq.get(view, {}).get("source", "training"),
                    "assumed": acq.get(view, {}).get("assumed", {}),
                }
                for view, a in ((v, geometry.view_acquisition(v)) for v in self.views)
            }
            self.output_dir.mkdir(parents=True, exist_ok=True)
            path = self.output_dir / f"{case_id}.selfcheck.json"
            write_json_atomic(path, result)
            self._png(case_id, result, panels)
            scores = _score_line(result)
            verdict = (
                "consistent" if result["consistent"] else "NOT consistent: check the views, their order and geometry"
            )
            (logger.info if result["consistent"] else logger.warning)(
                "self-check %s: %s (rule %s): %s", case_id, scores, _rule(result), verdict
            )
            d["selfcheck"], d["selfcheck_path"] = result, str(path)
        return d

    def _png(self, case_id: str, result: dict, panels: dict) -> None:
        rows, labels = [], []
        for view, (img, rep, diff) in panels.items():
            rows.append([to_uint8(img), to_uint8(rep), to_uint8(0.5 + diff / 2)])
            labels.append(view)
        verdict = "consistent" if result["consistent"] else "NOT consistent"
        scores = _score_line(result)
        # wrapped to about the panels' width (three 128 px panels, ~6 px per character of the montage's font)
        title = [f"self-check {case_id}: {verdict}", f"rule: {_rule(result)}", *textwrap.wrap(scores, TITLE_CHARS)]
        title.append("difference: grey = 0")
        grid = label_grid(rows, labels, ["input", "re-projection", "difference"], title)
        save_grey_png(grid, self.output_dir / f"{case_id}.selfcheck.png")
