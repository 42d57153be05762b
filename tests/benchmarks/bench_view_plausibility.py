"""Rates of the input plausibility check (scripts/inference/view_plausibility.py): false alarms on correct PA/lateral
pairs and detections of swapped, PA-mirrored and lateral-mirrored pairs and of non-chest pairs.

Correct pairs: (1) every real CT at hand (the example data and ../shared/data, tests/benchmarks/bench_real_radiographs.py
``ct_folders``) rendered by the bundle's torch projector at each of the benchmark's set-ups (``SETUPS``: training,
clinical PA/lateral 1800/1800 and 1800/1500, off-centre, processed appearance), and (2) the plastimatch renders the
real-radiograph benchmark left in runs/bench_real_radiographs/renders (oriented and loaded as that benchmark does),
each as network inputs with its geometry (whole detector) and without (placed on the training detector by pixel
pitch). Non-chest pairs: ``bench_real_radiographs.non_chest_inputs`` (a limb phantom's DRRs, scikit-image's
Shepp-Logan phantom and its "camera" photograph, each with its transpose as the lateral) at each set-up. Nothing is
trained. Run: ``.venv/bin/python tests/benchmarks/bench_view_plausibility.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))

from bench_real_radiographs import (  # noqa: E402
    SETUPS,
    ct_folders,
    network_inputs,
    non_chest_inputs,
    processed_appearance,
    setup_geometry,
)
from plastimatch_tools import plastimatch_to_display, read_pfm  # noqa: E402
from scripts.ct.loader import load_ct_array  # noqa: E402
from scripts.ct.lps import affine_to_lps_grid  # noqa: E402
from scripts.inference.view_plausibility import PLAUSIBILITY_MARGINS, PLAUSIBILITY_SCORES, views_plausible  # noqa: E402
from scripts.projection.itk_renderer import volume_centre_mm  # noqa: E402
from scripts.projection.torch_renderer import project_hu  # noqa: E402

KINDS = ("correct", "swapped", "PA mirrored", "lateral mirrored")
#: The non-chest pairs are scored as given (not perturbed).
NON_CHEST = "non-chest"


def perturb(images: torch.Tensor) -> dict[str, torch.Tensor]:
    pa, lat = images[0], images[1]
    return {
        "correct": images,
        "swapped": torch.stack([lat, pa]),
        "PA mirrored": torch.stack([pa.flip(-1), lat]),
        "lateral mirrored": torch.stack([pa, lat.flip(-1)]),
    }


def torch_pairs() -> dict[str, torch.Tensor]:
    """``{label: (2, 128, 128)}`` network inputs of every CT at hand at every set-up (torch projector)."""
    out = {}
    for case, folder in ct_folders().items():
        arr, affine, _ = load_ct_array(folder)
        spacing, origin = affine_to_lps_grid(affine)
        arr = torch.from_numpy(np.asarray(arr, dtype=np.float32))[None, None]
        iso = np.asarray(volume_centre_mm(arr.shape[2:], spacing, origin), dtype=np.float64)
        for name, setup in SETUPS.items():
            centre = iso + np.asarray(setup.get("shift", (0.0, 0.0, 0.0)))
            g = setup_geometry(setup)
            raw = project_hu(arr, spacing, origin, g.with_isocentre(centre))[0].numpy()
            raws = {v: raw[i] for i, v in enumerate(("pa", "lateral"))}
            if setup.get("processed"):
                raws = {v: processed_appearance(r, seed=len(v)) for v, r in raws.items()}
            for with_geometry in (True, False):
                out[f"torch {case} | {name} | geometry {with_geometry}"] = network_inputs(raws, setup, with_geometry)
        print(f"rendered {case}", flush=True)
    return out


def plastimatch_pairs(renders: Path) -> dict[str, torch.Tensor]:
    """The same from the real-radiograph benchmark's plastimatch renders (PA mirrored left-right into the bundle's
    display orientation, as ``bench_real_radiographs.plastimatch_view`` does)."""
    out = {}
    files = {p.name: p for p in renders.glob("pm_*_0000.pfm")}
    for name, setup in SETUPS.items():
        pa_key = "pm_pa_{:g}_{:g}_{:g}_".format(*setup["pa"])
        for fname in sorted(f for f in files if f.startswith(pa_key)):
            iso = fname[len(pa_key) : -len("_0000.pfm")]
            lat = "pm_lateral_{:g}_{:g}_{:g}_".format(*setup["lateral"]) + iso + "_0000.pfm"
            if lat not in files or (("shift" in setup) != _is_shifted(iso, files)):
                continue
            raws = {v: plastimatch_to_display(read_pfm(files[f]), v) for v, f in (("pa", fname), ("lateral", lat))}
            if setup.get("processed"):
                raws = {v: processed_appearance(r, seed=len(v)) for v, r in raws.items()}
            for with_geometry in (True, False):
                out[f"plastimatch {iso} | {name} | geometry {with_geometry}"] = network_inputs(
                    raws, setup, with_geometry
                )
    return out


def _is_shifted(iso: str, files) -> bool:
    """An off-centre render: its centre has no training-set-up render (those are made at the CT's centre)."""
    return not any(f.startswith("pm_pa_700_949_500_" + iso) for f in files)


def non_chest_pairs() -> dict[str, torch.Tensor]:
    """``{label: (2, 128, 128)}`` non-chest pairs at every set-up's geometry."""
    return {
        f"{name} | {setup_name}": images
        for setup_name, setup in SETUPS.items()
        for name, images in non_chest_inputs(setup_geometry(setup)).items()
    }


def measure(pairs: dict[str, torch.Tensor], non_chest: dict[str, torch.Tensor]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {k: [] for k in (*KINDS, NON_CHEST)}
    for label, images in pairs.items():
        for kind, imgs in perturb(images).items():
            r = views_plausible(imgs)
            out[kind].append({"label": label, **r["scores"], "plausible": r["plausible"]})
    for label, images in non_chest.items():
        r = views_plausible(images)
        out[NON_CHEST].append({"label": label, **r["scores"], "plausible": r["plausible"]})
    return out


def report(res: dict[str, list[dict]]) -> None:
    n = len(res["correct"])
    print(f"\n{n} correct pairs; margins {PLAUSIBILITY_MARGINS}")
    for key in PLAUSIBILITY_SCORES:
        for kind in (*KINDS, NON_CHEST):
            v = np.array([r[key] for r in res[kind]])
            print(
                f"  {key:20s} {kind:17s} min {np.nanmin(v):+.3f} median {np.nanmedian(v):+.3f} max {np.nanmax(v):+.3f}"
            )
    print("\n| input | n | flagged |\n|---|---|---|")
    for kind in (*KINDS, NON_CHEST):
        flagged = sum(not r["plausible"] for r in res[kind])
        print(f"| {kind} | {len(res[kind])} | {flagged} ({100 * flagged / len(res[kind]):.0f} %) |")
    bad = [r["label"] for r in res["correct"] if not r["plausible"]]
    if bad:
        print("false alarms:", *bad, sep="\n  ")
    missed = [r["label"] for r in res[NON_CHEST] if r["plausible"]]
    if missed:
        print("non-chest pairs not flagged:", *missed, sep="\n  ")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--renders", default=str(REPO / "runs" / "bench_real_radiographs" / "renders"))
    ap.add_argument("--no_torch", action="store_true", help="only the plastimatch renders")
    args = ap.parse_args()
    torch.set_num_threads(2)
    pairs = plastimatch_pairs(Path(args.renders))
    print(f"{len(pairs)} plastimatch pairs")
    if not args.no_torch:
        pairs.update(torch_pairs())
    report(measure(pairs, non_chest_pairs()))


if __name__ == "__main__":
    main()
