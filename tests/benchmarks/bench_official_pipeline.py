"""Effect of each step of the official PerX2CT preprocessing on the network input of LIDC-IDRI-0001.

Run from the repository root (not collected by pytest)::

    python tests/benchmarks/bench_official_pipeline.py [--ct ~/.cache/perx2ct/example/LIDC-IDRI-0001]

Starting from this bundle's pipeline (``configs/prepare.json`` defaults: symmetric crop, trilinear 1 mm resampling,
HU, rounding to 8 bits, antialiased bilinear resize), the official pipeline's steps are switched on one at a time,
cumulatively, in the order of the official scripts: the official crop (``crop_to_standard``), cubic 1 mm resampling
(``1_ctpro_wo_mask.py:29``), HU + 24 (``2_xraypro.py:83``), truncation to 8 bits + matplotlib's grey colormap
(``2_xraypro.py:44-57``), Lanczos resize (``3_make_h5_dataset.py:105-108``); the last row is the whole official
pipeline (``--pipeline official`` of ``configs/prepare.json``). For each row it prints, per view, the mean and max
absolute grey-level difference (0-255) of the 128 x 128 network input

* against the previous row (the effect of that step), and
* against the X-rays the *official* code made for this case (``lidc0001_official_data.npz`` of the oracle in
  ``tests/data/official/``, mapped into this bundle's orientation: ``pa = fliplr``, ``lateral = rot90(., -1)``).

The oracle was made with plastimatch 1.9.4 on Linux and carries quirks not reproduced here (an isocentre string cut
by one character, 0.5 mm along z; the MHA spacing slots swapped), so even the last row does not reach 0 against it.
With ``--network`` it also runs the authors' network in legacy mode (the oracle's deterministic random weights,
converted by ``import_official``) on each row's input and prints the mean / max absolute difference of the
reconstructed axial slices 20, 64 and 100 (target scale) against the first row and against the official
pipeline's row.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

#: Cumulative steps: (label, crop, ct interpolation, radiograph pipeline pieces).
STEPS = (
    ("bundle pipeline (default)", "symmetric", "linear", {}),
    ("+ official crop", "official", "linear", {}),
    ("+ cubic 1 mm resampling", "official", "cubic", {}),
    ("+ HU + 24", "official", "cubic", {"hu_offset": 24.0}),
    (
        "+ truncation, matplotlib grey",
        "official",
        "cubic",
        {"hu_offset": 24.0, "quantize": "truncate", "display_lut": True},
    ),
    (
        "+ Lanczos resize (= official)",
        "official",
        "cubic",
        {"hu_offset": 24.0, "quantize": "truncate", "display_lut": True, "resize": "lanczos"},
    ),
)


def _postprocess(raw: np.ndarray, pieces: dict) -> np.ndarray:
    """One 320 x 320 raw DRR -> 128 x 128 grey levels with the chosen pieces of the official pipeline."""
    import torch
    from PIL import Image
    from scripts.transforms.radiograph import matplotlib_gray_levels, postprocess_radiograph

    x = torch.as_tensor(raw, dtype=torch.float32)
    x = x / float(x.max())
    if pieces.get("quantize") != "truncate":
        return postprocess_radiograph(x, (128, 128), False, 8).numpy() * 255
    levels = matplotlib_gray_levels((x.numpy() * np.float32(255)).astype(np.uint8))
    if pieces.get("resize") == "lanczos":
        return np.asarray(Image.fromarray(levels).resize((128, 128), Image.LANCZOS)).astype(np.float32)
    return postprocess_radiograph(torch.from_numpy(levels / np.float32(255)), (128, 128), False, 8).numpy() * 255


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", default=str(Path.home() / ".cache" / "perx2ct" / "example" / "LIDC-IDRI-0001"))
    ap.add_argument("--oracle", default=str(ROOT / "tests" / "data" / "official" / "lidc0001_official_data.npz"))
    ap.add_argument("--network", action="store_true", help="also compare the legacy network's output (slow on CPU)")
    args = ap.parse_args()

    import torch
    from scripts.projection.drr import render_drr
    from scripts.projection.geometry import ProjectionGeometry
    from scripts.projection.itk_renderer import volume_centre_mm
    from scripts.transforms.ct import LoadCT, NormalizeCT, lps_grid

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    with np.load(args.oracle) as z:
        oracle = {"pa": np.fliplr(z["pa"]) * 255, "lateral": np.rot90(z["lateral"], -1) * 255}
    ct = LoadCT()(args.ct)
    geometry = ProjectionGeometry.from_preset("perx2ct")
    cubes: dict[tuple[str, str], tuple] = {}
    rows, inputs = [], []
    print(f"{'step':34s} {'view':8s} {'vs previous: mean / max':>24s} {'vs official oracle: mean / max':>32s}")
    for label, crop, interpolation, pieces in STEPS:
        if (crop, interpolation) not in cubes:
            cubes[crop, interpolation] = lps_grid(NormalizeCT(crop=crop, interpolation=interpolation)(ct))
        vol, spacing, origin = cubes[crop, interpolation]
        g = geometry.with_isocentre(volume_centre_mm(vol.shape, spacing, origin))
        raw = render_drr(vol + np.float32(pieces.get("hu_offset", 0.0)), spacing, origin, g, ("pa", "lateral"))
        images = {v: _postprocess(r, pieces) for v, r in zip(("pa", "lateral"), raw)}
        for v, img in images.items():
            prev = rows[-1][v] if rows else img
            d_prev, d_or = np.abs(img - prev), np.abs(img - oracle[v])
            print(
                f"{label:34s} {v:8s} {d_prev.mean():11.3f} / {d_prev.max():6.1f}"
                f"   {d_or.mean():18.3f} / {d_or.max():6.1f}"
            )
        rows.append(images)
        inputs.append(np.stack([images["pa"], images["lateral"]]) / 255.0)
    d = {v: np.abs(rows[-1][v] - oracle[v]) for v in ("pa", "lateral")}
    print(
        "official pipeline vs oracle: levels equal on "
        + ", ".join(f"{v} {100 * (x < 0.5).mean():.1f} %" for v, x in d.items())
        + " of pixels, within 1 level on "
        + ", ".join(f"{v} {100 * (x < 1.5).mean():.1f} %" for v, x in d.items())
    )
    if args.network:
        _network_effect(inputs)


def _network_effect(inputs: list[np.ndarray]) -> None:
    """Three axial slices of the legacy network (oracle weights) on each row's input, against the first row."""
    import torch
    from official_weights import official_state_dict
    from scripts.networks import PerspectiveSampler, build_perx2ct
    from scripts.networks.import_official import convert_state_dict
    from scripts.projection.geometry import ProjectionGeometry

    state = convert_state_dict(
        official_state_dict(ROOT / "tests" / "data" / "official" / "official_keys_perx2ct.tsv"), "perx2ct"
    )
    net = build_perx2ct("paper_official", PerspectiveSampler(ProjectionGeometry.from_preset("perx2ct_official")))
    net.load_state_dict(state, strict=True)
    net.eval()
    axis, index = torch.zeros(1, 3, dtype=torch.long), torch.tensor([[20.0, 64.0, 100.0]])
    with torch.no_grad():  # axial slices 20, 64, 100: the network's forward(image, axis, index)
        outs = [
            net(torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)[None], axis, index)[0].numpy()
            for x in inputs
        ]
    for (label, *_), out in zip(STEPS, outs):
        d0, d1 = np.abs(out - outs[0]), np.abs(out - outs[-1])
        print(
            f"network output, {label:34s} vs first row: mean {d0.mean():.4f} / max {d0.max():.4f}; "
            f"vs official row: mean {d1.mean():.4f} / max {d1.max():.4f}"
        )


if __name__ == "__main__":
    main()
