"""The torch projector beside DiffDRR (Gopalakrishnan & Golland, the PyTorch DRR library on PyPI): same CT, same
geometry, same detector, same attenuation; DRRs/s, agreement with the ITK reference, peak memory, gradient time.

Run from the repository root (not collected by pytest; about 2-4 minutes on 2 CPU cores)::

    # DiffDRR is not a requirement of the bundle: install it for the benchmark only, outside the venv's
    # site-packages (its dependency tree would upgrade jsonschema, which monailabel pins), e.g.
    .venv/bin/pip install --target ~/.cache/perx2ct-bench/diffdrr --no-deps diffdrr==0.6.1 fastcore torchio==1.2.1 \\
        jaxtyping humanize deprecated wrapt
    PYTHONPATH=~/.cache/perx2ct-bench/diffdrr .venv/bin/python tests/benchmarks/bench_diffdrr.py \\
        --ct ../shared/data/LIDC-IDRI-0003 [--device cpu|cuda] [--threads 2] [--sizes 128,320] [--batch 16]

Without DiffDRR the script still runs the bundle's projector and prints one line saying DiffDRR was skipped.

Volumes: the CT (``--ct``; default the synthetic chest phantom of ``bench_projector.py``) normalised to the
bundle's 1 mm, 320 mm cube (``LoadCT`` + ``NormalizeCT``) and area-averaged to 128^3; for size ``n`` the DRR is
``n x n`` pixels over the ``perx2ct`` detector (500 mm, SAD 700, SID 949) from the ``n^3`` cube, isocentre at the
cube centre. Attenuation: the bundle's (plastimatch's) HU conversion for every renderer, so differences are the
renderers' own. Reference: ITK's ``RayCastInterpolateImageFunction`` (:func:`scripts.projection.itk_renderer.ray_cast_drr`).

Geometry, identical by construction: the rays (source and detector-pixel centres) come from the bundle's
``ProjectionGeometry`` and are handed to DiffDRR's renderers in DiffDRR's voxel frame exactly as ``DRR.render``
does it (ray length in mm as the initial image, ``affine_inverse`` = world mm -> voxel index, voxel centres at
integers with ``voxel_shift=0.5``); DiffDRR's ``Detector``/pose conventions (C-arm frame, ``reorient``,
``reverse_x_axis``) are thus bypassed, which only skips its few matrix products per call, not any rendering work.

DiffDRR settings (the fairest we know): its two renderers, ``Siddon`` (exact, the default) and ``Trilinear``
(its fast renderer) with ``n_points`` = the cube's voxels along the beam, i.e. the same number of samples per ray
as the bundle's projector (which samples once per voxel plane of the dominant axis); ``align_corners=False``
(DiffDRR's default); float32; no ``torch.compile`` (not the default; on CPU it did not help in our tries).

Each measurement runs in its own subprocess, so the peak memory is that configuration's alone: peak RSS minus the
RSS after the volume was loaded (CPU), or ``torch.cuda.max_memory_allocated`` (CUDA). Times: best of
``--repeat`` after one warm-up call. Gradient: forward + backward of ``sum(DRR)`` w.r.t. the attenuation volume.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scripts.frame import FRAME  # noqa: E402
from scripts.projection.attenuation import hu_to_attenuation  # noqa: E402
from scripts.projection.geometry import ProjectionGeometry  # noqa: E402
from scripts.projection.torch_renderer import project  # noqa: E402

RENDERERS = ("bundle", "diffdrr_siddon", "diffdrr_trilinear")


def diffdrr_version() -> str | None:
    """DiffDRR's version, or None when it cannot be imported."""
    try:
        import diffdrr
        import diffdrr.renderers  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means: skip
        return None
    return getattr(diffdrr, "__version__", "?")


def cube_geometry(n: int) -> tuple[ProjectionGeometry, float, list[float]]:
    """(geometry with an n x n detector, voxel mm, origin LPS mm) of the n^3 cube centred on the isocentre."""
    spacing = FRAME.size_mm / n
    return ProjectionGeometry.from_preset("perx2ct", detector_shape=(n, n)), spacing, [-(n - 1) / 2 * spacing] * 3


def rays_voxel(g: ProjectionGeometry, view: str, spacing: float, origin, device) -> tuple[torch.Tensor, ...]:
    """DiffDRR's ``render`` inputs for one view: (source (1, 1, 3), target (1, H*W, 3)) in voxel indices and the
    ray lengths in mm (1, 1, H*W); pixels row-major, as the bundle's projector orders them."""
    rows, cols = g.detector_shape
    r, c = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
    pix = g.pixel_to_world(view, np.stack([c.ravel(), r.ravel()], -1))  # (H*W, 3) mm
    src = g.source_mm(view)[None]
    length = np.linalg.norm(pix - src, axis=1)
    to_vox = lambda p: (p - np.asarray(origin)) / spacing  # noqa: E731
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    return as_t(to_vox(src))[None], as_t(to_vox(pix))[None], as_t(length)[None, None]


def render(name: str, mu: torch.Tensor, g, spacing, origin, views, batch: int, n_points: int) -> torch.Tensor:
    """(batch * len(views), H, W) line integrals (per cm x cm) of ``mu`` (X, Y, Z) by one renderer."""
    h, w = g.detector_shape
    if name == "bundle":
        out = project(mu[None, None].expand(batch, 1, *mu.shape), [spacing] * 3, origin, g, views)
        return out.reshape(-1, h, w)
    from diffdrr.renderers import Siddon, Trilinear

    renderer = Siddon(voxel_shift=0.5) if name == "diffdrr_siddon" else Trilinear(voxel_shift=0.5)
    kwargs = {"n_points": n_points} if name == "diffdrr_trilinear" else {}
    out = []
    for v in views:
        src, tgt, length = rays_voxel(g, v, spacing, origin, mu.device)
        img = renderer(
            mu, src.expand(batch, 1, 3), tgt.expand(batch, -1, 3), length.expand(batch, 1, -1).clone(), **kwargs
        )
        out.append(img.reshape(batch, h, w))
    return torch.stack(out, 1).reshape(-1, h, w) / 10.0  # mm -> cm


def _status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB (``ru_maxrss`` would carry the parent's peak
    across ``fork``/``exec``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def one(args) -> None:
    """Child process: one (renderer, size, batch, grad) measurement, printed as one JSON line."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n = args.one_size
    mu_np = np.load(Path(args.one_dir) / f"mu{n}.npy")
    g, spacing, origin = cube_geometry(n)
    mu = torch.from_numpy(mu_np).to(device)
    views = ("pa",) if args.one_batch > 1 or args.one_grad else ("pa", "lateral")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def call():
        if args.one_grad:
            x = mu.clone().requires_grad_(True)
            render(args.one_renderer, x, g, spacing, origin, views, args.one_batch, n).sum().backward()
            return x.grad
        with torch.no_grad():
            return render(args.one_renderer, mu, g, spacing, origin, views, args.one_batch, n)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss0 = _status_mb("VmRSS")
    out = call()  # warm-up, and the output for the agreement
    sync()
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _status_mb("VmHWM") - rss0
    res = {"seconds": min(times), "drrs": args.one_batch * len(views), "peak_mb": peak}
    if not args.one_grad:
        np.save(Path(args.one_dir) / f"out_{args.one_renderer}_{n}_{args.one_batch}.npy", out.float().cpu().numpy())
    print(json.dumps(res))


def agreement(a: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(Pearson r, mean |a - ref| as % of the reference's maximum)."""
    r = float(np.corrcoef(a.ravel(), ref.ravel())[0, 1])
    return r, float(100 * np.abs(a - ref).mean() / ref.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", default=None, help="CT file or DICOM folder (default: a synthetic phantom)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--sizes", default="128,320")
    ap.add_argument("--batch", type=int, default=16, help="views in the batch measurement (at the smallest size)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--renderers", default=",".join(RENDERERS))
    for k, t in (("one_renderer", str), ("one_size", int), ("one_batch", int), ("one_dir", str)):
        ap.add_argument(f"--{k}", type=t, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--one_grad", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_renderer:
        one(args)
        return
    run(args)


def run(args) -> list[dict]:
    """Parent: volumes, reference DRRs, one subprocess per measurement, the table. Returns the rows."""
    from bench_projector import cubes

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in str(args.sizes).split(",")]
    version = diffdrr_version()
    renderers = [r for r in args.renderers.split(",") if r == "bundle" or version]
    load = os.getloadavg()
    dev = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"{args.threads} CPU threads"
    print(
        f"device {args.device} ({dev}), torch {torch.__version__}, load average {load[0]:.2f}; CT {args.ct or 'phantom'}"
    )
    if version is None:
        print("DiffDRR: skipped (not importable; see this script's docstring for the benchmark-only install)")
    else:
        print(
            f"DiffDRR {version}: Siddon (exact) and Trilinear (n_points = voxels along the beam), align_corners=False"
        )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        vols = cubes(args.ct)
        refs = {}
        import itk
        from scripts.projection.itk_renderer import ray_cast_drr

        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(args.threads)
        for n in sizes:
            mu = hu_to_attenuation(vols[n] if n in vols else _resize(vols[320], n))
            np.save(Path(tmp) / f"mu{n}.npy", mu)
            g, spacing, origin = cube_geometry(n)
            refs[n] = np.stack(
                [ray_cast_drr(None, [spacing] * 3, origin, g, v, attenuation=mu) for v in ("pa", "lateral")]
            )
        configs = [(n, 1, False) for n in sizes] + [(min(sizes), args.batch, False), (min(sizes), 1, True)]
        print(
            f"{'renderer':<20}{'DRR':<18}{'views':>6}{'DRRs/s':>9}{'s/call':>9}{'peak MB':>9}{'r vs ITK':>10}{'mean|d| %':>10}"
        )
        for n, batch, grad in configs:
            for name in renderers:
                cmd = [sys.executable, __file__, "--device", args.device, "--threads", str(args.threads),
                       "--repeat", str(args.repeat), "--one_renderer", name, "--one_size", str(n),
                       "--one_batch", str(batch), "--one_dir", tmp] + (["--one_grad"] if grad else [])  # fmt: skip
                p = subprocess.run(cmd, capture_output=True, text=True)
                label = f"{n}^2 from {n}^3" + (" grad" if grad else "")
                if p.returncode != 0:
                    print(
                        f"{name:<20}{label:<18} failed: {p.stderr.strip().splitlines()[-1] if p.stderr else p.returncode}"
                    )
                    continue
                res = json.loads(p.stdout.strip().splitlines()[-1])
                r = d = float("nan")
                if not grad:
                    out = np.load(Path(tmp) / f"out_{name}_{n}_{batch}.npy")
                    ref = refs[n][: out.shape[0]] if batch == 1 else np.repeat(refs[n][:1], batch, 0)
                    r, d = agreement(out, ref)
                rate = res["drrs"] / res["seconds"]
                print(
                    f"{name:<20}{label:<18}{res['drrs']:>6}{rate:>9.2f}{res['seconds']:>9.3f}{res['peak_mb']:>9.0f}"
                    f"{r:>10.5f}{d:>10.3f}"
                )
                rows.append({"renderer": name, "size": n, "batch": batch, "grad": grad, **res, "r": r, "mad_pct": d})
    return rows


def _resize(fine: np.ndarray, n: int) -> np.ndarray:
    """Area-average the 320^3 cube to n^3 (the bundle's ``area_downsample``)."""
    from scripts.transforms.target import area_downsample

    return area_downsample(torch.from_numpy(fine)[None], (n,) * 3).numpy()[0]


if __name__ == "__main__":
    main()
