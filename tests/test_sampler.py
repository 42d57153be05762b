"""The perspective sampler reads each X-ray exactly where the DRR geometry projects a point."""

import numpy as np
import pytest
import torch

from scripts.geometry import ProjectionGeometry
from scripts.networks import PerspectiveSampler

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
    from scripts.drr import ray_cast_drr

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
