"""Training data as the official recipe draws it: independent slice samples, point-sampled 1 mm ground truth,
official zoom boxes, a seeded epoch sampler; the datalist helpers of train.json."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose
from PIL import Image
from scripts.data.datasets import DatasetError, bundle_component, validation_cases
from scripts.data.slice_sampling import SliceDataset, SliceSampler, cache_cases, official_zoom_box
from scripts.frame import FRAME, LPS_TO_RAS, VolumeFrame

N = FRAME.shape  # 128
FINE = 64  # a coarse "1 mm" cube (5 mm voxels) keeps the test small; the code reads any cube over 320 mm
COEF = np.array([2.0, 3.0, -1.5])  # HU per mm along L, P, S


def hu_at(mm: np.ndarray) -> np.ndarray:
    """A linear HU field over the cube (trilinear interpolation reproduces it exactly): -840..1240 HU."""
    return mm @ COEF + 200.0


def _voxel_mm(frame: VolumeFrame) -> np.ndarray:
    i = np.arange(frame.shape, dtype=np.float64)
    grid = np.stack(np.meshgrid(i, i, i, indexing="ij"), -1)
    return frame.voxel_to_mm(grid)


def _case(tmp_path, name: str, fine: bool) -> dict:
    d = tmp_path / name
    d.mkdir()
    target = FRAME.hu_to_target(hu_at(_voxel_mm(FRAME))).astype(np.float32)
    nib.save(nib.Nifti1Image(target, FRAME.ras_affine()), d / "ct.nii.gz")
    rng = np.random.default_rng(0)
    for view in ("pa", "lateral"):
        Image.fromarray(rng.integers(0, 256, (N, N), dtype=np.uint8)).save(d / f"{view}.png")
    item = {"case_id": name, "ct": str(d / "ct.nii.gz"), "pa": str(d / "pa.png"), "lateral": str(d / "lateral.png")}
    if fine:
        frame = VolumeFrame(shape=FINE, size_mm=FRAME.size_mm)
        hu = np.rint(hu_at(_voxel_mm(frame))).astype(np.int16)
        nib.save(nib.Nifti1Image(hu, LPS_TO_RAS @ frame.lps_affine()), d / "ct_1mm.nii.gz")
        item["ct_1mm"] = str(d / "ct_1mm.nii.gz")
    return item


@pytest.fixture(scope="module")
def prepared_chain(case_chain):
    """train.json's transform chain of a prepared case on the training path (``train#preprocessing``)."""
    return case_chain("train", "prepared")


@pytest.fixture(scope="module")
def cases(tmp_path_factory, prepared_chain):
    tmp = tmp_path_factory.mktemp("slice_cases")
    items = [_case(tmp, "fine", True), _case(tmp, "coarse", False)]
    calls = []

    chain = prepared_chain

    def transform(item):
        calls.append(item["case_id"])
        return chain(item)

    cached = cache_cases(items, transform, tmp / "cache", "prepared")
    again = cache_cases(items, transform, tmp / "cache", "prepared")
    return {"cached": cached, "again": again, "calls": calls, "items": items}


def _expected(axis: int, index: float, box, m: int = N) -> np.ndarray:
    """Target-scale values of the linear field at the m x m rendered pixels (written out independently)."""
    row0, col0, size = box
    p = row0 + (np.arange(m) + 0.5) * size / m - 0.5  # voxel positions of the pixel centres along rows
    q = col0 + (np.arange(m) + 0.5) * size / m - 0.5
    r, c = np.meshgrid(p, q, indexing="ij")
    fixed = np.full_like(r, index)
    vox = {0: (r, c, fixed), 1: (r, fixed, c), 2: (fixed, r, c)}[axis]
    mm = (np.stack(vox, -1) - 63.5) * 2.5
    return np.clip(hu_at(mm) + 1024, 0, 2500) / 2500


def test_cases_are_decoded_once_and_fall_back_without_a_1mm_cube(cases, caplog):
    assert [c["kind"] for c in cases["cached"]] == ["1mm", "target"]
    assert cases["calls"] == ["fine", "coarse"]  # the second cache_cases call decoded nothing
    assert [c["dir"] for c in cases["again"]] == [c["dir"] for c in cases["cached"]]
    vol = np.load(f"{cases['cached'][0]['dir']}/ct_1mm.npy", mmap_mode="r")
    assert vol.dtype == np.int16 and vol.shape == (FINE,) * 3


def test_fallback_is_logged(tmp_path, caplog, prepared_chain):
    item = _case(tmp_path, "nofine", False)
    with caplog.at_level(logging.WARNING):
        (case,) = cache_cases([item], prepared_chain, tmp_path / "c")
    assert case["kind"] == "target" and "no 1 mm cube" in caplog.text


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_ground_truth_is_point_sampled_from_the_1mm_cube(cases, axis):
    ds = SliceDataset(cases["cached"][:1])
    for index, box in [(40, (0.0, 0.0, 128.0)), (77, (20.3, 51.7, 33.9)), (5, (-4.0, 90.5, 40.0))]:
        k = axis * N + index
        item = ds[(k, *box)]
        assert int(item["slice_axis"]) == axis and float(item["slice_index"]) == index
        want = _expected(axis, index, box)
        pos = box[0] + (np.arange(N) + 0.5) * box[2] / N - 0.5, box[1] + (np.arange(N) + 0.5) * box[2] / N - 0.5
        # the fine cube's outermost voxel centres lie at grid positions 0.5 and 126.5: exact interpolation inside
        ok = [(p >= 0.5) & (p <= 126.5) for p in pos]
        inside = ok[0][:, None] & ok[1][None, :]
        got = item["label"][0].numpy()
        assert got.shape == (N, N) and item["image"].shape == (2, N, N) and inside.sum() > 1000
        np.testing.assert_allclose(got[inside], want[inside], atol=3e-4)


def test_boxes_leaving_the_volume_read_air_outside(cases):
    ds = SliceDataset(cases["cached"][:1])
    got = ds[(64, -20.0, 0.0, 40.0)]["label"][0].numpy()  # axial 64, rows from -20 to 20 voxels
    rows = -20.0 + (np.arange(N) + 0.5) * 40 / N - 0.5
    assert np.all(got[rows < -1.5] == 0)  # beyond one fine voxel (2 grid voxels) outside: zero, as grid_sample
    assert np.all(got[rows > 0] > 0)


def test_fallback_targets_are_the_label_slices(cases):
    ds = SliceDataset(cases["cached"][1:])
    label = nib.load(cases["items"][1]["ct"]).get_fdata(dtype=np.float32)
    for axis, index in [(0, 3), (1, 64), (2, 127)]:
        got = ds[axis * N + index]["label"][0].numpy()
        want = (label[:, :, index], label[:, index, :], label[index, :, :])[axis]
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_official_zoom_boxes_match_the_oracle():
    # oracle README: official axial 64, p0 = (48, 48), zoom 32 -> project box (49.5, 49.5, 32);
    # coronal p0[1] = 50, zoom 64 -> project row0 51 (both from the official code's query grid)
    u = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 1 / 3, 58 / 80, 0.0]], dtype=torch.float64)
    box = official_zoom_box(u, zoom_prob=0.5)
    torch.testing.assert_close(box[0], torch.tensor([49.5, 49.5, 32.0]))
    torch.testing.assert_close(box[1, [0, 2]], torch.tensor([51.0, 64.0]))
    # the query grid of such a box starts 1.5 voxels inside p0 and steps size / 32, as the official grid
    from scripts.slicing import slice_positions

    pos = slice_positions(torch.tensor([0]), torch.tensor([63.0]), box[:1], 32)
    torch.testing.assert_close(pos[0, :, 0, 0], 48 + 1.5 + torch.arange(32.0) * 32 / 32)
    full = official_zoom_box(torch.tensor([[0.7, 0.2, 0.3, 0.4]], dtype=torch.float64), zoom_prob=0.5)
    torch.testing.assert_close(full[0], torch.tensor([0.0, 0.0, 128.0]))


class _Sized(torch.utils.data.Dataset):
    volume_shape = N

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def test_sampler_is_a_seeded_epoch_permutation_with_official_zoom_draws():
    ds = _Sized(3 * N * 2)
    s = SliceSampler(ds, zoom_prob=0.5, seed=4)
    s.set_epoch(1)
    a = list(s)
    s.set_epoch(1)
    assert list(s) == a  # same seed and epoch, same draws (a resumed run repeats nothing it should not)
    s.set_epoch(2)
    b = list(s)
    assert [x[0] for x in a] != [x[0] for x in b]
    assert sorted(x[0] for x in a) == list(range(len(ds)))  # every slice once per epoch
    box = torch.tensor([x[1:] for x in a])
    zoomed = box[:, 2] < N
    assert 0.45 < zoomed.float().mean() < 0.55
    size = box[zoomed, 2]
    assert size.min() >= 32 and size.max() <= 128 and len(size.unique()) > 100  # continuous sizes
    p0 = box[zoomed, :2] - (N - size[:, None]) / 64  # back to the official corner
    assert p0.min() >= -8 and torch.all(p0 <= 136 - size[:, None])
    assert p0.min() < -6 and (p0 + size[:, None]).max() > 134  # boxes do leave the volume
    assert torch.all(box[~zoomed] == torch.tensor([0.0, 0.0, N]))
    assert all(x[1:] == (0.0, 0.0, float(N)) for x in SliceSampler(ds, zoom_prob=0.0))


def test_sampler_shards_an_epoch_over_ranks():
    ds = _Sized(3 * N)
    parts = [list(SliceSampler(ds, seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    keys = [x[0] for x in parts[0] + parts[1]]
    assert len(parts[0]) == len(parts[1]) == 3 * N // 2 and sorted(keys) == list(range(3 * N))


def test_batches_of_independent_samples(cases):
    from monai.data import DataLoader
    from scripts.data.slice_sampling import SliceBatch

    ds = SliceDataset(cases["cached"])
    loader = DataLoader(ds, sampler=SliceSampler(ds, seed=0), batch_size=6, num_workers=0)
    image, label, args, kw = SliceBatch()(next(iter(loader)))
    assert image.shape == (6, 2, N, N) and label.shape == (6, 1, N, N) and args == ()
    assert kw["slice_axis"].shape == (6, 1) and kw["slice_index"].shape == (6, 1) and kw["zoom_box"].shape == (6, 1, 3)
    assert len(loader) == 2 * 3 * N // 6


def test_validation_never_silently_uses_training_cases(caplog):
    lists = {"training": [{"case_id": "a"}], "validation": [], "test": []}
    with pytest.raises(DatasetError, match="no validation cases in D: .*--validate_on_training true"):
        validation_cases(lists, "D")
    with caplog.at_level(logging.WARNING):
        assert validation_cases(lists, "D", "true") == [{"case_id": "a"}]
    assert "TRAINING cases" in caplog.text
    assert validation_cases({**lists, "validation": [{"case_id": "v"}]}, "D") == [{"case_id": "v"}]


def test_prepare_chain_comes_from_the_bundle_root_with_the_callers_geometry(repo_root, tmp_path, monkeypatch):
    from scripts.projection.geometry import ProjectionGeometry

    monkeypatch.chdir(tmp_path)  # not the bundle root: the path must not depend on the working directory
    geometry = ProjectionGeometry.from_preset("x2ctgan")
    chain = bundle_component(str(repo_root / "configs" / "prepare.json"), "preprocessing", geometry=geometry)
    drr = [t for t in chain.transforms if type(t).__name__ == "DRRd"]
    assert len(drr) == 1 and drr[0].drr.geometry is geometry


def test_full_slice_ground_truth_equals_the_ct_target_transform(tmp_path):
    """Two implementations, one answer: full-slice samples of the 1 mm cube (this module) equal the slices of
    ``scripts.transforms.target.CTTarget``'s point-sampled 128^3 target made from the same cube (raw-mode items)."""
    from monai.data import MetaTensor
    from scripts.transforms.target import CTTarget

    n = 160  # 2 mm voxels over the 320 mm cube keep the test small
    frame = VolumeFrame(shape=n, size_mm=FRAME.size_mm)
    rng = np.random.default_rng(3)
    hu = rng.uniform(-1000, 1400, (n // 8,) * 3)
    hu = torch.nn.functional.interpolate(torch.as_tensor(hu)[None, None], size=(n,) * 3, mode="trilinear")[0]
    fine = MetaTensor(hu.float(), affine=torch.as_tensor(frame.lps_affine()))
    target = CTTarget()(fine)

    def transform(item):
        return {"image": torch.zeros(2, N, N), "label": target, "ct_1mm": fine}

    (case,) = cache_cases([{"case_id": "r", "ct": "none"}], transform, tmp_path, mode="raw")
    assert case["kind"] == "1mm"
    ds = SliceDataset([case])
    t = np.asarray(target[0])
    for axis, index in [(0, 0), (0, 70), (1, 33), (2, 127)]:
        want = (t[:, :, index], t[:, index, :], t[index, :, :])[axis]
        np.testing.assert_allclose(ds[axis * N + index]["label"][0].numpy(), want, atol=2.5e-4)  # int16 HU: 0.5 HU


def test_a_prepared_case_and_its_raw_ct_give_the_same_items(tmp_path, bundle_config, case_chain, example_lungdx):
    """train.json's two loading chains agree: a real CT through ``validate#preprocessing`` of a raw dataset
    (prepare's chain, run in memory) and the case folder prepare wrote from it through ``validate#preprocessing`` of a
    prepared dataset reach the network as bit-identical ``image`` (the 8-bit PNG levels) and ``label`` (the float32
    target); validation drops the 1 mm cube in both modes."""
    from scripts.prepare.case_writer import prepare_case

    raw_loading = bundle_config("train.json").get_parsed_content("case_loading_by_mode#raw")
    result = prepare_case("A0001", str(example_lungdx), tmp_path, Compose(raw_loading))
    assert result["status"] == "prepared", result
    case = tmp_path / "A0001"
    prepared_item = {k: str(case / f"{k}.{ext}") for k, ext in (("ct", "nii.gz"), ("pa", "png"), ("lateral", "png"))}

    raw = case_chain("validate", "raw")({"case_id": "A0001", "ct": str(example_lungdx)})
    prepared = case_chain("validate", "prepared")(
        {"case_id": "A0001", **prepared_item, "ct_1mm": str(case / "ct_1mm.nii.gz")}
    )
    assert sorted(raw) == sorted(prepared) == ["case_id", "image", "label"]
    assert raw["image"].shape == (2, N, N) and raw["label"].shape == (1, N, N, N)
    assert raw["image"].dtype == prepared["image"].dtype == torch.float32
    torch.testing.assert_close(prepared["image"], raw["image"], rtol=0, atol=0)
    torch.testing.assert_close(prepared["label"], raw["label"], rtol=0, atol=0)
    assert float(raw["label"].std()) > 0.05  # a real CT, not an empty cube
