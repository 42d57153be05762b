"""PerX2CTLoss and LPIPSVGG: the official loss (L1 + 1.0 x LPIPS, [0, 1] input, dropout in training) against an
independent computation written from the LPIPS definition, on a random VGG16 and the real LPIPS lin weights."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from scripts.training.losses import LPIPSVGG, PerX2CTLoss, _vgg16_features

LIN_FILE = Path(__file__).parent / "data" / "lpips" / "lpips_vgg_v0.1.pth"

# torchvision vgg16.features: conv layer indices per block (a 2x2 max pool before blocks 2..5); LPIPS taps the
# ReLU after each block's last conv
_BLOCKS = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
_SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
_SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


def reference_lpips(
    vgg: dict, lins: list, x: torch.Tensor, y: torch.Tensor, signed: bool = False, dropout_seed: int | None = None
) -> torch.Tensor:
    """LPIPS written out: scaling layer, VGG16 taps, channel-normalised squared difference, [dropout], lin, mean."""

    def prep(a):
        a = a.repeat(1, 3, 1, 1) if a.shape[1] == 1 else a
        return ((a * 2 - 1 if signed else a) - _SHIFT) / _SCALE

    def taps(a):
        out = []
        for b, block in enumerate(_BLOCKS):
            if b:
                a = F.max_pool2d(a, 2)
            for i in block:
                a = F.relu(F.conv2d(a, vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"], padding=1))
            out.append(a)
        return out

    def unit(f):
        return f / (torch.sqrt((f**2).sum(1, keepdim=True) + 1e-10) + 1e-10)

    fx, fy = taps(prep(x)), taps(prep(y))
    if dropout_seed is not None:
        torch.manual_seed(dropout_seed)
    total = torch.zeros(x.shape[0])
    for f0, f1, w in zip(fx, fy, lins):
        d = (unit(f0) - unit(f1)) ** 2
        if dropout_seed is not None:
            d = F.dropout(d, 0.5, training=True)
        total = total + F.conv2d(d, w).mean(dim=(2, 3))[:, 0]
    return total


def _slices(seed: int = 0, n: int = 2, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g)


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    """A random VGG16 ``features`` state dict in torchvision's layout (no pretrained weights needed)."""
    torch.manual_seed(0)
    sd = {f"features.{k}": v for k, v in _vgg16_features().state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # a torchvision file has more keys: ignored
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(sd, path)
    return path, sd


@pytest.fixture(scope="module")
def lins():
    sd = torch.load(LIN_FILE, map_location="cpu", weights_only=True)
    return [sd[f"lin{i}.model.1.weight"] for i in range(5)]


def test_lpips_equals_written_out_reference(vgg, lins):
    """Eval mode: [0, 1] input unchanged (official) or mapped to [-1, 1] (option); grey broadcast to 3 channels."""
    path, sd = vgg
    x, y = _slices(1), _slices(2)
    refs = {}
    for signed in (False, True):
        lp = LPIPSVGG(path, LIN_FILE, input_range="signed" if signed else "unit").eval()
        assert lp.calibrated
        with torch.no_grad():
            got, refs[signed] = lp(x, y), reference_lpips(sd, lins, x, y, signed=signed)
            assert torch.allclose(got, refs[signed], rtol=1e-5, atol=0), (signed, got, refs[signed])
            if not signed:
                assert torch.allclose(lp(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)), got, rtol=1e-6, atol=0)
                assert torch.equal(lp(x, x.clone()), torch.zeros(2))
    # the official feeds [0, 1] unchanged: not the same number as with the [-1, 1] mapping
    assert not torch.allclose(refs[False], refs[True], rtol=0.01)


def test_lpips_dropout_active_in_training_only(vgg, lins):
    """Training mode: dropout (p 0.5) on each tap's squared difference before the lin layer; eval: none."""
    path, sd = vgg
    x, y = _slices(3), _slices(4)
    lp = LPIPSVGG(path, LIN_FILE)
    assert lp.training  # a freshly built module trains, like the official loss inside the training model
    with torch.no_grad():
        torch.manual_seed(7)
        got = lp(x, y)
        ref = reference_lpips(sd, lins, x, y, dropout_seed=7)
        assert torch.allclose(got, ref, rtol=1e-5, atol=0)
        torch.manual_seed(8)
        assert not torch.allclose(lp(x, y), got, rtol=1e-3)  # another mask, another value
        plain = reference_lpips(sd, lins, x, y)
        assert not torch.allclose(got, plain, rtol=1e-3)
        lp.eval()
        assert torch.allclose(lp(x, y), plain, rtol=1e-5, atol=0)
    off = LPIPSVGG(path, LIN_FILE, dropout=False)  # option: deterministic in training too
    with torch.no_grad():
        assert off.training and torch.allclose(off(x, y), plain, rtol=1e-5, atol=0)


def test_paper_loss_is_l1_plus_mean_lpips(vgg, lins, caplog):
    path, sd = vgg
    with caplog.at_level(logging.INFO, logger="scripts.training.losses"):
        loss = PerX2CTLoss(lpips_vgg_weights=str(path), lpips_lin_weights=str(LIN_FILE))
    assert loss.is_paper_loss and loss.recipe["paper_loss"] and loss.recipe["deviations"] == []
    assert "NOT THE PAPER" not in caplog.text and "the paper's loss" in caplog.text
    target = _slices(5, n=3)
    pred = _slices(6, n=3).requires_grad_(True)
    loss.eval()
    total = loss(pred, target)
    expect = (pred - target).abs().mean() + 1.0 * reference_lpips(sd, lins, pred.detach(), target).mean()
    assert total.item() == pytest.approx(expect.item(), rel=1e-5)
    assert set(loss.last_components) == {"l1", "lpips", "total"}
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    loss.train()  # training: LPIPS's dropout makes the value vary with the mask
    torch.manual_seed(11)
    a = loss(pred, target).item()
    torch.manual_seed(12)
    assert loss(pred, target).item() != pytest.approx(a, rel=1e-4)
    assert all(not p.requires_grad for p in loss.parameters())


def test_without_weights_trains_and_says_it_is_not_the_paper_loss(caplog):
    with caplog.at_level(logging.WARNING, logger="scripts.training.losses"):
        loss = PerX2CTLoss()
    assert not loss.is_paper_loss
    assert "NOT THE PAPER'S LOSS" in caplog.text and "download_weights" in caplog.text
    assert any("no LPIPS term" in d for d in loss.recipe["deviations"])
    x, y = _slices(7), _slices(8).requires_grad_(True)
    total = loss(y, x)
    c = loss.last_components
    assert set(c) == {"l1", "ssim", "total"}  # the fallback: (1 - SSIM) in place of LPIPS
    assert total.item() == pytest.approx(c["l1"].item() + c["ssim"].item(), rel=1e-6)
    total.backward()
    assert y.grad.abs().sum() > 0
    plain = PerX2CTLoss(fallback_ssim_weight=0.0)
    assert plain(y, x).item() == pytest.approx((y - x).abs().mean().item(), rel=1e-6)
    assert set(plain.last_components) == {"l1", "total"} and not plain.is_paper_loss
    assert PerX2CTLoss()(x, x.clone()).item() == pytest.approx(0.0, abs=1e-5)
    both = PerX2CTLoss(ssim_weight=0.5)  # the extra term adds to the stand-in
    both(y, x)
    assert both.ssim_weight == 1.5 and len([d for d in both.recipe["deviations"] if "SSIM" in d]) == 2


def test_deviations_are_recorded(vgg, caplog):
    path, _ = vgg
    with caplog.at_level(logging.WARNING, logger="scripts.training.losses"):
        uncal = PerX2CTLoss(lpips_vgg_weights=str(path))  # no lin weights: 1/C per channel
    assert not uncal.lpips.calibrated and not uncal.is_paper_loss
    assert "1/C" in caplog.text and "NOT THE PAPER'S LOSS" in caplog.text
    opts = PerX2CTLoss(
        lpips_vgg_weights=str(path),
        lpips_lin_weights=str(LIN_FILE),
        lpips_input_range="signed",
        lpips_dropout=False,
        ssim_weight=0.5,
    )
    text = " ".join(opts.recipe["deviations"])
    assert not opts.is_paper_loss and "[-1, 1]" in text and "dropout off" in text and "SSIM" in text
    x, y = _slices(9), _slices(10)
    opts(x, y)
    assert set(opts.last_components) == {"l1", "lpips", "ssim", "total"}
    with pytest.raises(ValueError, match="input_range"):
        PerX2CTLoss(lpips_input_range="[0,1]")


def test_missing_or_wrong_weights_file(tmp_path):
    missing = tmp_path / "nowhere" / "vgg16.pth"
    with pytest.raises(FileNotFoundError) as e:
        PerX2CTLoss(lpips_vgg_weights=str(missing))
    assert str(missing) in str(e.value) and "download_weights" in str(e.value)
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="VGG16"):
        LPIPSVGG(path)


def test_train_config_loss_uses_downloaded_weights_when_present(vgg, tmp_path):
    """configs/train.json's ``loss`` component: the paper's loss once the weights are in pretrained_dir."""
    from monai.bundle import ConfigParser

    root = Path(__file__).resolve().parents[1]
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "train.json"))
    parser["pretrained_dir"] = str(tmp_path)
    assert not parser.get_parsed_content("loss").is_paper_loss  # empty folder: runs without LPIPS
    path, _ = vgg
    (tmp_path / "vgg16-397923af.pth").symlink_to(path)
    (tmp_path / "lpips_vgg_v0.1.pth").symlink_to(LIN_FILE)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "train.json"))
    parser["pretrained_dir"] = str(tmp_path)
    loss = parser.get_parsed_content("loss")
    assert isinstance(loss, PerX2CTLoss) and loss.is_paper_loss
