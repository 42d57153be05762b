"""Cost per training iteration on the CPU of the view settings and the re-projection consistency term (issue 19).

Run from the repository root (not collected by pytest; a few minutes on 2 CPU cores)::

    python tests/benchmarks/bench_clinical.py [--iters 6] [--batch_size 8] [--threads 1]
        [--variants slices,fixed,clinical,clinical+consistency]

Each variant is the training components the bundle builds (``monai.bundle.ConfigParser`` over ``configs/train.json``
and the variant's override file, ``small`` preset, ``num_workers`` 0 so the loader's work is timed in the step):

* ``slices``: the slice loader as in ``train.json`` (prepared DRRs);
* ``fixed``: ``configs/onthefly.json`` (views re-rendered per sample at 128^2 from the 128^3 cube on the CPU);
* ``clinical``: ``configs/clinical.json`` (per-view clinical geometry and appearance, geometry handed to the sampler);
* ``clinical+consistency``: the same with ``--consistency_weight 0.1`` (the re-projection term for one case).

Per iteration (median after one warm-up): seconds to get the batch (loader + ``prepare_batch``: rendering), and
seconds of the step (forward, loss, backward, Adam). The load average is printed: other processes inflate the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from monai.bundle import ConfigParser  # noqa: E402

VARIANTS = {
    "slices": ([], {}),
    "fixed": (["configs/onthefly.json"], {}),
    "clinical": (["configs/clinical.json"], {}),
    "clinical+consistency": (["configs/clinical.json"], {"consistency_weight": 0.1}),
}


def measure(name: str, iters: int, batch_size: int) -> dict[str, float]:
    files, extra = VARIANTS[name]
    parser = ConfigParser()
    parser.read_config([str(REPO / "configs" / "train.json"), *[str(REPO / f) for f in files]])
    for key, value in {
        "bundle_root": str(REPO),
        "model_preset": "small",
        "num_workers": 0,
        "batch_size": batch_size,
        "device": "cpu",
        **extra,
    }.items():
        parser[key] = value
    loader = parser.get_parsed_content("train#dataloader")
    prepare = parser.get_parsed_content("train#prepare_batch")
    inferer = parser.get_parsed_content("train#inferer")
    network = parser.get_parsed_content("network")
    loss = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")
    batches, steps = [], []
    it = iter(loader)
    for i in range(iters + 1):
        t0 = time.perf_counter()
        batch = next(it)
        image, label, args, kwargs = prepare(batch, "cpu", False)
        t1 = time.perf_counter()
        optimizer.zero_grad()
        pred = inferer(image, network, *args, **kwargs)
        value = loss(pred, label)
        value.backward()
        optimizer.step()
        t2 = time.perf_counter()
        if i:  # the first is a warm-up (caches, allocations)
            batches.append(t1 - t0)
            steps.append(t2 - t1)
    return {"batch_s": statistics.median(batches), "step_s": statistics.median(steps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's default); 1 is steadier on a busy machine"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"load average before: {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    print(f"{'variant':<24}{'batch s/it':>12}{'step s/it':>12}{'total s/it':>12}")
    for name in args.variants.split(","):
        r = measure(name, args.iters, args.batch_size)
        print(f"{name:<24}{r['batch_s']:>12.2f}{r['step_s']:>12.2f}{r['batch_s'] + r['step_s']:>12.2f}", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
