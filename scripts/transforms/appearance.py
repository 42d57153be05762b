"""Processed-radiograph appearance of training views: physics on the detector, then the vendor's look (issue 19).

A DRR is a clean line integral; a clinical chest radiograph went through scatter, quantum noise, detector blur,
a detector response and the vendor's post-processing. :func:`draw_appearance` draws one view's parameters from a
table (:data:`APPEARANCE_RANGES`), :func:`detector_physics` applies the physical part to the raw line integrals on
the render grid, and :func:`display_processing` the display part to the post-processed ``[0, 1]`` image. Both take
plain tensors and a parameter row, so the per-sample path and the batch path apply the same numbers.

Model (per view; ``p`` the line integral, attenuation per cm x cm):

1. effective energy: ``p * mu_scale`` (kVp changes the attenuation; ``mu_scale`` around 1);
2. primary intensity ``I = exp(-p)`` (air = 1);
3. scatter: ``I + spr * G_s * I``: the scatter image modelled as the primary convolved with a broad kernel (IAEA,
   "Diagnostic Radiology Physics: A Handbook for Teachers and Students", 2014, section 6.3.4: "the scatter component
   of the image may be considered to consist of the primary image convolved with a 'scatter spread function', which
   gives a highly blurred version of the image"), a Gaussian of ``scatter_sigma_mm`` at the detector; ``spr`` the
   scatter-to-primary ratio, 0-1 (scatter fractions up to ~50 % behind a grid in the mediastinum, ~90 % without:
   L. T. Niklason, J. A. Sorenson, J. A. Nelson, "Scattered radiation in chest radiography", Med Phys 8:677, 1981);
4. quantum noise: Gaussian with variance ``I / n`` (Poisson counts of ``n = photons_per_mm2 x pixel area`` per
   unattenuated render pixel), ``photons_per_mm2`` drawn log-uniformly in 1e3-1e5 per mm^2. Order of magnitude
   only (not checked at a source here): a detector air kerma of a few uGy times some 3e4 quanta per mm^2 per uGy
   (the order of the SNR_in^2 per air kerma that IEC 62220-1-1 tabulates for its RQA beams) times the detector's
   efficiency gives ~1e4-1e5; the low end, 30x fewer, stands for portable and low-dose films (an augmentation);
5. detector blur: Gaussian of ``blur_mm`` at the detector;
6. response: logarithmic (``-log(I / (1 + spr))``, bone bright: the usual processed radiograph) or linear
   (``1 + spr - I``: a linear detector signal shown inverted, bone bright), with probability ``linear_prob``.

Then the bundle's post-processing (normalise by the maximum, 8 bits, resize:
:func:`~scripts.transforms.radiograph.postprocess_radiograph`) and the display part: unsharp masking
``x + amount * (x - G_u * x)`` (the classic chest-film enhancement; J. D. Armstrong et al., "Clinical evaluation
of unsharp masking and slit scanning techniques in chest radiography", Radiology 147:351, 1983), and collimation
borders (each side a band of up to ``collimation_max`` of the image set to white, no exposure, or black, an
electronic shutter), after the existing gain / gamma / noise variation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "APPEARANCE_RANGES",
    "APPEARANCE_FIELDS",
    "appearance_ranges",
    "draw_appearance",
    "gaussian_blur",
    "haze",
    "detector_physics",
    "display_processing",
    "collimate",
]

#: One view's appearance parameters, in the order of a parameter row.
APPEARANCE_FIELDS = (
    "mu_scale",
    "linear",
    "spr",
    "scatter_sigma_mm",
    "photons_per_mm2",
    "blur_mm",
    "usm_amount",
    "usm_sigma_px",
    "collimation_top",
    "collimation_bottom",
    "collimation_left",
    "collimation_right",
    "collimation_value",
)

#: Named appearance ranges (module docstring). Each pair is drawn uniformly (``photons`` log-uniformly); a
#: ``*_prob`` is the probability the step is applied at all.
APPEARANCE_RANGES: dict[str, dict[str, Any]] = {
    "clinical": {
        "mu_scale": (0.85, 1.15),
        "linear_prob": 0.2,
        "scatter_prob": 0.8,
        "spr": (0.0, 1.0),
        "scatter_sigma_mm": (20.0, 60.0),
        "noise_prob": 0.8,
        "photons_per_mm2": (1.0e3, 1.0e5),
        "blur_mm": (0.0, 2.0),
        "usm_prob": 0.7,
        "usm_amount": (0.2, 1.5),
        "usm_sigma_px": (2.0, 8.0),
        "collimation_prob": 0.5,
        "collimation_max": 0.08,
    }
}


def appearance_ranges(name_or_ranges: str | Mapping[str, Any]) -> dict[str, Any]:
    """Ranges of :data:`APPEARANCE_RANGES` by name, or a mapping given as it is (checked keys)."""
    if isinstance(name_or_ranges, str):
        if name_or_ranges not in APPEARANCE_RANGES:
            raise ValueError(f"unknown appearance {name_or_ranges!r}; choose one of {sorted(APPEARANCE_RANGES)}")
        return dict(APPEARANCE_RANGES[name_or_ranges])
    ranges = dict(name_or_ranges)
    unknown = sorted(set(ranges) - set(APPEARANCE_RANGES["clinical"]))
    if unknown:
        raise ValueError(f"unknown appearance keys {unknown}; known: {sorted(APPEARANCE_RANGES['clinical'])}")
    return {**APPEARANCE_RANGES["clinical"], **ranges}


def draw_appearance(rng: np.random.RandomState, ranges: Mapping[str, Any], num_views: int) -> np.ndarray:
    """``(num_views, len(APPEARANCE_FIELDS))`` float64 parameter rows, one per view (a fixed count of draws)."""
    rows = []
    for _ in range(num_views):
        u = rng.rand(5)  # the step switches: linear, scatter, noise, usm, collimation
        mu = rng.uniform(*ranges["mu_scale"])
        spr = rng.uniform(*ranges["spr"]) if u[1] < ranges["scatter_prob"] else 0.0
        sigma_s = rng.uniform(*ranges["scatter_sigma_mm"])
        photons = math.exp(rng.uniform(*np.log(ranges["photons_per_mm2"]))) if u[2] < ranges["noise_prob"] else 0.0
        blur = rng.uniform(*ranges["blur_mm"])
        usm = rng.uniform(*ranges["usm_amount"]) if u[3] < ranges["usm_prob"] else 0.0
        usm_sigma = rng.uniform(*ranges["usm_sigma_px"])
        borders = rng.uniform(0.0, ranges["collimation_max"], size=4) * (u[4] < ranges["collimation_prob"])
        value = float(rng.rand() < 0.5)
        rows.append(
            [mu, float(u[0] < ranges["linear_prob"]), spr, sigma_s, photons, blur, usm, usm_sigma, *borders, value]
        )
    return np.asarray(rows, dtype=np.float64)


def _blur_matrix(n: int, sigma: float, device, dtype) -> torch.Tensor:
    """``(n, n)`` matrix of a 1D Gaussian blur (sigma px, truncated at 3 sigma) with replicated edges: row i holds
    the weights of output pixel i (a matrix product instead of a convolution: no per-kernel-size set-up)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (offsets / sigma) ** 2)
    k = k / k.sum()
    rows = torch.arange(n, device=device)[:, None].expand(n, offsets.numel())
    cols = (rows + offsets.long()[None]).clamp(0, n - 1)  # replicated edges
    m = torch.zeros(n, n, device=device, dtype=dtype)
    m.index_put_((rows.reshape(-1), cols.reshape(-1)), k.expand(n, -1).reshape(-1), accumulate=True)
    return m


def gaussian_blur(x: torch.Tensor, sigma_px: Sequence[float] | float) -> torch.Tensor:
    """Separable Gaussian blur of ``(H, W)`` with ``sigma_px`` = ``(rows, cols)`` pixels (or one number), edges
    replicated; sigma below 0.05 px on an axis leaves that axis as it is."""
    sr, sc = (float(sigma_px), float(sigma_px)) if np.isscalar(sigma_px) else (float(s) for s in sigma_px)
    y = x
    if sr >= 0.05:
        y = _blur_matrix(x.shape[0], sr, x.device, x.dtype) @ y
    if sc >= 0.05:
        y = y @ _blur_matrix(x.shape[1], sc, x.device, x.dtype).T
    return y


def haze(x: torch.Tensor, sigma_px: Sequence[float]) -> torch.Tensor:
    """A broad Gaussian blur of ``(H, W)`` (the scatter image), computed on a grid coarsened by up to a quarter of
    the smaller sigma (area pooling, blur, bilinear back): the kernel stays a few dozen taps whatever the detector
    grid (a 60 mm kernel is 50-100 px wide at the render grid)."""
    factor = max(1, int(min(sigma_px) // 4))
    if factor == 1:
        return gaussian_blur(x, sigma_px)
    h, w = x.shape[-2:]
    small = F.avg_pool2d(x[None, None], factor, ceil_mode=True)[0, 0]
    small = gaussian_blur(small, [s / factor for s in sigma_px])
    return F.interpolate(small[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]


def detector_physics(
    raw: torch.Tensor, params: Sequence[float], pixel_mm: Sequence[float], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Raw line integrals ``(H, W)`` on the render grid -> the detector's signal ``(H, W)`` >= 0, bone bright
    (module docstring steps 1-6). ``params``: a row of :data:`APPEARANCE_FIELDS`; ``pixel_mm``: the view's
    ``(row, column)`` pitch on the render grid, mm; ``generator``: the quantum noise's (CPU)."""
    p = dict(zip(APPEARANCE_FIELDS, (float(v) for v in params)))
    pr, pc = (float(s) for s in pixel_mm)
    intensity = torch.exp(-raw.float().clamp(min=0.0) * p["mu_scale"])
    spr = p["spr"]
    if spr > 0:
        intensity = intensity + spr * haze(intensity, (p["scatter_sigma_mm"] / pr, p["scatter_sigma_mm"] / pc))
    photons = p["photons_per_mm2"] * pr * pc  # per render pixel
    if photons > 0:
        noise = torch.randn(intensity.shape, generator=generator).to(intensity.device)
        intensity = intensity + noise * (intensity.clamp(min=0.0) / photons).sqrt()
    if p["blur_mm"] > 0:
        intensity = gaussian_blur(intensity, (p["blur_mm"] / pr, p["blur_mm"] / pc))
    floor = 1.0 / max(photons, 1.0e6)
    if p["linear"] >= 0.5:
        return (1.0 + spr - intensity).clamp(min=0.0)
    return (-torch.log(intensity.clamp(min=floor) / (1.0 + spr))).clamp(min=0.0)


def display_processing(x: torch.Tensor, params: Sequence[float]) -> torch.Tensor:
    """Unsharp masking of a post-processed ``(H, W)`` image in [0, 1] (clipped to [0, 1])."""
    p = dict(zip(APPEARANCE_FIELDS, (float(v) for v in params)))
    if p["usm_amount"] <= 0:
        return x
    return (x + p["usm_amount"] * (x - gaussian_blur(x, p["usm_sigma_px"]))).clamp(0.0, 1.0)


def collimate(x: torch.Tensor, params: Sequence[float]) -> torch.Tensor:
    """Collimation borders of a ``(H, W)`` image: each side's band (a fraction of the image) set to the value."""
    p = dict(zip(APPEARANCE_FIELDS, (float(v) for v in params)))
    h, w = x.shape[-2:]
    top, bottom = int(round(p["collimation_top"] * h)), int(round(p["collimation_bottom"] * h))
    left, right = int(round(p["collimation_left"] * w)), int(round(p["collimation_right"] * w))
    if top == bottom == left == right == 0:
        return x
    y = x.clone()
    value = p["collimation_value"]
    y[..., :top, :] = value
    y[..., h - bottom :, :] = value
    y[..., :, :left] = value
    y[..., :, w - right :] = value
    return y
