"""The quick cycle on the example data, through the real ``python -m monai.bundle`` workflows.

train (quick.json: small preset, 2 epochs of 4 iterations, validation on) -> evaluate -> infer, plus
resume and a 2-process torchrun on CPU (gloo). Each command is exactly what the README documents.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TRAIN = "['configs/train.json','configs/quick.json']"
EVALUATE = "['configs/train.json','configs/evaluate.json','configs/quick.json']"


def bundle(*args: str, timeout: int = 600, torchrun: int = 0) -> subprocess.CompletedProcess:
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={torchrun}",
               "-m", "monai.bundle", "run", *args]
    else:
        cmd = [sys.executable, "-m", "monai.bundle", "run", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1" if torchrun else os.environ.get("OMP_NUM_THREADS", "2")}
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout, env=env)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {res.returncode}\n--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-6000:]}")
    return res


def train_args(out: Path, raw: Path, *extra: str) -> list[str]:
    return ["training", "--config_file", TRAIN, "--dataset_dir", str(raw),
            "--split_file", str(REPO / "configs" / "example_split.json"),
            "--ckpt_dir", str(out / "models"), "--output_dir", str(out / "runs"), "--cache_dir", str(out.parent / "cache"), *extra]


@pytest.fixture(scope="module")
def quick(tmp_path_factory, example_raw_dir):
    out = tmp_path_factory.mktemp("quick") / "run"
    out.mkdir()
    res = bundle(*train_args(out, example_raw_dir))
    return {"out": out, "raw": example_raw_dir, "log": res.stdout + res.stderr}


def _small_network():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "inference.json"))
    parser["model_preset"] = "small"
    return parser.get_parsed_content("network_def")


def test_training_writes_best_and_latest_checkpoints(quick):
    models = quick["out"] / "models"
    best = models / "model.pt"
    assert best.is_file(), f"no model.pt in {models}: {sorted(p.name for p in models.iterdir())}"
    net = _small_network()
    net.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))  # strict: every key matches
    latest = torch.load(models / "latest.pt", map_location="cpu", weights_only=False)
    assert set(latest) >= {"network", "optimizer", "trainer", "lr_scheduler"}
    # ignite keeps iteration and epoch_length; the epoch is their quotient
    assert latest["trainer"]["iteration"] == 8 and latest["trainer"]["epoch_length"] == 4  # 2 epochs of 4
    assert "ProgressBar" in quick["log"] or "Epoch" in quick["log"] or "%" in quick["log"]


def test_validation_psnr_is_finite(quick):
    # MONAI's MetricsSaver writes "name,value" lines with the last validation's metrics
    rows = (quick["out"] / "runs" / "metrics.csv").read_text().split("\n")
    values = dict(r.split(",")[:2] for r in rows if "," in r)
    assert "val_psnr" in values, rows
    assert math.isfinite(float(values["val_psnr"])) and float(values["val_psnr"]) > 0
    assert math.isfinite(float(values["val_psnr_paper"]))


def test_evaluate_writes_a_row_per_test_case(quick, tmp_path):
    split = json.loads((REPO / "configs" / "example_split.json").read_text())
    bundle("evaluating", "--config_file", EVALUATE, "--dataset_dir", str(quick["raw"]),
           "--split_file", str(REPO / "configs" / "example_split.json"), "--cache_dir", str(quick["out"].parent / "cache"),
           "--ckpt_path", str(quick["out"] / "models" / "model.pt"), "--output_dir", str(tmp_path))
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == split["test"]
    for key in ("psnr_paper", "ssim_paper", "psnr", "ssim", "mae_hu"):
        assert math.isfinite(float(rows[0][key])), key
    # the paper's PSNR convention uses peak 4095 on the [0, 2500] scale: always higher than the honest one
    assert float(rows[0]["psnr_paper"]) > float(rows[0]["psnr"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cases"] == len(split["test"])
    assert (tmp_path / "montages" / f"{split['test'][0]}.png").is_file()


def test_inference_writes_nifti_in_the_documented_frame(quick, tmp_path):
    from PIL import Image

    from scripts.transforms import DRRd, LoadCTd, NormalizeCTd
    from scripts.geometry import ProjectionGeometry

    # a pair of radiographs made by the bundle's own DRR chain from the test case
    chain = [LoadCTd(keys="ct"), NormalizeCTd(keys="ct"), DRRd(keys="ct", geometry=ProjectionGeometry.from_preset("perx2ct"))]
    d = {"ct": str(quick["raw"] / "LungDx-A0001")}
    for t in chain:
        d = t(d)
    for view in ("pa", "lateral"):
        Image.fromarray((np.asarray(d[view])[0] * 255 + 0.5).astype(np.uint8)).save(tmp_path / f"{view}.png")
    out = tmp_path / "out"
    bundle("--config_file", "configs/inference.json", "--model_preset", "small", "--pa", str(tmp_path / "pa.png"),
           "--lateral", str(tmp_path / "lateral.png"), "--ckpt_path", str(quick["out"] / "models" / "model.pt"),
           "--output_dir", str(out))
    img = nib.load(out / "pa.nii.gz")
    assert img.shape == (128, 128, 128)
    np.testing.assert_allclose(img.header.get_zooms(), (2.5, 2.5, 2.5))
    # documented frame: LPS-ordered axes (RAS affine diag -2.5, -2.5, 2.5), centre voxel at the isocentre (origin)
    np.testing.assert_allclose(np.diag(img.affine)[:3], (-2.5, -2.5, 2.5))
    np.testing.assert_allclose(img.affine @ [63.5, 63.5, 63.5, 1], [0, 0, 0, 1], atol=1e-6)
    data = img.get_fdata()
    assert np.isfinite(data).all() and -1024 <= data.min() and data.max() <= 1476
    assert (out / "pa.png").is_file()
    # zoom-in: one region of one slice at the decoder's resolution, written where it lies in the volume
    bundle("--config_file", "configs/inference.json", "--model_preset", "small", "--pa", str(tmp_path / "pa.png"),
           "--lateral", str(tmp_path / "lateral.png"), "--ckpt_path", str(quick["out"] / "models" / "model.pt"),
           "--output_dir", str(out), "--zoom", "{'axis': 'coronal', 'index': 64, 'box': [32, 40, 32]}")
    zoom = nib.load(out / "pa_zoom.nii.gz")
    assert zoom.shape == (128, 128, 1)
    np.testing.assert_allclose(zoom.affine @ [63.5, 63.5, 0, 1], [40, -1.25, -20, 1], atol=1e-6)


def test_inference_names_the_missing_view(tmp_path):
    res = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                          "--model_preset", "small", "--pa", str(tmp_path / "pa.png"), "--output_dir", str(tmp_path)],
                         cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert res.returncode != 0
    assert "missing lateral (--lateral) image" in res.stderr


def test_resume_continues_epochs_and_optimiser_state(quick, tmp_path):
    out = tmp_path / "resume"
    out.mkdir()
    bundle(*train_args(out, quick["raw"], "--epochs", "1"))
    first = torch.load(out / "models" / "latest.pt", map_location="cpu", weights_only=False)
    assert first["trainer"]["iteration"] // first["trainer"]["epoch_length"] == 1
    bundle(*train_args(out, quick["raw"], "--epochs", "2", "--resume", "true"))
    second = torch.load(out / "models" / "latest.pt", map_location="cpu", weights_only=False)
    assert second["trainer"]["iteration"] == 8 and second["trainer"]["max_epochs"] == 2
    steps = {int(s["step"]) for s in second["optimizer"]["state"].values()}
    assert steps == {8}, f"Adam step counts after resume: {steps} (4 restored + 4 new expected)"


def test_torchrun_two_processes_on_cpu(quick, tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    cfg = "['configs/train.json','configs/multi_gpu_train.json','configs/quick.json']"
    args = train_args(out, quick["raw"])
    args[args.index("--config_file") + 1] = cfg
    bundle(*args, torchrun=2)
    assert (out / "models" / "model.pt").is_file() and (out / "models" / "latest.pt").is_file()
    # TensorBoard files are named events.out.tfevents.<time>.<host>.<pid>.<n>: all must come from one process (rank 0)
    events = list((out / "runs").glob("events.out.tfevents.*"))
    assert events and len({e.name.split(".")[-2] for e in events}) == 1, f"logs from more than one rank: {events}"
