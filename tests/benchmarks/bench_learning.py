"""Benchmark: does the bundle's training recipe learn? Leave-one-out over the real chest CTs at hand.

Run from the repository root::

    python tests/benchmarks/bench_learning.py [--iterations 200] [--batch_size 20] [--preset small] [--threads 2]

Cases: the two example CTs (``python -m scripts download_example``, fetched into ``data/raw`` when missing) and
the two series of ``../shared/data`` when that folder exists. Each case goes once through the bundle's
preparation chain (``configs/prepare.json``: 1 mm cube, DRRs, 128^3 target) into the slice cache
(``scripts.data.slice_sampling``). Then, for every case in turn, a fresh network (``--preset``, seeded) trains on the
*other* cases for a fixed number of iterations with the training recipe of ``configs/train.json`` (batches of
``--batch_size`` independent slice samples from ``SliceSampler``, ground truth point-sampled from the 1 mm cube,
the bundle's loss, Adam (0.5, 0.9)) and reconstructs the held-out case from its two DRRs.

Prints, per held-out case and on average, honest metrics of the reconstruction and of the *mean-volume baseline*
(the voxel-wise mean of the training cases' 128^3 targets, i.e. what a model that ignores the X-rays could at best
output): PSNR (peak = the 2500 HU range), 3D SSIM (data range 1), mean absolute error in HU (``scripts.evaluation.honest_metrics``);
plus the seconds spent, and the share of each training step spent waiting for data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


from scripts.data.datasets import load_datalist  # noqa: E402
from scripts.data.slice_sampling import SliceBatch, SliceDataset, SliceSampler, cache_cases  # noqa: E402
from scripts.evaluation.honest_metrics import mae_hu, psnr_true, ssim_true  # noqa: E402
from scripts.inference.inferers import SliceInferer  # noqa: E402
from scripts.networks import PerspectiveSampler, build_perx2ct  # noqa: E402
from scripts.projection.geometry import ProjectionGeometry  # noqa: E402


def raw_items(args) -> list[dict]:
    """Datalist items of every available real CT (raw mode)."""
    from scripts.assets.example_data import download_example

    download_example(output_dir=str(REPO / "data" / "raw"))
    folders = [REPO / "data" / "raw"]
    shared = REPO.parent / "shared" / "data"
    if shared.is_dir() and not args.example_only:
        folders.append(shared)
    items = []
    for folder in folders:
        lists = load_datalist(str(folder), split=(1.0, 0.0, 0.0), split_file=None)
        items += lists["training"] + lists["validation"] + lists["test"]
    return items


def prepared_cases(args) -> list[dict]:
    """Every case through train.json's training chain of a raw dataset (``train#preprocessing``)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "train.json"))
    parser["bundle_root"] = str(REPO)
    parser["geometry_preset"] = args.geometry
    parser["datalist"] = {"mode": "raw"}
    transform = parser.get_parsed_content("train#preprocessing")
    return cache_cases(raw_items(args), transform, args.cache_dir, mode="raw")


def build(args) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    return build_perx2ct(args.preset, PerspectiveSampler(ProjectionGeometry.from_preset(args.geometry)))


def make_loss():
    from scripts.training.losses import PerX2CTLoss

    return PerX2CTLoss()


def train(net, cases: list[dict], args) -> dict:
    from monai.data import DataLoader

    ds = SliceDataset(cases)
    sampler = SliceSampler(ds, zoom_prob=0.5 if net.zoom_in else 0.0, query_grid=net.query_grid, seed=args.seed)
    loader = DataLoader(
        ds, sampler=sampler, batch_size=args.batch_size, num_workers=args.workers, persistent_workers=args.workers > 0
    )
    loss_fn = make_loss()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=args.lr, betas=(0.5, 0.9))
    prepare, inferer = SliceBatch(), SliceInferer()
    net.train()
    loss_fn.train()
    it, epoch, wait, t0, losses = 0, 0, 0.0, time.perf_counter(), []
    while it < args.iterations:
        sampler.set_epoch(epoch)
        epoch += 1
        t_data = time.perf_counter()
        for batch in loader:
            wait += time.perf_counter() - t_data
            image, label, _, kw = prepare(batch)
            loss = loss_fn(inferer(image, net, **kw), label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            it += 1
            if it % max(1, args.iterations // 10) == 0 or it == args.iterations:
                print(
                    f"    iteration {it}/{args.iterations}: loss {np.mean(losses[-10:]):.4f} "
                    f"({(time.perf_counter() - t0) / it:.2f} s/iteration)",
                    flush=True,
                )
            if it >= args.iterations:
                break
            t_data = time.perf_counter()
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "data_share": wait / seconds,
        "first_loss": float(np.mean(losses[:10])),
        "last_loss": float(np.mean(losses[-10:])),
        "loss": f"{type(loss_fn).__name__}({loss_fn.extra_repr()})",
    }


def metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    return {"psnr": psnr_true(pred, target), "ssim": ssim_true(pred, target), "mae_hu": mae_hu(pred, target)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=200, help="training iterations per fold (default 200)")
    ap.add_argument("--batch_size", type=int, default=20, help="slice samples per iteration (official 20)")
    ap.add_argument("--preset", default="small", help="model preset (default small: the CPU model)")
    ap.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default 5e-4, the small preset's)")
    ap.add_argument("--geometry", default="perx2ct", help="geometry preset of the DRRs and the sampler")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--workers", type=int, default=0, help="data loader workers (default 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--example_only", action="store_true", help="only the two example CTs, not ../shared/data")
    ap.add_argument("--cache_dir", default=str(REPO / "data" / "cache"), help="slice cache (default data/cache)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    cases = prepared_cases(args)
    print(
        f"{len(cases)} cases ({', '.join(c['case_id'] for c in cases)}), prepared/cached in "
        f"{time.perf_counter() - t0:.0f} s; preset {args.preset}, {args.iterations} iterations x "
        f"{args.batch_size} samples per fold, lr {args.lr:g}, {args.threads} threads",
        flush=True,
    )
    if len(cases) < 2:
        sys.exit("need at least two cases for leave-one-out")
    targets = {c["case_id"]: np.load(Path(c["dir"]) / "target.npy") for c in cases}
    rows = []
    for held in cases:
        train_cases = [c for c in cases if c is not held]
        print(f"  held out {held['case_id']}: training on {', '.join(c['case_id'] for c in train_cases)}", flush=True)
        net = build(args)
        fit = train(net, train_cases, args)
        image = torch.from_numpy(np.load(Path(held["dir"]) / "image.npy"))[None]
        net.eval()
        t = time.perf_counter()
        with torch.no_grad():
            pred = net(image)[0, 0].clamp(0, 1).numpy()
        recon_s = time.perf_counter() - t
        target = targets[held["case_id"]]
        baseline = np.mean([targets[c["case_id"]] for c in train_cases], axis=0)
        rows.append(
            {
                "case": held["case_id"],
                "train_cases": len(train_cases),
                **fit,
                "recon_seconds": recon_s,
                "model": metrics(pred, target),
                "baseline": metrics(baseline, target),
            }
        )
        m, b = rows[-1]["model"], rows[-1]["baseline"]
        print(
            f"    model    PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.3f}  MAE {m['mae_hu']:.0f} HU\n"
            f"    baseline PSNR {b['psnr']:.2f} dB  SSIM {b['ssim']:.3f}  MAE {b['mae_hu']:.0f} HU",
            flush=True,
        )

    print(
        f"\nLeave-one-out, {args.preset} preset, {args.iterations} iterations x {args.batch_size} samples per fold "
        f"({rows[0]['loss']}), held-out case vs the mean volume of the training cases:\n"
    )
    print(
        "| held-out case | trained on | PSNR model / mean (dB) | SSIM model / mean | MAE model / mean (HU) "
        "| train s | data wait |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows + [
        {
            "case": "**mean**",
            "train_cases": "",
            "seconds": np.mean([r["seconds"] for r in rows]),
            "data_share": np.mean([r["data_share"] for r in rows]),
            "model": {k: np.mean([r["model"][k] for r in rows]) for k in rows[0]["model"]},
            "baseline": {k: np.mean([r["baseline"][k] for r in rows]) for k in rows[0]["baseline"]},
        }
    ]:
        m, b = r["model"], r["baseline"]
        print(
            f"| {r['case']} | {r['train_cases']} | {m['psnr']:.2f} / {b['psnr']:.2f} | {m['ssim']:.3f} / "
            f"{b['ssim']:.3f} | {m['mae_hu']:.0f} / {b['mae_hu']:.0f} | {r['seconds']:.0f} | "
            f"{100 * r['data_share']:.0f} % |"
        )
    wins = sum(r["model"]["psnr"] > r["baseline"]["psnr"] for r in rows)
    print(
        f"\nmodel beats the baseline's PSNR on {wins} of {len(rows)} held-out cases; total {time.perf_counter() - t0:.0f} s "
        f"on {os.cpu_count()} CPUs ({args.threads} threads)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
