"""Benchmark: DRRs per second of the torch projector beside ITK and plastimatch, and training iterations per
second with and without on-the-fly views.

Run from the repository root (not collected by pytest)::

    python tests/benchmarks/bench_projector.py [--ct data/raw/LIDC-IDRI-0001] [--batch 16] [--sizes 128,320]
        [--devices cpu,cuda] [--repeat 2] [--threads 2] [--train_iters 5] [--preset small]

DRRs: the CT (``--ct``; default a synthetic chest phantom) normalised to the 1 mm, 320 mm cube, and
area-averaged to 128^3 for the small size. For each size ``n`` (128: 128^2 from 128^3; 320: 320^2 from
320^3) it prints DRRs/s for a batch of ``--batch`` cases x 2 views through the torch projector on each device
(one call, best of ``--repeat``; the batch is the same volume repeated, without copies), then on the same CPU:
ITK (``ray_cast_drr``, one view per call, HU conversion excluded) and plastimatch (one ``plastimatch drr``
process per view: start, read MHA, convert, trace, write), each timed on 2 DRRs and given as DRRs/s.

Training: iterations/s of one slice-training step (forward, L1 loss, backward, Adam) of ``--preset`` with a
batch of ``--train_batch`` samples, with fixed views, and with each sample's views re-rendered by
:class:`scripts.transforms.rigid_views.RandRigidViewsd` draws from the 128^3 cube in one projector call per batch on the
training device, as ``RandRigidViewsBatch`` does (render 128^2 on CPU, 320^2 on CUDA), plus the cost of the
views alone as a share of the step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.frame import FRAME  # noqa: E402
from scripts.projection.attenuation import hu_to_attenuation  # noqa: E402
from scripts.projection.geometry import ProjectionGeometry  # noqa: E402
from scripts.projection.itk_renderer import ray_cast_drr  # noqa: E402
from scripts.projection.torch_renderer import project, project_hu  # noqa: E402
from timing import best_of  # noqa: E402

VIEWS = ("pa", "lateral")


def sync_device(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def phantom_hu(n: int) -> np.ndarray:
    """A chest-like HU cube (n^3 over 320 mm): body, lungs, spine."""
    mm = (np.arange(n, dtype=np.float32) - (n - 1) / 2) * FRAME.size_mm / n
    x, y, z = np.meshgrid(mm, mm, mm, indexing="ij")
    hu = np.full((n, n, n), -1000.0, np.float32)
    hu[((x / 140) ** 2 + (y / 100) ** 2 < 1) & (np.abs(z) < 140)] = 40.0
    for side in (-1, 1):
        hu[((x - side * 65) / 50) ** 2 + ((y + 5) / 60) ** 2 + (z / 110) ** 2 < 1] = -850.0
    hu[((x / 15) ** 2 + ((y - 70) / 15) ** 2 < 1) & (np.abs(z) < 150)] = 700.0
    return hu


def cubes(ct: str | None) -> dict[int, np.ndarray]:
    """HU cubes {320: 1 mm, 128: 2.5 mm}, LPS, centred on the isocentre."""
    if ct is None:
        fine = phantom_hu(320)
    else:
        from scripts.transforms.ct import LoadCT, NormalizeCT

        fine = NormalizeCT()(LoadCT()(ct)).numpy()[0]
    from scripts.transforms.target import area_downsample

    coarse = area_downsample(torch.from_numpy(fine)[None], (FRAME.shape,) * 3).numpy()[0]
    return {320: fine, FRAME.shape: coarse}


def bench_drrs(args, vols: dict[int, np.ndarray]) -> None:
    print(f"DRRs per second (batch {args.batch} cases x {len(VIEWS)} views for the torch projector)")
    print(f"{'size':<22}{'backend':<30}{'DRRs/s':>10}{'s per DRR':>12}")
    exe = shutil.which("plastimatch")
    for n in args.sizes:
        hu = vols[n]
        spacing = FRAME.size_mm / n
        origin = [-(n - 1) / 2 * spacing] * 3
        g = ProjectionGeometry.from_preset("perx2ct", detector_shape=(n, n))
        mu = hu_to_attenuation(hu)
        label = f"{n}^2 from {n}^3"
        for dev_name in args.devices:
            device = torch.device(dev_name)
            vol = torch.from_numpy(mu).to(device)[None, None].expand(args.batch, 1, n, n, n)
            with torch.no_grad():
                project(vol[:1], [spacing] * 3, origin, g, VIEWS)  # warm-up
                sync_device(device)

                def run():
                    project(vol, [spacing] * 3, origin, g, VIEWS)
                    sync_device(device)

                t = best_of(run, args.repeat)
            k = args.batch * len(VIEWS)
            print(f"{label:<22}{'torch ' + dev_name:<30}{k / t:>10.1f}{t / k:>12.4f}")
        t = best_of(
            lambda: [ray_cast_drr(None, [spacing] * 3, origin, g, v, attenuation=mu) for v in VIEWS], args.repeat
        )
        print(f"{label:<22}{'ITK (in process)':<30}{2 / t:>10.1f}{t / 2:>12.4f}")
        if exe is None:
            print(f"{label:<22}{'plastimatch':<30}{'not installed':>22}")
            continue
        import itk

        with tempfile.TemporaryDirectory() as tmp:
            mha = Path(tmp) / "ct.mha"
            img = itk.image_from_array(np.ascontiguousarray(hu.transpose(2, 1, 0)))
            img.SetSpacing([spacing] * 3)
            img.SetOrigin(origin)
            itk.imwrite(img, str(mha))
            cmds = [
                [
                    exe,
                    "drr",
                    "-t",
                    "pfm",
                    "-n",
                    nrm,
                    "--sad",
                    f"{g.sad_mm:g}",
                    "--sid",
                    f"{g.sid_mm:g}",
                    "-r",
                    f"{n} {n}",
                    "-z",
                    f"{g.detector_size_mm[0]:g} {g.detector_size_mm[1]:g}",
                    "-o",
                    "0 0 0",
                    "-I",
                    str(mha),
                    "-O",
                    str(Path(tmp) / v),
                ]
                for v, nrm in (("pa", "0 1 0"), ("lateral", "1 0 0"))
            ]
            t = best_of(lambda: [subprocess.run(c, check=True, capture_output=True) for c in cmds], args.repeat)
        print(f"{label:<22}{'plastimatch (whole process)':<30}{2 / t:>10.1f}{t / 2:>12.4f}")


def bench_training(args, vols: dict[int, np.ndarray]) -> None:
    from scripts.networks import PerspectiveSampler, build_perx2ct
    from scripts.transforms.rigid_views import RandRigidViewsd

    print(f"\ntraining step, preset {args.preset}, batch {args.train_batch} slice samples (iterations/s)")
    print(f"{'device':<8}{'views':<34}{'it/s':>8}{'s/it':>8}{'views s/it':>12}")
    g = ProjectionGeometry.from_preset("perx2ct")
    for dev_name in args.devices:
        device = torch.device(dev_name)
        torch.manual_seed(0)
        net = build_perx2ct(args.preset, PerspectiveSampler(g)).to(device).train()
        opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
        b = args.train_batch
        hu = torch.from_numpy(vols[FRAME.shape]).to(device)[None]
        render = None if device.type == "cuda" else (128, 128)
        views = RandRigidViewsd(geometry=g, render_shape=render, device=device)
        views.set_random_state(seed=0)
        fixed = torch.rand(b, 2, 128, 128, device=device)
        axis = torch.zeros(b, 1, dtype=torch.long, device=device)
        index = torch.full((b, 1), 64.0, device=device)
        box = torch.tensor([0.0, 0.0, 128.0], device=device).expand(b, 1, 3)
        target = torch.rand(b, 1, 128, 128, device=device)

        def step(image):
            out = net(image, axis, index, box).reshape(b, 1, 128, 128)
            loss = (out - target).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        origin = [-FRAME.centre_voxel * FRAME.spacing_mm] * 3

        def onthefly():  # as RandRigidViewsBatch: draws per sample, one projector call for the batch
            draws = []
            for _ in range(b):
                views.randomize()
                draws.append((views.motion.copy(), views._gain.copy(), views._gamma.copy(), views._noise_seed))
            motion = np.stack([m for m, *_ in draws])
            with torch.no_grad():
                raw = project_hu(
                    hu[None].expand(b, 1, *hu.shape[1:]),
                    [FRAME.spacing_mm] * 3,
                    origin,
                    views.geometry,
                    views.views,
                    motion=motion,
                )
            return torch.stack([views.finish(raw[i], *draws[i][1:]) for i in range(b)])

        step(fixed)  # warm-up
        sync_device(device)
        t0 = time.perf_counter()
        for _ in range(args.train_iters):
            step(fixed)
        sync_device(device)
        t_fixed = (time.perf_counter() - t0) / args.train_iters
        t0 = time.perf_counter()
        t_views = 0.0
        for _ in range(args.train_iters):
            tv = time.perf_counter()
            image = onthefly()
            sync_device(device)
            t_views += time.perf_counter() - tv
            step(image)
        sync_device(device)
        t_otf = (time.perf_counter() - t0) / args.train_iters
        t_views /= args.train_iters
        shape = f"{render[0]}^2" if render else "320^2"
        print(f"{dev_name:<8}{'fixed (prepared DRRs)':<34}{1 / t_fixed:>8.2f}{t_fixed:>8.2f}{'-':>12}")
        print(
            f"{dev_name:<8}{'on the fly (' + shape + ' from 128^3)':<34}{1 / t_otf:>8.2f}{t_otf:>8.2f}{t_views:>12.2f}"
        )
        share, plain = 100 * t_views / t_otf, 100 * t_views / t_fixed
        print(f"{'':<8}views cost {share:.0f} % of an on-the-fly step ({plain:.0f} % of a plain step)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", default=None, help="CT file or DICOM folder (default: a synthetic phantom)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--sizes", default="128,320")
    ap.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--train_iters", type=int, default=5)
    ap.add_argument("--train_batch", type=int, default=4)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: drr, train")
    args = ap.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.devices = args.devices.split(",")
    torch.set_num_threads(args.threads)
    import itk

    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(args.threads)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    ct = args.ct or "phantom"
    print(f"torch {torch.__version__}, threads {args.threads}, cpus {os.cpu_count()}, GPU: {gpu}; CT: {ct}")
    vols = cubes(args.ct)
    skip = set(args.skip.split(","))
    if "drr" not in skip:
        bench_drrs(args, vols)
    if "train" not in skip:
        bench_training(args, vols)


if __name__ == "__main__":
    main()
