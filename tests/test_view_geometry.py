"""Each view's own acquisition geometry (issue 19, item 1): per-view fields of the one geometry object, read from
DX DICOM attributes or explicit options, and the same numbers in geometry.project(), the torch projector, the ITK DRR
and the network's sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scripts.networks.sampler import PerspectiveSampler
from scripts.projection.acquisition import parse_geometry_option, read_acquisition
from scripts.projection.geometry import GEOMETRY_PRESETS, ProjectionGeometry
from scripts.projection.itk_renderer import ray_cast_drr
from scripts.projection.torch_renderer import project_hu
from scripts.transforms.acquisition import ReadAcquisitiond
from scripts.transforms.radiograph import LoadRadiographsd

SHAPE = (180, 160, 200)
ORIGIN = np.array([-90.0, -70.0, -110.0])  # LPS centre of voxel [0, 0, 0], 1 mm voxels
BEADS = np.array([[40.0, -30.0, 35.0], [-35.0, 45.0, -50.0], [12.0, 20.0, 60.0]])
ISOCENTRE = (5.0, 3.0, -4.0)


def clinical_geometry() -> ProjectionGeometry:
    """A non-default per-view geometry: each view its own SAD/SID, a non-square detector, an offset; lateral from
    the patient's right (ViewPosition LL)."""
    g = ProjectionGeometry.from_preset("perx2ct", isocentre_mm=ISOCENTRE, detector_shape=(256, 256))
    g = g.with_view("pa", sad_mm=1000.0, sid_mm=1300.0, detector_size_mm=(400.0, 360.0), detector_offset_mm=(12, -8))
    return g.with_view(
        "lateral",
        normal=(-1.0, 0.0, 0.0),
        sad_mm=900.0,
        sid_mm=1150.0,
        detector_size_mm=(380.0, 420.0),
        detector_offset_mm=(-10.0, 6.0),
    )


@pytest.fixture(scope="module")
def bead_volume() -> np.ndarray:
    """Gaussian beads (sigma 1.5 mm, peak +4000 HU) on -1000 HU: smooth blobs whose projections' centroids are the
    projections of their centres."""
    x, y, z = (ORIGIN[i] + np.arange(SHAPE[i]) for i in range(3))
    xx, yy, zz = np.meshgrid(x, y, z, indexing="ij")
    vol = np.full(SHAPE, -1000.0, dtype=np.float32)
    for b in BEADS:
        r2 = (xx - b[0]) ** 2 + (yy - b[1]) ** 2 + (zz - b[2]) ** 2
        vol += (4000.0 * np.exp(-r2 / (2 * 1.5**2))).astype(np.float32)
    return vol


def _centroid(img: np.ndarray, xy: np.ndarray, half: int = 5) -> np.ndarray:
    c0, r0 = np.round(xy).astype(int)
    w = img[r0 - half : r0 + half + 1, c0 - half : c0 + half + 1].astype(np.float64)
    yy, xx = np.mgrid[r0 - half : r0 + half + 1, c0 - half : c0 + half + 1]
    assert w.sum() > 0, f"no bead signal near {xy}"
    return np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])


@pytest.fixture(scope="module")
def bead_drrs(bead_volume):
    """Torch and ITK DRRs of the beads through the clinical geometry (air at exactly zero attenuation)."""
    g = clinical_geometry()
    vol = torch.from_numpy(bead_volume)[None, None]
    torch_drr = project_hu(vol, (1.0,) * 3, ORIGIN, g, ("pa", "lateral"), hu_threshold=-1001.0)[0].numpy()
    itk_drr = np.stack([ray_cast_drr(bead_volume, (1.0,) * 3, ORIGIN, g, v, hu_threshold=-1001.0) for v in g.views])
    return g, torch_drr, itk_drr


# ------------------------------------------------------------------ the geometry object
def test_presets_unchanged_without_overrides():
    """A preset has no per-view fields: its dict is as before, and every view answers the geometry's values."""
    for name in GEOMETRY_PRESETS:
        g = ProjectionGeometry.from_preset(name)
        assert not g.has_view_overrides
        for view, entry in g.to_dict()["views"].items():
            assert set(entry) == {"normal", "col", "row"}
            a = g.view_acquisition(view)
            assert (a.sad_mm, a.sid_mm, a.detector_size_mm, a.detector_offset_mm) == (
                g.sad_mm,
                g.sid_mm,
                g.detector_size_mm,
                (0.0, 0.0),
            )
            assert g.view_pixel_spacing_mm(view) == g.pixel_spacing_mm and g.view_magnification(view) == g.magnification


def test_view_overrides_are_used_by_every_method():
    g = clinical_geometry().centred()
    assert g.has_view_overrides
    pa = g.view("pa")
    np.testing.assert_allclose(g.source_mm("pa"), [0, 1000, 0])
    np.testing.assert_allclose(g.detector_centre_mm("pa"), [12, -300, 8])  # offset: +12 along col (x), -8 along row
    np.testing.assert_allclose(g.view_pixel_spacing_mm("pa"), (400 / 256, 360 / 256))
    assert g.view_magnification("pa") == pytest.approx(1.3) and g.view_magnification("lateral") == pytest.approx(
        1150 / 900
    )
    # the detector centre's pixel is where the isocentre's projection lies, shifted by the offset
    centre = ((256 - 1) / 2, (256 - 1) / 2)
    np.testing.assert_allclose(
        g.project(np.zeros(3), "pa"), (centre[0] - 12 / (360 / 256), centre[1] + 8 / (400 / 256))
    )
    # pixel -> world -> project is the identity, per view
    xy = np.array([[3.0, 7.0], [200.5, 31.25]])
    for view in g.views:
        pts = g.pixel_to_world(view, xy)
        np.testing.assert_allclose(g.project(pts, view), xy, atol=1e-9)
        assert not g.in_front(pts * 1.01, view).any()  # just beyond this view's own detector
    assert g.in_front(np.zeros((1, 3)), "lateral").all()
    np.testing.assert_allclose(g.source_mm("lateral"), [-900, 0, 0])  # ViewPosition LL: source at the right
    # round trip through plain data
    assert ProjectionGeometry(**json.loads(json.dumps(g.to_dict()))) == g
    assert pa.overrides["detector_offset_mm"] == [12.0, -8.0]
    with pytest.raises(ValueError, match="sad_mm < sid_mm"):
        g.with_view("pa", sid_mm=900.0)
    with pytest.raises(ValueError, match="unknown view fields"):
        g.with_view("pa", sid=1800)


# ------------------------------------------------------------------ one geometry, three renderers, one sampler
def test_beads_projector_itk_and_geometry_agree(bead_drrs):
    """Beads through a non-default per-view geometry: torch projector, ITK DRR and geometry.project() within
    0.25 px."""
    g, torch_drr, itk_drr = bead_drrs
    for v, view in enumerate(g.views):
        for bead, xy in zip(BEADS, g.project(BEADS, view)):
            for name, img in (("torch", torch_drr[v]), ("itk", itk_drr[v])):
                err = np.abs(_centroid(img, xy) - xy).max()
                assert err < 0.25, f"{name} {view}: bead {bead} at {_centroid(img, xy)}, geometry says {xy} ({err:.3f})"


def test_sampler_reads_where_the_projector_draws(bead_drrs):
    """The sampler's normalised coordinates of each bead, handed the per-view geometry for one call, are the
    projector image's bead location (0.25 px); the same geometry as the sampler's own gives the same numbers, and
    one geometry per case gives the same numbers."""
    g, torch_drr, _ = bead_drrs
    sampler = PerspectiveSampler(ProjectionGeometry.from_preset("perx2ct"))
    own = PerspectiveSampler(g)
    pts = torch.as_tensor(BEADS - np.asarray(ISOCENTRE), dtype=torch.float64)[None]  # relative to the isocentre
    rows, cols = g.detector_shape
    for v, view in enumerate(g.views):
        grid, valid = sampler.project_normalized(pts, v, sampler.camera(g))
        assert valid.all()
        px = ((grid[0, :, 0].numpy() + 1) * cols - 1) / 2, ((grid[0, :, 1].numpy() + 1) * rows - 1) / 2
        for i, xy in enumerate(np.stack(px, axis=1)):
            err = np.abs(_centroid(torch_drr[v], xy) - xy).max()
            assert err < 0.25, f"{view}: sampler reads bead {i} at {xy}, the projector drew it {err:.3f} px away"
        default_grid, _ = sampler.project_normalized(pts, v)
        assert (default_grid - grid).abs().max() > 0.05  # the call's geometry really replaced the sampler's
        own_grid, _ = own.project_normalized(pts, v)
        torch.testing.assert_close(own_grid, grid, rtol=0, atol=1e-12)  # the same camera, another code path
        per_case, _ = sampler.project_normalized(pts.expand(2, -1, -1), v, sampler.camera([g, g]))
        torch.testing.assert_close(per_case, grid.expand(2, -1, -1), rtol=0, atol=1e-12)


def test_sampler_forward_takes_the_geometry():
    """forward(..., camera) samples a one-hot map at the bead's pixel of that geometry (not of its own)."""
    g = clinical_geometry().with_detector_shape((64, 64))
    sampler = PerspectiveSampler(ProjectionGeometry.from_preset("perx2ct"))
    point = torch.tensor([[[10.0, -20.0, 30.0]]], dtype=torch.float64)
    maps = []
    for view in g.views:
        c, r = np.round(g.centred().project(point[0].numpy(), view)[0]).astype(int)
        m = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
        m[0, 0, r - 1 : r + 2, c - 1 : c + 2] = 1.0  # 3 x 3 plateau: bilinear reads 1 anywhere in the centre pixel
        maps.append(m)
    assert sampler(maps, point, sampler.camera(g)).min() == 1.0
    assert sampler(maps, point).max() < 1.0


# ------------------------------------------------------------------ reading a view's geometry
def _dx(dicom_bytes, tmp_path, name, pixels, **tags):
    path = tmp_path / f"{name}.dcm"
    path.write_bytes(dicom_bytes(pixels, **tags))
    return path


def test_dicom_tags_give_the_view_geometry(dicom_bytes, tmp_path):
    pixels = (np.arange(86 * 70).reshape(86, 70) % 4000).astype(np.uint16)
    base = ProjectionGeometry.from_preset("perx2ct")
    pa = _dx(
        dicom_bytes,
        tmp_path,
        "pa",
        pixels,
        ViewPosition="PA",
        DistanceSourceToDetector="1800",
        DistanceSourceToPatient="1650",
        ImagerPixelSpacing=[5.0, 6.0],
        PatientOrientation=["L", "F"],
    )
    acq = read_acquisition(pa, "pa", base)
    assert acq.source == "dicom" and not acq.assumed
    assert acq.values == {
        "sad_mm": 1650.0,
        "sid_mm": 1800.0,
        "detector_size_mm": [430.0, 420.0],
        "detector_offset_mm": [0.0, 0.0],
    }
    assert acq.read["sid_mm"].startswith("DistanceSourceToDetector (0018,1110)")
    assert acq.read["detector_size_mm"].endswith("ImagerPixelSpacing (0018,1164)")
    assert not (acq.transpose or acq.flip_lr or acq.flip_ud)
    g = acq.apply(base)
    assert g.view_acquisition("pa").detector_size_mm == (430.0, 420.0) and g.view("lateral") == base.view("lateral")

    # magnification factor instead of the source-to-patient distance; left lateral shown anterior on the right
    lat = _dx(
        dicom_bytes,
        tmp_path,
        "lat",
        pixels,
        ViewPosition="LL",
        DistanceSourceToDetector="1500",
        EstimatedRadiographicMagnificationFactor="1.125",
        ImagerPixelSpacing=[5.0, 6.0],
        PatientOrientation=["A", "F"],
    )
    acq = read_acquisition(lat, "lateral", base)
    assert acq.values["sad_mm"] == pytest.approx(1500 / 1.125) and acq.read["sad_mm"].startswith("DistanceSource")
    assert acq.normal == (-1.0, 0.0, 0.0) and acq.flip_lr and not acq.flip_ud
    np.testing.assert_array_equal(acq.orient(pixels), pixels[:, ::-1])

    # rows and columns exchanged (PatientOrientation F\L): transposed, detector size exchanged
    turned = _dx(dicom_bytes, tmp_path, "turned", pixels, ImagerPixelSpacing=[5.0, 6.0], PatientOrientation=["F", "L"])
    acq = read_acquisition(turned, "pa", base)
    assert acq.transpose and acq.values["detector_size_mm"] == [420.0, 430.0]

    # no geometry attributes: clinical defaults, each reported as assumed
    bare = _dx(dicom_bytes, tmp_path, "bare", pixels)
    acq = read_acquisition(bare, "lateral", base)
    assert acq.values["sid_mm"] == 1800.0 and acq.values["sad_mm"] == 1600.0
    assert acq.values["detector_size_mm"] == pytest.approx([430.0, 430.0 * 70 / 86])
    assert {"sid_mm", "sad_mm", "detector_size_mm", "display"} <= set(acq.assumed)

    # a frontal image given as the lateral view
    with pytest.raises(ValueError, match="not a lateral view"):
        read_acquisition(pa, "lateral", base)


def test_explicit_options_for_png(tmp_path):
    from PIL import Image

    png = tmp_path / "pa.png"
    Image.fromarray((np.random.default_rng(0).random((100, 80)) * 255).astype(np.uint8)).save(png)
    base = ProjectionGeometry.from_preset("perx2ct")
    assert read_acquisition(png, "pa", base).source == "training"  # no option: the training geometry
    acq = read_acquisition(png, "pa", base, "{'sad_mm': 1650, 'sid_mm': 1800, 'detector_size_mm': [430, 430]}")
    assert acq.source == "options" and acq.values["sid_mm"] == 1800.0 and not acq.assumed
    acq = read_acquisition(png, "pa", base, {"pixel_spacing_mm": [4.0, 5.0]}, image_shape=(100, 80))
    assert acq.values["detector_size_mm"] == [400.0, 400.0] and set(acq.assumed) == {"sid_mm", "sad_mm"}
    with pytest.raises(ValueError, match=r"--pa_geometry: unknown keys \['sdd'\]"):
        parse_geometry_option("{'sdd': 1800}", "--pa_geometry")
    with pytest.raises(ValueError, match="--lateral_geometry must be a mapping"):
        parse_geometry_option("1800", "--lateral_geometry")


def test_inference_transforms_carry_each_views_geometry(dicom_bytes, tmp_path):
    """ReadAcquisitiond + LoadRadiographsd: a DICOM view is taken whole as its own detector and flipped into the
    display convention; the geometry handed on has each view's values."""
    from PIL import Image

    pixels = np.zeros((120, 100), dtype=np.uint16)
    pixels[10:20, 5:15] = 4000  # a bright block near the top left of the stored image
    dcm = _dx(
        dicom_bytes,
        tmp_path,
        "pa",
        pixels,
        ViewPosition="PA",
        DistanceSourceToDetector="1800",
        ImagerPixelSpacing=[3.0, 3.0],
        PatientOrientation=["R", "F"],
    )
    png = tmp_path / "lat.png"
    Image.fromarray((np.random.default_rng(1).random((64, 64)) * 255).astype(np.uint8)).save(png)
    base = ProjectionGeometry.from_preset("perx2ct")
    read = ReadAcquisitiond(geometry=base, options={"lateral": "{'sid_mm': 1500}"})
    d = read({"pa": str(dcm), "lateral": str(png)})
    g = ProjectionGeometry(**json.loads(d["view_geometry"]))
    assert g.view_acquisition("pa")[:3] == (1650.0, 1800.0, (360.0, 300.0))
    assert g.view_acquisition("lateral")[:2] == (1300.0, 1500.0)
    acq = json.loads(d["acquisition"])
    assert acq["pa"]["flip_lr"] and "sad_mm" in acq["pa"]["assumed"] and acq["lateral"]["source"] == "options"
    out = LoadRadiographsd(geometry=base, acquisition_key="acquisition")(d)["image"]
    pa = out[0].numpy()
    # flipped left-right and not padded to the 500 mm training detector: the block is at the top right
    rows, cols = np.nonzero(pa > 0.5)
    assert rows.max() < 0.2 * 128 and cols.min() > 0.8 * 128
    plain = LoadRadiographsd(geometry=base)(d)["image"][0].numpy()  # the old path: fitted to 500 mm, no flip
    assert np.nonzero(plain > 0.5)[1].max() < 0.5 * 128


def test_inference_hands_the_geometry_to_the_network(small_network):
    """PrepareBatchWithGeometry reads the batch's view_geometry; the inferer hands it to the network's sampler."""
    from scripts.inference.inferers import ZoomInferer
    from scripts.inference.view_geometry import PrepareBatchWithGeometry

    g = clinical_geometry()
    net = small_network().eval()
    image = torch.rand(1, 2, 128, 128)
    prepare = PrepareBatchWithGeometry(base=ProjectionGeometry.from_preset("perx2ct"))
    _, label, args, kwargs = prepare({"image": image, "view_geometry": [json.dumps(g.to_dict())]})
    assert label is None and args == () and kwargs["geometry"] == g
    assert prepare({"image": image, "view_geometry": [""]})[3] == {}
    inferer = ZoomInferer("axial", 64, (32, 32, 64))
    with torch.no_grad():
        own = inferer(image, net, **kwargs)
        default = inferer(image, net)
        direct = net(
            image,
            torch.tensor([[0]]),
            torch.tensor([[64.0]]),
            torch.tensor([[[32.0, 32.0, 64.0]]]),
            camera=net.sampler.camera(g),
        )
    torch.testing.assert_close(own, direct)
    assert (own - default).abs().max() > 1e-4
