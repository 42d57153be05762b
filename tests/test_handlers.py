"""The bundle's Ignite handlers and display helpers, driven by real Ignite engines with tiny stand-ins.

Display orientation is checked on volumes whose planes are known analytically (the 9984e2e fix: the axial
plane was upside down); the montage handler against its inputs; the checkpoint handlers against the sidecar
reader; the clean stop against a real KeyboardInterrupt inside an engine run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from PIL import Image
from scripts.errors import Interrupted
from scripts.evaluation.montage import PLANES, label_grid, reconstruction_montage
from scripts.frame import FRAME
from scripts.handlers import (
    CaseMetricsLog,
    CheckpointInfo,
    CleanStop,
    LatestCheckpoint,
    ReconstructionMontages,
    TrainingMonitor,
    case_meta,
    format_seconds,
)
from scripts.networks.checkpoint import read_info

N = 8  # a small LPS cube is enough for orientation


def ramp(axis: int, n: int = N) -> np.ndarray:
    """A volume whose value is the voxel index along ``axis`` (0 = x toward Left, 1 = y toward Posterior, 2 = z toward Superior)."""
    shape = [1, 1, 1]
    shape[axis] = n
    return np.broadcast_to(np.arange(n, dtype=np.float32).reshape(shape), (n, n, n)).copy()


def test_display_planes_orientation_as_radiologists_read_them():
    axial, coronal, sagittal = FRAME.display_planes(ramp(0))  # value = x (patient's left is high)
    # axial: the patient's right on the image's left -> x grows along columns
    assert (np.diff(axial, axis=1) > 0).all() and (np.diff(axial, axis=0) == 0).all()
    assert (np.diff(coronal, axis=1) > 0).all()  # coronal: the same left-right convention
    assert (sagittal == N // 2).all()  # sagittal: the central x plane
    axial, coronal, sagittal = FRAME.display_planes(ramp(1))  # value = y (posterior is high)
    assert (np.diff(axial, axis=0) > 0).all(), "axial: anterior at the top (the 9984e2e fix)"
    assert (np.diff(sagittal, axis=1) > 0).all(), "sagittal: anterior on the left"
    assert (coronal == N // 2).all()
    axial, coronal, sagittal = FRAME.display_planes(ramp(2))  # value = z (superior is high)
    assert (np.diff(coronal, axis=0) < 0).all() and (np.diff(sagittal, axis=0) < 0).all(), "superior at the top"
    assert (axial == N // 2).all()


def test_reconstruction_montage_lays_out_planes_columns_and_labels(tmp_path):
    gt = ramp(2)
    pred = gt + 0.5
    image = reconstruction_montage(
        tmp_path / "m.png", {"ground truth": gt / N, "prediction": pred / N}, "case7", {"psnr": 20.0}
    )
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m.png")), image)
    # the plane tiles sit below the text band, right of the label column; error column = |0.5 / N| scaled to 500 HU
    h = image.shape[0] - 3 * N
    tiles = image[h:, 64 : 64 + 3 * N]  # the label column is 64 pixels wide
    from scripts.utils.atomic import to_uint8

    expected = [[to_uint8(p / N) for p in FRAME.display_planes(v)] for v in (gt, pred)]
    for r in range(3):
        np.testing.assert_array_equal(tiles[r * N : (r + 1) * N, :N], expected[0][r])
        np.testing.assert_array_equal(tiles[r * N : (r + 1) * N, N : 2 * N], expected[1][r])
        err = to_uint8(np.full((N, N), 0.5 / N), 0, 500 / FRAME.hu_range)
        np.testing.assert_array_equal(tiles[r * N : (r + 1) * N, 2 * N :], err)
    assert image[:h].max() > 200, "text is drawn above the tiles"
    blank = label_grid([[np.zeros((N, N), np.uint8)]] * 3, PLANES, [""], [])
    assert blank[:, :64].max() > 200, "plane names are drawn left of the rows"
    with pytest.raises(ValueError, match="label_grid"):
        label_grid([[np.zeros((N, N), np.uint8)]], PLANES, ["a"])


@pytest.mark.parametrize("decollated", [False, True], ids=["collated", "decollated"])
def test_montages_and_case_log_show_the_metrics_the_evaluator_computed(tmp_path, caplog, decollated):
    """The evaluation handlers after MONAI metric handlers in an engine: a montage per case id labelled with that
    case's metrics, a log line per case, and MetricsSaver's per-case rows named by case id."""
    from monai.handlers import MetricsSaver, from_engine
    from scripts.evaluation.honest_metrics import mae_hu, psnr_true, ssim_true
    from scripts.evaluation.metric_handler import CTMetricHandler

    rng = np.random.default_rng(0)
    label = torch.from_numpy(rng.random((2, 1, N, N, N), dtype=np.float32) * 0.8 + 0.1)  # no clipping at 0 or 1
    pred = label.repeat(1, 3, 1, 1, 1).clone()  # axial, coronal, sagittal reconstructions
    pred[1] += torch.tensor([0.01, 0.02, 0.004]).view(3, 1, 1, 1)  # case b: off by 25, 50 and 10 HU
    if decollated:  # what a decollating SupervisedEvaluator leaves in engine.state
        batch = [{"case_id": c, "out": {"pred": pred[i], "label": label[i]}} for i, c in enumerate("ab")]
        engine = Engine(lambda e, b: [item["out"] for item in b])
    else:
        batch = {"case_id": ["a", "b"], "out": {"pred": pred, "label": label}}
        engine = Engine(lambda e, b: b["out"])
    out = from_engine(["pred", "label"])
    for name in ("psnr", "ssim", "mae_hu"):
        CTMetricHandler(name, output_transform=out).attach(engine, name)
    CaseMetricsLog(str(tmp_path)).attach(engine)
    MetricsSaver(str(tmp_path), metric_details="*", batch_transform=case_meta, summary_ops=["mean"]).attach(engine)
    ReconstructionMontages(str(tmp_path)).attach(engine)
    with caplog.at_level("INFO", logger="scripts.handlers"):
        engine.run([batch], max_epochs=1)

    expected = {}
    for i, cid in enumerate("ab"):
        p, t = pred[i].numpy(), label[i, 0].numpy()
        shown = {
            "psnr": np.mean([psnr_true(p[a], t) for a in range(3)]),
            "ssim": np.mean([ssim_true(p[a], t) for a in range(3)]),
            "mae_hu": np.mean([mae_hu(p[a], t) for a in range(3)]),
        }
        expected[cid] = shown
        written = np.asarray(Image.open(tmp_path / "montages" / f"{cid}.png"))
        volumes = {"ground truth": t, "prediction": p.mean(axis=0)}
        np.testing.assert_array_equal(written, reconstruction_montage(tmp_path / "x.png", volumes, cid, shown))
        unlabelled = reconstruction_montage(tmp_path / "x.png", volumes, cid)
        assert written.shape != unlabelled.shape or not np.array_equal(written, unlabelled), "metrics are shown"
    assert sorted(p.name for p in (tmp_path / "montages").iterdir()) == ["a.png", "b.png"]
    assert expected["b"]["mae_hu"] == pytest.approx(85 / 3, rel=1e-3) and expected["a"]["psnr"] == math.inf

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(("a: ", "b: "))]
    assert lines == [
        f"{cid}: " + ", ".join(f"{k} {v:.4f}" for k, v in expected[cid].items()) for cid in "ab"
    ], caplog.text
    assert f"evaluated 2 cases; metrics written to {tmp_path}" in caplog.text
    rows = (tmp_path / "mae_hu_raw.csv").read_text().splitlines()
    assert rows[0] == "filename,class0,mean" and [r.split(",")[0] for r in rows[1:]] == ["a", "b"]
    assert float(rows[2].split(",")[1]) == pytest.approx(expected["b"]["mae_hu"], abs=1e-4)


def test_checkpoint_handlers_write_sidecars(tmp_path):
    net = torch.nn.Linear(2, 2)
    info = {"model_preset": "small", "geometry_preset": "perx2ct", "model_overrides": {}, "run": str(tmp_path)}
    engine = Engine(lambda e, b: None)
    LatestCheckpoint(str(tmp_path), {"network": net}, info=info).attach(engine)
    saver = CheckpointInfo(str(tmp_path), info)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: torch.save(net.state_dict(), tmp_path / "model.pt"))
    saver.attach(engine)
    engine.run([0, 1], max_epochs=2)
    latest = read_info(tmp_path / "latest.pt")
    assert latest["model_preset"] == "small" and latest["epoch"] == 2 and latest["iteration"] == 4
    assert read_info(tmp_path / "model.pt")["source"] == "training"
    assert set(torch.load(tmp_path / "latest.pt", weights_only=True)) == {"network"}


def test_clean_stop_saves_the_last_completed_iteration(tmp_path, capsys):
    net = torch.nn.Linear(2, 2)

    def step(engine, batch):
        if engine.state.iteration == 6:  # epoch 2, third iteration: interrupted before it finishes
            raise KeyboardInterrupt
        return batch

    engine = Engine(step)
    CleanStop("train").attach(engine)
    LatestCheckpoint(str(tmp_path), {"network": net, "trainer": engine}).attach(engine)
    with pytest.raises(Interrupted) as stop:
        engine.run(list(range(4)), max_epochs=3)
    assert stop.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted at epoch 2, iteration 5; resume with: "), err
    assert "--resume true" in err[0]
    saved = torch.load(tmp_path / "latest.pt", weights_only=False)["trainer"]
    assert saved["iteration"] == 5 and saved["epoch_length"] == 4
    # resuming from it runs the rest: iterations 6..12
    seen = []
    resumed = Engine(lambda e, b: seen.append(e.state.iteration))
    resumed.load_state_dict(saved)
    resumed.run(list(range(4)))
    assert seen == list(range(6, 13))


def test_clean_stop_passes_other_errors_and_validation_interrupts_through():
    def boom(engine, batch):
        raise ValueError("bad input")

    engine = Engine(boom)
    CleanStop("train").attach(engine)
    with pytest.raises(ValueError, match="bad input"):
        engine.run([0], max_epochs=1)
    inner = Engine(lambda e, b: (_ for _ in ()).throw(KeyboardInterrupt))
    CleanStop("validate").attach(inner)
    with pytest.raises(KeyboardInterrupt):
        inner.run([0], max_epochs=1)
    with pytest.raises(ValueError, match="role"):
        CleanStop("predict")


def test_training_monitor_startup_block_and_estimate(caplog):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4))
    net.encoder = torch.nn.Identity()
    net.encoder.weights_source = "random"
    engine = Engine(lambda e, b: None)
    mon = TrainingMonitor(
        net, device="cpu", model_preset="small", preset_reason="why", train_cases=3, val_cases=1, warmup=1, measure=2
    )
    mon.attach(engine)
    with caplog.at_level("INFO", logger="scripts.handlers"):
        engine.run(list(range(5)), max_epochs=2)
    text = caplog.text
    assert "model preset:        small (0.00 M parameters; why)" in text
    assert "cases:               3 training, 1 validation" in text and "iterations / epoch:  5" in text
    assert "ImageNet encoder:    absent" in text and "LPIPS weights:       unknown" in text
    assert "estimate:" in text and "/ epoch of training" in text
    assert (
        format_seconds(75) == "1 min 15 s" and format_seconds(3725) == "1 h 02 min" and format_seconds(4.24) == "4.2 s"
    )
