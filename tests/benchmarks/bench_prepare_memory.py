"""Peak resident memory of preparing one case (configs/prepare.json's chain + writing the case), per case.

Run from the repository root (not collected by pytest)::

    python tests/benchmarks/bench_prepare_memory.py [--example_dir DIR] [--threads 2]

Cases: the two example series (LIDC-IDRI-0001: 133 x 512 x 512, 0.70 mm pixels; LungDx-A0001: 64 x 512 x 512,
0.84 mm pixels; downloaded with ``python -m scripts download_example`` if missing) and a synthetic 2 mm-pixel
series (LungDx-A0001 with ``PixelSpacing`` rewritten to 2 mm: a 1024 mm field of view, the case that peaked
at 10.9 GB when the whole field of view was resampled to 1 mm before the 320 mm crop).

Each case runs in a fresh Python process (``python -c``: the chain of ``configs/prepare.json`` on
``{"ct": path}``, then ``scripts.prepare.case_writer.save_case`` into a temporary folder); its peak resident set size
is the process's ``ru_maxrss`` from ``os.wait4`` (imports of torch/MONAI/ITK included). Prints one line per
case: slices, pixel spacing, seconds, peak GB.
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

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

CHILD = """
import sys, tempfile
from monai.bundle import ConfigParser
from scripts.prepare.case_writer import run_chain, save_case
import torch, itk
torch.set_num_threads({threads}); itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads({threads})
p = ConfigParser(); p.read_config("configs/prepare.json")
data, original = run_chain(p.get_parsed_content("preprocessing"), {{"case_id": "bench", "ct": sys.argv[1]}})
save_case(tempfile.mkdtemp(), data, {{"original": original}})
"""


def two_mm_series(src: Path, dst: Path) -> Path:
    import pydicom

    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.PixelSpacing = [2.0, 2.0]
        ds.save_as(dst / f.name)
    return dst


def measure(path: Path, threads: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(threads=threads), str(path)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    if p.returncode:
        raise SystemExit(f"{path}: preparation failed:\n{err[-2000:]}")
    return time.perf_counter() - t0, usage.ru_maxrss / 2**20  # KiB -> GiB


def main() -> None:
    from scripts.assets.example_data import default_cache_dir, download_example

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--example_dir", default=str(default_cache_dir() / "example"), help="example series folder")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    example = Path(args.example_dir)
    download_example(output_dir=str(example))
    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_memory-"))
    try:
        cases = [
            ("LIDC-IDRI-0001 (133 slices, 0.70 mm pixels)", example / "LIDC-IDRI-0001"),
            ("LungDx-A0001 (64 slices, 0.84 mm pixels)", example / "LungDx-A0001"),
            ("synthetic 2 mm pixels (64 slices, 1024 mm FOV)", two_mm_series(example / "LungDx-A0001", tmp / "2mm")),
        ]
        print(f"peak resident memory of preparing one case (fresh process, {args.threads} thread(s))")
        for name, path in cases:
            seconds, peak = measure(path, args.threads)
            print(f"{name:50s} {seconds:7.1f} s   peak {peak:5.2f} GB", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
