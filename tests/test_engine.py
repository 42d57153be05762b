"""Random slice batches for SupervisedTrainer: targets must be the label's own slices."""

import pytest
import torch

from scripts.engine import RandomSliceBatch, SliceInferer


def _batch(b=2, n=16):
    return {"image": torch.rand(b, 2, 32, 32), "label": torch.rand(b, 1, n, n, n)}


def test_full_slices_match_label_slices():
    batch = _batch()
    image, target, args, kwargs = RandomSliceBatch(slices_per_case=5, seed=3)(batch)
    assert image.shape == (2, 2, 32, 32) and args == ()
    assert target.shape == (10, 1, 128, 128)
    assert kwargs["slice_axis"].shape == (2, 5) and kwargs["zoom_box"].shape == (2, 5, 3)


def test_targets_equal_array_slices_at_volume_resolution():
    batch = _batch(n=16)
    sampler = RandomSliceBatch(slices_per_case=6, output_size=16, seed=1)
    _, target, _, kw = sampler(batch)
    for b in range(2):
        for s in range(6):
            a, k = int(kw["slice_axis"][b, s]), int(kw["slice_index"][b, s])
            vol = batch["label"][b, 0]
            ref = (vol[:, :, k], vol[:, k, :], vol[k, :, :])[a]
            torch.testing.assert_close(target[b * 6 + s, 0], ref)
    assert set(kw["zoom_box"][..., 2].unique().tolist()) == {16.0}  # no zoom by default


def test_same_seed_same_draws_and_all_axes_used():
    d1 = RandomSliceBatch(slices_per_case=64, seed=7).draw(2, 128)
    d2 = RandomSliceBatch(slices_per_case=64, seed=7).draw(2, 128)
    for x, y in zip(d1, d2):
        assert torch.equal(x, y)
    assert set(d1[0].unique().tolist()) == {0, 1, 2}
    d3 = RandomSliceBatch(slices_per_case=64, seed=8).draw(2, 128)
    assert not torch.equal(d1[1], d3[1])


def test_zoom_boxes_stay_inside_the_volume():
    axis, index, box = RandomSliceBatch(slices_per_case=500, zoom_prob=0.5, seed=0).draw(1, 128)
    size = box[..., 2]
    zoomed = size < 128
    assert 0.3 < zoomed.float().mean() < 0.7  # about half the slices zoom in
    assert size.min() >= 32 and size.max() <= 128
    assert torch.all(box[..., 0] >= 0) and torch.all(box[..., 0] + size <= 128)
    assert torch.all(box[..., 1] >= 0) and torch.all(box[..., 1] + size <= 128)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="label must be"):
        RandomSliceBatch()({"image": torch.rand(1, 2, 8, 8), "label": torch.rand(1, 1, 8, 8)})
    with pytest.raises(KeyError, match="needs keys"):
        RandomSliceBatch()({"img": torch.rand(1, 2, 8, 8)})
    with pytest.raises(ValueError, match="zoom_prob"):
        RandomSliceBatch(zoom_prob=2)


def test_slice_inferer_flattens_slices():
    class Net(torch.nn.Module):
        def forward(self, x, slice_axis=None, slice_index=None, zoom_box=None):
            return torch.zeros(x.shape[0], slice_axis.shape[1], 8, 8)

    kw = {"slice_axis": torch.zeros(2, 3, dtype=torch.long), "slice_index": torch.zeros(2, 3), "zoom_box": None}
    assert SliceInferer()(torch.rand(2, 2, 8, 8), Net(), **kw).shape == (6, 1, 8, 8)


def test_flag_reads_command_line_switches():
    from scripts.engine import flag

    assert flag("true") and flag("True") and flag(True) and flag(1) and flag("yes")
    assert not flag("false") and not flag(False) and not flag(0) and not flag("no")
    with pytest.raises(ValueError, match="--resume must be true or false, got 'maybe'"):
        flag("maybe", "resume")


def test_loss_on_a_fixed_batch_falls_after_training_iterations():
    """SupervisedTrainer with the bundle's slice batches, slice inferer, loss and the paper's Adam betas."""
    from monai.engines import SupervisedTrainer

    from scripts.geometry import ProjectionGeometry
    from scripts.losses import PerX2CTLoss
    from scripts.networks import PerspectiveSampler, build_perx2ct

    torch.manual_seed(0)
    net = build_perx2ct("small", PerspectiveSampler(ProjectionGeometry.from_preset("perx2ct")), query_grid=8, volume_shape=32)
    n = 32
    i = torch.linspace(-1, 1, n)
    blob = torch.exp(-(i[:, None, None] ** 2 + i[None, :, None] ** 2 + i[None, None, :] ** 2) * 3)
    batch = {"image": torch.rand(1, 2, 128, 128), "label": blob[None, None] * 0.8}
    loss_fn = PerX2CTLoss()
    prepare = RandomSliceBatch(slices_per_case=4, output_size=32, seed=5)

    def fixed_loss():
        net.eval()
        image, target, _, kw = RandomSliceBatch(slices_per_case=8, output_size=32, seed=99)(batch)
        with torch.no_grad():
            return float(loss_fn(SliceInferer()(image, net, **kw), target))

    before = fixed_loss()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=[batch] * 25, epoch_length=25, network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.9)), loss_function=loss_fn,
        prepare_batch=prepare, inferer=SliceInferer(), decollate=False,
    )
    trainer.run()
    after = fixed_loss()
    assert after < 0.8 * before, (before, after)
