"""Metrics: hand-computed values of both conventions, and the ignite handler in an engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from skimage.metrics import structural_similarity

from scripts import metrics as M

SHAPE = (16, 12, 10)


def _target(seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Integer HU levels in [200, 2200], stored like the dataset: float32 level / 2500."""
    rng = np.random.default_rng(seed)
    return (rng.integers(200, 2200, size=SHAPE) / 2500.0).astype(dtype)


def test_constant_offset_both_conventions():
    t = _target()
    k = 25  # HU
    p = (np.round(t.astype(np.float64) * 2500) + k) / 2500.0
    true = M.psnr_true(p, t)
    paper = M.psnr_paper(p, t)
    assert true == pytest.approx(20 * math.log10(2500 / k), abs=1e-4)
    assert paper == pytest.approx(20 * math.log10(4095 / k), abs=1e-9)  # integers exact: no float slack
    assert paper - true == pytest.approx(20 * math.log10(4095 / 2500), abs=0.01)
    assert paper - true == pytest.approx(4.29, abs=0.01)
    assert M.mae_hu(p, t) == pytest.approx(k, abs=1e-3)


def test_float32_levels_survive_integer_cast():
    """Every float32 level / 2500 gives back its level (no off-by-one from truncation)."""
    k = np.arange(2501)
    x = (k / 2500.0).astype(np.float32)
    assert np.array_equal(M._to_levels(x.astype(np.float64)), k.astype(np.float64))


def test_psnr_paper_is_per_slice_mean_and_axis():
    t = np.full(SHAPE, 0.4)
    p = t.copy()
    p[..., 0] += 10 / 2500  # axial slice 0 (array dim 2): error 10 HU everywhere in it
    p[..., 1] += 20 / 2500  # axial slice 1: 20 HU
    # axial: slices 0 and 1 have errors, the 8 others are identical
    s0, s1 = 20 * math.log10(4095 / 10), 20 * math.log10(4095 / 20)
    assert M.psnr_paper(p, t, axis="axial", identical="skip") == pytest.approx((s0 + s1) / 2, abs=1e-6)
    assert M.psnr_paper(p, t, axis=0, identical="cap") == pytest.approx((s0 + s1 + 8 * 100) / 10, abs=1e-6)
    # sagittal (dim 0): every slice has the same MSE = (100 + 400) / 10
    s = 20 * math.log10(4095 / math.sqrt(50))
    assert M.psnr_paper(p, t, axis="sagittal") == pytest.approx(s, abs=1e-6)
    assert M.psnr_paper(t, t, identical="skip") == math.inf
    assert M.psnr_paper(t, t) == pytest.approx(100.0)
    assert M.psnr_true(t, t) == math.inf
    with pytest.raises(ValueError, match="slice axis"):
        M.psnr_paper(p, t, axis="oblique")


def test_ssim_identical_and_conventions():
    t = _target(1).astype(np.float64)
    assert M.ssim_true(t, t) == pytest.approx(1.0, abs=1e-9)
    assert M.ssim_paper(t, t) == pytest.approx(1.0, abs=1e-9)
    rng = np.random.default_rng(2)
    p = np.clip(t + rng.normal(0, 0.05, size=t.shape), 0, 1)
    paper, true = M.ssim_paper(p, t), M.ssim_true(p, t)
    assert paper > true  # the doubled range inflates SSIM
    assert paper == pytest.approx(structural_similarity(p, t, win_size=7, data_range=2.0), abs=1e-12)
    assert true == pytest.approx(structural_similarity(p, t, win_size=7, data_range=1.0), abs=1e-12)
    # the paper's original call (float input, no data_range) is refused by this scikit-image
    with pytest.raises(ValueError):
        structural_similarity(p, t, win_size=7)


def test_torch_input_channel_and_evaluate():
    t = _target(3)
    p = np.clip(t + 0.01, 0, 1)
    res_np = M.evaluate_volume(p, t)
    res_t = M.evaluate_volume(torch.from_numpy(p)[None], torch.from_numpy(t)[None])
    assert set(res_np) == set(M.METRIC_NAMES)
    for k in M.METRIC_NAMES:
        assert res_np[k] == pytest.approx(res_t[k])
    three = M.evaluate_three_axes({"axial": p, "coronal": p, "sagittal": t}, t)
    for k in ("psnr", "mae_hu"):
        assert three[k] == pytest.approx({"psnr": (2 * res_np["psnr"] + math.inf) / 3, "mae_hu": 2 / 3 * res_np["mae_hu"]}[k])
    assert three["ssim"] == pytest.approx((2 * res_np["ssim"] + 1) / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        M.psnr_true(p, t[:-1])


def test_ignite_handler_matches_functions():
    rng = np.random.default_rng(4)
    targets = [_target(s) for s in (5, 6, 7)]
    preds = [np.clip(t + rng.normal(0, 0.02, size=t.shape), 0, 1).astype(np.float32) for t in targets]
    # two iterations: a batch of 2 and a batch of 1, shape (B, 1, X, Y, Z)
    batches = [(0, 2), (2, 3)]

    def step(engine, idx):
        a, b = batches[idx]
        return {
            "pred": torch.from_numpy(np.stack(preds[a:b]))[:, None],
            "label": torch.from_numpy(np.stack(targets[a:b]))[:, None],
        }

    engine = Engine(step)
    from monai.handlers import from_engine

    out = from_engine(["pred", "label"])
    M.PSNRPaperHandler(output_transform=out).attach(engine, "psnr_paper")
    M.PSNRHandler(output_transform=out).attach(engine, "psnr")
    M.SSIMPaperHandler(output_transform=out).attach(engine, "ssim_paper")
    M.MAEHUHandler(output_transform=out).attach(engine, "mae_hu")
    engine.run([0, 1], max_epochs=1)
    expect = {
        "psnr_paper": np.mean([M.psnr_paper(p, t) for p, t in zip(preds, targets)]),
        "psnr": np.mean([M.psnr_true(p, t) for p, t in zip(preds, targets)]),
        "ssim_paper": np.mean([M.ssim_paper(p, t) for p, t in zip(preds, targets)]),
        "mae_hu": np.mean([M.mae_hu(p, t) for p, t in zip(preds, targets)]),
    }
    for k, v in expect.items():
        assert engine.state.metrics[k] == pytest.approx(v, rel=1e-9)
    assert len(engine.state.metric_details["psnr"]) == 3


def test_metric_three_channel_predictions_average_axes():
    t = _target(8)
    p = np.clip(t + 0.004, 0, 1)
    y_pred = torch.from_numpy(np.stack([p, t, p]))[None]  # (1, 3, X, Y, Z): axial, coronal, sagittal
    m = M.CTVolumeMetric("mae_hu")
    m(y_pred, torch.from_numpy(t)[None, None])
    expect = M.evaluate_three_axes({"axial": p, "coronal": t, "sagittal": p}, t)["mae_hu"]
    assert m.aggregate().item() == pytest.approx(expect)
    with pytest.raises(ValueError, match="unknown metric"):
        M.CTVolumeMetric("lpips")
