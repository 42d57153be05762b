"""How the cost of preparation, the slice cache, the training loader and a training step grows with the number of
cases N, and what that means for LIDC-IDRI (1,018 CTs).

Run from the repository root (not collected by pytest; about 4 minutes for ``--n 4,16`` on 2 quiet CPU cores)::

    python tests/benchmarks/bench_scaling.py --ct ../shared/data/LIDC-IDRI-0003 --n 4,16 [--workers 1,2]
        [--torchrun] [--train_iters 6] [--work_dir /tmp/perx2ct-scaling] [--keep]

Cases: N raw NIfTI CTs derived from ``--ct`` (a real chest CT: same size and cost profile as a LIDC-IDRI case) by a
random rigid motion made of whole-voxel shifts in the axial plane (up to 20 voxels, wrapping) and a random crop of
0-10 slices at each end, int16 HU. The N-case dataset is the first N of them (hard links), so a larger N adds cases
without changing the others. For each N:

* prepare (``configs/prepare.json``, a subprocess as a user runs it) with ``--num_workers`` each of ``--workers``,
  and with ``torchrun --standalone --nproc_per_node 2`` (``--torchrun``): seconds per case, whole command included;
* disk per case: raw NIfTI, prepared case folder, slice cache (``data/cache/slices/<case>``);
* slice-cache build (``cache_cases`` with train.json's ``train#preprocessing``): seconds per case;
* training loader (train.json's ``SliceDataset`` + ``SliceSampler`` + ``DataLoader``, 2 workers, batch 20):
  start-up to the first batch, peak RSS of each loader worker (``VmHWM``: includes the pages of the memory-mapped
  cubes it touched, shared page cache) and its own memory (``RssAnon``, which includes what it inherits from this
  process at fork: after a smaller N's training measurement that is more, so for a clean per-worker figure run
  again with ``--skip prepare,onthefly,train`` on the ``--keep``'d folder), samples/s over the next batches;
  ``--loader_n 64,256``: the same loader measurement over that many cases made of hard links to the largest N's
  cached cases (what N costs the loader itself, without preparing N cases; the page cache is warmer than with N
  distinct cubes, so samples/s is an upper bound there);
* on-the-fly views (``RandRigidViewsDataset`` over the same ``SliceDataset``, rendered per sample at 128^2 from
  128^3 on the CPU, as ``configs/onthefly.json`` does without a GPU): samples/s in process;
* training step: seconds per iteration of the ``small`` preset (MONAI ``SupervisedTrainer`` with the loader above,
  ``SliceBatch``, ``SliceInferer``, ``PerX2CTLoss``, Adam), median over ``--train_iters`` after 2 warm-up
  iterations, and the time the trainer waited for data in those iterations.

Prints one table (a row per N) and the extrapolation to 1,018 cases: hours of preparation per core, disk, the RAM
the loader needs (per worker, and the page cache that keeps every case's cube hot). The load average is printed
with it: other processes on the machine inflate every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

LIDC_CASES = 1018


def du_mb(path: Path) -> float:
    """Disk use of a file or folder tree, MiB (apparent sizes)."""
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def make_cases(ct: str, n: int, out: Path, seed: int = 0) -> list[Path]:
    """``n`` NIfTI cases derived from ``ct`` by whole-voxel shifts and slice crops (see the module docstring)."""
    import nibabel as nib
    from scripts.ct.loader import load_ct_array

    out.mkdir(parents=True, exist_ok=True)
    have = sorted(out.glob("case*.nii.gz"))
    if len(have) >= n:
        return have[:n]
    arr, affine, _ = load_ct_array(ct)
    rng = np.random.default_rng(seed)
    paths = list(have)
    for i in range(len(have), n):
        sx, sy = rng.integers(-20, 21, 2)
        lo, hi = rng.integers(0, 11, 2)
        vol = np.roll(arr, (int(sx), int(sy)), axis=(0, 1))[:, :, lo : arr.shape[2] - hi]
        a = affine.copy()
        a[:3, 3] = affine[:3, 3] + affine[:3, 2] * lo  # the crop moves the first slice
        p = out / f"case{i:04d}.nii.gz"
        nib.save(nib.Nifti1Image(np.clip(np.rint(vol), -32768, 32767).astype(np.int16), a), str(p))
        paths.append(p)
    return paths


def link_dataset(cases: list[Path], folder: Path) -> Path:
    """A raw dataset folder holding exactly ``cases`` (hard links; copies where links are not possible)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for c in cases:
        try:
            os.link(c, folder / c.name)
        except OSError:
            shutil.copy2(c, folder / c.name)
    return folder


def linked_cases(cases: list, m: int, folder: Path) -> list[dict]:
    """``m`` slice-cache cases for a loader-only row: case ``i`` is a new folder of hard links to the files of
    ``cases[i % len(cases)]`` (no disk, no decoding; every case its own files to open and memory-map, so the
    loader's per-case costs are those of ``m`` cases, while the page cache holds only ``len(cases)`` cubes)."""
    shutil.rmtree(folder, ignore_errors=True)
    out = []
    for i in range(m):
        src = Path(cases[i % len(cases)]["dir"])
        d = folder / f"{i:05d}"
        d.mkdir(parents=True)
        for f in src.iterdir():
            os.link(f, d / f.name)
        out.append({**cases[i % len(cases)], "dir": str(d), "case_id": f"linked{i:05d}"})
    return out


def timed_run(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def prepare(raw: Path, out: Path, workers: int, torchrun: bool = False) -> float:
    """Seconds of ``configs/prepare.json`` on ``raw`` -> ``out`` as a user runs it."""
    if out.exists():
        shutil.rmtree(out)
    args = ["-m", "monai.bundle", "run", "--config_file", "configs/prepare.json", "--dataset_dir", str(raw),
            "--output_dir", str(out), "--num_workers", str(workers)]  # fmt: skip
    if torchrun:
        exe = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
        return timed_run([exe, "--standalone", "--nproc_per_node", "2", *args])
    return timed_run([sys.executable, *args])


def _status_mb(pid: int, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def train_parts(prepared: Path, cache: Path):
    """(datalist, train#preprocessing) of configs/train.json for the prepared dataset."""
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config(str(ROOT / "configs" / "train.json"))
    p["bundle_root"] = str(ROOT)
    p["dataset_dir"] = str(prepared)
    p["cache_dir"] = str(cache)
    p["download_example"] = False
    datalist = p.get_parsed_content("datalist")
    return datalist, p.get_parsed_content("train#preprocessing")


def measure_loader(cases, batch: int, workers: int, batches: int) -> dict:
    """Start-up, worker peak RSS and samples/s of train.json's slice loader."""
    from monai.data import DataLoader
    from scripts.data.slice_sampling import SliceDataset, SliceSampler

    ds = SliceDataset(cases)
    sampler = SliceSampler(ds, shuffle=True, seed=0)
    loader = DataLoader(ds, sampler=sampler, batch_size=batch, num_workers=workers, persistent_workers=workers > 0)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        b = next(it)
        n += b["image"].shape[0]
    rate = n / (time.perf_counter() - t0)
    pids = [w.pid for w in getattr(it, "_workers", [])]
    rss = [_status_mb(pid, "VmHWM") for pid in pids]
    anon = [_status_mb(pid, "RssAnon") for pid in pids]
    del it, loader
    nan = float("nan")
    # VmHWM counts the memory-mapped cubes' pages a worker touched (page cache, shared, reclaimable); RssAnon is the
    # worker's own memory, the part that must not grow with N
    return {"startup_s": startup, "samples_per_s": rate, "worker_peak_mb": max(rss) if rss else nan,
            "worker_anon_mb": max(anon) if anon else nan}  # fmt: skip


def measure_onthefly(cases, samples: int) -> float:
    """Samples/s of on-the-fly views rendered per sample on the CPU (128^2 from 128^3)."""
    import torch
    from scripts.data.slice_sampling import SliceDataset
    from scripts.frame import FRAME
    from scripts.transforms.rigid_views import RandRigidViewsd, RandRigidViewsDataset

    ds = RandRigidViewsDataset(SliceDataset(cases), RandRigidViewsd(render_shape=(FRAME.shape, FRAME.shape)), seed=0)
    ds[0]  # warm-up: the case's 128^3 cube
    keys = torch.randint(0, len(ds), (samples,), generator=torch.Generator().manual_seed(0)).tolist()
    t0 = time.perf_counter()
    for k in keys:
        ds[int(k) % (3 * FRAME.shape)]  # the first case's slices: the cube is cached once per case
    return samples / (time.perf_counter() - t0)


def measure_training(cases, iters: int, batch: int, workers: int) -> dict:
    """Median seconds per iteration of the small preset with the slice loader, and the data wait per iteration."""
    import torch
    from ignite.engine import Events
    from monai.data import DataLoader
    from monai.engines import SupervisedTrainer
    from scripts.data.slice_sampling import SliceBatch, SliceDataset, SliceSampler
    from scripts.inference.inferers import SliceInferer
    from scripts.networks import PerspectiveSampler, build_perx2ct
    from scripts.projection.geometry import ProjectionGeometry
    from scripts.training.losses import PerX2CTLoss

    torch.manual_seed(0)
    net = build_perx2ct("small", PerspectiveSampler(ProjectionGeometry.from_preset("perx2ct")))
    ds = SliceDataset(cases)
    loader = DataLoader(ds, sampler=SliceSampler(ds, shuffle=True, seed=0), batch_size=batch, num_workers=workers,
                        persistent_workers=workers > 0)  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=5e-4, betas=(0.5, 0.9))
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, epoch_length=iters + 2,
                                train_data_loader=loader, network=net, optimizer=opt, loss_function=PerX2CTLoss(),
                                prepare_batch=SliceBatch(), inferer=SliceInferer(), decollate=False)  # fmt: skip
    stamps, waits = [], []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: stamps.append(time.perf_counter()))
    trainer.add_event_handler(Events.GET_BATCH_STARTED, lambda e: waits.append(-time.perf_counter()))
    trainer.add_event_handler(
        Events.GET_BATCH_COMPLETED, lambda e: waits.__setitem__(-1, waits[-1] + time.perf_counter())
    )
    trainer.run()
    dt = np.diff(stamps[1:])  # after 2 warm-up iterations
    return {"s_per_it": float(np.median(dt)), "data_wait_s": float(np.median(waits[2:]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", required=True, help="a real chest CT (DICOM folder or volume file) to derive cases from")
    ap.add_argument("--n", default="4,16", help="comma list of case counts")
    ap.add_argument("--workers", default="2", help="prepare --num_workers values (comma list)")
    ap.add_argument("--torchrun", action="store_true", help="also prepare with torchrun over 2 processes")
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--loader_workers", type=int, default=2)
    ap.add_argument("--loader_batches", type=int, default=10)
    ap.add_argument("--onthefly_samples", type=int, default=10)
    ap.add_argument("--train_iters", type=int, default=6)
    ap.add_argument(
        "--skip", default="", help="comma list: prepare (reuse a --keep'd work folder), loader, onthefly, train"
    )
    ap.add_argument("--loader_n", default="", help="comma list: loader-only rows over this many linked cache cases")
    ap.add_argument("--work_dir", default="/tmp/perx2ct-scaling")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    skip = set(filter(None, args.skip.split(",")))
    ns = sorted(int(x) for x in args.n.split(","))
    workers = [int(w) for w in args.workers.split(",")]
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"cpus {os.cpu_count()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; CT {args.ct}; N {ns}")
    t = time.perf_counter()
    pool = make_cases(args.ct, max(ns), work / "pool")
    print(f"made {max(ns)} derived cases in {time.perf_counter() - t:.1f} s")
    from scripts.data.slice_sampling import cache_cases

    rows = []
    for n in ns:
        row: dict = {"N": n}
        raw = link_dataset(pool[:n], work / f"raw{n}")
        row["raw_mb"] = np.mean([du_mb(p) for p in pool[:n]])
        prepared = work / f"prepared{n}"
        reuse = "prepare" in skip and (prepared / "datalist.json").is_file()  # --keep'd work folder: no timings
        for w in [] if reuse else workers:
            row[f"prep_s_w{w}"] = prepare(raw, prepared, w) / n
        if args.torchrun and not reuse:
            row["prep_s_torchrun2"] = prepare(raw, prepared, 1, torchrun=True) / n
        cases_dirs = [d for d in prepared.iterdir() if d.is_dir()]
        row["prepared_mb"] = np.mean([du_mb(d) for d in cases_dirs])
        cache = work / f"cache{n}"
        if not reuse:
            shutil.rmtree(cache, ignore_errors=True)
        datalist, chain = train_parts(prepared, cache)
        t = time.perf_counter()
        cases = cache_cases(datalist["training"], chain, cache, datalist["mode"])
        row["cache_s"] = (time.perf_counter() - t) / len(cases)
        row["train_cases"] = len(cases)
        row["kinds"] = ",".join(sorted({c["kind"] for c in cases}))
        row["cache_mb"] = np.mean([du_mb(Path(c["dir"])) for c in cases])
        if "loader" not in skip:
            row.update(measure_loader(cases, args.batch, args.loader_workers, args.loader_batches))
        if "onthefly" not in skip:
            row["onthefly_samples_per_s"] = measure_onthefly(cases, args.onthefly_samples)
        if "train" not in skip:
            row.update(measure_training(cases, args.train_iters, args.batch, args.loader_workers))
        rows.append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    for m in [int(x) for x in args.loader_n.split(",") if x]:
        row = {"N": m, "linked_from": ns[-1]}
        row.update(measure_loader(linked_cases(cases, m, work / f"linked{m}"), args.batch, args.loader_workers,
                                  args.loader_batches))  # fmt: skip
        rows.append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    keys = [k for k in rows[0] if k not in ("N", "kinds")]
    print("\n" + f"{'':<24}" + "".join(f"{'N=' + str(r['N']):>12}" for r in rows))
    for k in keys:
        print(f"{k:<24}" + "".join(f"{r.get(k, float('nan')):>12.3f}" for r in rows))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    rows = [r for r in rows if "linked_from" not in r]  # the extrapolation: measured (prepared) rows only
    last = rows[-1]
    if not any(k.startswith("prep_s_w") for k in last):
        return
    prep = min(v for k, v in last.items() if k.startswith("prep_s_w"))
    w_best = min((k for k in last if k.startswith("prep_s_w")), key=lambda k: last[k])
    cores = int(w_best[len("prep_s_w") :])
    print(f"\nextrapolation to LIDC-IDRI ({LIDC_CASES} cases), from N={last['N']}:")
    print(f"  preparation: {prep * LIDC_CASES / 3600:.1f} h wall with {cores} worker(s), "
          f"{prep * cores * LIDC_CASES / 3600:.1f} core-hours")  # fmt: skip
    disk = {k: last[k] * LIDC_CASES / 1024 for k in ("raw_mb", "prepared_mb", "cache_mb")}
    print(f"  disk: raw NIfTI {disk['raw_mb']:.0f} GB (LIDC DICOM: about 125 GB), prepared {disk['prepared_mb']:.0f} GB, "
          f"slice cache {disk['cache_mb']:.0f} GB (training split only: x {last['train_cases'] / last['N']:.2f})")  # fmt: skip
    if "worker_peak_mb" in last:
        print(f"  RAM: {last['worker_peak_mb']:.0f} MB peak RSS per loader worker at N={last['N']}, "
              f"{last['worker_anon_mb']:.0f} MB of it its own (N={rows[0]['N']}: {rows[0]['worker_peak_mb']:.0f} / "
              f"{rows[0]['worker_anon_mb']:.0f} MB); page cache to keep every training cube hot: "
              f"{disk['cache_mb'] * last['train_cases'] / last['N']:.0f} GB (not required: cubes are memory-mapped)")  # fmt: skip
    if "s_per_it" in last:
        print(f"  training step (small, batch {args.batch}): " + ", ".join(f"N={r['N']}: {r['s_per_it']:.2f} s/it "
              f"(data wait {r['data_wait_s']:.2f} s)" for r in rows) + " - should be flat in N")  # fmt: skip


if __name__ == "__main__":
    main()
