"""Inference outputs: the zoomed region lands where it lies in the volume, at the decoder's resolution."""

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.engine import ZoomInferer
from scripts.inference import SaveReconstructiond, reconstruction_affine, zoom_affine


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
