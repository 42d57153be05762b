"""The quick cycle on the example data, through the real ``python -m monai.bundle`` workflows.

train (quick.json: small preset, 2 epochs of 4 iterations, validation on, held-out reconstruction at the
end) -> evaluate -> infer on the held-out case's X-rays, plus resume, a clean Ctrl-C stop and a 2-process
torchrun on CPU (gloo). Each command is what the README documents; no command passes ``--model_preset``
after training: the checkpoints' sidecars say which network they hold.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import bundle_run, quick_train_args

pytestmark = pytest.mark.slow  # workflow runs and torchrun, each a `python -m monai.bundle run` process

REPO = Path(__file__).resolve().parents[1]
EVALUATE = "['configs/train.json','configs/evaluate.json','configs/quick.json']"
SPLIT = json.loads((REPO / "configs" / "example_split.json").read_text())
HELD_OUT = SPLIT["test"][0]


def assert_one_error_line(res: subprocess.CompletedProcess, *fragments: str) -> str:
    """The run failed with exit status 1 and one ``error:`` line naming every fragment, no traceback."""
    text = res.stdout + res.stderr
    assert res.returncode == 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr[-3000:]
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def quick(quick_run):
    return quick_run


def test_training_writes_checkpoints_that_know_their_network(quick):
    from monai.bundle import ConfigParser

    models = quick["out"] / "models"
    best = models / "model.pt"
    assert best.is_file(), f"no model.pt in {models}: {sorted(p.name for p in models.iterdir())}"
    for name in ("model", "latest"):
        info = json.loads((models / f"{name}.json").read_text())
        assert info["model_preset"] == "small" and info["geometry_preset"] == "perx2ct", info
        assert info["run"] == str((quick["out"] / "runs").resolve()), info
    # inference.json builds the network from the sidecar alone (model_preset null), and the weights fit it strictly
    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "inference.json"))
    parser["ckpt_path"] = str(best)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
    latest = torch.load(models / "latest.pt", map_location="cpu", weights_only=False)
    assert set(latest) >= {"network", "optimizer", "trainer", "lr_scheduler"}
    # ignite keeps iteration and epoch_length; the epoch is their quotient
    assert latest["trainer"]["iteration"] == 8 and latest["trainer"]["epoch_length"] == 4  # 2 epochs of 4


def test_train_loss_reaches_tensorboard_and_console_every_iteration(quick):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses = {}
    for f in sorted((quick["out"] / "runs").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        if "train_loss" in acc.Tags()["scalars"]:
            losses.update({e.step: e.value for e in acc.Scalars("train_loss")})
    assert sorted(losses) == list(range(1, 9)), f"train_loss steps in TensorBoard: {sorted(losses)}"
    assert all(math.isfinite(v) and v > 0 for v in losses.values()), losses
    # the console (StatsHandler) prints the same values, rounded to 4 decimals
    printed = [float(v) for v in re.findall(r"Iter: \d+/4 -- train_loss: ([0-9.]+)", quick["stdout"] + quick["stderr"])]
    assert len(printed) == 8, (quick["stdout"] + quick["stderr"])[-3000:]
    np.testing.assert_allclose(printed, [losses[i] for i in range(1, 9)], atol=6e-5)
    assert "ignoring non-scalar output" not in quick["stdout"] + quick["stderr"]


def test_console_shows_startup_block_estimates_and_progress(quick):
    log = quick["stdout"] + quick["stderr"]
    assert re.search(
        r"model preset: +small \(0\.\d+ M parameters; (set by the config files|default for a machine)", log
    ), log[:3000]
    assert re.search(r"cases: +1 training, 1 validation", log) and re.search(r"iterations / epoch: +4", log)
    from scripts.assets.pretrained import weights_path

    # the small preset has no ImageNet encoder; the LPIPS term is there exactly when both files are in the
    # bundle's models/pretrained (the quick run fetches nothing for `small`)
    lpips = all(weights_path(n, REPO / "models" / "pretrained").is_file() for n in ("vgg16", "lpips_lin"))
    assert re.search(r"ImageNet encoder: +absent", log), log[:3000]
    assert re.search(rf"LPIPS weights: +{'present' if lpips else 'absent'}", log), (lpips, log[:3000])
    assert re.search(r"estimate: .* / iteration, .* / epoch of training, .* for the rest of the run", log), log[-3000:]
    assert re.search(r"loss=\d", log), "the progress bar shows the running loss"
    assert re.search(
        rf"validation case 1/1 {HELD_OUT}: +\d+%.*\d+/128", log
    ), "validation shows slices as they are made"


def test_validation_psnr_is_finite(quick):
    # MONAI's MetricsSaver writes "name,value" lines with the last validation's metrics
    rows = (quick["out"] / "runs" / "metrics.csv").read_text().split("\n")
    values = dict(r.split(",")[:2] for r in rows if "," in r)
    assert "val_psnr" in values, rows
    assert math.isfinite(float(values["val_psnr"])) and float(values["val_psnr"]) > 0
    assert math.isfinite(float(values["val_psnr_paper"]))


def test_training_ends_with_the_held_out_case_ready_to_try(quick, tmp_path):
    """The held-out case's X-rays are a prepared case; the printed inference command (model.pt, no preset flag)
    reproduces the reconstruction the training wrote."""
    case = quick["out"] / "held_out" / HELD_OUT
    assert {"pa.png", "lateral.png", "ct.nii.gz", "case.json"} <= {p.name for p in case.iterdir()}
    written = quick["out"] / "runs" / "held_out" / f"{HELD_OUT}.nii.gz"
    assert (
        f"reconstruction: {written}" in quick["stdout"]
        or f"reconstruction: {os.path.relpath(written, REPO)}" in quick["stdout"]
    )
    line = next(ln for ln in quick["stdout"].splitlines() if "try inference:" in ln)
    cmd = shlex.split(line.split("try inference:", 1)[1])
    assert cmd[:5] == ["python", "-m", "monai.bundle", "run", "--config_file"] and "--model_preset" not in cmd
    cmd[cmd.index("--output_dir") + 1] = str(tmp_path)
    bundle_run(*cmd[4:])
    out = nib.load(tmp_path / f"{HELD_OUT}.nii.gz")  # named by case id, not after pa.png
    ref = nib.load(written)
    assert out.shape == (128, 128, 128)
    np.testing.assert_allclose(out.affine, ref.affine)
    np.testing.assert_allclose(out.get_fdata(), ref.get_fdata(), atol=0.05)  # HU; same weights, same X-rays
    # the documented frame: LPS-ordered axes (RAS affine diag -2.5, -2.5, 2.5), centre voxel at the DRRs' isocentre
    iso = json.loads((case / "case.json").read_text())["isocentre_mm"]
    np.testing.assert_allclose(np.diag(out.affine)[:3], (-2.5, -2.5, 2.5))
    np.testing.assert_allclose(out.affine @ [63.5, 63.5, 63.5, 1], [-iso[0], -iso[1], iso[2], 1], atol=1e-4)
    assert (tmp_path / f"{HELD_OUT}.png").is_file()


def test_evaluate_needs_no_preset_flag_and_writes_a_row_per_test_case(quick, tmp_path):
    res = bundle_run(
        "evaluating",
        "--config_file",
        EVALUATE,
        "--dataset_dir",
        str(quick["raw"]),
        "--split_file",
        str(REPO / "configs" / "example_split.json"),
        "--cache_dir",
        str(quick["out"].parent / "cache"),
        "--ckpt_path",
        str(quick["out"] / "models" / "model.pt"),
        "--output_dir",
        str(tmp_path),
    )
    # MONAI's MetricsSaver: <metric>_raw.csv (a row per test case, named by case id), <metric>_summary.csv,
    # metrics.csv (name,mean over the cases)
    per_case = {}
    for key in ("psnr_paper", "ssim_paper", "psnr", "ssim", "mae_hu"):
        with open(tmp_path / f"{key}_raw.csv") as f:
            rows = list(csv.DictReader(f))
        assert [r["filename"] for r in rows] == SPLIT["test"], key
        per_case[key] = [float(r["mean"]) for r in rows]
        assert all(math.isfinite(v) for v in per_case[key]), (key, rows)
        with open(tmp_path / f"{key}_summary.csv") as f:
            summary = {r["class"]: r for r in csv.DictReader(f)}
        assert float(summary["mean"]["notnans"]) == len(SPLIT["test"])
        assert float(summary["mean"]["mean"]) == pytest.approx(np.mean(per_case[key]), abs=1e-4)
    # the paper's PSNR convention uses peak 4095 on the [0, 2500] scale: always higher than the honest one
    assert all(p > h for p, h in zip(per_case["psnr_paper"], per_case["psnr"]))
    means = dict(r.split(",") for r in (tmp_path / "metrics.csv").read_text().splitlines())
    assert float(means["psnr_paper"]) == pytest.approx(np.mean(per_case["psnr_paper"]), abs=1e-4)
    assert sorted(p.name for p in (tmp_path / "montages").iterdir()) == sorted(f"{c}.png" for c in SPLIT["test"])
    log = res.stdout + res.stderr
    for c in SPLIT["test"]:  # a line per case with its metrics
        line = rf"{c}: psnr_paper [0-9.]+, ssim_paper [0-9.]+, (lpips_paper [0-9.]+, )?psnr [0-9.]+"
        assert re.search(line, log), log[-3000:]


def test_inference_zoom_and_its_range_check(quick, tmp_path):
    case = quick["out"] / "held_out" / HELD_OUT
    common = [
        "--config_file",
        "configs/inference.json",
        "--pa",
        str(case),
        "--ckpt_path",
        str(quick["out"] / "models" / "model.pt"),
        "--output_dir",
        str(tmp_path),
    ]
    bundle_run(*common, "--zoom", "{'axis': 'coronal', 'index': 64, 'box': [32, 40, 32]}")
    zoom = nib.load(tmp_path / f"{HELD_OUT}_zoom.nii.gz")
    assert zoom.shape == (128, 128, 1)
    iso = np.asarray(json.loads((case / "case.json").read_text())["isocentre_mm"])
    # box centre: x voxel 47.5, y 64, z 55.5 -> LPS (-40, 1.25, -20) mm from the isocentre -> RAS (40, -1.25, -20)
    np.testing.assert_allclose(
        zoom.affine @ [63.5, 63.5, 0, 1], [40 - iso[0], -1.25 - iso[1], -20 + iso[2], 1], atol=1e-4
    )
    res = bundle_run(*common, "--zoom", "{'axis': 'coronal', 'index': 64, 'box': [100, 40, 32]}", ok=False)
    assert_one_error_line(res, "row0 100", "use 0..96")


def test_inference_errors_are_one_line(quick, tmp_path):
    res = bundle_run(
        "--config_file",
        "configs/inference.json",
        "--pa",
        str(tmp_path / "pa.png"),
        "--output_dir",
        str(tmp_path),
        ok=False,
    )
    assert_one_error_line(res, "missing lateral (--lateral) image")
    case = quick["out"] / "held_out" / HELD_OUT
    best = quick["out"] / "models" / "model.pt"
    res = bundle_run(
        "--config_file",
        "configs/inference.json",
        "--pa",
        str(case),
        "--ckpt_path",
        str(best),
        "--model_preset",
        "paper",
        "--output_dir",
        str(tmp_path),
        ok=False,
    )
    assert_one_error_line(res, "--model_preset paper", "'small'", str(best))
    for name, data in (("empty.pt", b""), ("truncated.pt", best.read_bytes()[: best.stat().st_size // 2])):
        bad = tmp_path / name
        bad.write_bytes(data)
        res = bundle_run(
            "--config_file", "configs/inference.json", "--pa", str(case), "--ckpt_path", str(bad), ok=False
        )
        assert_one_error_line(res, str(bad), "empty" if not data else "corrupt or truncated")


def test_resume_continues_epochs_and_refuses_another_runs_checkpoint(quick, tmp_path):
    out = tmp_path / "resume"
    out.mkdir()
    bundle_run(*quick_train_args(out, quick["raw"], "--epochs", "1", "--held_out_reconstruction", "false"))
    first = torch.load(out / "models" / "latest.pt", map_location="cpu", weights_only=False)
    assert first["trainer"]["iteration"] // first["trainer"]["epoch_length"] == 1
    res = bundle_run(
        *quick_train_args(out, quick["raw"], "--epochs", "2", "--resume", "true", "--model_preset", "paper"), ok=False
    )
    assert_one_error_line(res, "cannot resume", "'small'", "'paper'")
    bundle_run(
        *quick_train_args(out, quick["raw"], "--epochs", "2", "--resume", "true", "--held_out_reconstruction", "false")
    )
    second = torch.load(out / "models" / "latest.pt", map_location="cpu", weights_only=False)
    assert second["trainer"]["iteration"] == 8 and second["trainer"]["max_epochs"] == 2
    steps = {int(s["step"]) for s in second["optimizer"]["state"].values()}
    assert steps == {8}, f"Adam step counts after resume: {steps} (4 restored + 4 new expected)"


def test_ctrl_c_saves_the_point_reached_and_resume_completes(quick, tmp_path):
    out = tmp_path / "sigint"
    out.mkdir()
    args = quick_train_args(out, quick["raw"], "--epochs", "1", "--held_out_reconstruction", "false")
    log = out / "log.txt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PERX2CT_DEBUG", None)
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monai.bundle", "run", *args],
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.PIPE,
            env=env,
            encoding="utf-8",
            errors="replace",
        )
        deadline = time.monotonic() + 600
        while "Iter: 2/4 -- train_loss" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # mid-epoch: iterations 3 and 4 are still to come
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err + log.read_text(errors="replace"), err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln and not ln.startswith("\r")]
    stops = [ln for ln in lines if ln.startswith("interrupted at epoch 1, iteration ")]
    assert len(stops) == 1, err[-3000:]
    done = int(re.match(r"interrupted at epoch 1, iteration (\d+);", stops[0]).group(1))
    assert 2 <= done < 4, stops[0]
    saved = torch.load(out / "models" / "latest.pt", map_location="cpu", weights_only=False)
    assert saved["trainer"]["iteration"] == done
    command = shlex.split(stops[0].split("resume with: ", 1)[1])
    assert command[1:4] == ["-m", "monai.bundle", "run"] and command[command.index("--resume") + 1] == "true"
    res = subprocess.run(
        command, cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=600, env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    resumed = torch.load(out / "models" / "latest.pt", map_location="cpu", weights_only=False)
    assert resumed["trainer"]["iteration"] == 4
    assert {int(s["step"]) for s in resumed["optimizer"]["state"].values()} == {4}


def test_torchrun_two_processes_on_cpu(quick, tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    cfg = "['configs/train.json','configs/multi_gpu_train.json','configs/quick.json']"
    args = quick_train_args(out, quick["raw"], "--held_out_reconstruction", "false")
    args[args.index("--config_file") + 1] = cfg
    bundle_run(*args, torchrun=2)
    assert (out / "models" / "model.pt").is_file() and (out / "models" / "latest.pt").is_file()
    # TensorBoard files are named events.out.tfevents.<time>.<host>.<pid>.<n>: all must come from one process (rank 0)
    events = list((out / "runs").glob("events.out.tfevents.*"))
    assert events and len({e.name.split(".")[-2] for e in events}) == 1, f"logs from more than one rank: {events}"
