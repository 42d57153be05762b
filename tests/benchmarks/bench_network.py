"""Benchmark: one full-volume PerX2CT reconstruction per preset.

Run from the repository root::

    python tests/benchmarks/bench_network.py --presets small,paper [--device cpu|cuda] [--dtype fp32,bf16]

Prints, per preset and dtype: seconds for one 128^3 volume (encoder once + 128 axial slices; CUDA: best
of 3 after a full warm-up volume; CPU: one run after a one-slice warm-up), GFLOP
per volume (counted by torch.utils.flop_counter on the same call on the meta device, so attention is
counted whichever kernel the real device picks), achieved GFLOP/s, and peak memory
(CUDA: torch.cuda.max_memory_allocated; CPU: growth of the process's peak resident set).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.networks import PerspectiveSampler, build_perx2ct  # noqa: E402
from scripts.projection.geometry import ProjectionGeometry  # noqa: E402


def volume_flops(preset: str) -> int:
    with torch.device("meta"):
        net = build_perx2ct(preset, PerspectiveSampler(ProjectionGeometry.from_preset("perx2ct"))).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(1, 2, 128, 128))
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="small,paper")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--dtypes",
        "--dtype",
        dest="dtypes",
        default=None,
        help="fp32 and/or bf16 (bf16 = autocast; default: fp32 on CPU, fp32,bf16 on CUDA)",
    )
    ap.add_argument("--slice_batch", type=int, default=16)
    args = ap.parse_args()
    device = torch.device(args.device)
    dtypes = (args.dtypes or ("fp32,bf16" if device.type == "cuda" else "fp32")).split(",")
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    print(f"{'preset':<13}{'dtype':<6}{'seconds':>9}{'GFLOP/vol':>11}{'GFLOP/s':>9}{'peak MiB':>10}")
    for preset in args.presets.split(","):
        flops = volume_flops(preset)
        torch.manual_seed(0)
        net = build_perx2ct(
            preset, PerspectiveSampler(ProjectionGeometry.from_preset("perx2ct")), slice_batch=args.slice_batch
        )
        net = net.to(device).eval()
        image = torch.rand(1, 2, 128, 128, device=device)
        for dtype in dtypes:
            ctx = (
                torch.autocast(device.type, dtype=torch.bfloat16)
                if dtype == "bf16"
                else torch.autocast(device.type, enabled=False)
            )
            with torch.no_grad(), ctx:
                if device.type == "cuda":  # warm-up at the timed shapes (cuDNN picks its algorithms), then best of 3
                    net(image)
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    times = []
                    for _ in range(3):
                        t0 = time.perf_counter()
                        net(image)
                        torch.cuda.synchronize()
                        times.append(time.perf_counter() - t0)
                    seconds = min(times)
                else:  # one volume is minutes for the paper preset on a small CPU: warm up on one slice only
                    net(image, torch.zeros(1, 1, dtype=torch.long, device=device), torch.zeros(1, 1, device=device))
                    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                    t0 = time.perf_counter()
                    net(image)
                    seconds = time.perf_counter() - t0
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated() / 2**20
            else:
                peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
            print(
                f"{preset:<13}{dtype:<6}{seconds:>9.2f}{flops / 1e9:>11.0f}{flops / 1e9 / seconds:>9.1f}{peak:>10.0f}"
            )


if __name__ == "__main__":
    main()
