"""Clinical training views (issue 19, item 2): per-sample acquisitions drawn inside the documented ranges, the
projector and the network's sampler use the same per-sample geometry, and the ``fixed`` setting is today's
on-the-fly behaviour, bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scripts.frame import FRAME
from scripts.networks.sampler import PerspectiveSampler
from scripts.projection.attenuation import hu_to_attenuation
from scripts.projection.geometry import ProjectionGeometry
from scripts.projection.torch_renderer import project, project_hu, rigid_motion
from scripts.training.losses import ConsistencySliceInferer
from scripts.transforms.radiograph import postprocess_radiograph
from scripts.transforms.rigid_views import GEOMETRY_KEY, RandRigidViewsBatch, RandRigidViewsd, vary_intensity
from scripts.transforms.view_settings import VIEW_SETTINGS, acquisition_array, geometry_from_array

BASE = ProjectionGeometry.from_preset("perx2ct")


def _bead_hu(n: int, centre_mm, sigma_mm: float = 6.0) -> torch.Tensor:
    """(1, n, n, n) HU: air with a Gaussian bead (up to +3000 HU) at ``centre_mm`` (LPS, isocentre at the centre)."""
    mm = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * FRAME.size_mm / n
    x, y, z = torch.meshgrid(mm, mm, mm, indexing="ij")
    r2 = (x - centre_mm[0]) ** 2 + (y - centre_mm[1]) ** 2 + (z - centre_mm[2]) ** 2
    return (-1000.0 + 4000.0 * torch.exp(-0.5 * r2 / sigma_mm**2)).float()[None]


def _peak(img: torch.Tensor) -> np.ndarray:
    """Sub-pixel ``(column, row)`` of an image's bead: the intensity centroid in a 7 x 7 window at its maximum."""
    a = img.double() - float(img.double().median())
    r, c = np.unravel_index(int(a.argmax()), a.shape)
    r0, c0 = max(r - 3, 0), max(c - 3, 0)
    win = a[r0 : r + 4, c0 : c + 4].clamp(min=0)
    rr, cc = torch.meshgrid(
        torch.arange(r0, r0 + win.shape[0], dtype=torch.float64),
        torch.arange(c0, c0 + win.shape[1], dtype=torch.float64),
        indexing="ij",
    )
    return np.array([float((win * cc).sum() / win.sum()), float((win * rr).sum() / win.sum())])


def _pixels(sampler: PerspectiveSampler, point_mm, view_index: int, camera, shape) -> np.ndarray:
    """``(G, 2)`` detector pixel ``(column, row)`` where the sampler reads ``point_mm`` for each camera."""
    pts = torch.as_tensor(point_mm, dtype=torch.float64).reshape(1, 1, 3)
    pts = pts.expand(camera[0].shape[0] if camera is not None else 1, 1, 3)
    grid, _ = sampler.project_normalized(pts, view_index, camera)
    rows, cols = shape
    g = grid[:, 0].numpy()
    return np.stack([(g[:, 0] + 1) * cols / 2 - 0.5, (g[:, 1] + 1) * rows / 2 - 0.5], axis=1)


def test_clinical_acquisitions_lie_in_the_documented_ranges():
    """Per sample and view, SID, source-to-isocentre distance, detector size and offset come from the
    ``clinical`` table (or, in about keep_base_prob of the views, the training geometry); the motion too."""
    t = RandRigidViewsd.from_setting("clinical", render_shape=(32, 32))
    t.set_random_state(seed=7)
    table = VIEW_SETTINGS["clinical"]
    base = acquisition_array(t.geometry, t.views)
    kept, drawn_sid = 0, {v: [] for v in t.views}
    for _ in range(300):
        t.randomize()
        acq = t._acquisition
        assert acq.shape == (2, 6)
        for v, row in zip(t.views, acq):
            if np.array_equal(row, base[t.views.index(v)]):
                kept += 1
                continue
            r = table["geometry"][v]
            sad, sid, h, w, oc, orow = row
            assert r["sid_mm"][0] <= sid <= r["sid_mm"][1]
            assert r["isocentre_to_detector_mm"][0] <= sid - sad <= r["isocentre_to_detector_mm"][1]
            assert (h, w) in [tuple(s) for s in r["detector_size_mm"]]
            assert abs(oc) <= r["detector_offset_mm"][0] and abs(orow) <= r["detector_offset_mm"][1]
            drawn_sid[v].append(sid)
        assert np.all(np.abs(t.motion[:3, 3]) <= np.asarray(table["max_shift_mm"]))
    share = kept / 600
    assert abs(share - table["geometry"]["keep_base_prob"]) < 0.06, share
    # the ranges are covered, not one value: PA 1700-1850, lateral 1500-1850 mm
    assert min(drawn_sid["lateral"]) < 1550 and max(drawn_sid["lateral"]) > 1800
    assert min(drawn_sid["pa"]) < 1720 and max(drawn_sid["pa"]) > 1830
    # the geometry object built from a row carries it back exactly
    g = geometry_from_array(t.geometry, t.views, acq)
    np.testing.assert_array_equal(acquisition_array(g, t.views), acq)


def test_batched_projector_and_sampler_agree_per_sample_on_a_bead():
    """One batched projector call over per-sample clinical geometries puts an off-centre bead where the network's
    sampler, handed the same geometries (``camera``), reads it, for every sample and view (0.25 px); the
    training geometry would read it pixels away."""
    t = RandRigidViewsd.from_setting("clinical", render_shape=(64, 64))
    t.set_random_state(seed=1)
    geoms, acqs = [], []
    while len(geoms) < 3:
        t.randomize()
        if not np.array_equal(t._acquisition, t.base_acquisition()):
            acqs.append(t._acquisition)
            geoms.append(t.sample_geometry(t._acquisition))
    point = (40.0, -25.0, 60.0)
    n = 96
    mu = hu_to_attenuation(_bead_hu(n, point))[None].expand(3, 1, n, n, n)
    spacing = FRAME.size_mm / n
    raw = project(mu, [spacing] * 3, [-(n - 1) / 2 * spacing] * 3, geoms, t.views)  # one call, (3, 2, 64, 64)
    for k in range(3):  # each case as it renders alone
        alone = project(mu[k : k + 1], [spacing] * 3, [-(n - 1) / 2 * spacing] * 3, geoms[k], t.views)
        torch.testing.assert_close(raw[k : k + 1], alone, rtol=1e-5, atol=1e-6)
    sampler = PerspectiveSampler(BASE)
    camera = sampler.camera(geoms)
    for v, view in enumerate(t.views):
        where = _pixels(sampler, point, v, camera, (64, 64))
        legacy = _pixels(sampler, point, v, None, (64, 64))[0]
        for k in range(3):
            seen = _peak(raw[k, v])
            assert np.abs(seen - where[k]).max() < 0.25, (view, k, seen, where[k])
            np.testing.assert_allclose(where[k], geoms[k].project(np.asarray(point), view), atol=1e-9)
            assert np.abs(seen - legacy).max() > 1.0  # the test tells the geometries apart (4x its tolerance)


def test_batch_hands_each_sample_its_geometry_end_to_end(tmp_path):
    """Loader items -> RandRigidViewsBatch (render in batch) -> the training inferer's camera: the bead in each
    sample's rendered view sits where the network's sampler, given that batch's ``geometry``, samples it."""
    from scripts.data.slice_sampling import SliceDataset
    from scripts.transforms.rigid_views import RandRigidViewsDataset
    from torch.utils.data import default_collate

    point = (-30.0, 20.0, -45.0)
    target = FRAME.hu_to_target(_bead_hu(FRAME.shape, point, sigma_mm=8.0))
    folder = tmp_path / "case"
    folder.mkdir()
    np.save(folder / "image.npy", np.zeros((2, 64, 64), np.float32))
    for file in ("target.npy", "volume.npy"):
        np.save(folder / file, target[0].numpy())
    case = {"case_id": "case", "dir": str(folder), "kind": "target", "volume": "target.npy", "shape": FRAME.shape}
    setting = {  # clinical geometry, no motion and a plain look: the bead stays where the geometry puts it
        "max_shift_mm": 0.0,
        "max_rotation_deg": 0.0,
        "gain_range": (1.0, 1.0),
        "gamma_range": (1.0, 1.0),
        "noise_std": 0.0,
        "geometry": {**VIEW_SETTINGS["clinical"]["geometry"], "keep_base_prob": 0.0},
    }
    views = RandRigidViewsd.from_setting(setting, render_shape=(64, 64), output_shape=(64, 64), quantize_bits=None)
    data = RandRigidViewsDataset(SliceDataset([case]), views, seed=5, render_in_batch=True)
    items = [data[k] for k in (3, 70, 200)]
    batch = default_collate(items)
    assert batch[GEOMETRY_KEY].shape == (3, 2, 6)
    captured = {}

    def network(image, **kw):  # stands in for the network: records what the training step hands it
        captured.update(kw)
        return torch.zeros(image.shape[0], 1, 8, 8)

    image, _, _, kw = RandRigidViewsBatch(_slice_batch, data)(batch, "cpu", False)
    geoms = kw["geometry"]
    assert len(geoms) == 3 and len({repr(g) for g in geoms}) == 3
    for g, acq in zip(geoms, batch[GEOMETRY_KEY]):
        np.testing.assert_array_equal(acquisition_array(g, views.views), acq.numpy())
    sampler = PerspectiveSampler(BASE)
    network.sampler = sampler
    ConsistencySliceInferer()(image, network, **kw)
    camera = captured["camera"]
    torch.testing.assert_close(camera[0], sampler.camera(geoms)[0])
    for v in range(2):
        where = _pixels(sampler, point, v, camera, (64, 64))
        for k in range(3):
            seen = _peak(image[k, v])
            assert np.abs(seen - where[k]).max() < 0.3, (v, k, seen, where[k])


def _slice_batch(batchdata, device=None, non_blocking=False):
    return batchdata["image"], batchdata["label"], (), {}


def test_fixed_setting_is_todays_behaviour_bit_exact():
    """``fixed``: the same draws and the same images as the on-the-fly transform of configs/onthefly.json (its
    constructor defaults), which are the projector's DRR at the training geometry, post-processed and varied;
    no per-sample geometry travels."""
    hu = _bead_hu(48, (20.0, 10.0, -30.0), sigma_mm=20.0)
    today = RandRigidViewsd(render_shape=(40, 40), output_shape=(40, 40))
    fixed = RandRigidViewsd.from_setting("fixed", render_shape=(40, 40), output_shape=(40, 40))
    assert fixed.acquisition_ranges is None and fixed.appearance is None
    today.set_random_state(seed=11)
    fixed.set_random_state(seed=11)
    spacing = FRAME.size_mm / 48
    for _ in range(3):
        a, b = today({"image": torch.zeros(2, 40, 40), "label": torch.zeros(1, 8, 8, 8), "ct_1mm": hu}), fixed(
            {"image": torch.zeros(2, 40, 40), "label": torch.zeros(1, 8, 8, 8), "ct_1mm": hu}
        )
        assert GEOMETRY_KEY not in b
        assert torch.equal(a["image"], b["image"]) and np.array_equal(today.motion, fixed.motion)
        # the documented pipeline, step by step (projector at the training geometry, post-processing, variation)
        raw = project_hu(
            hu[None], [spacing] * 3, [-(47) / 2 * spacing] * 3, fixed.geometry, fixed.views, motion=fixed.motion
        )
        gen = torch.Generator().manual_seed(fixed._noise_seed)
        for v in range(2):
            x = postprocess_radiograph(raw[0, v], (40, 40), True, 8)
            noise = torch.randn(x.shape, generator=gen) * 0.01
            assert torch.equal(b["image"][v], vary_intensity(x, float(fixed._gain[v]), float(fixed._gamma[v]), noise))


def test_projector_batches_cases_bit_exact_and_refuses_mixed_detectors():
    """A sequence of one geometry per volume renders each volume as it renders alone (bit-exact with the default
    chunks); geometries must share one detector grid."""
    g = torch.Generator().manual_seed(0)
    vols = torch.rand(3, 1, 24, 24, 24, generator=g) * 0.3
    geo = BASE.with_detector_shape((20, 20))
    other = geo.with_view("pa", sid_mm=1800.0, sad_mm=1650.0, detector_size_mm=(430.0, 430.0))
    motion = np.stack([rigid_motion((1, 2, 3), (4, 5, 6)), np.eye(4), rigid_motion((0, -3, 0), (0, 0, 10))])
    args = ([320 / 24] * 3, [-(23) / 2 * 320 / 24] * 3)
    out = project(vols, *args, [geo, other, geo], motion=motion)
    for k, gk in enumerate([geo, other, geo]):
        assert torch.equal(out[k : k + 1], project(vols[k : k + 1], *args, gk, motion=motion[k]))
    with pytest.raises(ValueError, match="one detector_shape"):
        project(vols, *args, [geo, geo.with_detector_shape((10, 10)), geo])


@pytest.mark.slow
def test_clinical_training_runs_and_records_its_setting(tmp_path, example_raw_dir):
    """``--config_file "['configs/train.json','configs/clinical.json']"`` (with quick.json) trains with the
    consistency term on, and the checkpoint's sidecar records the view setting and the consistency weight."""
    import json

    from conftest import bundle_run, quick_train_args

    out = tmp_path / "run"
    out.mkdir()
    args = quick_train_args(out, example_raw_dir, "--held_out_reconstruction", "False", "--consistency_weight", "0.1")
    i = args.index("--config_file")
    args[i + 1] = "['configs/train.json','configs/clinical.json','configs/quick.json']"
    bundle_run(*args)
    recipe = json.loads((out / "models" / "model.json").read_text())["recipe"]
    views = recipe["view_randomisation"]
    assert views["on_the_fly"] and views["setting"] == "clinical"
    assert views["geometry"]["pa"]["sid_mm"] == list(VIEW_SETTINGS["clinical"]["geometry"]["pa"]["sid_mm"])
    assert recipe["consistency"]["weight"] == 0.1 and recipe["loss"]["terms"]["consistency"] == 0.1
    assert "views on-the-fly clinical; re-projection consistency 0.1" in recipe["summary"]
