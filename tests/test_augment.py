"""On-the-fly training views: image and target of an augmented sample stay consistent (the projector's
rendering of the augmented target reproduces the augmented views), and the random parts behave."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scripts.frame import FRAME
from scripts.projection.torch_renderer import project_hu, rigid_motion
from scripts.transforms.radiograph import postprocess_radiograph
from scripts.transforms.rigid_views import RandRigidViewsd, move_volume


def _phantom_hu(n: int, seed: int = 0) -> torch.Tensor:
    """A chest-like HU cube (1, n, n, n) over FRAME.size_mm, centred on the isocentre: body, lungs, spine, blobs."""
    mm = (torch.arange(n, dtype=torch.float32) - (n - 1) / 2) * FRAME.size_mm / n
    x, y, z = torch.meshgrid(mm, mm, mm, indexing="ij")
    hu = torch.full((n, n, n), -1000.0)
    body = (x / 140) ** 2 + (y / 100) ** 2 < 1
    hu[body & (z.abs() < 140)] = 40.0
    for side in (-1, 1):
        hu[((x - side * 65) / 50) ** 2 + ((y + 5) / 60) ** 2 + (z / 110) ** 2 < 1] = -850.0
    hu[((x / 15) ** 2 + ((y - 70) / 15) ** 2 < 1) & (z.abs() < 150)] = 700.0
    g = torch.Generator().manual_seed(seed)
    for _ in range(12):
        c = (torch.rand(3, generator=g) - 0.5) * 160
        hu[((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) < 15**2] = float(
            torch.rand(1, generator=g) * 600 - 100
        )
    return hu[None]


def _stats(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    a, b = a.double().flatten(), b.double().flatten()
    r = float(torch.corrcoef(torch.stack((a, b)))[0, 1])
    return r, float((a - b).abs().mean() / b.max() * 100)


def _plain_views(t: RandRigidViewsd) -> RandRigidViewsd:
    t.gain_range, t.gamma_range, t.noise_std = (1.0, 1.0), (1.0, 1.0), 0.0
    return t


@pytest.fixture(scope="module")
def item():
    target = FRAME.hu_to_target(_phantom_hu(FRAME.shape))
    return {"image": torch.zeros(2, 128, 128), "label": target, "ct_1mm": _phantom_hu(160, seed=0)}  # 2 mm "fine" cube


@pytest.mark.parametrize("source", ["label", "ct_1mm"])
def test_augmented_target_reproduces_augmented_views(item, source):
    """Render the augmented target with the projector (no motion) and post-process as the transform: the
    result matches the augmented views to parity (r >= 0.999, mean |diff| <= 1 % of the max), while the
    unmoved target does not (the motion is large enough to be seen)."""
    data = dict(item) if source == "ct_1mm" else {k: v for k, v in item.items() if k != "ct_1mm"}
    t = _plain_views(
        RandRigidViewsd(max_shift_mm=10.0, max_rotation_deg=5.0, render_shape=(128, 128), quantize_bits=None)
    )
    t.set_random_state(seed=3)
    out = t(data)
    assert out["image"].shape == (2, 128, 128) and out["label"].shape == (1, 128, 128, 128)
    assert not np.allclose(t.motion, np.eye(4))

    def rendered(target):
        hu = FRAME.target_to_hu(target)[None]
        origin = [-FRAME.centre_voxel * FRAME.spacing_mm] * 3
        raw = project_hu(hu, [FRAME.spacing_mm] * 3, origin, t.geometry, t.views)[0]
        return torch.stack([postprocess_radiograph(raw[v], (128, 128), True, None) for v in range(2)])

    moved, unmoved = rendered(out["label"]), rendered(item["label"])
    for v in range(2):
        r, mad = _stats(moved[v], out["image"][v])
        r0, mad0 = _stats(unmoved[v], out["image"][v])
        print(
            f"{source} view {v}: augmented target r={r:.5f} MAD={mad:.3f}%; unmoved target r={r0:.5f} MAD={mad0:.3f}%"
        )
        assert r >= 0.999 and mad <= 1.0, (source, v, r, mad)
        assert r0 < 0.999 or mad0 > 1.0, "the motion did not change the views enough to test consistency"


def test_move_volume_matches_projector_motion():
    """Moving the volume (trilinear) and moving the rays (exact) render the same DRR."""
    hu = _phantom_hu(64)
    motion = rigid_motion((3.0, -4.0, 5.0), (8.0, -6.0, 4.0))
    t = RandRigidViewsd(render_shape=(64, 64))
    spacing = FRAME.size_mm / 64
    origin = [-(63 / 2) * spacing] * 3
    by_rays = project_hu(hu[None], [spacing] * 3, origin, t.geometry, t.views, motion=motion)
    by_volume = project_hu(
        move_volume(hu, motion, spacing, pad_value=-1024.0)[None], [spacing] * 3, origin, t.geometry, t.views
    )
    for v in range(2):
        r, mad = _stats(by_volume[0, v], by_rays[0, v])
        assert r >= 0.999 and mad <= 1.0, (v, r, mad)
    # no motion: the volume is unchanged
    torch.testing.assert_close(move_volume(hu, np.eye(4), spacing, pad_value=-1024.0), hu, atol=0.05, rtol=0)


def test_random_parts(item):
    """Seeded draws repeat; the intensity variation stays on the 8-bit grid in [0, 1]; prob 0 is a no-op;
    bad bounds fail with the argument's name."""
    data = {k: v for k, v in item.items() if k != "ct_1mm"}
    t = RandRigidViewsd(render_shape=(96, 96), noise_std=0.02)
    t.set_random_state(seed=7)
    a = t(data)
    motion_a, gain_a = t.motion.copy(), t._gain.copy()
    t.set_random_state(seed=7)
    b = t(data)
    torch.testing.assert_close(a["image"], b["image"])
    np.testing.assert_allclose(t.motion, motion_a)
    rot = np.degrees(np.arccos(np.clip((np.trace(motion_a[:3, :3]) - 1) / 2, -1, 1)))
    assert rot <= 3.0 * np.sqrt(3) + 1e-6 and np.all(np.abs(motion_a[:3, 3]) <= 5.0)
    assert np.all((gain_a >= 0.9) & (gain_a <= 1.1))
    img = a["image"]
    # the variation is clip(gain * x ** gamma + noise, 0, 1) of the plain rendering x: recomputed from the same
    # draws without noise (x is itself on the 8-bit grid, so within 2 grey levels), and the noise is really added
    no_noise, plain = RandRigidViewsd(render_shape=(96, 96), noise_std=0.0), RandRigidViewsd(render_shape=(96, 96))
    for v in (no_noise, _plain_views(plain)):
        v.set_random_state(seed=7)
    varied, x = no_noise(data)["image"].numpy(), plain(data)["image"].numpy()
    gamma_a = t._gamma.copy()
    expected = np.clip(gain_a[:, None, None] * x.astype(np.float64) ** gamma_a[:, None, None], 0, 1)
    assert np.abs(varied - expected).max() <= 2 / 255, np.abs(varied - expected).max()
    assert 0.005 < float(np.abs(img.numpy() - varied).mean()) < 0.02  # noise_std 0.02, clipped at 0 and 1
    np.testing.assert_allclose(img.numpy() * 255, np.round(img.numpy() * 255), atol=1e-3)
    same = RandRigidViewsd(prob=0.0)(data)
    assert same["image"] is data["image"] and same["label"] is data["label"]
    with pytest.raises(ValueError, match="max_shift_mm"):
        RandRigidViewsd(max_shift_mm=-1.0)
    with pytest.raises(ValueError, match="gamma_range"):
        RandRigidViewsd(gamma_range=(0.0, 1.0))


def test_slice_dataset_wrapper(tmp_path):
    """RandRigidViewsDataset on the slice loader: its views are the moved case's views, and its ground-truth
    slice is the slice of the moved volume (the same slice of a cache holding the moved target)."""
    from scripts.data.slice_sampling import SliceDataset
    from scripts.transforms.rigid_views import RandRigidViewsDataset

    target = FRAME.hu_to_target(_phantom_hu(FRAME.shape))

    def cache(name, volume):
        folder = tmp_path / name
        folder.mkdir()
        np.save(folder / "image.npy", np.zeros((2, 128, 128), np.float32))
        for file in ("target.npy", "volume.npy"):  # the cache layout's names, before and after it named the file
            np.save(folder / file, volume[0].numpy().astype(np.float32))
        return {
            "case_id": name,
            "dir": str(folder),
            "kind": "target",
            "volume": "target.npy",
            "shape": FRAME.shape,
            "size_mm": FRAME.size_mm,
        }

    views = _plain_views(RandRigidViewsd(render_shape=(64, 64), max_shift_mm=8.0, max_rotation_deg=4.0))
    wrapped = RandRigidViewsDataset(SliceDataset([cache("case", target)]), views, seed=5)
    assert len(wrapped) == len(wrapped.dataset) and wrapped.volume_shape == FRAME.shape
    for key in (70, FRAME.shape + 40, 2 * FRAME.shape + 90):  # one slice per axis
        item = wrapped[key]
        motion = views.motion.copy()
        assert item["image"].shape == (2, 128, 128) and item["label"].shape == (1, 128, 128)
        hu = FRAME.target_to_hu(target)
        torch.testing.assert_close(item["image"], views.views_of(hu, FRAME.spacing_mm))  # same draw, same views
        moved = SliceDataset([cache(f"moved{key}", move_volume(target, motion, FRAME.spacing_mm))])[key]["label"]
        r, mad = _stats(item["label"], moved)
        assert r >= 0.995 and mad <= 2.0, (key, r, mad)  # one trilinear step against two
        unmoved = SliceDataset([cache(f"plain{key}", target)])[key]["label"]
        assert _stats(item["label"], unmoved)[0] < r


def test_batched_rendering_equals_per_sample(tmp_path):
    """render_in_batch + RandRigidViewsBatch (one projector call per batch, the GPU path) gives the views the
    per-sample path gives for the same draws; samples the draw skipped (prob) keep their prepared views."""
    from scripts.data.slice_sampling import SliceDataset
    from scripts.transforms.rigid_views import RandRigidViewsBatch, RandRigidViewsDataset
    from torch.utils.data import default_collate

    target = FRAME.hu_to_target(_phantom_hu(64, seed=2)[None])
    target = torch.nn.functional.interpolate(target, size=(FRAME.shape,) * 3, mode="trilinear")[0]
    folder = tmp_path / "case"
    folder.mkdir()
    prepared = np.full((2, 128, 128), 0.5, np.float32)
    np.save(folder / "image.npy", prepared)
    for file in ("target.npy", "volume.npy"):
        np.save(folder / file, target[0].numpy())
    case = {"case_id": "case", "dir": str(folder), "kind": "target", "volume": "target.npy", "shape": FRAME.shape}
    keys = [3, 200, 300, 17]

    def wrapper(in_batch):
        views = RandRigidViewsd(render_shape=(48, 48), prob=0.5)
        return RandRigidViewsDataset(SliceDataset([case]), views, seed=3, render_in_batch=in_batch)

    single = wrapper(False)
    expect = [single[k] for k in keys]
    batched = wrapper(True)
    items = [batched[k] for k in keys]
    applied = [bool(i["onthefly_apply"]) for i in items]
    assert any(applied) and not all(applied), applied  # seed 3 draws both cases
    batch = RandRigidViewsBatch(lambda b, device, non_blocking: b, batched)(default_collate(items), "cpu", False)
    for i, e in enumerate(expect):
        torch.testing.assert_close(batch["image"][i], e["image"], atol=1 / 255 + 1e-6, rtol=0)
        torch.testing.assert_close(batch["label"][i], e["label"])
        if not applied[i]:
            torch.testing.assert_close(batch["image"][i], torch.from_numpy(prepared))
    off = RandRigidViewsBatch(lambda b, device, non_blocking: b, batched, enabled=False)(
        default_collate(items), "cpu", False
    )
    assert torch.equal(off["image"], default_collate(items)["image"])
