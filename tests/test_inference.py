"""Inference outputs: the zoomed region lands where it lies in the volume, at the decoder's resolution."""

import nibabel as nib
import numpy as np
import pytest
import torch
from scripts.inference.inferers import ZoomInferer
from scripts.inference.items import SaveReconstructiond, reconstruction_affine, zoom_affine


def test_reconstruction_affine_centres_the_cube_on_the_isocentre():
    aff = reconstruction_affine((10.0, -20.0, 30.0))
    # LPS (10, -20, 30) is RAS (-10, 20, 30); LPS-ordered axes give a RAS diagonal (-2.5, -2.5, 2.5)
    np.testing.assert_allclose(aff @ [63.5, 63.5, 63.5, 1], [-10, 20, 30, 1])
    np.testing.assert_allclose(np.diag(aff)[:3], [-2.5, -2.5, 2.5])


def test_zoom_affine_places_the_box_centre():
    zoom = {"axis": "coronal", "index": 64, "box": [32, 40, 32]}  # rows = x voxels 32..64, cols = z voxels 40..72
    aff = zoom_affine(zoom)
    # box centre: x voxel 47.5, y voxel 64, z voxel 55.5 -> LPS (-40, 1.25, -20) mm -> RAS (40, -1.25, -20)
    np.testing.assert_allclose(aff @ [63.5, 63.5, 0, 1], [40, -1.25, -20, 1], atol=1e-9)
    assert np.allclose(np.linalg.norm(aff[:3, :2], axis=0), 32 * 2.5 / 128)  # 0.625 mm pixels: 4x finer


def test_zoom_inferer_renders_the_region_and_is_written_in_place(tmp_path):
    calls = {}

    class Net(torch.nn.Module):
        def forward(self, x, slice_axis=None, slice_index=None, zoom_box=None):
            calls.update(axis=slice_axis, index=slice_index, box=zoom_box)
            return torch.full((x.shape[0], 1, 128, 128), 0.5)

    zoom = {"axis": "sagittal", "index": 10.0, "box": [0, 64, 64]}
    pred = ZoomInferer(**zoom)(torch.rand(1, 2, 128, 128), Net())
    assert pred.shape == (1, 1, 128, 128)
    assert calls["axis"].tolist() == [[2]] and calls["index"].tolist() == [[10.0]]
    assert calls["box"].tolist() == [[[0.0, 64.0, 64.0]]]
    SaveReconstructiond(keys="pred", output_dir=str(tmp_path), zoom=zoom)({"pred": pred[0], "case_id": "c1"})
    img = nib.load(tmp_path / "c1_zoom.nii.gz")
    assert img.shape == (128, 128, 1)
    np.testing.assert_allclose(img.affine, zoom_affine(zoom))
    np.testing.assert_allclose(img.get_fdata(), 0.5 * 2500 - 1024)  # written in HU
    assert (tmp_path / "c1_zoom.png").is_file()
    with pytest.raises(ValueError, match="zoom box must be"):
        ZoomInferer("axial", 3, [0, 0])


def test_zoom_outside_the_grid_is_refused_with_the_valid_range():
    from scripts.inference.items import check_zoom

    assert check_zoom(None) is None
    assert check_zoom({"axis": "axial", "index": 127, "box": [96, 0, 32]}) == {
        "axis": "axial",
        "index": 127.0,
        "box": [96.0, 0.0, 32.0],
    }
    for zoom, message in (
        ({"axis": "axial", "index": 128, "box": [0, 0, 32]}, r"index 128 is outside the 128-voxel grid: use 0..127"),
        ({"axis": "axial", "index": -1, "box": [0, 0, 32]}, r"use 0..127"),
        ({"axis": "axial", "index": 3, "box": [97, 0, 32]}, r"row0 97 .* use 0..96"),
        ({"axis": "axial", "index": 3, "box": [0, -1, 32]}, r"col0 -1 .* use 0..96"),
        ({"axis": "axial", "index": 3, "box": [0, 0, 129]}, r"size 129 must be in \(0, 128\]"),
        ({"axis": "axial", "index": 3, "box": [0, 0]}, r"box must be \[row0, col0, size\]"),
        ({"axis": "oblique", "index": 3, "box": [0, 0, 8]}, r"unknown slice axis 'oblique'"),
        ({"axis": "axial", "box": [0, 0, 8]}, r"--zoom must be"),
    ):
        with pytest.raises(ValueError, match=message):
            check_zoom(zoom)
    with pytest.raises(ValueError, match="use 0..127"):
        SaveReconstructiond(keys="pred", zoom={"axis": "axial", "index": 200, "box": [0, 0, 32]})


def test_outputs_are_named_by_case_id(tmp_path):
    from scripts.inference.items import inference_items

    for case in ("c1", "c2"):
        (tmp_path / case).mkdir()
        for view in ("pa", "lateral"):
            (tmp_path / case / f"{view}.png").write_bytes(b"")
    # view-named files take their folder's name; a prepared folder its own name
    assert inference_items(str(tmp_path / "c1" / "pa.png"), str(tmp_path / "c1" / "lateral.png"))[0]["case_id"] == "c1"
    assert inference_items(str(tmp_path / "c2"))[0]["case_id"] == "c2"
    assert (
        inference_items(str(tmp_path / "c1" / "pa.png"), str(tmp_path / "c1" / "lateral.png"), case_id="x")[0][
            "case_id"
        ]
        == "x"
    )
    # a datalist without case ids: every case gets its folder's name, and duplicates are made unique
    entries = [{"pa": f"{c}/pa.png", "lateral": f"{c}/lateral.png"} for c in ("c1", "c2", "c1")]
    (tmp_path / "list.json").write_text(__import__("json").dumps(entries))
    assert [i["case_id"] for i in inference_items(datalist=str(tmp_path / "list.json"))] == ["c1", "c2", "c1_2"]
    with pytest.raises(FileNotFoundError, match="--lateral image not found"):
        inference_items(str(tmp_path / "c1" / "pa.png"), str(tmp_path / "nope.png"))


def test_preview_is_labelled_and_shows_ground_truth_when_given(tmp_path):
    from PIL import Image

    vol = torch.rand(1, 128, 128, 128) * 0.8 + 0.1
    SaveReconstructiond(keys="pred", output_dir=str(tmp_path))({"pred": vol, "case_id": "p"})
    SaveReconstructiond(keys="pred", output_dir=str(tmp_path))({"pred": vol, "label": vol, "case_id": "g"})
    p, g = (np.asarray(Image.open(tmp_path / f"{c}.png")) for c in ("p", "g"))
    # three planes plus the same text band (case, HU window): the writer measures nothing, metrics are the evaluation's
    assert g.shape[0] == p.shape[0] > 3 * 128
    assert g.shape[1] >= 64 + 3 * 128 > p.shape[1]  # ground truth, prediction and error columns
    assert p[: p.shape[0] - 3 * 128].max() > 200, "the title band holds text"
