"""Metrics: the paper convention against the official metric code's figures (oracle), hand-computed values of
the official PSNR's quirks, the frame mapping, the honest metrics, and the ignite handlers in an engine."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from scripts.evaluation import honest_metrics as H
from scripts.evaluation import paper_metrics as P
from scripts.evaluation.metric_handler import METRICS, CTMetricHandler, CTVolumeMetric
from scripts.slicing import AXES
from skimage.metrics import structural_similarity

SHAPE = (16, 12, 10)
OFFICIAL = Path(__file__).parent / "data" / "official"


def _official_to_bundle(volume: np.ndarray) -> np.ndarray:
    """official ``(i0, i1, i2)`` -> bundle ``(X, Y, Z)``: the inverse of :func:`P.bundle_to_official`, written out."""
    return volume.transpose(2, 1, 0)[:, :, ::-1]


def _three_axes(preds: dict, target: np.ndarray) -> dict[str, float]:
    """Every metric but LPIPS of one case reconstructed along each axis of ``preds``, averaged over the axes
    (what the evaluation handlers report for a case), computed here from the functions."""
    paper = {"psnr_paper": P.psnr_paper, "ssim_paper": P.ssim_paper}
    honest = {"psnr": H.psnr_true, "ssim": H.ssim_true, "mae_hu": H.mae_hu}
    out = {k: np.mean([f(p, target, a) for a, p in preds.items()]) for k, f in paper.items()}
    out.update({k: np.mean([f(p, target) for p in preds.values()]) for k, f in honest.items()})
    return out


def _target(seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Integer HU levels in [200, 2200], stored like the dataset: float32 level / 2500."""
    rng = np.random.default_rng(seed)
    return (rng.integers(200, 2200, size=SHAPE) / 2500.0).astype(dtype)


# ------------------------------------------------------------------------------------ official oracle
@pytest.fixture(scope="module")
def oracle():
    """The official reconstruction (float16, official frame) and eval GT of LIDC-IDRI-0001, mapped into the
    bundle frame, and the official metric code's figures on exactly these arrays."""
    vol = np.load(OFFICIAL / "expected_perx2ct_volume.npz")
    gt = np.load(OFFICIAL / "lidc0001_official_data.npz")["gt"]
    expected = json.loads((OFFICIAL / "expected_metrics.json").read_text())["from_files"]
    preds = {a: np.ascontiguousarray(_official_to_bundle(vol[f"recon_{a}"].astype(np.float32))) for a in AXES}
    return preds, np.ascontiguousarray(_official_to_bundle(gt)), expected


def test_paper_metrics_equal_official_metric_code(oracle):
    """PSNR / SSIM per axis and averaged equal the official main_test functions' figures (from_files)."""
    preds, target, expected = oracle
    res = {a: {"psnr": P.psnr_paper(v, target, a), "ssim": P.ssim_paper(v, target, a)} for a, v in preds.items()}
    res["avg"] = {k: np.mean([res[a][k] for a in AXES]) for k in ("psnr", "ssim")}
    for key in (*AXES, "avg"):
        assert res[key]["psnr"] == pytest.approx(expected[key]["psnr"], rel=1e-6, abs=0), key
        assert res[key]["ssim"] == pytest.approx(expected[key]["ssim"], rel=0, abs=1e-6), key
    # the stack matters: the sagittal reconstruction scored on the axial stack gives another number
    assert abs(P.psnr_paper(preds["sagittal"], target, "axial") - expected["sagittal"]["psnr"]) > 1e-3


def test_frame_mapping_and_official_stacks():
    """official (i0, i1, i2) runs along bundle (-Z, +Y, +X); stacks are the official transposes."""
    n = 6
    i0, i1, i2 = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    off = (100 * i0 + 10 * i1 + i2).astype(np.float32)  # value encodes the official index
    b = _official_to_bundle(off)
    x, y, z = 1, 2, 4
    assert b[x, y, z] == off[n - 1 - z, y, x]
    assert np.array_equal(P.bundle_to_official(b), off)
    assert np.array_equal(P.official_stack(b, "axial"), off)
    assert np.array_equal(P.official_stack(b, 1), off.transpose(1, 0, 2))  # coronal (i1, i0, i2)
    assert np.array_equal(P.official_stack(b, "sagittal"), off.transpose(2, 0, 1))  # sagittal (i2, i0, i1)
    # official axial slice k = bundle axial slice n - 1 - k (array dim 2)
    assert np.array_equal(P.official_stack(b, "axial")[1], b[:, :, n - 2].T)


def test_psnr_paper_official_quirks():
    """Truncation without clipping, float32 products, per-col planes, 100 dB for identical planes."""
    t = np.full(SHAPE, 0.4, dtype=np.float32)
    # outside [0, 1] is not clipped: level 2750 vs 1000 everywhere
    assert P.psnr_paper(np.full(SHAPE, 1.1, np.float32), t) == pytest.approx(20 * math.log10(4095 / 1750), abs=1e-9)
    # truncation toward zero: -0.0002 * 2500 = -0.5 -> level 0 (not -1), so 0 vs level 1 = 0.0004
    z = np.zeros(SHAPE, np.float32)
    assert P.psnr_paper(np.full(SHAPE, -0.0002, np.float32), np.full(SHAPE, 0.0004, np.float32)) == pytest.approx(
        20 * math.log10(4095 / 1), abs=1e-9
    )
    assert P.psnr_paper(z, z) == P.IDENTICAL_PLANE_PSNR_DB
    # float32 arithmetic as the official tensors: float32(0.0008) * 2500 is 2.0 in float32 (1.99999995 in
    # float64, which would truncate to 1); float32(0.0028) * 2500 is 6.9999995 -> level 6 (a level lost)
    for v, level in ((np.float32(0.0008), 2), (np.float32(0.0028), 6)):
        assert P.psnr_paper(np.full(SHAPE, v), z) == pytest.approx(20 * math.log10(4095 / level), abs=1e-9)
    assert int(np.float64(np.float32(0.0008)) * 2500) == 1
    # planes: official axial stack (i0, i1, i2) = bundle (Z reversed, Y, X); cols = bundle X (dim 0)
    p = t.copy()
    p[0] += np.float32(10 / 2500)  # bundle X = 0: error 10 HU -> one col plane
    p[1] += np.float32(20 / 2500)  # bundle X = 1: 20 HU
    lv = lambda a: (a.astype(np.float32) * np.float32(2500)).astype(np.int32)  # noqa: E731 - the official cast
    e0, e1 = float(lv(p[0]).max() - lv(t[0]).max()), float(lv(p[1]).max() - lv(t[1]).max())
    cols = [20 * math.log10(4095 / e0), 20 * math.log10(4095 / e1)] + [100.0] * (SHAPE[0] - 2)
    assert P.psnr_paper(p, t, "axial") == pytest.approx(np.mean(cols), abs=1e-9)
    assert P.psnr_paper(p, t, "coronal") == pytest.approx(np.mean(cols), abs=1e-9)  # cols = X as well
    # sagittal stack (i2, i0, i1): cols = bundle Y, each holding the same errors -> one MSE
    mse = (e0**2 + e1**2) / SHAPE[0]
    assert P.psnr_paper(p, t, "sagittal") == pytest.approx(20 * math.log10(4095 / math.sqrt(mse)), abs=1e-9)
    with pytest.raises(ValueError, match="slice axis"):
        P.psnr_paper(p, t, axis="oblique")


def test_constant_offset_both_conventions():
    t = _target()
    k = 25  # HU
    p = ((np.round(t.astype(np.float64) * 2500) + k) / 2500.0).astype(np.float32)
    true = H.psnr_true(p, t)
    paper = P.psnr_paper(p, t)
    assert true == pytest.approx(20 * math.log10(2500 / k), abs=1e-3)
    # the official float32 truncation loses a level where level / 2500 rounds below the integer
    lv = lambda a: (a * np.float32(2500)).astype(np.int32).astype(np.float64)  # noqa: E731
    d = (lv(p) - lv(t)) ** 2
    expect = np.mean(20 * np.log10(4095 / np.sqrt(d.mean(axis=(1, 2)))))  # cols of the axial stack = bundle X
    assert paper == pytest.approx(expect, abs=1e-9)
    assert paper - true == pytest.approx(20 * math.log10(4095 / 2500), abs=0.1)
    assert H.mae_hu(p, t) == pytest.approx(k, abs=1e-3)


def test_ssim_conventions():
    t = _target(1)
    assert H.ssim_true(t, t) == pytest.approx(1.0, abs=1e-9)
    assert P.ssim_paper(t, t) == pytest.approx(1.0, abs=1e-9)
    rng = np.random.default_rng(2)
    p = (t + rng.normal(0, 0.05, size=t.shape)).astype(np.float32)  # not clipped by the paper metric
    paper, true = P.ssim_paper(p, t), H.ssim_true(p, t)
    t64, p64 = t.astype(np.float64), p.astype(np.float64)
    assert paper == pytest.approx(structural_similarity(t64, p64, win_size=7, data_range=2.0), abs=1e-12)
    assert true == pytest.approx(structural_similarity(np.clip(p64, 0, 1), t64, win_size=7, data_range=1.0), abs=1e-12)
    assert paper > true  # the doubled range inflates SSIM
    # SSIM is one 3D SSIM: the stacking order does not change it (beyond rounding)
    assert P.ssim_paper(p, t, "sagittal") == pytest.approx(paper, abs=1e-12)
    # the paper's original call (float input, no data_range) is refused by this scikit-image
    with pytest.raises(ValueError):
        structural_similarity(p64, t64, win_size=7)


def test_torch_input_and_channel():
    """numpy volumes and torch tensors with a leading channel give the same value; unequal shapes are refused."""
    t = _target(3)
    p = np.clip(t + 0.01, 0, 1).astype(np.float32)
    names = [k for k in METRICS if k != "lpips_paper"]
    for k in names:
        assert METRICS[k](p, t) == pytest.approx(METRICS[k](torch.from_numpy(p)[None], torch.from_numpy(t)[None]))
        with pytest.raises(ValueError, match="shapes differ"):
            METRICS[k](p, t[:-1])
    assert H.psnr_true(t, t) == math.inf and H.mae_hu(t, t) == 0.0


def test_ignite_handlers_match_functions():
    """Every handler of configs/evaluate.json in a real engine, on (B, 3, X, Y, Z) reconstructions (axial, coronal,
    sagittal): a case's value is the mean over its axes of the function's values, the epoch's the mean over cases;
    the cases' values are in metric_details (MetricsSaver's rows) and, per iteration, in case_metrics."""
    rng = np.random.default_rng(4)
    targets = [_target(s) for s in (5, 6, 7)]
    preds = [
        np.stack([np.clip(t + rng.normal(0, 0.02 * (a + 1), size=t.shape), 0, 1) for a in range(3)]).astype(np.float32)
        for t in targets
    ]
    batches = [(0, 2), (2, 3)]  # two iterations: a batch of 2 and a batch of 1

    def step(engine, idx):
        a, b = batches[idx]
        return {
            "pred": torch.from_numpy(np.stack(preds[a:b])),
            "label": torch.from_numpy(np.stack(targets[a:b]))[:, None],
        }

    engine = Engine(step)
    from monai.handlers import from_engine

    out = from_engine(["pred", "label"])
    handlers = ("psnr_paper", "ssim_paper", "psnr", "ssim", "mae_hu")
    for name in handlers:
        CTMetricHandler(name, axes=AXES, output_transform=out).attach(engine, name)
    # one-channel predictions: the paper metric's stack is that of ``axis``
    sag_out = lambda o: (o["pred"][:, 2:], o["label"])  # noqa: E731
    CTMetricHandler("psnr_paper", axis="sagittal", output_transform=sag_out).attach(engine, "sag")
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.case_metrics)))
    engine.run([0, 1], max_epochs=1)

    cases = [_three_axes(dict(zip(AXES, p)), t) for p, t in zip(preds, targets)]
    for name in handlers:
        per_case = [c[name] for c in cases]
        assert engine.state.metrics[name] == pytest.approx(np.mean(per_case), rel=1e-9), name
        np.testing.assert_allclose(engine.state.metric_details[name].flatten().numpy(), per_case, rtol=1e-9)
        assert [len(s[name]) for s in seen] == [2, 1]
        np.testing.assert_allclose(seen[0][name] + seen[1][name], per_case, rtol=1e-9)
    sag = [P.psnr_paper(p[2], t, "sagittal") for p, t in zip(preds, targets)]
    assert engine.state.metrics["sag"] == pytest.approx(np.mean(sag), rel=1e-9)
    assert engine.state.metrics["psnr_paper"] > engine.state.metrics["psnr"]


def test_evaluate_config_metrics_follow_the_lpips_weights(tmp_path):
    """configs/evaluate.json: psnr_paper is the key metric; lpips_paper is there only with local VGG weights
    (its LPIPS model built once, in eval mode); every metric averages the evaluation axes."""
    from monai.bundle import ConfigParser
    from scripts.training.losses import _vgg16_features

    vgg = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in _vgg16_features().state_dict().items()}, vgg)
    configs = Path(__file__).resolve().parents[1] / "configs"
    for weights, names in ((None, []), (str(vgg), ["lpips_paper"])):
        parser = ConfigParser()
        parser.read_config([str(configs / "train.json"), str(configs / "evaluate.json")])
        parser["lpips_vgg_weights"] = weights
        parser["lpips_lin_weights"] = None
        parser["device"] = "cpu"
        key = parser.get_parsed_content("validate#key_metric")
        extra = parser.get_parsed_content("validate#additional_metrics")
        assert list(key) == ["psnr_paper"] and isinstance(key["psnr_paper"], CTMetricHandler)
        assert list(extra) == ["ssim_paper", *names, "psnr", "ssim", "mae_hu"]
        for name, handler in [*key.items(), *extra.items()]:
            assert handler.metric_fn.metric == name
            assert handler.metric_fn.axes == tuple(parser.get_parsed_content("eval_axes"))
        if weights:
            again = parser.get_parsed_content("validate#additional_metrics")["lpips_paper"]
            assert again is extra["lpips_paper"] and not again.metric_fn.lpips.training


def test_metric_three_channel_predictions_average_axes():
    t = _target(8)
    p = np.clip(t + 0.004, 0, 1).astype(np.float32)
    y_pred = torch.from_numpy(np.stack([p, t, p]))[None]  # (1, 3, X, Y, Z): axial, coronal, sagittal
    for name in ("mae_hu", "psnr_paper"):
        m = CTVolumeMetric(name)
        m(y_pred, torch.from_numpy(t)[None, None])
        expect = _three_axes({"axial": p, "coronal": t, "sagittal": p}, t)[name]
        assert m.aggregate().item() == pytest.approx(expect)
    with pytest.raises(ValueError, match="unknown metric"):
        CTVolumeMetric("lpips")
    with pytest.raises(ValueError, match="LPIPS model"):
        CTVolumeMetric("lpips_paper")


def test_lpips_paper_per_slice_of_the_stack(tmp_path):
    """LPIPS per slice of the official stack, eval mode (no dropout), equal to the model on those slices."""
    from scripts.training.losses import LPIPSVGG, _vgg16_features

    torch.manual_seed(0)
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in _vgg16_features().state_dict().items()}, path)
    lp = LPIPSVGG(path)  # training mode: lpips_paper must switch dropout off for the measurement
    shape = (16, 16, 16)  # one LPIPS batch per stack
    rng = np.random.default_rng(9)
    t = rng.random(shape).astype(np.float32)
    p = (t + rng.normal(0, 0.1, shape)).astype(np.float32)
    got = P.lpips_paper(p, t, lp, axis="coronal")
    assert lp.training  # restored
    st, sp = P.official_stack(t, "coronal"), P.official_stack(p, "coronal")  # slices of fixed Y, rows -Z, cols X
    with torch.no_grad():
        ref = lp.eval()(torch.from_numpy(sp.copy())[:, None], torch.from_numpy(st.copy())[:, None]).mean().item()
    assert got == pytest.approx(ref, rel=1e-5)
    assert P.lpips_paper(t, t, lp) == pytest.approx(0.0, abs=1e-7)
    metric = CTVolumeMetric("lpips_paper", axis="coronal", lpips=lp)
    assert metric(torch.from_numpy(p)[None, None], torch.from_numpy(t)[None, None]).item() == pytest.approx(
        got, rel=1e-6
    )
    # the ignite handler builds its own model (eval mode) from the files
    engine = Engine(lambda e, _: {"pred": torch.from_numpy(p)[None, None], "label": torch.from_numpy(t)[None, None]})
    from monai.handlers import from_engine

    out = from_engine(["pred", "label"])
    CTMetricHandler("lpips_paper", axis="coronal", output_transform=out, lpips_vgg_weights=str(path)).attach(
        engine, "lp"
    )
    engine.run([0], max_epochs=1)
    assert engine.state.metrics["lp"] == pytest.approx(got, rel=1e-5)
    assert P.lpips_model(None) is None
