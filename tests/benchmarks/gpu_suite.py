"""The GPU measurements of issue 23 in one run (under 8 minutes on one GPU), with the bundle's real components.

Run from the repository root (not collected by pytest)::

    python tests/benchmarks/gpu_suite.py [--device cuda] [--ckpt runs/quick/models/model.pt] [--ct CT]
        [--json gpu_suite.json]
    # DiffDRR rows need it importable (benchmark-only install: see tests/benchmarks/bench_diffdrr.py), e.g.
    PYTHONPATH=~/.cache/perx2ct-bench/diffdrr python tests/benchmarks/gpu_suite.py
    # CPU smoke mode with tiny sizes (what tests/test_gpu_suite.py runs, so the script cannot rot):
    python tests/benchmarks/gpu_suite.py --device cpu --small

It prints, one line each (``--json`` also writes them):

1. the machine: device name, torch, CUDA, the load average;
2. projector: DRRs/s of :func:`scripts.projection.torch_renderer.project` at 128^2 from 128^3 (a batch of 16 cases x
   2 views) and at 320^2 from 320^3 (4 cases x 2 views), best of 3 after a warm-up, and DiffDRR (Siddon and
   Trilinear, same rays, same samples per ray; see ``bench_diffdrr.py``) on the same, or a line saying it is skipped;
3. training: iterations/s of the ``paper`` preset (``build_perx2ct``) through MONAI's ``SupervisedTrainer`` with the
   bundle's ``SliceBatch``, ``SliceInferer``, ``PerX2CTLoss`` (LPIPS-VGG when its weights are in
   ``models/pretrained``, else its SSIM fallback, said so) and Adam (betas 0.5, 0.9), batch 20, fp32 and AMP
   (``amp=True``: fp16 autocast with a grad scaler, as ``--amp true`` on ``configs/train.json``);
4. on-the-fly views: the cost of one batch's views rendered by
   :meth:`scripts.transforms.rigid_views.RandRigidViewsBatch.render` itself (per-sample draws of
   :class:`~scripts.transforms.rigid_views.RandRigidViewsd`, made in the loader workers in training and not timed;
   one batched projector call with the motions on the device, 320^2 on CUDA, then ``finish`` per sample), as a
   share of a step;
5. inference: seconds per 128^3 volume (``ReconstructionInferer``, axial) in fp32, bf16 and fp16 autocast, and
   the max / mean |difference| in HU of each against fp32, on a trained checkpoint (``--ckpt``, with its ``.json``
   sidecar) or on the network the training measurement just trained, then trained on for ``--train_seconds`` in
   all (a "quick checkpoint" on phantom data: its differences describe a trained network's arithmetic, not a
   clinically useful one).

Data: the bundle's chest phantom (``bench_projector.phantom_hu``) or ``--ct`` normalised to the 320 mm cube; the
training batches are its DRRs (the projector + the radiograph post-processing) and random slices of its 128^3
target, built once on the CPU. ``--small``: ``small`` preset, batch 2, 32^3 / 48^3 projector sizes, short runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_diffdrr import diffdrr_version, render  # noqa: E402
from bench_projector import phantom_hu, sync_device  # noqa: E402
from scripts.frame import FRAME  # noqa: E402
from scripts.inference.inferers import ReconstructionInferer, SliceInferer  # noqa: E402
from scripts.networks import PerspectiveSampler, build_perx2ct  # noqa: E402
from scripts.projection.attenuation import hu_to_attenuation  # noqa: E402
from scripts.projection.geometry import ProjectionGeometry  # noqa: E402
from scripts.projection.torch_renderer import project, project_hu  # noqa: E402
from scripts.transforms.radiograph import postprocess_radiograph  # noqa: E402
from scripts.transforms.rigid_views import RandRigidViewsBatch, RandRigidViewsd  # noqa: E402
from timing import best_of  # noqa: E402

RESULTS: list[dict] = []


def report(section: str, text: str, **values) -> None:
    """Print one result line and keep it for ``--json``."""
    print(f"[{section}] {text}", flush=True)
    RESULTS.append({"section": section, "text": text, **values})


def _best(fn, device, repeat: int = 3, warmup: bool = True) -> float:
    return best_of(fn, repeat, sync=lambda: sync_device(device), warmup=warmup)


def cube(n: int, ct: str | None, fine: dict) -> np.ndarray:
    """HU cube n^3 over the 320 mm frame: the phantom, or the CT normalised then area-averaged."""
    if ct is None:
        return phantom_hu(n)
    if "fine" not in fine:
        from scripts.transforms.ct import LoadCT, NormalizeCT

        fine["fine"] = NormalizeCT()(LoadCT()(ct)).numpy()[0]
    if n == fine["fine"].shape[0]:
        return fine["fine"]
    from scripts.transforms.target import area_downsample

    return area_downsample(torch.from_numpy(fine["fine"])[None], (n,) * 3).numpy()[0]


def bench_projector(args, device, sizes, fine) -> None:
    have_diffdrr = diffdrr_version() is not None
    if not have_diffdrr:
        report("diffdrr", "DiffDRR: skipped (not importable; benchmark-only install: see bench_diffdrr.py)")
    for n, batch in sizes:
        hu = cube(n, args.ct, fine)
        spacing = FRAME.size_mm / n
        origin = [-(n - 1) / 2 * spacing] * 3
        g = ProjectionGeometry.from_preset("perx2ct", detector_shape=(n, n))
        mu = torch.from_numpy(hu_to_attenuation(hu)).to(device)
        vol = mu[None, None].expand(batch, 1, n, n, n)
        with torch.no_grad():
            t = _best(lambda: project(vol, [spacing] * 3, origin, g, ("pa", "lateral")), device)
        k = 2 * batch
        report("projector", f"torch projector {n}^2 from {n}^3, {batch} x 2 views: {k / t:.1f} DRRs/s ({t:.4f} s/call)",
               size=n, batch=batch, drrs_per_s=k / t)  # fmt: skip
        if not have_diffdrr:
            continue
        for name in ("diffdrr_siddon", "diffdrr_trilinear"):
            try:
                with torch.no_grad():
                    t = _best(lambda: render(name, mu, g, spacing, origin, ("pa", "lateral"), batch, n), device, 2)
                report("diffdrr", f"{name} {n}^2 from {n}^3, {batch} x 2 views: {k / t:.1f} DRRs/s ({t:.4f} s/call)",
                       renderer=name, size=n, batch=batch, drrs_per_s=k / t)  # fmt: skip
            except torch.OutOfMemoryError as e:
                report("diffdrr", f"{name} {n}^2 from {n}^3, {batch} x 2 views: out of memory ({str(e)[:80]})")
            if device.type == "cuda":
                torch.cuda.empty_cache()


def training_batches(args, hu128: np.ndarray, batch: int, count: int, seed: int = 0) -> list[dict]:
    """``count`` slice batches (CPU) in :class:`~scripts.data.slice_sampling.SliceBatch`'s layout from one cube."""
    g = ProjectionGeometry.from_preset("perx2ct").centred()
    spacing = FRAME.spacing_mm
    origin = [-FRAME.centre_voxel * spacing] * 3
    with torch.no_grad():
        raw = project_hu(torch.from_numpy(hu128)[None, None], [spacing] * 3, origin, g, ("pa", "lateral"))[0]
    image = torch.stack([postprocess_radiograph(raw[v]) for v in range(2)])  # (2, 128, 128)
    target = torch.as_tensor(FRAME.hu_to_target(hu128))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        axis = rng.integers(0, 3, batch)
        index = rng.integers(0, FRAME.shape, batch)
        label = torch.stack([target.select(int(a), int(i)) for a, i in zip(axis, index)])[:, None]
        out.append({"image": image.expand(batch, -1, -1, -1).clone(), "label": label,
                    "slice_axis": torch.as_tensor(axis), "slice_index": torch.as_tensor(index, dtype=torch.float32),
                    "zoom_box": torch.tensor([0.0, 0.0, float(FRAME.shape)]).expand(batch, 3).clone()})  # fmt: skip
    return out


def make_trainer(net, batches, device, amp: bool, iterations: int, on_iteration=None):
    """MONAI ``SupervisedTrainer`` with the bundle's loss, ``SliceBatch`` and ``SliceInferer`` (train.json's)."""
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer
    from scripts.data.slice_sampling import SliceBatch
    from scripts.training.losses import PerX2CTLoss
    from scripts.training.recipe import pretrained_file

    vgg = pretrained_file("vgg16", "paper", str(ROOT / "models" / "pretrained"), download=False)
    lin = pretrained_file("lpips_lin", "paper", str(ROOT / "models" / "pretrained"), download=False)
    loss = PerX2CTLoss(lpips_vgg_weights=vgg, lpips_lin_weights=lin).to(device)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4, betas=(0.5, 0.9))
    data = [batches[i % len(batches)] for i in range(iterations)]
    trainer = SupervisedTrainer(device=device, max_epochs=1, train_data_loader=data, network=net, optimizer=opt,
                                loss_function=loss, prepare_batch=SliceBatch(), inferer=SliceInferer(),
                                decollate=False, amp=amp)  # fmt: skip
    if on_iteration is not None:
        trainer.add_event_handler(Events.ITERATION_COMPLETED, on_iteration)
    return trainer, ("LPIPS-VGG" if loss.lpips is not None else "SSIM fallback (no LPIPS weights in models/pretrained)")


def bench_training(args, device, net, batches, preset: str) -> float:
    """Seconds per iteration in fp32 (returned) and with AMP, after warm-up iterations."""
    s_it = {}
    for amp in (False, True):
        if amp and device.type != "cuda":
            report("train", f"{preset} AMP: skipped on {device.type} (SupervisedTrainer's amp is CUDA autocast)")
            continue
        stamps = []

        def tick(engine):
            sync_device(device)
            stamps.append(time.perf_counter())

        trainer, loss_name = make_trainer(net, batches, device, amp, args.warmup + args.iters, tick)
        trainer.run()
        dt = np.diff(stamps[args.warmup - 1 :]) if args.warmup > 0 else np.diff(stamps)
        s = float(np.median(dt))
        s_it[amp] = s
        label = "AMP (fp16 autocast)" if amp else "fp32"
        report("train", f"{preset} {label}, batch {args.batch}: {1 / s:.2f} it/s ({s:.3f} s/it; loss {loss_name})",
               preset=preset, amp=amp, batch=args.batch, s_per_it=s)  # fmt: skip
    return s_it[False]


def bench_onthefly(args, device, hu128: np.ndarray, s_step: float) -> None:
    """One batch of on-the-fly views rendered by :meth:`RandRigidViewsBatch.render` itself (the ``prepare_batch`` of
    ``configs/onthefly.json``), as a share of a training step. The per-sample draws (motion, gain, gamma, noise
    seed: :meth:`RandRigidViewsd.randomize`) happen in the loader workers in training, so they are not timed; the
    case's attenuation cube is kept on the device after its first use, as in training."""
    render_shape = None if device.type == "cuda" else (FRAME.shape, FRAME.shape)  # rigid_views.json's choice
    views = RandRigidViewsd(
        geometry=ProjectionGeometry.from_preset("perx2ct"), render_shape=render_shape, device=device
    )
    views.set_random_state(seed=0)
    mu = hu_to_attenuation(torch.from_numpy(hu128)[None])  # (1, N, N, N): one case, as the dataset keeps it
    cases = SimpleNamespace(views=views, attenuation=lambda c: (mu, FRAME.spacing_mm))
    renderer = RandRigidViewsBatch(None, cases)
    b = args.batch
    draws = []
    for _ in range(b):
        views.randomize()
        draws.append((views.motion.copy(), views._gain.copy(), views._gamma.copy(), views._noise_seed))
    batch = {
        "image": torch.zeros(b, len(views.views), *views.output_shape),
        "onthefly_apply": torch.ones(b, dtype=torch.bool),
        "onthefly_case": torch.zeros(b, dtype=torch.long),
        "onthefly_motion": torch.as_tensor(np.stack([d[0] for d in draws])),
        "onthefly_gain": torch.as_tensor(np.stack([d[1] for d in draws])),
        "onthefly_gamma": torch.as_tensor(np.stack([d[2] for d in draws])),
        "onthefly_noise_seed": torch.as_tensor([d[3] for d in draws]),
    }
    t = _best(lambda: renderer.render(batch, device), device)
    shape = "x".join(str(s) for s in views.geometry.detector_shape)
    report("onthefly", f"on-the-fly views ({b} samples x 2 views, {shape} from 128^3, RandRigidViewsBatch.render): "
           f"{t:.3f} s per batch = {100 * t / s_step:.1f} % of a {s_step:.3f} s step (target < 10 % on a GPU)",
           seconds=t, share=t / s_step)  # fmt: skip


def bench_inference(args, device, net, preset: str, image: torch.Tensor) -> None:
    net = net.eval()
    outs = {}
    for name in ("fp32", "bf16", "fp16"):
        if name == "fp16" and device.type != "cuda":
            report("inference", f"{preset} fp16: skipped on {device.type} (CUDA only)")
            continue
        inferer = ReconstructionInferer(axes=["axial"], amp_dtype="bf16" if name == "bf16" else None)
        ctx = torch.autocast(device.type, dtype=torch.float16, enabled=name == "fp16")

        def run():
            with torch.no_grad(), ctx:
                outs[name] = inferer(image, net).float()

        t = _best(run, device, repeat=1 if args.small else 2, warmup=not args.small or name == "fp32")
        d = ""
        extra = {}
        if name != "fp32":
            diff = (outs[name] - outs["fp32"]).abs() * FRAME.hu_range
            d = f"; |{name} - fp32| max {diff.max().item():.1f} HU, mean {diff.mean().item():.2f} HU"
            extra = {"max_dhu": diff.max().item(), "mean_dhu": diff.mean().item()}
        report("inference", f"{preset} {name}: {t:.2f} s per 128^3 volume{d}", preset=preset, dtype=name, seconds=t,
               **extra)  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="tiny sizes for a CPU smoke run")
    ap.add_argument("--ct", default=None, help="CT for the projector and the training data (default: phantom)")
    ap.add_argument("--ckpt", default=None, help="trained checkpoint for the inference precision comparison")
    ap.add_argument("--preset", default=None, help="default: paper (small with --small)")
    ap.add_argument("--batch", type=int, default=None, help="training batch (default 20; 2 with --small)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None, help="timed training iterations per precision")
    ap.add_argument("--train_seconds", type=float, default=None, help="quick-checkpoint training budget")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--skip", default="", help="comma list of sections to skip: projector, train, inference")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    small = args.small
    args.preset = args.preset or ("small" if small else "paper")
    args.batch = args.batch or (2 if small else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if small else 5)
    args.iters = args.iters or (2 if small else 30)
    args.train_seconds = args.train_seconds if args.train_seconds is not None else (0.0 if small else 120.0)
    skip = set(filter(None, args.skip.split(",")))
    RESULTS.clear()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t_start = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    load = os.getloadavg()
    report("machine", f"device {device} ({name}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
           f"cpus {os.cpu_count()}, load average {load[0]:.2f}", device=str(device), name=name)  # fmt: skip
    fine: dict = {}
    if "projector" not in skip:
        sizes = [(32, 2), (48, 1)] if small else [(128, 16), (320, 4)]
        bench_projector(args, device, sizes, fine)
    if not skip >= {"train", "inference"}:
        hu128 = cube(FRAME.shape, args.ct, fine)
        torch.manual_seed(0)
        g = ProjectionGeometry.from_preset("perx2ct")
        net = build_perx2ct(args.preset, PerspectiveSampler(g)).to(device).train()
        batches = training_batches(args, hu128, args.batch, 8)
        trained_by = "random weights"
        if "train" not in skip:
            s_step = bench_training(args, device, net, batches, args.preset)
            bench_onthefly(args, device, hu128, s_step)
            trained_by = f"{2 * (args.warmup + args.iters)} iterations here"
        if "inference" not in skip:
            if args.ckpt:
                from scripts.networks.checkpoint import read_info

                preset = (read_info(args.ckpt) or {}).get("model_preset") or args.preset
                net = build_perx2ct(preset, PerspectiveSampler(g))
                state = torch.load(args.ckpt, map_location="cpu", weights_only=True)
                net.load_state_dict(state.get("model", state) if "model" in state else state)
                net, trained_by, args.preset = net.to(device), f"checkpoint {args.ckpt}", preset
            elif args.train_seconds > 0:
                left = args.train_seconds - (time.perf_counter() - t_start)
                n_it = 0
                if left > 0:
                    t0 = time.perf_counter()
                    chunk = 20
                    while time.perf_counter() - t0 < left:
                        make_trainer(net.train(), batches, device, device.type == "cuda", chunk)[0].run()
                        n_it += chunk
                trained_by = f"quick checkpoint: phantom, {n_it} more iterations (AMP on CUDA)"
            report("inference", f"weights: {trained_by}")
            bench_inference(args, device, net, args.preset, batches[0]["image"][:1].to(device))
    report("machine", f"suite wall time {time.perf_counter() - t_start:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(RESULTS, indent=1))
    return RESULTS


if __name__ == "__main__":
    main()
