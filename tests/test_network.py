"""PerX2CT network: sizes of the presets, shapes for every axis and zoom, gradients, determinism."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from scripts.geometry import ProjectionGeometry
from scripts.networks import MODEL_PRESETS, PerX2CT, PerspectiveSampler, build_perx2ct


def sampler():
    return PerspectiveSampler(ProjectionGeometry.from_preset("perx2ct"))


def tiny(**kw) -> PerX2CT:
    """A small network on a 32^3 volume (8 x 8 query grid): cheap enough to reconstruct whole volumes."""
    return build_perx2ct("small", sampler(), query_grid=8, volume_shape=32, volume_size_mm=320.0, **kw)


def n_params(net):
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("preset, expected, tol", [("paper", 42.6e6, 0.02), ("paper_global", 70e6, 0.03)])
def test_paper_parameter_counts(preset, expected, tol):
    with torch.device("meta"):
        net = build_perx2ct(preset, sampler())
    assert abs(n_params(net) - expected) / expected <= tol, n_params(net)


def _volume_flops(preset):
    with torch.device("meta"):
        net = build_perx2ct(preset, sampler()).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, 2, 128, 128))
    return counter.get_total_flops()


def test_small_preset_is_cpu_sized():
    with torch.device("meta"):
        small = build_perx2ct("small", sampler())
    assert n_params(small) <= 5e6
    paper, cheap = _volume_flops("paper"), _volume_flops("small")
    assert 20e12 < paper < 26e12  # about 23.6 TFLOP per volume (REFERENCE)
    assert cheap <= paper / 20, (cheap / 1e9, paper / 1e9)


def test_point_features_have_the_paper_widths():
    with torch.device("meta"):
        assert build_perx2ct("paper", sampler()).point_channels == 63 + 2 * 512 == 1087
        assert build_perx2ct("paper_global", sampler()).point_channels == 1087 + 2 * 256 == 1599
    assert MODEL_PRESETS["paper_global"]["zoom_in"] and not MODEL_PRESETS["paper"]["zoom_in"]


def test_slice_shapes_for_every_axis_and_zoom():
    net = build_perx2ct("small", sampler()).eval()
    image = torch.rand(2, 2, 128, 128)
    axis = torch.tensor([[0, 1, 2], [2, 1, 0]])
    index = torch.tensor([[0.0, 64.0, 127.0], [10.0, 20.0, 30.0]])
    box = torch.tensor([[[0, 0, 128.0], [10, 20, 32], [96, 96, 32]], [[0, 0, 64.0], [64, 0, 64], [0, 0, 128]]])
    with torch.no_grad():
        assert net(image, axis, index).shape == (2, 3, 128, 128)
        assert net(image, axis, index, box).shape == (2, 3, 128, 128)


def test_full_volume_shape_and_axis_consistency():
    net = tiny().eval()
    image = torch.rand(1, 2, 128, 128)
    with torch.no_grad():
        vol = net(image)
        assert vol.shape == (1, 1, 32, 32, 32)
        three = net.reconstruct(image, [0, 1, 2])
        assert three.shape == (1, 3, 32, 32, 32)
        torch.testing.assert_close(three[:, :1], vol)
        k = torch.tensor([[5.0]])
        for code, cut in ((0, lambda v: v[0, :, :, 5]), (1, lambda v: v[0, :, 5, :]), (2, lambda v: v[0, 5, :, :])):
            s = net(image, torch.tensor([[code]]), k)[0, 0]
            torch.testing.assert_close(cut(three[:, code]), s, rtol=1e-4, atol=1e-5)


def test_encoder_runs_once_per_case():
    net = tiny().eval()
    calls = []
    net.encoder.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        net.reconstruct(torch.rand(2, 2, 128, 128), [0, 1, 2])
        assert len(calls) == 1
        net(torch.rand(2, 2, 128, 128), torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4))
        assert len(calls) == 2


def test_gradients_reach_the_encoder_but_not_the_frozen_stem():
    net = tiny().train()
    out = net(torch.rand(2, 2, 128, 128), torch.tensor([[0, 2], [1, 0]]), torch.tensor([[3.0, 9.0], [16.0, 31.0]]))
    out.mean().backward()
    assert net.encoder.layer1[0].conv1.weight.grad.abs().sum() > 0
    assert net.encoder.conv1.weight.grad is None and not net.encoder.conv1.weight.requires_grad
    assert not net.encoder.bn1.training  # frozen stem keeps its statistics


def test_same_seed_same_output():
    image = torch.rand(1, 2, 128, 128)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        net = tiny().eval()
        with torch.no_grad():
            outs.append(net(image, torch.tensor([[1]]), torch.tensor([[7.0]])))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_encoder_weights_from_a_local_torchvision_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder weights not found: .*nothing.pth"):
        tiny(encoder_weights=str(tmp_path / "nothing.pth"))
    torch.manual_seed(0)
    donor = tiny().encoder.state_dict()
    file = tmp_path / "resnet_imagenet.pth"
    extra = {"fc.weight": torch.zeros(1000, 512), "layer4.0.conv1.weight": torch.zeros(1)}  # torchvision keys not built here
    torch.save({**{k: v for k, v in donor.items() if k not in ("mean", "std")}, **extra}, file)
    torch.manual_seed(1)
    net = tiny(encoder_weights=str(file))
    for k, v in net.encoder.state_dict().items():
        torch.testing.assert_close(v, donor[k])
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="does not fit this encoder"):
        tiny(encoder_weights=str(tmp_path / "wrong.pth"))


def test_mismatched_grid_and_volume_is_refused():
    with pytest.raises(ValueError, match="must match"):
        build_perx2ct("small", sampler(), query_grid=8)
    with pytest.raises(ValueError, match="unknown model_preset 'huge'"):
        build_perx2ct("huge", sampler())
