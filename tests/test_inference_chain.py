"""One inference chain: the reconstruction written at the end of training (``HeldOutReconstruction``) is
``configs/inference.json``'s own (its preprocessing, inferer, postprocessing and evaluator), so it equals what
``python -m monai.bundle run --config_file configs/inference.json --pa <case> --ckpt_path <best>`` writes, bit for
bit, on the same prepared case with the same weights; and a change to ``inference.json`` reaches it."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from PIL import Image
from scripts.frame import FRAME
from scripts.handlers.held_out import HeldOutReconstruction
from scripts.projection.geometry import ProjectionGeometry

pytestmark = pytest.mark.slow  # parity of two full-volume reconstructions per test (minutes on a busy 2-core CPU)

REPO = Path(__file__).resolve().parents[1]
CASE = "case7"


@pytest.fixture(scope="module")
def prepared_case(tmp_path_factory) -> Path:
    """A prepared case folder as the prepare workflow writes it: ``pa.png``, ``lateral.png`` (8-bit, detector
    size), ``ct.nii.gz`` (the target volume in [0, 1]) and ``case.json`` (the isocentre)."""
    folder = tmp_path_factory.mktemp("held_out") / CASE
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows, cols = ProjectionGeometry.from_preset("perx2ct").detector_shape
    yy, xx = np.mgrid[:rows, :cols] / max(rows, cols)
    for view, phase in (("pa", 0.0), ("lateral", 1.0)):
        img = 0.5 + 0.3 * np.sin(6 * xx + phase) * np.cos(4 * yy) + rng.normal(0, 0.05, (rows, cols))
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"{view}.png")
    ct = rng.random((FRAME.shape,) * 3, dtype=np.float32) * 0.6 + 0.2
    nib.save(nib.Nifti1Image(ct, FRAME.ras_affine((12.0, -8.0, 30.0))), folder / "ct.nii.gz")
    (folder / "case.json").write_text(json.dumps({"isocentre_mm": [12.0, -8.0, 30.0]}))
    return folder


def _inference_json(bundle_config, config: Path, case: Path, ckpt: Path, out: Path) -> np.ndarray:
    """What ``inference.json`` (or a variant ``config``) writes for ``case`` with ``ckpt``: its evaluator, run as
    ``python -m monai.bundle run`` runs it (CheckpointLoader included), on the CPU; returns the NIfTI's data (HU)."""
    parser = bundle_config(str(config), pa=str(case), ckpt_path=str(ckpt), output_dir=str(out), device="cpu")
    parser.get_parsed_content("evaluator").run()
    return nib.load(out / f"{CASE}.nii.gz")


def _held_out(config: Path, case: Path, ckpt: Path, out: Path, network: torch.nn.Module, capsys) -> str:
    """The end-of-training handler on ``case``: the training ``network`` (other weights) and the best checkpoint."""
    handler = HeldOutReconstruction(
        network=network,
        cases=[{"case_id": CASE, "pa": str(case / "pa.png"), "lateral": str(case / "lateral.png")}],
        output_dir=str(out),
        held_out_dir=str(out / "prepared"),
        geometry=ProjectionGeometry.from_preset("perx2ct"),
        inference_config=str(config),
        device="cpu",
        ckpt_path=str(ckpt),
    )
    capsys.readouterr()
    handler(Engine(lambda e, b: None))
    return capsys.readouterr().out


def test_held_out_reconstruction_is_inference_json_output(
    prepared_case, small_network, small_checkpoint, bundle_config, tmp_path, capsys
):
    """Bit-exact (float32 HU, np.array_equal) equality of the two NIfTIs, same affine; the trained network's own
    weights are left untouched; the held-out PNG shows ground truth, prediction and error, the console the metrics."""
    ckpt = small_checkpoint(tmp_path / "model.pt", seed=0)
    training_net = small_network(seed=1)  # the end-of-training weights differ from the best checkpoint's
    before = {k: v.clone() for k, v in training_net.state_dict().items()}
    config = REPO / "configs" / "inference.json"
    ref = _inference_json(bundle_config, config, prepared_case, ckpt, tmp_path / "inference")
    printed = _held_out(config, prepared_case, ckpt, tmp_path / "held_out", training_net, capsys)
    got = nib.load(tmp_path / "held_out" / f"{CASE}.nii.gz")
    assert got.get_fdata(dtype=np.float32).std() > 0
    np.testing.assert_array_equal(got.get_fdata(dtype=np.float32), ref.get_fdata(dtype=np.float32))
    np.testing.assert_array_equal(got.affine, ref.affine)
    assert all(torch.equal(v, before[k]) for k, v in training_net.state_dict().items())
    # the held-out preview has the ground-truth and error columns the plain inference preview lacks
    held, plain = (np.asarray(Image.open(d / f"{CASE}.png")) for d in (tmp_path / "held_out", tmp_path / "inference"))
    assert held.shape[0] == plain.shape[0] and held.shape[1] >= plain.shape[1] + 2 * FRAME.shape
    assert "honest metrics: PSNR" in printed and "try inference:" in printed, printed


def test_held_out_reconstruction_follows_a_changed_inference_json(
    prepared_case, small_network, small_checkpoint, bundle_config, tmp_path, capsys
):
    """inference.json is the one definition: with its inferer switched to bfloat16 autocast (a variant file), the
    held-out reconstruction changes with it and still equals that config's output bit for bit."""
    ckpt = small_checkpoint(tmp_path / "model.pt", seed=0)
    config = json.loads((REPO / "configs" / "inference.json").read_text())
    assert config["amp_dtype"] == "fp32"
    config["amp_dtype"] = "bf16"
    variant = tmp_path / "inference_bf16.json"
    variant.write_text(json.dumps(config))
    ref = _inference_json(bundle_config, variant, prepared_case, ckpt, tmp_path / "inference")
    _held_out(variant, prepared_case, ckpt, tmp_path / "held_out", small_network(seed=1), capsys)
    got = nib.load(tmp_path / "held_out" / f"{CASE}.nii.gz").get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(got, ref.get_fdata(dtype=np.float32))
    fp32 = _inference_json(
        bundle_config, REPO / "configs" / "inference.json", prepared_case, ckpt, tmp_path / "fp32"
    ).get_fdata(dtype=np.float32)
    assert np.abs(got - fp32).max() > 0.1  # HU: the variant's chain is not the default one
