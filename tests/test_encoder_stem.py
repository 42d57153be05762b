"""The encoder's stem (conv1/bn1) trains by default, as in the official run.

The official code freezes conv1/bn1 when ImageNet weights are loaded (``x2ct_nerf/modules/image_encoder/resnet.py:87-91``
@ be4c354), but its two optimizers make PyTorch Lightning 1.0.8 call ``toggle_optimizer`` before every step, which sets
``requires_grad=True`` on all of the first optimizer's parameters, the stem included (``core/lightning.py:1260-1278``).
These tests check which parameters receive a gradient after one backward pass through the encoder of each paper
preset, built the way training builds it (ImageNet-layout weights loaded from a local file), and that the documented
option ``freeze_stem`` still freezes exactly the stem.
"""

from __future__ import annotations

import pytest
import torch
from scripts.networks import PerspectiveSampler, build_perx2ct
from scripts.networks.encoder import ResNetEncoder
from scripts.projection.geometry import ProjectionGeometry

STEM = {"conv1.weight", "bn1.weight", "bn1.bias"}


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    """A torchvision-layout ResNet-101 state dict (layers 1-3) in a local file, standing in for the ImageNet file:
    what matters here is that weights are *loaded* (the official freeze applied only then), not their values."""
    torch.manual_seed(0)
    enc = ResNetEncoder(global_features=True)
    path = tmp_path_factory.mktemp("imagenet") / "resnet101-test.pth"
    torch.save(enc.state_dict(), path)
    return str(path)


def _grads_after_one_step(encoder: torch.nn.Module) -> dict[str, bool]:
    """name -> whether the parameter received a non-zero gradient from one backward of the encoder's outputs."""
    encoder.train()
    torch.manual_seed(1)
    x = torch.rand(2, 1, 128, 128)
    local, glob = encoder(x)
    (local.square().mean() + glob.square().mean()).backward()
    return {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in encoder.named_parameters()}


@pytest.mark.parametrize("preset", ["paper", "paper_global", "paper_official", "paper_global_official"])
def test_every_encoder_parameter_of_the_paper_presets_trains(preset, imagenet_file):
    geometry = ProjectionGeometry.from_preset("perx2ct_official" if preset.endswith("_official") else "perx2ct")
    net = build_perx2ct(preset, PerspectiveSampler(geometry), encoder_weights=imagenet_file)
    enc = net.encoder
    assert enc.weights_source.startswith("imagenet:") and enc.freeze_stem is False
    got = _grads_after_one_step(enc)
    assert STEM <= set(got)
    assert [n for n, ok in got.items() if not ok] == []  # the stem included: every parameter has a gradient


@pytest.mark.parametrize("freeze", [True, None])
def test_freeze_stem_option_freezes_exactly_conv1_bn1(freeze, imagenet_file):
    net = build_perx2ct(
        "paper",
        PerspectiveSampler(ProjectionGeometry.from_preset("perx2ct")),
        encoder_weights=imagenet_file,
        encoder={"freeze_stem": freeze},  # None: frozen iff ImageNet weights are loaded (here they are)
    )
    got = _grads_after_one_step(net.encoder)
    assert {n for n, ok in got.items() if not ok} == STEM
    assert not any(p.requires_grad for n, p in net.encoder.named_parameters() if n in STEM)


def test_random_start_trains_the_stem_too():
    got = _grads_after_one_step(ResNetEncoder(layers=(3, 4), widths=(64, 128)))
    assert all(got.values()) and STEM <= set(got)
