"""Timing of the data preparation of one case and of one DRR, against plastimatch on the same machine.

Run from the repository root (not collected by pytest)::

    python tests/benchmarks/bench_drr.py --ct data/raw/LIDC-IDRI-0001 [--threads 2] [--repeat 3]

Prints wall-clock seconds for: loading the CT (LoadCT, ITK/GDCM, after ITK's module import),
normalising it (NormalizeCT: 1 mm, 320 mm cube), the training target (CTTarget), both DRRs of the
normalised cube through the DRR transform (ray casting + post-processing to 128 x 128), and one raw
320 x 320 DRR per view through the *loaded* (not normalised) volume with ``ray_cast_drr``
(HU -> attenuation conversion included). plastimatch is timed on the same loaded volume, written once
as MHA (writing excluded): one ``plastimatch drr`` subprocess per view, everything that subprocess
does included (process start, reading the MHA, HU conversion, ray tracing, writing the PFM).
The best of ``--repeat`` runs is reported for the per-DRR figures.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", required=True, help="CT file or DICOM folder")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    import itk

    itk.ImageSeriesReader, itk.RayCastInterpolateImageFunction  # noqa: B018 - force ITK's lazy import
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(args.threads)
    t_import = time.perf_counter() - t0

    from scripts.ct.lps import affine_to_lps_grid
    from scripts.projection.attenuation import hu_to_attenuation
    from scripts.projection.geometry import ProjectionGeometry
    from scripts.projection.itk_renderer import ray_cast_drr, volume_centre_mm
    from scripts.transforms.ct import LoadCT, NormalizeCT
    from scripts.transforms.drr import DRR
    from scripts.transforms.target import CTTarget

    g = ProjectionGeometry.from_preset("perx2ct")
    timings: dict[str, float] = {}

    def timed(name, fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        timings[name] = time.perf_counter() - t
        return out

    vol = timed("load", LoadCT(), args.ct)
    norm = timed("normalise (1 mm, 320^3)", NormalizeCT(), vol)
    timed("target (128^3)", CTTarget(), norm)
    timed("DRRs pa+lateral of the 320^3 cube, 128x128 out", DRR(g), norm)
    total = sum(timings.values())

    print(f"case: {args.ct}  shape {tuple(vol.shape[1:])}  spacing {np.round(vol.meta['spacing'], 4).tolist()} mm")
    print(f"threads: {args.threads} (torch and ITK)   ITK import: {t_import:.2f} s (not counted)")
    for k, v in timings.items():
        print(f"  {k:<48s} {v:7.2f} s")
    print(f"  {'total per case':<48s} {total:7.2f} s")

    spacing, origin = affine_to_lps_grid(vol.affine)
    arr = vol.numpy()[0]
    iso = volume_centre_mm(arr.shape, spacing, origin)
    gi = g.with_isocentre(iso)
    print("per DRR at 320x320 through the loaded volume (best of %d):" % args.repeat)
    for view in ("pa", "lateral"):
        best = min(_t(lambda: ray_cast_drr(arr, spacing, origin, gi, view)) for _ in range(args.repeat))
        mu = hu_to_attenuation(arr)
        best_cast = min(
            _t(lambda: ray_cast_drr(arr, spacing, origin, gi, view, attenuation=mu)) for _ in range(args.repeat)
        )
        print(f"  ITK {view:<8s} {best:6.2f} s  (ray cast only, HU conversion precomputed: {best_cast:.2f} s)")

    exe = shutil.which("plastimatch")
    if exe is None:
        print("  plastimatch: not installed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        mha = Path(tmp) / "ct.mha"
        img = itk.image_from_array(np.ascontiguousarray(arr.transpose(2, 1, 0)))
        img.SetSpacing(spacing.tolist())
        img.SetOrigin(origin.tolist())
        itk.imwrite(img, str(mha))
        for view, n in (("pa", "0 1 0"), ("lateral", "1 0 0")):
            cmd = [exe, "drr", "-t", "pfm", "-n", n, "--sad", "700", "--sid", "949", "-r", "320 320", "-z", "500 500",
                   "-o", " ".join(f"{v:.4f}" for v in iso), "-I", str(mha), "-O", str(Path(tmp) / view)]  # fmt: skip
            best = min(_t(lambda: subprocess.run(cmd, check=True, capture_output=True)) for _ in range(args.repeat))
            print(
                f"  plastimatch {view:<8s} {best:6.2f} s  (whole subprocess: start, read MHA, convert, trace, write PFM)"
            )


def _t(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
