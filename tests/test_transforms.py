"""NormalizeCT (cube cut before resampling, symmetric and official crops), CTTarget (point and area resampling),
HUToInt16d. Small synthetic volumes only: fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from scipy.ndimage import map_coordinates
from scripts.ct.lps import lps_affine, lps_to_ras
from scripts.frame import FRAME
from scripts.transforms.ct import HUToInt16d, NormalizeCT
from scripts.transforms.target import CTTarget, area_downsample, point_downsample


def _volume(shape, spacing, origin, seed=0, meta=None) -> MetaTensor:
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 300, shape).astype(np.float32)
    aff = lps_to_ras(lps_affine(spacing, origin))
    return MetaTensor(torch.from_numpy(a)[None], affine=torch.as_tensor(aff), meta=dict(meta or {}))


# ------------------------------------------------------------------------------------ NormalizeCT
def test_normalize_is_trilinear_at_the_cube_voxel_centres():
    """Against scipy's map_coordinates (order 1) at each output voxel's world position; outside: air."""
    vol = _volume((90, 70, 40), (2.0, 2.5, 5.0), (-80.0, -60.0, 300.0))
    out = NormalizeCT(spacing_mm=4.0, size_mm=200.0)(vol)  # 50^3 voxels of 4 mm
    assert out.shape == (1, 50, 50, 50)
    a_in, a_out = vol.numpy()[0], out.numpy()[0]
    # the cube is centred on the input's centre
    centre_in = lps_affine((2.0, 2.5, 5.0), (-80.0, -60.0, 300.0)) @ [44.5, 34.5, 19.5, 1]
    np.testing.assert_allclose(lps_to_ras(out.affine.numpy()) @ [24.5, 24.5, 24.5, 1], centre_in, atol=1e-9)
    np.testing.assert_allclose(out.meta["cube_centre_lps_mm"], centre_in[:3])
    idx = np.stack(np.meshgrid(*[np.arange(50)] * 3, indexing="ij"), -1).reshape(-1, 3)
    world = lps_to_ras(out.affine.numpy()) @ np.c_[idx, np.ones(len(idx))].T
    u = (np.linalg.inv(lps_affine((2.0, 2.5, 5.0), (-80.0, -60.0, 300.0))) @ world)[:3]
    inside = np.all((u >= 0) & (u <= np.asarray(a_in.shape)[:, None] - 1), axis=0)
    ref = map_coordinates(a_in.astype(np.float64), u[:, inside], order=1)
    np.testing.assert_allclose(a_out.reshape(-1)[inside], ref, atol=1e-3)
    far = np.any((u < -0.5 - 1e-6) | (u > np.asarray(a_in.shape)[:, None] - 0.5 + 1e-6), axis=0)
    assert far.any() and np.all(a_out.reshape(-1)[far] == -1024.0)
    assert out.meta["crop"] == "symmetric"


def test_normalize_reads_only_the_cube():
    """A huge field of view (2 mm pixels over 1 m) costs only the cube: cut before resampling."""
    vol = _volume((500, 500, 60), (2.0, 2.0, 2.5), (-500.0, -500.0, 0.0))
    big = NormalizeCT(spacing_mm=2.0)(vol)
    assert big.shape == (1, 160, 160, 160)
    # the same as normalising the part of the input inside the cube (plus a voxel of margin)
    part = MetaTensor(
        vol[:, 168:332, 168:332], affine=torch.as_tensor(lps_to_ras(lps_affine((2, 2, 2.5), (-164, -164, 0))))
    )
    np.testing.assert_allclose(big.numpy(), NormalizeCT(spacing_mm=2.0)(part).numpy(), atol=1e-3)


@pytest.mark.parametrize("toward", ["I", "S"])
def test_official_crop_keeps_the_last_slices_in_instance_number_order(toward):
    vol = _volume(
        (40, 40, 200), (8.0, 8.0, 2.5), (-160.0, -160.0, -100.0), meta={"instance_number_increases_toward": toward}
    )
    out = NormalizeCT(crop="official")(vol)  # 500 mm long: 180 mm dropped at the first end
    z = lps_to_ras(out.affine.numpy()) @ np.array([[0, 0, 0, 1], [0, 0, 319, 1]]).T
    if toward == "I":  # InstanceNumber grows toward the feet: the inferior 320 mm are kept
        np.testing.assert_allclose(z[2], [-100.0, 219.0])
        assert "inferior end kept" in out.meta["crop"]
    else:
        np.testing.assert_allclose(z[2], [397.5 - 319, 397.5])
        assert "superior end kept" in out.meta["crop"]
    sym = NormalizeCT()(vol)
    np.testing.assert_allclose(lps_to_ras(sym.affine.numpy())[2, 3] + 159.5, -100 + 497.5 / 2)  # symmetric: centred
    # without the slice order (a NIfTI), the symmetric rule is used and said
    plain = NormalizeCT(crop="official")(_volume((40, 40, 200), (8.0, 8.0, 2.5), (-160.0, -160.0, -100.0)))
    assert plain.meta["crop"].startswith("symmetric") and torch.equal(plain.affine, sym.affine)


# ------------------------------------------------------------------------------------ CTTarget
def test_point_target_is_trilinear_at_the_output_voxel_centres():
    """The default (official) target: torch's trilinear interpolation with align_corners=False, no antialiasing."""
    cube = _volume((40, 40, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    pt = point_downsample(cube, (16, 16, 16))
    ref = F.interpolate(cube.as_tensor()[None], size=(16, 16, 16), mode="trilinear", align_corners=False)[0]
    np.testing.assert_allclose(pt.numpy(), ref.numpy(), atol=1e-3)
    np.testing.assert_allclose(pt.meta["spacing"], 2.5)
    y = CTTarget(output_size=16)(cube)
    np.testing.assert_allclose(y.numpy(), FRAME.hu_to_target(ref.numpy()), atol=1e-6)
    assert y.meta["target_resampling"] == "point"
    # area: the mean of each 2.5 mm box, here checked on a 5 -> 2 ratio where boxes are whole voxel pairs + halves
    ar = CTTarget(output_size=16, mode="area")(cube)
    assert ar.meta["target_resampling"] == "area"
    np.testing.assert_allclose(ar.numpy(), FRAME.hu_to_target(area_downsample(cube, (16, 16, 16)).numpy()), atol=1e-6)
    assert float(ar.std()) < float(y.std())  # averaging smooths the noise, point sampling keeps it
    with pytest.raises(ValueError, match="mode"):
        CTTarget(mode="nearest")


def test_hu_to_int16_rounds_and_keeps_the_grid():
    vol = _volume((4, 4, 4), (1.0, 1.0, 1.0), (5.0, 6.0, 7.0))
    vol[0, 0, 0, 0] = 40000.0
    vol[0, 0, 0, 1] = -2.5
    d = HUToInt16d(keys="ct")({"ct": vol})
    x = d["ct_1mm"]
    assert x.dtype == torch.int16 and torch.equal(x.affine, vol.affine) and d["ct"] is vol
    assert int(x[0, 0, 0, 0]) == 32767 and int(x[0, 0, 0, 1]) == -2  # round half to even, clipped
    np.testing.assert_array_equal(x.numpy()[0, 1:], np.round(vol.numpy()[0, 1:]))
