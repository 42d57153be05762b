"""The bundle's Ignite handlers and display helpers, driven by real Ignite engines with tiny stand-ins.

Display orientation is checked on volumes whose planes are known analytically (the 9984e2e fix: the axial
plane was upside down); the montage handler against its inputs; the checkpoint handlers against the sidecar
reader; the clean stop against a real KeyboardInterrupt inside an engine run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from PIL import Image

from scripts.checkpoint import read_info
from scripts.errors import Interrupted
from scripts.frame import FRAME
from scripts.handlers import (
    CheckpointInfo,
    CleanStop,
    LatestCheckpoint,
    ReconstructionReport,
    TrainingMonitor,
    format_seconds,
)
from scripts.montage import PLANES, label_grid, reconstruction_montage

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
    from scripts.atomic import to_uint8

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


def test_reconstruction_report_writes_rows_summary_and_montages(tmp_path):
    rng = np.random.default_rng(0)
    label = torch.from_numpy(rng.random((2, 1, N, N, N), dtype=np.float32) * 0.8 + 0.1)  # no clipping at 0 or 1
    pred = label.repeat(1, 3, 1, 1, 1).clone()
    pred[1] += 0.01  # case b: off by 25 HU everywhere
    batches = [{"case_id": ["a", "b"], "out": {"pred": pred, "label": label}}]
    engine = Engine(lambda e, b: b["out"])
    ReconstructionReport(str(tmp_path)).attach(engine)
    engine.run(batches, max_epochs=1)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("case_id,") and [r.split(",")[0] for r in rows[1:]] == ["a", "b"]
    header = rows[0].split(",")
    b = dict(zip(header, rows[2].split(",")))
    assert float(b["mae_hu"]) == pytest.approx(25.0, rel=1e-3)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cases"] == 2 and summary["mae_hu"]["mean"] == pytest.approx(12.5, rel=1e-3)
    assert engine.state.metrics["mae_hu"] == pytest.approx(12.5, rel=1e-3)
    for cid in ("a", "b"):
        assert Image.open(tmp_path / "montages" / f"{cid}.png").mode == "L"


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
