"""Benchmark: full-volume inference in fp32 and with bf16 autocast (seconds, output difference, honest PSNR).

Run from the repository root (not collected by pytest)::

    python tests/benchmarks/bench_bf16_inference.py [--presets small,paper] [--ckpt runs/quick/models/model.pt]
        [--case data/held_out/LungDx-A0001] [--device cpu|cuda] [--threads 2]

For each preset: one 128^3 reconstruction (the inference workflow's ``ReconstructionInferer``, axial slices)
in fp32 and in bf16 (``amp_dtype="bf16"``, as ``--amp_dtype bf16`` on ``configs/inference.json``), after a
one-slice warm-up; prints seconds per volume, the max and mean |difference| between the two outputs in HU,
and, when the case folder holds ``ct.nii.gz`` (a prepared case: ``pa.png``, ``lateral.png``), the honest
PSNR (true peak: 1 on the target scale) of each against that ground truth. A checkpoint is used for the
preset it was trained as (``--ckpt``, with its ``.json`` sidecar); presets without one run with random
weights (differences then describe arithmetic only, not a trained model).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.frame import FRAME  # noqa: E402
from scripts.inference.inferers import ReconstructionInferer  # noqa: E402
from scripts.networks import PerspectiveSampler, build_perx2ct  # noqa: E402
from scripts.projection.geometry import ProjectionGeometry  # noqa: E402


def load_case(folder: Path) -> tuple[torch.Tensor, np.ndarray | None]:
    """(image (1, 2, 128, 128), target (128^3) or None) of a prepared case folder."""
    from PIL import Image

    views = [
        np.asarray(Image.open(folder / f"{v}.png").convert("L"), dtype=np.float32) / 255.0 for v in ("pa", "lateral")
    ]
    image = torch.from_numpy(np.stack(views))[None]
    target = None
    if (folder / "ct.nii.gz").is_file():
        import nibabel as nib

        target = np.asarray(nib.load(str(folder / "ct.nii.gz")).dataobj, dtype=np.float32).reshape((FRAME.shape,) * 3)
    return image, target


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    return float(20 * np.log10(1.0 / np.sqrt(np.mean((pred - target) ** 2))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="small,paper")
    ap.add_argument("--ckpt", default=None, help="checkpoint (state dict) with its .json sidecar")
    ap.add_argument(
        "--case", default="data/held_out/LungDx-A0001", help="prepared case folder (pa.png, lateral.png, ct.nii.gz)"
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ckpt_preset = None
    if args.ckpt:
        from scripts.networks.checkpoint import read_info

        ckpt_preset = (read_info(args.ckpt) or {}).get("model_preset")
    case = Path(args.case)
    if case.is_dir():
        image, target = load_case(case)
    else:
        print(f"no case folder {case}: random input, no PSNR")
        image, target = torch.rand(1, 2, 128, 128), None
    image = image.to(device)
    print(
        f"device {device} ({torch.cuda.get_device_name(0) if device.type == 'cuda' else f'{args.threads} threads'}), "
        f"torch {torch.__version__}, case {case.name if case.is_dir() else '-'}"
    )
    print(
        f"{'preset':<8}{'weights':<10}{'fp32 s':>8}{'bf16 s':>8}{'speed-up':>9}{'max|dHU|':>10}{'mean|dHU|':>10}"
        f"{'PSNR fp32':>10}{'PSNR bf16':>10}"
    )
    g = ProjectionGeometry.from_preset("perx2ct")
    for preset in args.presets.split(","):
        torch.manual_seed(0)
        net = build_perx2ct(preset, PerspectiveSampler(g))
        weights = "random"
        if args.ckpt and ckpt_preset == preset:
            state = torch.load(args.ckpt, map_location="cpu", weights_only=True)
            net.load_state_dict(state.get("model", state) if isinstance(state, dict) and "model" in state else state)
            weights = "trained"
        net = net.to(device).eval()
        outs, secs = {}, {}
        for name in ("fp32", "bf16"):
            inferer = ReconstructionInferer(axes=["axial"], amp_dtype=name)
            with torch.no_grad():
                ctx = (
                    torch.autocast(device.type, dtype=torch.bfloat16)
                    if name == "bf16"
                    else torch.autocast(device.type, enabled=False)
                )
                with ctx:  # warm-up: one slice
                    net(image, torch.zeros(1, 1, dtype=torch.long, device=device), torch.zeros(1, 1, device=device))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = inferer(image, net)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                secs[name] = time.perf_counter() - t0
            assert out.dtype == torch.float32
            outs[name] = out[0, 0].float().cpu().numpy()
        d = np.abs(outs["bf16"] - outs["fp32"]) * FRAME.hu_range
        p = ["-", "-"] if target is None else [f"{psnr(np.clip(outs[n], 0, 1), target):.2f}" for n in ("fp32", "bf16")]
        print(
            f"{preset:<8}{weights:<10}{secs['fp32']:>8.1f}{secs['bf16']:>8.1f}{secs['fp32'] / secs['bf16']:>9.2f}"
            f"{d.max():>10.1f}{d.mean():>10.2f}{p[0]:>10}{p[1]:>10}"
        )


if __name__ == "__main__":
    main()
