"""The self-check's scores (issue 19, item 3): gradient correlation, and the relative tests "does the given pairing
score better than the swapped one" and "does each image score better than its mirror image", on the example case
with the ground-truth CT as the reconstruction; the bundle's rule flags swapped, mirrored and non-chest inputs and
passes the correct ones. The rates on trained networks are measured by tests/benchmarks/bench_real_radiographs.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scripts.inference.selfcheck import SCORE_KEYS, THRESHOLDS, is_consistent, self_check, view_scores
from scripts.projection.geometry import ProjectionGeometry
from scripts.projection.torch_renderer import project_hu
from scripts.transforms.radiograph import postprocess_radiograph

TRAINING = ProjectionGeometry.from_preset("perx2ct")
CLINICAL = TRAINING.with_view("pa", sad_mm=1650.0, sid_mm=1800.0, detector_size_mm=(430.0, 430.0)).with_view(
    "lateral", sad_mm=1300.0, sid_mm=1500.0, detector_size_mm=(430.0, 430.0)
)


@pytest.fixture(scope="module")
def case(example_lungdx_in_frame):
    """LungDx-A0001 resampled into the output frame (HU) and its full CT's DRRs at the clinical set-up (2, 128, 128)."""
    arr, spacing, origin, iso, cube = example_lungdx_in_frame
    raw = project_hu(torch.from_numpy(arr)[None, None], spacing, origin, CLINICAL.with_isocentre(iso))[0]
    return cube, torch.stack([postprocess_radiograph(r) for r in raw])


def test_gradient_correlation_ignores_gain_and_offset_not_a_mirror():
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    blobs = ((20, 12, 4.0), (40, 22, 7.0), (12, 50, 3.0))  # (row, col, sigma): nothing mirror-symmetric
    img = torch.from_numpy(sum(np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * s**2)) for r, c, s in blobs))
    footprint = torch.ones(64, 64, dtype=torch.bool)
    same, _ = view_scores(img, 0.5 * img + 0.2, footprint)
    assert same["gc"] == pytest.approx(1.0, abs=1e-9) and same["ncc"] == pytest.approx(1.0, abs=1e-9)
    mirrored, _ = view_scores(img, img.flip(-1), footprint)
    assert mirrored["gc"] < 0.5
    empty, _ = view_scores(img, img, torch.zeros(64, 64, dtype=torch.bool))
    assert all(math.isnan(v) for v in empty.values())


def test_rule_needs_every_score_finite_and_known():
    good = dict.fromkeys(SCORE_KEYS, 1.0)
    assert is_consistent(good)
    assert not is_consistent({**good, next(iter(THRESHOLDS)): float("nan")})
    assert not is_consistent({**good, next(iter(THRESHOLDS)): -1.0})
    with pytest.raises(ValueError, match="unknown self-check scores"):
        self_check(np.zeros((8, 8, 8), np.float32), np.zeros((2, 16, 16), np.float32), TRAINING, threshold={"x": 1})


@pytest.mark.slow
def test_relative_scores_find_swapped_and_mirrored_views(case):
    """The given pairing scores better than the swapped one, and each image better than its mirror, only when the
    inputs are right; the rule flags each wrong input."""
    cube, inputs = case
    good = self_check(cube, inputs, CLINICAL)
    assert good["consistent"], good["scores"]
    assert good["scores"]["swap_margin"] > 0.2 and good["scores"]["mirror_margin"] > 0.05
    assert good["scores"]["gc_min"] > 0.9
    swapped = self_check(cube, inputs.flip(0), CLINICAL)
    assert swapped["scores"]["swap_margin"] < 0 and not swapped["consistent"]
    for v in range(2):
        bad = inputs.clone()
        bad[v] = bad[v].flip(-1)
        mirrored = self_check(cube, bad, CLINICAL)
        assert mirrored["scores"]["mirror_margin"] < 0, (v, mirrored["scores"])
        assert not mirrored["consistent"], (v, mirrored["scores"])


@pytest.mark.slow
def test_non_chest_inputs_are_flagged(case):
    """scikit-image's Shepp-Logan phantom (a head slice) and its bundled photograph, given as both views."""
    from skimage import data as skdata
    from skimage.transform import resize

    cube, _ = case
    for img in (skdata.shepp_logan_phantom(), skdata.camera()):
        x = torch.from_numpy(
            resize(np.asarray(img, dtype=np.float64), (128, 128), anti_aliasing=True).astype(np.float32)
        )
        result = self_check(cube, torch.stack([postprocess_radiograph(x), postprocess_radiograph(x.T)]), CLINICAL)
        assert not result["consistent"], result["scores"]
