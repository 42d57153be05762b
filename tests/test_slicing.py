"""Slice geometry shared by the network's query points and the training targets."""

import pytest
import torch
from scripts.slicing import AXES, axis_code, sample_volume, slice_positions, voxel_to_mm


@pytest.mark.parametrize("code", [0, 1, 2])
def test_whole_slices_equal_array_slices(code):
    vol = torch.rand(2, 1, 12, 12, 12)
    index = torch.tensor([[3.0, 7.0], [0.0, 11.0]])
    axis = torch.full((2, 2), code)
    out = sample_volume(vol, slice_positions(axis, index, None, 12, 12))  # (B, S, 12, 12)
    for b in range(2):
        for s in range(2):
            k = int(index[b, s])
            ref = (vol[b, 0, :, :, k], vol[b, 0, :, k, :], vol[b, 0, k, :, :])[code]
            torch.testing.assert_close(out[b, s], ref, rtol=0, atol=1e-6)


def test_mixed_axes_in_one_batch():
    vol = torch.rand(1, 1, 8, 8, 8)
    axis = torch.tensor([[0, 1, 2]])
    index = torch.tensor([[2.0, 5.0, 1.0]])
    out = sample_volume(vol, slice_positions(axis, index, None, 8, 8))[0]
    torch.testing.assert_close(out[0], vol[0, 0, :, :, 2])
    torch.testing.assert_close(out[1], vol[0, 0, :, 5, :])
    torch.testing.assert_close(out[2], vol[0, 0, 1, :, :])


def test_query_grid_sits_at_block_centres():
    pos = slice_positions(torch.tensor([0]), torch.tensor([10.0]), None, 32, 128)[0]
    # every 4th voxel block: centres at 4q + 1.5 in both in-plane dims, the fixed axis at the index
    q = torch.arange(32, dtype=torch.float32) * 4 + 1.5
    torch.testing.assert_close(pos[:, 0, 0], q)
    torch.testing.assert_close(pos[0, :, 1], q)
    assert torch.all(pos[..., 2] == 10.0)


def test_zoom_box_positions_are_analytic():
    box = torch.tensor([[16.0, 40.0, 32.0]])  # rows 16..48, cols 40..72 (outer edges), voxel units
    pos = slice_positions(torch.tensor([1]), torch.tensor([5.0]), box, 128, 128)[0]  # coronal: rows x, cols z
    step = 32 / 128
    torch.testing.assert_close(pos[0, 0], torch.tensor([16 + step / 2 - 0.5, 5.0, 40 + step / 2 - 0.5]))
    torch.testing.assert_close(pos[-1, -1], torch.tensor([48 - step / 2 - 0.5, 5.0, 72 - step / 2 - 0.5]))


def test_linear_volume_is_sampled_exactly_inside_a_zoom_box():
    n = 16
    i = torch.arange(n, dtype=torch.float32)
    vol = (2 * i[:, None, None] + 3 * i[None, :, None] + 5 * i[None, None, :])[None, None]  # linear in (i, j, k)
    box = torch.tensor([[[3.0, 4.0, 6.0]]])
    pos = slice_positions(torch.tensor([[2]]), torch.tensor([[7.0]]), box, 24, n)
    out = sample_volume(vol, pos)[0, 0]
    ref = 2 * pos[0, 0, ..., 0] + 3 * pos[0, 0, ..., 1] + 5 * pos[0, 0, ..., 2]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)


def test_voxel_to_mm_centres_the_cube():
    torch.testing.assert_close(voxel_to_mm(torch.tensor([63.5, 0.0, 127.0])), torch.tensor([0.0, -158.75, 158.75]))


def test_axis_names_and_errors():
    assert [axis_code(a) for a in AXES] == [0, 1, 2]
    assert axis_code("Sagittal") == 2
    with pytest.raises(ValueError, match="unknown slice axis 'oblique'"):
        axis_code("oblique")
