"""PerX2CTLoss: L1 + SSIM parts, and LPIPS-VGG from a local (synthesised) weight file."""

from __future__ import annotations

import pytest
import torch

from scripts.losses import LPIPS_TAPS, LPIPSVGG, PerX2CTLoss, _vgg16_features


def _slices(seed: int = 0, n: int = 2, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A random VGG16 ``features`` state dict in torchvision's layout (no pretrained weights needed)."""
    torch.manual_seed(0)
    sd = {f"features.{k}": v for k, v in _vgg16_features().state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # a torchvision file has more keys: ignored
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(sd, path)
    return path


def test_l1_ssim_zero_for_identical():
    loss = PerX2CTLoss(lpips_vgg_weights=None)
    x = _slices()
    total = loss(x, x.clone())
    assert total.item() == pytest.approx(0.0, abs=1e-5)
    assert set(loss.last_components) == {"l1", "ssim", "total"}
    assert loss.last_components["l1"].item() == 0.0
    assert loss.last_components["ssim"].item() == pytest.approx(0.0, abs=1e-5)


def test_positive_and_differentiable():
    loss = PerX2CTLoss(l1_weight=1.0, ssim_weight=0.5)
    target = _slices(1)
    pred = _slices(2).requires_grad_(True)
    total = loss(pred, target)
    assert total.item() > 0
    c = loss.last_components
    assert total.item() == pytest.approx(c["l1"].item() + 0.5 * c["ssim"].item(), rel=1e-6)
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_lpips_from_local_file(vgg_file):
    with pytest.warns(UserWarning, match="1/C"):
        lp = LPIPSVGG(vgg_file)
    assert not lp.calibrated
    x = _slices(3)
    assert torch.allclose(lp(x, x.clone()), torch.zeros(2), atol=1e-7)
    pred = _slices(4).requires_grad_(True)
    d = lp(pred, x)
    assert d.shape == (2,) and (d > 0).all()
    d.sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in lp.parameters())


def test_lpips_lin_weights_used(vgg_file, tmp_path):
    sd = torch.load(vgg_file, weights_only=True)
    chans = [64, 128, 256, 512, 512]
    for i, c in enumerate(chans):
        sd[f"lin{i}.model.1.weight"] = torch.zeros(1, c, 1, 1)
    sd["lin4.model.1.weight"][0, 0] = 1.0  # only one channel of relu5_3 counts
    path = tmp_path / "vgg_with_lin.pth"
    torch.save(sd, path)
    lp = LPIPSVGG(path)
    assert lp.calibrated
    x, y = _slices(5), _slices(6)
    feats = lp._taps(torch.cat([lp._prepare(x), lp._prepare(y)]))
    f = feats[-1] / (feats[-1].pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
    expect = ((f[:2, 0] - f[2:, 0]) ** 2).mean(dim=(1, 2))
    assert torch.allclose(lp(x, y), expect, atol=1e-6)
    assert len(feats) == len(LPIPS_TAPS)


def test_total_with_lpips(vgg_file):
    with pytest.warns(UserWarning):
        loss = PerX2CTLoss(lpips_vgg_weights=str(vgg_file), lpips_weight=2.0)
    x = _slices(7)
    assert loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-5)
    pred = _slices(8).requires_grad_(True)
    total = loss(pred, x)
    c = loss.last_components
    assert set(c) == {"l1", "ssim", "lpips", "total"} and c["lpips"] > 0
    assert total.item() == pytest.approx(c["l1"].item() + c["ssim"].item() + 2.0 * c["lpips"].item(), rel=1e-5)
    total.backward()
    assert pred.grad.abs().sum() > 0


def test_missing_weights_file(tmp_path):
    missing = tmp_path / "nowhere" / "vgg16.pth"
    with pytest.raises(FileNotFoundError) as e:
        PerX2CTLoss(lpips_vgg_weights=str(missing))
    assert str(missing) in str(e.value)
    assert "L1 + SSIM only" in str(e.value)


def test_not_a_vgg_file(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="VGG16"):
        LPIPSVGG(path)
