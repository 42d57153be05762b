"""Whole-command speed of ``python -m scripts drr`` (ITK and torch backends) beside ``plastimatch drr``, with the
in-process times of each stage, in one run on the same CT.

Run from the repository root (not collected by pytest; a few tens of seconds)::

    python tests/benchmarks/bench_commands.py --ct ../shared/data/LIDC-IDRI-0003 [--repeat 3] [--view pa]

What is timed (best of ``--repeat``, wall clock, ``--threads`` for torch and ITK; the load average is printed,
since other processes on the machine inflate every figure):

* whole processes, each command as a user types it, on two inputs: the DICOM series as given (``--ct``) and the
  same volume written once as MHA (LPS, identity direction; writing not timed):
  ``python -m scripts drr --ct CT --view V --preset perx2ct --output OUT.nii.gz [--backend torch]`` and
  ``plastimatch drr -t pfm -n N --sad 700 --sid 949 -r "320 320" -z "500 500" -o ISO -I CT -O PREFIX``
  (the bundle's ``perx2ct`` preset, isocentre at the volume centre for both); plus a bare ``python -c pass``
  (interpreter start), ``python -c "import scripts.projection.drr"`` (the command's imports), the ITK classes the
  ITK backend loads (ray caster and DICOM series reader, one wrapper module each: :mod:`scripts.ct.itk_modules`)
  and ``import torch`` (what the torch backend pays before any work);
* in process (imports already done): loading the CT (:func:`scripts.ct.loader.load_ct_array` in ITK's memory
  order, as the command does), the HU ->
  attenuation conversion, the DRR by each backend (:func:`scripts.projection.drr.render_drr` with the attenuation
  given), and writing the NIfTI.

The target of issue 23: each ``python -m scripts drr`` within 2x of ``plastimatch drr`` on the same input.
Whole processes are timed in rounds (every row once per round, ``--repeat`` rounds, best kept), so a change of
load on a shared machine hits every row alike; ``--baseline DIR`` adds the same commands run from another
version's ``scripts/`` (before/after in one run).
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the plastimatch helpers shared with tests/test_drr.py

from plastimatch_tools import NORMALS  # noqa: E402
from timing import best_of  # noqa: E402


def _run(cmd: list[str], env: dict, cwd: Path = ROOT) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")


def plastimatch_cmd(exe: str, ct: str, view: str, iso, out_prefix: str) -> list[str]:
    """``plastimatch drr`` with the bundle's ``perx2ct`` geometry (REFERENCE.md section 2)."""
    return [exe, "drr", "-t", "pfm", "-n", NORMALS[view], "--sad", "700", "--sid", "949",
            "-r", "320 320", "-z", "500 500", "-o", " ".join(f"{v:.4f}" for v in iso), "-I", ct, "-O", out_prefix]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", required=True, help="CT: DICOM series or patient folder, or a volume file")
    ap.add_argument("--view", default="pa", choices=sorted(NORMALS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument(
        "--baseline",
        default=None,
        help="a folder holding another version's scripts/ (e.g. git archive HEAD scripts | tar -x -C DIR): its "
        "python -m scripts drr rows are timed in the same rounds",
    )
    args = ap.parse_args()
    args.ct = str(Path(args.ct).resolve())  # the baseline's commands run in another folder

    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(args.threads),
    }
    py = sys.executable
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"cpus {os.cpu_count()}, threads {args.threads}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    t0 = time.perf_counter()
    import itk
    import torch
    from scripts.ct.dicom_series import choose_ct_series
    from scripts.ct.loader import load_ct_array
    from scripts.ct.lps import affine_to_lps_grid
    from scripts.projection.attenuation import hu_to_attenuation
    from scripts.projection.drr import drr_cli, render_drr
    from scripts.projection.geometry import ProjectionGeometry
    from scripts.projection.itk_renderer import volume_centre_mm

    t_import = time.perf_counter() - t0
    torch.set_num_threads(args.threads)
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(args.threads)

    # ---------------------------------------------------------------- in process
    stages: dict[str, float] = {}
    t = time.perf_counter()
    arr, affine, meta = load_ct_array(args.ct, c_order=False)
    stages["load CT (load_ct_array, first call: ITK IO modules load)"] = time.perf_counter() - t
    stages["load CT again"] = best_of(lambda: load_ct_array(args.ct, c_order=False), args.repeat)
    spacing, origin = affine_to_lps_grid(affine)
    iso = volume_centre_mm(arr.shape, spacing, origin)
    g = ProjectionGeometry.from_preset("perx2ct").with_isocentre(iso)
    stages["HU -> attenuation"] = best_of(lambda: hu_to_attenuation(arr), args.repeat)
    mu = hu_to_attenuation(arr)
    for backend in ("itk", "torch"):
        t = time.perf_counter()
        render_drr(arr, spacing, origin, g, args.view, backend=backend, attenuation=mu)
        first = time.perf_counter() - t
        best = best_of(
            lambda: render_drr(arr, spacing, origin, g, args.view, backend=backend, attenuation=mu), args.repeat
        )
        stages[f"DRR {backend} (ray casting; first call {first:.2f} s)"] = best

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stages["whole drr_cli in process (torch; load + render + write)"] = best_of(
            lambda: drr_cli(args.ct, view=args.view, output=str(tmp / "inproc.nii.gz"), backend="torch"), args.repeat
        )
        print(f"CT {args.ct}: shape {arr.shape}, spacing {np.round(spacing, 3).tolist()} mm, view {args.view}")
        print(f"imports of the benchmark (torch, ITK lazy, scripts): {t_import:.2f} s")
        print("in process (seconds, best of %d)" % args.repeat)
        for k, v in stages.items():
            print(f"  {k:<62s} {v:7.3f}")

        # ------------------------------------------------------------ whole processes
        mha = tmp / "ct.mha"
        img = itk.image_from_array(np.ascontiguousarray(arr.transpose(2, 1, 0)))
        img.SetSpacing([float(s) for s in spacing])
        img.SetOrigin([float(o) for o in origin])
        itk.imwrite(img, str(mha))
        inputs = {"as given": args.ct, "MHA": str(mha)}
        if Path(args.ct).is_dir():  # plastimatch reads one series folder
            inputs["as given"] = choose_ct_series(args.ct)[0].folder
        rows = [("python -c pass (interpreter start)", [py, "-c", "pass"], None)]
        rows.append(("python -c 'import scripts.projection.drr'", [py, "-c", "import scripts.projection.drr"], None))
        itk_classes = (
            "from scripts.ct.itk_modules import itk_without_torch; itk_without_torch(); "
            "from scripts.projection.itk_renderer import _ray_caster_types; _ray_caster_types(); "
            "import itk.itkImageSeriesReaderPython, itk.itkGDCMImageIOPython"
        )
        rows.append(("ITK classes of the ITK backend (no torch)", [py, "-c", itk_classes], None))
        rows.append(("python -c 'import torch'", [py, "-c", "import torch"], None))
        exe = shutil.which("plastimatch")
        for label, ct in inputs.items():
            ours_ct = args.ct if label == "as given" else ct
            for backend in ("itk", "torch"):
                cmd = [py, "-m", "scripts", "drr", "--ct", ours_ct, "--view", args.view, "--preset", "perx2ct",
                       "--output", str(tmp / f"{backend}.nii.gz"), "--backend", backend]  # fmt: skip
                rows.append((f"python -m scripts drr --backend {backend} ({label})", cmd, label))
                if args.baseline:
                    rows.append(
                        (
                            f"  same, baseline {Path(args.baseline).name} --backend {backend} ({label})",
                            cmd,
                            label,
                            args.baseline,
                        )
                    )
            if exe:
                rows.append(
                    (f"plastimatch drr ({label})", plastimatch_cmd(exe, ct, args.view, iso, str(tmp / "p")), label)
                )
        results: dict[str, float] = {}
        rows = [(r + (ROOT,))[:4] for r in rows]
        for _name, cmd, _, cwd in rows:
            _run(cmd, env, Path(cwd))  # warm the page cache and the byte-code cache
        for _ in range(args.repeat):  # rounds over all rows: a change of load hits every row alike
            for name, cmd, _, cwd in rows:
                t = time.perf_counter()
                _run(cmd, env, Path(cwd))
                results[name] = min(results.get(name, float("inf")), time.perf_counter() - t)
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        print(f"whole processes (seconds, best of {args.repeat} rounds; load average now {load[0]:.2f})")
        for name, _cmd, label, _ in rows:
            ratio = ""
            ref = results.get(f"plastimatch drr ({label})") if label else None
            if ref and not name.startswith("plastimatch"):
                ratio = f"   {results[name] / ref:5.1f} x plastimatch (target <= 2)"
            print(f"  {name:<62s} {results[name]:7.2f}{ratio}")
        if not exe:
            print("  plastimatch: not installed (apt-get install plastimatch)")


if __name__ == "__main__":
    main()
