"""ProjectionGeometry unit tests and the DRR <-> geometry contract: beads project where the geometry says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scripts.projection.geometry import GEOMETRY_PRESETS, ProjectionGeometry
from scripts.projection.itk_renderer import ray_cast_drr

SPACING = 1.0
SHAPE = (180, 160, 200)
ORIGIN = np.array([-90.0, -70.0, -110.0])  # LPS centre of voxel [0, 0, 0]
# off-centre in all three axes; LPS mm, on voxel centres
BEADS = np.array([[40.0, -30.0, 35.0], [-35.0, 45.0, -50.0], [12.0, 20.0, 60.0]])
ISOCENTRE = np.array([5.0, 3.0, -4.0])


@pytest.fixture(scope="module")
def bead_volume() -> np.ndarray:
    vol = np.full(SHAPE, -1000.0, dtype=np.float32)
    for b in BEADS:
        idx = np.round((b - ORIGIN) / SPACING).astype(int)
        assert np.allclose(ORIGIN + idx * SPACING, b)
        vol[tuple(idx)] = 3000.0
    return vol


def _peak_centroid(img: np.ndarray, xy: np.ndarray, half: int = 3) -> np.ndarray:
    """Intensity-weighted centroid (col, row) in a window around the maximum near ``xy``."""
    c0, r0 = np.round(xy).astype(int)
    win = img[r0 - 6 : r0 + 7, c0 - 6 : c0 + 7]
    rr, cc = np.unravel_index(np.argmax(win), win.shape)
    r, c = r0 - 6 + rr, c0 - 6 + cc
    w = img[r - half : r + half + 1, c - half : c + half + 1].astype(np.float64)
    yy, xx = np.mgrid[r - half : r + half + 1, c - half : c + half + 1]
    return np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])


@pytest.mark.parametrize("preset", ["perx2ct", "x2ctgan"])
@pytest.mark.parametrize("view", ["pa", "lateral"])
def test_bead_drr_peaks_match_projection(bead_volume, preset, view):
    g = ProjectionGeometry.from_preset(preset, isocentre_mm=tuple(ISOCENTRE))
    drr = ray_cast_drr(bead_volume, (SPACING,) * 3, ORIGIN, g, view)
    assert drr.shape == g.detector_shape
    expected = g.project(BEADS, view)
    for b, xy in zip(BEADS, expected):
        found = _peak_centroid(drr, xy)
        err = np.abs(found - xy).max()
        assert err < 0.5, f"{preset}/{view}: bead {b} peak at {found}, geometry says {xy} (error {err:.3f} px)"


def test_display_convention(bead_volume):
    """PA: patient's left (+x) on the image's right; superior in the top rows; lateral: anterior (-y) on the left."""
    g = ProjectionGeometry.from_preset("perx2ct", isocentre_mm=(0.0, 0.0, 0.0))
    rows, cols = g.detector_shape
    vol = np.full((120, 120, 120), -1000.0, dtype=np.float32)
    origin = np.array([-59.5, -59.5, -59.5])
    bead = np.array([40.5, -30.5, 35.5])  # left, anterior, superior
    vol[tuple(np.round((bead - origin)).astype(int))] = 3000.0
    pa = ray_cast_drr(vol, (1.0, 1.0, 1.0), origin, g, "pa")
    lat = ray_cast_drr(vol, (1.0, 1.0, 1.0), origin, g, "lateral")
    r, c = np.unravel_index(np.argmax(pa), pa.shape)
    assert c > cols / 2, "a bead on the patient's left must appear on the PA image's right half"
    assert r < rows / 2, "a superior bead must appear in the top rows"
    r, c = np.unravel_index(np.argmax(lat), lat.shape)
    assert c < cols / 2, "an anterior bead must appear on the lateral image's left half"
    assert r < rows / 2


# ------------------------------------------------------------------------------------ unit tests
def test_isocentre_hits_detector_centre():
    for preset in GEOMETRY_PRESETS:
        g = ProjectionGeometry.from_preset(preset, isocentre_mm=(10.0, -20.0, 30.0))
        rows, cols = g.detector_shape
        for view in g.view_names:
            xy = g.project(np.array([10.0, -20.0, 30.0]), view)
            np.testing.assert_allclose(xy, [(cols - 1) / 2, (rows - 1) / 2], atol=1e-9)
            np.testing.assert_allclose(g.project_normalized(np.array(g.isocentre_mm), view), [0.0, 0.0], atol=1e-12)


def test_magnification_and_pixel_to_world():
    g = ProjectionGeometry.from_preset("perx2ct")
    assert g.magnification == pytest.approx(949.0 / 700.0)
    assert g.pixel_spacing_mm == (500.0 / 320, 500.0 / 320)
    # 10 mm along the PA column direction (+x) at the isocentre plane -> 10 * M / pixel size columns
    d = g.project(np.array([[10.0, 0.0, 0.0]]), "pa") - g.project(np.zeros((1, 3)), "pa")
    np.testing.assert_allclose(d[0], [10 * g.magnification / g.pixel_spacing_mm[1], 0.0], atol=1e-9)
    # a detector pixel's world position projects back onto itself
    xy = np.array([[0.0, 0.0], [319.0, 0.0], [17.25, 250.5]])
    for view in g.view_names:
        np.testing.assert_allclose(g.project(g.pixel_to_world(view, xy), view), xy, atol=1e-9)
    # the source is SAD from the isocentre, the detector SID - SAD on the other side
    assert np.linalg.norm(g.source_mm("pa") - np.array(g.isocentre_mm)) == pytest.approx(700.0)
    assert np.linalg.norm(g.detector_centre_mm("lateral") - g.source_mm("lateral")) == pytest.approx(949.0)


def test_project_normalized_edges():
    g = ProjectionGeometry.from_preset("perx2ct")
    rows, cols = g.detector_shape
    # points on the detector plane at its outer edges map to -1 / +1 whatever the resolution
    for shape in [(320, 320), (128, 128), (16, 16)]:
        gs = g.with_detector_shape(shape)
        o, cs, rs = gs.detector_frame("pa")
        left_top_edge = o - 0.5 * cs - 0.5 * rs
        right_bottom_edge = o + (shape[1] - 0.5) * cs + (shape[0] - 0.5) * rs
        np.testing.assert_allclose(gs.project_normalized(left_top_edge, "pa"), [-1.0, -1.0], atol=1e-9)
        np.testing.assert_allclose(gs.project_normalized(right_bottom_edge, "pa"), [1.0, 1.0], atol=1e-9)
    # same normalised coordinates for any detector shape
    p = np.array([[30.0, 10.0, -40.0]])
    np.testing.assert_allclose(
        g.project_normalized(p, "lateral"),
        g.with_detector_shape((128, 128)).project_normalized(p, "lateral"),
        atol=1e-12,
    )


def test_torch_matches_numpy():
    g = ProjectionGeometry.from_preset("x2ctgan", isocentre_mm=(1.0, 2.0, 3.0))
    pts = np.random.default_rng(0).uniform(-150, 150, size=(5, 7, 3))
    for view in g.view_names:
        a = g.project(pts, view)
        t = g.project(torch.tensor(pts, dtype=torch.float64, requires_grad=True), view)
        assert isinstance(t, torch.Tensor) and t.shape == (5, 7, 2)
        np.testing.assert_allclose(t.detach().numpy(), a, atol=1e-9)
        tn = g.project_normalized(torch.tensor(pts, dtype=torch.float32), view)
        np.testing.assert_allclose(tn.numpy(), g.project_normalized(pts, view), atol=1e-5)
    assert bool(g.in_front(np.zeros(3), "pa"))
    assert not bool(g.in_front(g.source_mm("pa") + np.array([0.0, 10.0, 0.0]), "pa"))


def test_bad_arguments():
    with pytest.raises(ValueError, match="sad_mm"):
        ProjectionGeometry(sad_mm=1000.0, sid_mm=949.0)
    with pytest.raises(ValueError, match="unknown geometry preset"):
        ProjectionGeometry.from_preset("nope")
    with pytest.raises(ValueError, match="unknown view"):
        ProjectionGeometry().project(np.zeros(3), "ap")
    with pytest.raises(ValueError, match="shape"):
        ProjectionGeometry().project(np.zeros((4, 2)), "pa")
    with pytest.raises(ValueError, match="orthogonal"):
        ProjectionGeometry(views={"v": {"normal": (0, 1, 0), "col": (0, 1, 0), "row": (0, 0, -1)}})
    with pytest.raises(ValueError, match="isocentre_mm"):
        ProjectionGeometry(isocentre_mm=(0.0, float("nan"), 0.0))
    with pytest.raises(ValueError, match="detector_shape"):
        ProjectionGeometry(detector_shape=(0, 320))
    # round trip through plain data
    g = ProjectionGeometry.from_preset("x2ctgan", isocentre_mm=(1.0, 2.0, 3.0))
    g2 = ProjectionGeometry(**g.to_dict())
    np.testing.assert_allclose(g2.project(np.ones(3), "lateral"), g.project(np.ones(3), "lateral"))


def test_official_camera_preset():
    """``perx2ct_official``: the official code's sampling camera, a pinhole 320 mm (1 world unit) from the centre
    with a 60 degree field of view, on the DRRs' 500 mm detector (so radiographs are fitted as for ``perx2ct``)."""
    g = ProjectionGeometry.from_preset("perx2ct_official")
    paper = ProjectionGeometry.from_preset("perx2ct")
    assert g.sad_mm == 320.0 and g.detector_size_mm == paper.detector_size_mm
    assert g.detector_size_mm[1] / 2 / g.sid_mm == pytest.approx(np.tan(np.radians(30.0)), rel=1e-12)
    assert abs(g.magnification / paper.magnification - 1) < 0.005  # 1.353 vs 1.356 at the isocentre
    # a point 100 mm toward the source on the beam's edge ray projects on the detector's edge (fov 60 deg)
    edge = np.array([[np.tan(np.radians(30.0)) * (320.0 - 100.0), 100.0, 0.0]])
    np.testing.assert_allclose(g.project_normalized(edge, "pa"), [[1.0, 0.0]], atol=1e-12)
