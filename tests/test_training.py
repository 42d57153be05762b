"""The trainer's and evaluator's pieces: slice batches, the slice inferer, the validation loss metric, the
checkpoint criterion and --init_ckpt; a small model learns through SupervisedTrainer on slice samples."""

from __future__ import annotations

import logging

import pytest
import torch
from scripts.data.slice_sampling import SliceBatch
from scripts.inference.inferers import SliceInferer
from scripts.networks.checkpoint import load_init_checkpoint
from scripts.training.model_selection import SliceLossMetric, metric_cmp, split_metrics


def _batch(n=3, h=8):
    return {
        "image": torch.rand(n, 2, 16, 16),
        "label": torch.rand(n, 1, h, h),
        "slice_axis": torch.tensor([0, 1, 2][:n]),
        "slice_index": torch.arange(n, dtype=torch.float32),
        "zoom_box": torch.tensor([[0.0, 0.0, 128.0]] * n),
    }


def test_slice_batch_gives_one_slice_per_sample():
    batch = _batch()
    image, label, args, kw = SliceBatch()(batch)
    assert torch.equal(image, batch["image"]) and torch.equal(label, batch["label"]) and args == ()
    assert kw["slice_axis"].tolist() == [[0], [1], [2]] and kw["slice_axis"].dtype == torch.long
    assert kw["slice_index"].shape == (3, 1) and kw["zoom_box"].shape == (3, 1, 3)


def test_slice_batch_names_bad_batches():
    with pytest.raises(KeyError, match=r"missing \['slice_axis', 'slice_index', 'zoom_box'\]"):
        SliceBatch()({"image": torch.rand(1, 2, 8, 8), "label": torch.rand(1, 1, 8, 8)})
    with pytest.raises(ValueError, match="need image"):
        SliceBatch()({**_batch(), "label": torch.rand(3, 1, 8, 8, 8)})


def test_slice_inferer_flattens_slices():
    class Net(torch.nn.Module):
        def forward(self, x, slice_axis=None, slice_index=None, zoom_box=None):
            return torch.zeros(x.shape[0], slice_axis.shape[1], 8, 8)

    kw = {"slice_axis": torch.zeros(2, 3, dtype=torch.long), "slice_index": torch.zeros(2, 3), "zoom_box": None}
    assert SliceInferer()(torch.rand(2, 2, 8, 8), Net(), **kw).shape == (6, 1, 8, 8)


def test_flag_reads_command_line_switches():
    from scripts.utils.command_line import flag

    assert flag("true") and flag("True") and flag(True) and flag(1) and flag("yes")
    assert not flag("false") and not flag(False) and not flag(0) and not flag("no")
    with pytest.raises(ValueError, match="--resume must be true or false, got 'maybe'"):
        flag("maybe", "resume")


class _DropoutL1(torch.nn.Module):
    """An L1 loss whose value depends on train/eval mode (as LPIPS with dropout)."""

    def forward(self, pred, target):
        return (pred - target).abs().mean() + (1.0 if self.training else 0.0)


def test_validation_loss_is_the_mean_loss_over_axial_slices_in_eval_mode():
    loss = _DropoutL1().train()
    metric = SliceLossMetric(loss, batch_size=3)
    metric.reset()
    pred, label = torch.rand(2, 1, 4, 5, 7), torch.rand(2, 1, 4, 5, 7)
    metric.update((pred[:1], label[:1]))
    metric.update((list(pred[1:]), list(label[1:])))  # decollated batches too
    want = torch.stack([(pred[b, 0, :, :, k] - label[b, 0, :, :, k]).abs().mean() for b in range(2) for k in range(7)])
    assert metric.compute() == pytest.approx(float(want.mean()), rel=1e-6)  # eval mode: no +1 of "dropout"
    assert loss.training  # the loss module is back in training mode


class _ColumnWeightedL1(torch.nn.Module):
    """L1 weighted by the column index: a slice compared in the wrong layout gives another value."""

    def forward(self, pred, target):
        w = torch.arange(1, pred.shape[-1] + 1, dtype=pred.dtype)
        return ((pred - target).abs() * w).mean()


def test_validation_loss_over_three_axes_compares_each_axis_slices_in_the_networks_layout():
    # the official criterion (val/rec_loss over slices of all three axes): channel a is the volume rendered along
    # axes[a]; axial slices fix k (rows i, cols j), coronal fix j (rows i, cols k), sagittal fix i (rows j, cols k)
    loss = _ColumnWeightedL1()
    metric = SliceLossMetric(loss, batch_size=4, axes=("axial", "coronal", "sagittal"))
    metric.reset()
    pred, label = torch.rand(2, 3, 4, 5, 7), torch.rand(2, 1, 4, 5, 7)
    metric.update((pred, label))
    want = []
    for b in range(2):
        want += [loss(pred[b, 0, :, :, k], label[b, 0, :, :, k]) for k in range(7)]
        want += [loss(pred[b, 1, :, j, :], label[b, 0, :, j, :]) for j in range(5)]
        want += [loss(pred[b, 2, i, :, :], label[b, 0, i, :, :]) for i in range(4)]
    assert metric.compute() == pytest.approx(float(torch.stack(want).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="one per slicing axis"):
        SliceLossMetric(loss, axes=("axial",)).update((pred, label))


def test_checkpoint_criterion_lower_loss_or_higher_psnr():
    assert metric_cmp("val_loss")(0.4, 0.5) and not metric_cmp("val_loss")(0.6, 0.5)
    assert metric_cmp("val_psnr")(21.0, 20.0) and not metric_cmp("val_psnr")(19.0, 20.0)
    key, rest = split_metrics({"val_loss": 1, "val_psnr": 2}, "val_psnr")
    assert key == {"val_psnr": 2} and rest == {"val_loss": 1}
    with pytest.raises(ValueError, match="--checkpoint_metric 'psnr' is not a validation metric"):
        split_metrics({"val_loss": 1}, "psnr")


@pytest.fixture(scope="module")
def small_net(small_network):
    return small_network()


def test_init_ckpt_loads_weights_and_checks_the_network(small_net, tmp_path, caplog):
    from scripts.networks.checkpoint import write_info

    src = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in small_net.state_dict().items()}
    path = tmp_path / "model.pt"
    torch.save(src, path)
    write_info(path, model_preset="small", geometry_preset="x2ctgan")
    with caplog.at_level(logging.WARNING):
        info = load_init_checkpoint(small_net, str(path), "small", "perx2ct")
    assert info["geometry_preset"] == "x2ctgan" and "trained with geometry 'x2ctgan'" in caplog.text
    assert all(torch.equal(small_net.state_dict()[k], v) for k, v in src.items())
    assert load_init_checkpoint(small_net, None, "small", "perx2ct") is None
    with pytest.raises(
        ValueError, match="holds a 'small' network but this run builds 'paper': add --model_preset small"
    ):
        load_init_checkpoint(small_net, str(path), "paper", "perx2ct")
    with pytest.raises(FileNotFoundError, match="--init_ckpt .*nope.pt: no such file"):
        load_init_checkpoint(small_net, str(tmp_path / "nope.pt"), "small", "perx2ct")
    torch.save({"model": {"decoder.conv_in.weight": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not fit the 'small' network"):
        load_init_checkpoint(small_net, str(tmp_path / "bad.pt"), "small", "perx2ct")


def test_imported_official_weights_may_start_a_bundle_convention_run(small_net, tmp_path, caplog, monkeypatch):
    import scripts.networks.checkpoint as checkpoint
    from scripts.networks.checkpoint import write_info

    monkeypatch.setattr(checkpoint, "_legacy_presets", lambda: {"small": "small_official"})
    path = tmp_path / "official.pt"
    torch.save(small_net.state_dict(), path)
    write_info(path, model_preset="small_official", geometry_preset="perx2ct_official")
    with caplog.at_level(logging.WARNING):
        load_init_checkpoint(small_net, str(path), "small", "perx2ct")
    assert "official code's conventions" in caplog.text and "'perx2ct_official'" in caplog.text


@pytest.mark.slow  # a training run (20 iterations of SupervisedTrainer)
def test_a_small_model_learns_from_independent_slice_samples(tmp_path):
    """SupervisedTrainer with the bundle's slice dataset, sampler, batch and inferer (L1, the paper's Adam betas):
    the loss on fixed held-back samples falls."""
    import numpy as np
    from monai.data import DataLoader
    from monai.engines import SupervisedTrainer
    from scripts.data.slice_sampling import SliceDataset, SliceSampler
    from scripts.frame import FRAME
    from scripts.networks import PerspectiveSampler, build_perx2ct
    from scripts.projection.geometry import ProjectionGeometry

    torch.manual_seed(0)
    n = FRAME.shape // 4  # a 32^3 grid keeps the test cheap; the pieces are the training path's
    i = np.linspace(-1, 1, n)
    cases = []
    for c, r in enumerate((0.35, 0.6)):  # two "patients": blobs of different size, X-rays that say which
        folder = tmp_path / f"case{c}"
        folder.mkdir()
        vol = np.exp(-(i[:, None, None] ** 2 + i[None, :, None] ** 2 + i[None, None, :] ** 2) / r**2) * 0.8
        np.save(folder / "target.npy", vol.astype(np.float32))
        j = np.linspace(-1, 1, FRAME.shape)
        img = np.broadcast_to(np.exp(-(j[:, None] ** 2 + j[None, :] ** 2) / r**2), (2,) + (FRAME.shape,) * 2)
        img = img.astype(np.float32)
        np.save(folder / "image.npy", img)
        cases.append({"case_id": f"case{c}", "dir": str(folder), "kind": "target", "shape": n})
    ds = SliceDataset(cases, output_size=n, volume_shape=n)
    net = build_perx2ct(
        "small", PerspectiveSampler(ProjectionGeometry.from_preset("perx2ct")), query_grid=n // 4, volume_shape=n
    )
    loader = DataLoader(ds, sampler=SliceSampler(ds, seed=1), batch_size=4, num_workers=0)
    fixed = next(iter(DataLoader(ds, sampler=SliceSampler(ds, seed=99), batch_size=8)))

    def fixed_loss():
        net.eval()
        image, label, _, kw = SliceBatch()(fixed)
        with torch.no_grad():
            return float(torch.nn.functional.l1_loss(SliceInferer()(image, net, **kw), label))

    before = fixed_loss()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        epoch_length=20,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.9)),
        loss_function=torch.nn.L1Loss(),
        prepare_batch=SliceBatch(),
        inferer=SliceInferer(),
        decollate=False,
    )
    trainer.run()
    after = fixed_loss()
    assert after < 0.6 * before, (before, after)
