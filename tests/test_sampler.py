"""The perspective sampler reads each X-ray exactly where the DRR geometry projects a point."""

import numpy as np
import pytest
import torch
from scripts.networks import PerspectiveSampler
from scripts.projection.geometry import ProjectionGeometry

VIEWS = ("pa", "lateral")


@pytest.fixture(params=["perx2ct", "x2ctgan"])
def geometry(request):
    return ProjectionGeometry.from_preset(request.param)


def _ramp_maps(h, w):
    """Per-view feature maps whose channel 0 is the column index and channel 1 the row index."""
    cols = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w)
    rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    m = torch.stack((cols, rows))[None]  # (1, 2, h, w)
    return [m.clone() for _ in VIEWS]


@pytest.mark.parametrize("shape", [(16, 16), (128, 128), (40, 24)])
def test_sampled_coordinates_equal_the_geometry_projection(geometry, shape):
    """Bilinear sampling of a linear ramp is exact, so the sampled (column, row) must equal project()."""
    sampler = PerspectiveSampler(geometry).double()
    g = geometry.centred().with_detector_shape(shape)
    rng = np.random.default_rng(0)
    points = rng.uniform(-150, 150, size=(1, 200, 3))
    out = sampler(_ramp_maps(*shape), torch.as_tensor(points)).numpy()[0]  # (N, 2 views * 2)
    for v, view in enumerate(VIEWS):
        xy = g.project(points[0], view)
        inside = (xy[:, 0] >= 0) & (xy[:, 0] <= shape[1] - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= shape[0] - 1)
        assert inside.sum() > 100
        np.testing.assert_allclose(out[inside, 2 * v : 2 * v + 2], xy[inside], atol=1e-6)


@pytest.mark.parametrize("shape", [(16, 16), (128, 128)])
def test_one_hot_feature_at_the_projected_pixel_centre(geometry, shape):
    """Points built on the ray through a pixel centre read that pixel's one-hot feature with weight 1."""
    sampler = PerspectiveSampler(geometry)
    g = geometry.centred().with_detector_shape(shape)
    rng = np.random.default_rng(1)
    for view in VIEWS:
        for _ in range(5):
            col, row = int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0]))
            pixel = g.pixel_to_world(view, np.array([col, row], dtype=float))
            t = rng.uniform(0.55, 0.85)  # between the source and the detector, through the volume
            point = g.source_mm(view) + t * (pixel - g.source_mm(view))
            maps = [torch.zeros(1, 1, *shape) for _ in VIEWS]
            maps[VIEWS.index(view)][0, 0, row, col] = 1.0
            out = sampler(maps, torch.tensor(point, dtype=torch.float32)[None, None])[0, 0]
            assert out[VIEWS.index(view)] >= 0.99, (view, col, row, out)
            assert out[1 - VIEWS.index(view)] == 0  # the other view reads its own, all-zero map


def test_zero_off_the_detector_and_behind_the_source():
    g = ProjectionGeometry.from_preset("perx2ct")
    sampler = PerspectiveSampler(g)
    maps = [torch.ones(1, 3, 16, 16) for _ in VIEWS]
    far_off = torch.tensor([[[0.0, 0.0, 600.0]]])  # 600 mm above the isocentre: off both detectors
    behind = torch.tensor([[[5.0, 900.0, 0.0]]])  # beyond the PA source (700 mm posterior)
    assert torch.all(sampler(maps, far_off) == 0)
    assert torch.all(sampler(maps, behind)[..., :3] == 0)
    inside = sampler(maps, torch.zeros(1, 1, 3))
    torch.testing.assert_close(inside, torch.ones(1, 1, 6))


def test_gradients_reach_the_features_and_repr_names_the_geometry():
    sampler = PerspectiveSampler(ProjectionGeometry.from_preset("perx2ct"))
    maps = [torch.rand(2, 4, 16, 16, requires_grad=True) for _ in VIEWS]
    sampler(maps, torch.rand(2, 50, 3) * 200 - 100).sum().backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in maps)
    assert "sad_mm=700" in repr(sampler) and "sid_mm=949" in repr(sampler)
    with pytest.raises(ValueError, match="expected 2 feature maps"):
        sampler(maps[:1], torch.zeros(2, 1, 3))
    with pytest.raises(ValueError, match="unknown view"):
        PerspectiveSampler(ProjectionGeometry.from_preset("perx2ct"), views=("ap",))


@pytest.mark.parametrize("view", VIEWS)
def test_sampling_a_real_drr_at_a_bead_returns_its_peak(view):
    """The ITK DRR of a bead, used as a feature map, read at the bead's 3D position gives the DRR's peak."""
    from scripts.projection.itk_renderer import ray_cast_drr

    g = ProjectionGeometry.from_preset("perx2ct")
    spacing = 2.0
    n = 96
    origin = -(n - 1) / 2 * spacing * np.ones(3)  # volume centred on the isocentre (origin)
    idx = np.indices((n, n, n)).transpose(1, 2, 3, 0) * spacing + origin
    bead = np.array([23.0, -31.0, 17.0])  # LPS mm, off-centre on every axis
    vol = np.full((n, n, n), -1000.0, dtype=np.float32)
    vol[np.linalg.norm(idx - bead, axis=-1) <= 5.0] = 3000.0
    drr = ray_cast_drr(vol, (spacing,) * 3, origin, g, view)  # (rows, cols)
    maps = [torch.zeros(1, 1, *drr.shape) for _ in VIEWS]
    maps[VIEWS.index(view)][0, 0] = torch.as_tensor(drr)
    value = PerspectiveSampler(g)(maps, torch.tensor(bead, dtype=torch.float32)[None, None])[0, 0, VIEWS.index(view)]
    assert value >= 0.97 * drr.max(), (float(value), float(drr.max()))


def test_official_camera_preset_reproduces_the_official_pinhole_camera():
    """Geometry preset ``perx2ct_official`` + ``align_corners=True``, sampling maps in this bundle's image convention,
    equals the official camera (oracle README's closed form, matched there to the official matrices to 1.7e-5) on the
    official-orientation maps (official PA = fliplr(bundle PA), official lateral = rot90(bundle lateral, 1)):
    official world p = (-z, y, x) / 320 mm; PA d = (1 - p1) tan 30, (x, y) = (-p2 / d, p0 / d); lateral
    d = (1 - p2) tan 30, (x, y) = (p0 / d, -p1 / d); grid_sample align_corners=True, no mask."""
    g = ProjectionGeometry.from_preset("perx2ct_official")
    sampler = PerspectiveSampler(g, align_corners=True, visibility_mask=False).double()
    h = w = 16
    points = np.random.default_rng(3).uniform(-160, 160, size=(1, 400, 3))  # the 320 mm cube
    out = sampler(_ramp_maps(h, w), torch.as_tensor(points)).numpy()[0]
    x, y, z = points[0].T
    p0, p1, p2 = -z / 320, y / 320, x / 320
    tan30 = np.tan(np.radians(30.0))
    d = (1 - p1) * tan30
    pa_u, pa_v = p2 / d, p0 / d  # official (-p2/d, p0/d) on fliplr(map): bundle column coordinate negated
    d = (1 - p2) * tan30
    lat_u, lat_v = p1 / d, p0 / d  # official (x, y) = (p0/d, -p1/d) on rot90(map, 1): bundle (col, row) = (-y, x)
    for v, (u_, v_) in enumerate(((pa_u, pa_v), (lat_u, lat_v))):
        inside = (np.abs(u_) <= 1) & (np.abs(v_) <= 1)
        assert inside.sum() > 200
        expected = np.stack(((u_ + 1) / 2 * (w - 1), (v_ + 1) / 2 * (h - 1)), -1)  # align_corners=True pixel indices
        np.testing.assert_allclose(out[inside, 2 * v : 2 * v + 2], expected[inside], atol=1e-9)
    # points beyond the virtual detector plane (433 mm from the PA source: y < -113 mm) are sampled, not masked
    far = torch.tensor([[[0.0, -150.0, 0.0]]], dtype=torch.float64)
    maps = [torch.ones(1, 1, h, w, dtype=torch.float64) for _ in VIEWS]
    assert float(sampler(maps, far)[0, 0, 0]) == 1.0
    assert float(sampler.with_options(visibility_mask=True)(maps, far)[0, 0, 0]) == 0.0


def test_sampler_options():
    s = PerspectiveSampler(ProjectionGeometry.from_preset("perx2ct"))
    assert s.options() == {"align_corners": False, "visibility_mask": True}
    t = s.with_options(align_corners=True)
    assert t.options() == {"align_corners": True, "visibility_mask": True} and t.views == s.views
    assert "align_corners=True" in repr(t)
    with pytest.raises(ValueError, match="unknown sampler options"):
        s.with_options(mode="nearest")
    # align_corners=False: +-1 on the outer edges; True: on the outer pixel centres
    maps = [torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4).contiguous() for _ in VIEWS]
    g = s.geometry
    edge = torch.tensor([[[g.detector_size_mm[1] / 2 / g.magnification, 0.0, 0.0]]])  # PA: projects on the right edge
    assert float(s(maps, edge)[0, 0, 0]) == pytest.approx(1.5, abs=1e-4)  # half of pixel 3, half zero padding
    assert float(t(maps, edge)[0, 0, 0]) == pytest.approx(3.0, abs=1e-4)  # the last pixel's centre
