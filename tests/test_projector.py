"""The torch projector against the ITK reference DRR on a real chest CT, beads against the geometry,
gradients by finite differences, and the invariances its batching and chunking must keep."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scripts.ct.lps import affine_to_lps_grid
from scripts.frame import FRAME
from scripts.projection.attenuation import hu_to_attenuation
from scripts.projection.geometry import ProjectionGeometry
from scripts.projection.itk_renderer import ray_cast_drr, volume_centre_mm
from scripts.projection.torch_renderer import Projector, project, project_hu, rigid_motion
from scripts.transforms.ct import LoadCT, NormalizeCT
from scripts.transforms.drr import DRR
from scripts.transforms.target import CTTarget


def _stats(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    r = float(np.corrcoef(ours.ravel(), ref.ravel())[0, 1])
    return r, float(np.abs(ours - ref).mean() / ref.max() * 100)


@pytest.fixture(scope="module")
def cube_1mm(example_raw_dir):
    """LIDC-IDRI-0001 as the prepared 1 mm, 320 mm cube (HU MetaTensor (1, 320, 320, 320))."""
    return NormalizeCT()(LoadCT()(example_raw_dir / "LIDC-IDRI-0001"))


def _parity(vol_hu: np.ndarray, spacing, origin, geometry: ProjectionGeometry, label: str) -> None:
    mu = hu_to_attenuation(vol_hu)
    with torch.no_grad():
        ours = project(torch.from_numpy(mu)[None, None], spacing, origin, geometry, ("pa", "lateral"))[0].numpy()
    for v, view in enumerate(("pa", "lateral")):
        ref = ray_cast_drr(None, spacing, origin, geometry, view, attenuation=mu)
        assert ours[v].shape == ref.shape == geometry.detector_shape
        r, mad = _stats(ours[v], ref)
        print(f"{label} {view}: r={r:.6f} MAD={mad:.3f}% of the ITK max {ref.max():.3f}")
        assert r >= 0.999 and mad <= 1.0, f"{label} {view}: r={r:.6f}, MAD={mad:.3f}%"


def test_parity_1mm_cube_320(cube_1mm):
    """320 x 320 DRRs of the 1 mm cube (the prepared DRRs' source): Pearson r >= 0.999, MAD <= 1 % of the max."""
    spacing, origin = affine_to_lps_grid(cube_1mm.affine)
    vol = cube_1mm.numpy()[0]
    g = ProjectionGeometry.from_preset("perx2ct", isocentre_mm=tuple(volume_centre_mm(vol.shape, spacing, origin)))
    _parity(vol, spacing, origin, g, "1 mm cube, 320^2")


def test_parity_target_grid_128(cube_1mm):
    """128 x 128 DRRs of the 128^3 target grid (2.5 mm, back to HU): the same thresholds."""
    target = CTTarget()(cube_1mm)
    spacing, origin = affine_to_lps_grid(target.affine)
    vol = FRAME.target_to_hu(target.numpy()[0])
    assert vol.shape == (FRAME.shape,) * 3
    iso = volume_centre_mm(vol.shape, spacing, origin)
    g = ProjectionGeometry.from_preset("perx2ct", isocentre_mm=tuple(iso), detector_shape=(128, 128))
    _parity(vol, spacing, origin, g, "128^3 target, 128^2")


def test_drr_transform_backends_agree(cube_1mm):
    """The DRR transform with either backend (same post-processing) gives the same network inputs, to the
    parity thresholds (from the 128^3 target grid, rendered at 320^2, normalised, 8-bit, 128^2)."""
    hu = FRAME.target_to_hu(CTTarget()(cube_1mm))  # a MetaTensor keeps its affine
    for a, b in zip(DRR(backend="itk")(hu), DRR(backend="torch")(hu)):
        assert a.shape == b.shape == (1, 128, 128)
        assert a.meta["view"] == b.meta["view"]
        np.testing.assert_allclose(np.asarray(a.affine), np.asarray(b.affine))
        r, mad = _stats(b.numpy(), a.numpy())
        print(f"DRR transform {a.meta['view']}: r={r:.6f} MAD={mad:.3f}%")
        assert r >= 0.999 and mad <= 1.0, (a.meta["view"], r, mad)
    with pytest.raises(ValueError, match="unknown DRR backend"):
        DRR(backend="cuda")


@pytest.mark.parametrize(
    "preset, detector, scale",
    [("perx2ct", (320, 320), 1.0), ("perx2ct", (128, 128), 2.5), ("x2ctgan", (128, 128), 2.5)],
)
def test_beads_land_at_projection(preset, detector, scale):
    """A one-voxel bead's DRR centroid lies within 0.25 px of ProjectionGeometry.project, both views
    (voxels of about 1 mm at 320^2 and 2.5 mm at 128^2, the grids each resolution is rendered from)."""
    spacing = np.array([1.0, 1.25, 1.5]) * scale
    shape = tuple(int(n / scale) for n in (96, 80, 64))  # about 96 x 100 x 96 mm
    origin = np.array([-40.0, -55.0, -50.0])
    iso = np.array([5.0, -8.0, -2.0])
    beads = np.array([[0, 0, 0], [30, -25, 30], [-35, 30, -40]], dtype=np.float64) + iso
    vols = torch.zeros(len(beads), 1, *shape)
    for b, p in enumerate(beads):
        idx = np.round((p - origin) / spacing).astype(int)
        vols[b, 0, idx[0], idx[1], idx[2]] = 1.0
        beads[b] = origin + idx * spacing  # the voxel centre
    g = ProjectionGeometry.from_preset(preset, isocentre_mm=tuple(iso), detector_shape=detector)
    drr = project(vols, spacing, origin, g, ("pa", "lateral")).numpy()
    rr, cc = np.meshgrid(np.arange(detector[0]), np.arange(detector[1]), indexing="ij")
    worst = 0.0
    for v, view in enumerate(("pa", "lateral")):
        for b, p in enumerate(beads):
            img = drr[b, v]
            assert img.sum() > 0, (view, b)
            col, row = (img * cc).sum() / img.sum(), (img * rr).sum() / img.sum()
            exp_col, exp_row = g.project(p, view)
            err = float(np.hypot(col - exp_col, row - exp_row))
            worst = max(worst, err)
            assert (
                err <= 0.25
            ), f"{preset} {detector} {view} bead {b}: centroid ({col:.3f}, {row:.3f}) vs ({exp_col:.3f}, {exp_row:.3f})"
    print(f"beads {preset} {detector}: worst centroid error {worst:.3f} px")


def test_gradcheck():
    """d DRR / d volume by finite differences (float64), with a motion, a mask-free tiny geometry and
    chunks of two rays (so the checkpointed chunk path is what is checked)."""
    torch.manual_seed(0)
    vol = torch.rand(1, 1, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    spacing, origin = (30.0, 35.0, 40.0), (-60.0, -52.5, -40.0)
    g = ProjectionGeometry.from_preset("perx2ct", detector_shape=(3, 4))
    motion = rigid_motion((2.0, -3.0, 4.0), (3.0, -2.0, 1.0))

    def fn(x):
        return project(x, spacing, origin, g, ("pa", "lateral"), motion=motion, max_samples=10)

    assert torch.autograd.gradcheck(fn, (vol,), eps=1e-6, atol=1e-6, fast_mode=True)
    assert float(fn(vol).abs().sum()) > 0


def test_batching_chunking_and_motion_invariance():
    """Chunk size does not change the result; a batch equals its items rendered one by one (per-item
    origin and motion); a pure shift of the patient equals shifting the volume's origin."""
    torch.manual_seed(1)
    vols = torch.rand(2, 1, 24, 20, 16) * 0.03
    spacing = torch.tensor([[4.0, 5.0, 6.0], [5.0, 4.0, 6.0]])
    origin = torch.tensor([[-46.0, -47.5, -45.0], [-50.0, -40.0, -42.0]])
    g = ProjectionGeometry.from_preset("perx2ct", detector_shape=(40, 48))
    motions = np.stack([rigid_motion((1, 2, 3), (4, -5, 6)), rigid_motion((-3, 0, 2), (0, 2, -1))])
    full = project(vols, spacing, origin, g, motion=motions)
    assert full.shape == (2, 2, 40, 48)
    torch.testing.assert_close(project(vols, spacing, origin, g, motion=motions, max_samples=100), full)
    for b in range(2):
        one = project(vols[b : b + 1], spacing[b], origin[b], g, motion=motions[b])
        torch.testing.assert_close(one[0], full[b])
    shift = rigid_motion((0, 0, 0), (7.0, -3.0, 5.0))
    moved = project(vols[:1], spacing[0], origin[0], g, motion=shift)
    torch.testing.assert_close(moved, project(vols[:1], spacing[0], origin[0] + torch.tensor([7.0, -3.0, 5.0]), g))


def test_module_hu_and_errors():
    g = ProjectionGeometry.from_preset("perx2ct", detector_shape=(8, 8))
    hu = torch.full((1, 1, 10, 10, 10), 0.0)
    proj = Projector(g, views=("lateral",), hu=True)
    assert "hu=True" in repr(proj)
    out = proj(hu, (10.0, 10.0, 10.0), (-45.0, -45.0, -45.0))
    torch.testing.assert_close(out, project_hu(hu, (10.0,) * 3, (-45.0,) * 3, g, ("lateral",)))
    # water (0 HU -> mu_w = 0.022 per cm): the central rays cross 10 planes of 1 cm
    centre = float(out[0, 0, 3:5, 3:5].mean())
    assert centre == pytest.approx(0.022 * 10.0, rel=0.01)
    with pytest.raises(ValueError, match=r"\(B, 1, X, Y, Z\)"):
        project(torch.zeros(1, 10, 10, 10), (1.0,) * 3, (0.0,) * 3, g)
    with pytest.raises(ValueError, match="spacing_mm must be"):
        project(torch.zeros(1, 1, 4, 4, 4), (1.0, 1.0), (0.0,) * 3, g)
    with pytest.raises(ValueError, match="oblique"):
        project(
            torch.zeros(1, 1, 4, 4, 4), (1.0,) * 3, (0.0,) * 3, g, ("pa",), motion=rigid_motion((0, 0, 50), (0, 0, 0))
        )
