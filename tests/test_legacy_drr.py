"""The official PerX2CT preprocessing as an option of the data pipeline (for the authors' weights), each step
against an independent computation:

* truncation to 8 bits (``(x / max * 255).astype(np.uint8)``, ``data_preprocessing/2_xraypro.py:44-45`` @ be4c354)
  against rounding, on known values;
* matplotlib's grey colormap (``plt.imsave(cmap=gray)``, ``2_xraypro.py:53``): the 24 levels the oracle lists
  (matplotlib 3.5.1) and, where matplotlib is installed, matplotlib itself on a stretched image;
* the Lanczos resize (``Image.ANTIALIAS`` = LANCZOS, ``3_make_h5_dataset.py:105-108``) against Pillow called directly;
* HU + 24 (``plastimatch adjust --pw-linear "0, -1000"`` on HU + 1024 data, ``2_xraypro.py:83``) against the DRR
  of the shifted volume;
* the cubic 1 mm resampling (``ndimage.zoom`` order 3, ``mode='nearest'``, ``1_ctpro_wo_mask.py:29``) against
  ``scipy.ndimage.map_coordinates`` on the same points;
* ``configs/prepare.json``: the legacy geometry preset selects the official pipeline and makes its DRRs with the
  ``perx2ct`` camera.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image
from scripts.ct.lps import lps_affine, lps_to_ras
from scripts.projection.geometry import ProjectionGeometry, data_pipeline, drr_geometry, preset_name
from scripts.transforms.ct import NormalizeCT
from scripts.transforms.drr import DRR
from scripts.transforms.radiograph import matplotlib_gray_levels, postprocess_radiograph

REPO = Path(__file__).resolve().parents[1]
#: Grey levels that matplotlib 3.5.1's plt.imsave(cmap=gray) + OpenCV re-read return one lower (the oracle's README).
ORACLE_LOWERED = [
    33,
    37,
    41,
    45,
    49,
    53,
    57,
    61,
    66,
    74,
    82,
    90,
    98,
    106,
    114,
    122,
    132,
    148,
    164,
    180,
    196,
    212,
    228,
    244,
]


def _volume(shape=(30, 26, 20), spacing=(1.7, 1.3, 2.5), origin=(-20.0, -15.0, -30.0), seed=0) -> MetaTensor:
    vol = np.random.default_rng(seed).normal(0, 300, shape).astype(np.float32)
    affine = lps_to_ras(lps_affine(np.asarray(spacing), np.asarray(origin)))
    return MetaTensor(torch.from_numpy(vol)[None], affine=torch.as_tensor(affine))


def test_truncation_not_rounding():
    raw = np.array([[0.0, 0.4, 0.99, 1.5, 2.0, 3.0, 4.0, 100.0]], dtype=np.float32)
    # x / 100 * 255 = 0, 1.02, 2.5245, 3.825, 5.1, 7.65, 10.2, 255
    bundle = postprocess_radiograph(raw, None, True, 8, "bundle").numpy() * 255
    assert np.allclose(bundle, [[0, 1, 3, 4, 5, 8, 10, 255]], atol=1e-4)  # rounding
    levels = (raw / raw.max() * 255).astype(np.uint8)  # the official expression
    assert levels.tolist() == [[0, 1, 2, 3, 5, 7, 10, 255]]
    official = postprocess_radiograph(raw, None, True, 8, "official").numpy() * 255
    assert np.allclose(official, matplotlib_gray_levels(levels), atol=1e-4)
    assert np.allclose(official, [[0, 1, 2, 3, 5, 7, 10, 255]], atol=1e-4)  # none of these levels is lowered


def test_matplotlib_gray_levels_are_the_oracle_s():
    levels = np.arange(256, dtype=np.uint8)
    out = matplotlib_gray_levels(levels)
    assert [int(v) for v in levels if out[v] != v] == ORACLE_LOWERED
    assert all(int(out[v]) == v - 1 for v in ORACLE_LOWERED)


def test_matplotlib_gray_levels_against_matplotlib():
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib (requirements-dev.txt) checks the colormap")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for img in (
        np.arange(256, dtype=np.uint8).reshape(16, 16),
        np.linspace(10, 200, 400).astype(np.uint8).reshape(20, 20),
    ):
        buf = io.BytesIO()
        plt.imsave(buf, img, cmap=plt.cm.gray, format="png")
        buf.seek(0)
        stored = np.asarray(Image.open(buf))[..., 0]  # cv2.split(image)[0]: one of three equal channels
        assert np.array_equal(matplotlib_gray_levels(img), stored)


def test_lanczos_resize_is_pillow_s():
    raw = np.random.default_rng(1).random((320, 320)).astype(np.float32) * 7
    out = postprocess_radiograph(raw, (128, 128), True, 8, "official").numpy()
    levels = matplotlib_gray_levels((raw / raw.max() * 255).astype(np.uint8))
    ref = np.asarray(Image.fromarray(levels).resize((128, 128), Image.LANCZOS)).astype(np.float32) / 255
    assert out.shape == (128, 128) and np.array_equal(out, ref)
    bundle = postprocess_radiograph(raw, (128, 128), True, 8, "bundle").numpy()
    assert np.abs(bundle - ref).max() > 1.5 / 255  # the bundle's bilinear resize is another filter


def test_drr_official_pipeline_casts_hu_plus_24():
    img = _volume(shape=(24, 24, 24), spacing=(2.0, 2.0, 2.0), origin=(-23.0, -23.0, -23.0))
    geometry = ProjectionGeometry.from_preset("perx2ct").with_detector_shape((64, 64))
    official = DRR(geometry, raw=True, pipeline="official")(img)
    shifted = MetaTensor(img.as_tensor() + 24.0, affine=img.affine)
    bundle_of_shifted = DRR(geometry, raw=True)(shifted)
    plain = DRR(geometry, raw=True)(img)
    for a, b, c in zip(official, bundle_of_shifted, plain):
        assert torch.equal(a.as_tensor(), b.as_tensor())
        assert not torch.allclose(a.as_tensor(), c.as_tensor())
    assert official[0].meta["pipeline"] == "official"
    with pytest.raises(ValueError, match="quantize_bits must be 8"):
        DRR(geometry, quantize_bits=None, pipeline="official")(img)


def test_cubic_resampling_is_scipy_s():
    from scipy import ndimage

    for shape in ((30, 26, 20), (80, 70, 30)):  # the cube beyond the input, and inside it (a cropped read)
        img = _volume(shape=shape)
        out = NormalizeCT(spacing_mm=1.0, size_mm=40.0, interpolation="cubic")(img)
        assert out.meta["interpolation"] == "cubic"
        vol = img[0].numpy().astype(np.float64)
        spacing, origin = np.array([1.7, 1.3, 2.5]), np.array([-20.0, -15.0, -30.0])
        offsets = np.arange(40) - 19.5
        grid = np.meshgrid(
            *[(out.meta["cube_centre_lps_mm"][a] + offsets - origin[a]) / spacing[a] for a in range(3)], indexing="ij"
        )
        ref = ndimage.map_coordinates(vol, grid, order=3, mode="nearest")
        inside = np.all([(g >= -0.5) & (g <= n - 0.5) for g, n in zip(grid, shape)], axis=0)
        ref[~inside] = -1024.0
        assert np.abs(out[0].numpy() - ref).max() < 2e-3  # float32 storage of values up to ~1500 HU
        linear = NormalizeCT(spacing_mm=1.0, size_mm=40.0)(img)[0].numpy()
        assert np.abs(linear - ref)[inside].mean() > 10  # trilinear is another interpolation


def test_legacy_geometry_selects_the_official_pipeline_and_the_drr_camera():
    from monai.bundle import ConfigParser

    legacy = ProjectionGeometry.from_preset("perx2ct_official").with_isocentre((1.0, 2.0, 3.0))
    assert preset_name(legacy) == "perx2ct_official" and data_pipeline(legacy) == "official"
    assert drr_geometry(legacy) == ProjectionGeometry.from_preset("perx2ct", isocentre_mm=(1.0, 2.0, 3.0))
    normal = ProjectionGeometry.from_preset("perx2ct")
    assert data_pipeline(normal) == "bundle" and drr_geometry(normal) is normal

    for overrides, expected in (
        ({}, ("bundle", "symmetric", "linear", "perx2ct")),
        ({"geometry_preset": "perx2ct_official"}, ("official", "official", "cubic", "perx2ct")),
        ({"pipeline": "official"}, ("official", "official", "cubic", "perx2ct")),
        ({"geometry": legacy}, ("official", "official", "cubic", "perx2ct")),  # as train.json passes its geometry
    ):
        parser = ConfigParser()
        parser.read_config(str(REPO / "configs" / "prepare.json"))
        for k, v in overrides.items():
            parser[k] = v
        chain = parser.get_parsed_content("preprocessing").transforms
        normalise, drr = chain[1].normalizer, chain[3].drr
        got = (drr.pipeline, normalise.crop, normalise.interpolation, preset_name(drr.geometry))
        assert got == expected, overrides
