"""Benchmark: reconstructions from radiographs made the way real ones are, and the self-check (issue 19, items 3 and 5).

Run from the repository root (2 CPU cores: about an hour with the defaults; ``--iterations`` sets the training)::

    python tests/benchmarks/bench_real_radiographs.py [--iterations 100] [--clinical_iterations 50] [--batch_size 8]
        [--modes fixed,clinical] [--work runs/bench_real_radiographs] [--threads 2] [--retrain] [--from_results]

What it does:

1. **Data.** The two example CTs (``python -m scripts download_example``, hash-checked, cached) and, when
   ``../shared/data`` exists, its two series. Train and test CTs are disjoint (:data:`TEST_CASES`: with the shared
   series, LungDx-A0001 and LIDC-IDRI-0003 are the test CTs and LIDC-IDRI-0001 and LungDx-A0002-8mm the training
   CTs; with the example data only, one of each). The table says how many.
2. **Training.** One ``small`` model per mode through the bundle's own training command (``python -m monai.bundle run
   training``), the same CPU budget for each (``--iterations`` x ``--batch_size`` slice samples; the clinical
   model's iterations cost more, ``--clinical_iterations`` gives it fewer; ``--threads`` torch threads): ``fixed`` =
   ``configs/train.json`` (today's DRRs at the training set-up), ``clinical`` = ``configs/train.json`` +
   ``configs/clinical.json`` (randomised clinical set-ups and appearance). A mode whose config
   is missing is reported as such. A model already trained in ``--work`` is reused unless ``--retrain``.
3. **Test radiographs.** Each test CT (its original DICOM series, whole field of view, couch included: anatomy beyond
   the network's 320 mm cube shows as on a real radiograph) is rendered by **plastimatch** (``plastimatch drr``, an
   independent ray caster; Debian package ``plastimatch``) at 320 x 320 pixels per view, at the set-ups of
   :data:`SETUPS`: the training one (SAD/SID 700/949 mm, 500 mm detector) and clinical ones (PA SID 1800 mm, lateral
   SID 1800 or 1500 mm, 430 mm detector; the patient 29 mm off the beams' centre; a processed appearance: scatter,
   unsharp masking, gamma, noise, :func:`processed_appearance`).
4. **Inputs, with and without the true geometry.** *With*: each image is its view's whole detector and the network
   gets the view's acquisition (:meth:`~scripts.projection.geometry.ProjectionGeometry.with_view`, as a DICOM with
   the distance tags or ``--pa_geometry`` gives it: :func:`scripts.transforms.radiograph.load_radiograph` with the
   view's acquisition). *Without*: the image is placed on the training detector by its pixel spacing (crop or pad
   to 500 mm, as the bundle places a DICOM with ImagerPixelSpacing and no distances) and the network samples with the
   training geometry. The patient's shift is never given (no DICOM tag records it).
5. **Metrics.** Honest PSNR (peak 2500 HU), 3D SSIM (data range 1) and MAE (HU) of the axial reconstruction
   (``inference.json``'s) against the CT resampled into the output frame around the beams' centre
   (:mod:`scripts.evaluation.honest_metrics`), averaged over the test CTs.
6. **Self-check** (:mod:`scripts.inference.selfcheck`): its scores on every reconstruction, and the same on perturbed
   inputs (at the first ``--perturb_setups`` set-ups): PA and lateral swapped, a view mirrored, the PA rotated 90
   degrees, non-chest
   radiographs made here (a DRR of a limb phantom, scikit-image's Shepp-Logan phantom and its bundled "camera"
   photograph: nothing downloaded), and a wrong geometry (the "without" rows). Prints the detection and false-alarm
   rates of the bundle's rule (:func:`scripts.inference.selfcheck.is_consistent`) and of each single score at the
   threshold that keeps false alarms at or below 5 %, and Spearman's rank correlation of the score with the true 3D
   error (PSNR, MAE).

Prints the tables (Markdown) and writes them, with every per-reconstruction row, to ``--work``/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the plastimatch helpers shared with tests/test_drr.py

from plastimatch_tools import NORMALS, plastimatch_to_display, read_pfm, write_mha  # noqa: E402
from scripts.ct.loader import load_ct_array  # noqa: E402
from scripts.ct.lps import affine_to_lps_grid  # noqa: E402
from scripts.evaluation.honest_metrics import mae_hu, psnr_true, ssim_true  # noqa: E402
from scripts.frame import FRAME  # noqa: E402
from scripts.inference.selfcheck import SCORE_KEYS, THRESHOLDS, is_consistent, self_check  # noqa: E402
from scripts.projection.geometry import ProjectionGeometry  # noqa: E402
from scripts.projection.itk_renderer import volume_centre_mm  # noqa: E402
from scripts.projection.torch_renderer import project_hu  # noqa: E402
from scripts.transforms.radiograph import postprocess_radiograph, process_radiograph  # noqa: E402

TRAINING = ProjectionGeometry.from_preset("perx2ct")
#: The test CTs when ../shared/data is present (else the example data's second case).
TEST_CASES = ("LungDx-A0001", "LIDC-IDRI-0003")
#: Set-ups: per view (SAD, SID, detector side) in mm, the patient's shift from the beams' centre (LPS mm), and
#: whether the processed appearance is applied. Clinical values: SID 1800 mm (72 inches) for PA and lateral, 1500 mm
#: as a short lateral; isocentre 150 mm (PA) / 200 mm (lateral) in front of a 430 mm (17 inch) detector
#: (scripts.projection.acquisition.CLINICAL_DEFAULTS and its sources).
SETUPS: dict[str, dict] = {
    "training (700/949, 500 mm)": {"pa": (700.0, 949.0, 500.0), "lateral": (700.0, 949.0, 500.0)},
    "clinical PA 1800, LAT 1800": {"pa": (1650.0, 1800.0, 430.0), "lateral": (1600.0, 1800.0, 430.0)},
    "clinical PA 1800, LAT 1500": {"pa": (1650.0, 1800.0, 430.0), "lateral": (1300.0, 1500.0, 430.0)},
    "clinical, patient off-centre 29 mm": {
        "pa": (1650.0, 1800.0, 430.0),
        "lateral": (1600.0, 1800.0, 430.0),
        "shift": (25.0, 0.0, -15.0),
    },
    "clinical, processed appearance": {
        "pa": (1650.0, 1800.0, 430.0),
        "lateral": (1600.0, 1800.0, 430.0),
        "processed": True,
    },
}
RENDER_PX = 320
DETECTION_TARGET, FALSE_ALARM_TARGET = 0.95, 0.05


# ------------------------------------------------------------------------------------------------ data
def ct_folders() -> dict[str, Path]:
    """case id -> DICOM folder of every real CT at hand (the example data, then ../shared/data)."""
    from scripts.assets.example_data import EXAMPLE_CASES, default_cache_dir, download_example

    example = default_cache_dir() / "example"
    download_example(output_dir=str(example), cache_dir=str(default_cache_dir() / "wheels"))
    out = {c.name: example / c.name for c in EXAMPLE_CASES}
    shared = REPO.parent / "shared" / "data"
    for name in ("LIDC-IDRI-0003", "LungDx-A0002-8mm"):
        if (shared / name).is_dir():
            out[name] = shared / name
    return out


def split(folders: dict[str, Path]) -> tuple[list[str], list[str]]:
    test = [c for c in TEST_CASES if c in folders]
    if len(test) == len(folders):  # only the example data: one each
        test = test[:1]
    return [c for c in folders if c not in test], test


# ------------------------------------------------------------------------------------------------ training
def train(mode: str, cases: list[str], folders: dict[str, Path], work: Path, args) -> Path | None:
    """Train a ``small`` model in ``mode`` with the bundle's training command; returns its model.pt or None."""
    configs = ["configs/train.json"] + (["configs/clinical.json"] if mode == "clinical" else [])
    iterations = args.clinical_iterations if mode == "clinical" and args.clinical_iterations else args.iterations
    if not all((REPO / c).is_file() for c in configs):
        print(f"[{mode}] {configs[-1]} not found: mode skipped")
        return None
    ckpt_dir = work / "models" / mode
    model = ckpt_dir / "model.pt"
    if model.is_file() and not args.retrain:
        print(f"[{mode}] reusing {model}")
        return model
    raw = work / "raw_train"
    raw.mkdir(parents=True, exist_ok=True)
    for c in cases:
        link = raw / c
        if not link.exists():
            link.symlink_to(folders[c].resolve(), target_is_directory=True)
    split_file = work / "train_split.json"
    split_file.write_text(json.dumps({"training": cases, "validation": [], "test": []}))
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", json.dumps(configs),
        "--dataset_dir", str(raw), "--download_example", "false", "--split_file", str(split_file),
        "--model_preset", "small", "--iterations", str(iterations), "--epoch_length", str(iterations),
        "--batch_size", str(args.batch_size), "--num_workers", "0", "--validate_on_training", "true",
        "--held_out_reconstruction", "false", "--allow_fallback_recipe", "true",
        "--ckpt_dir", str(ckpt_dir), "--output_dir", str(work / "runs" / mode), "--cache_dir", str(work / "cache"),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
    print(f"[{mode}] training: {' '.join(cmd[3:])}", flush=True)
    t0, load = time.time(), os.getloadavg()[0]
    log = work / f"train_{mode}.log"
    with open(log, "w") as f:
        res = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.time() - t0
    if res.returncode != 0 or not model.is_file():
        print(f"[{mode}] training failed (exit {res.returncode}): see {log}")
        return None
    (ckpt_dir / "bench_training.json").write_text(
        json.dumps({"seconds": seconds, "iterations": iterations, "batch_size": args.batch_size, "load": load})
    )
    print(f"[{mode}] trained in {seconds:.0f} s", flush=True)
    return model


def load_network(model: Path) -> torch.nn.Module:
    """The network of ``configs/inference.json`` for ``model`` (its sidecar's preset), weights loaded, eval mode."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "inference.json"))
    parser["bundle_root"] = str(REPO)
    parser["ckpt_path"] = str(model)
    net = parser.get_parsed_content("network_def")
    state = torch.load(str(model), map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("model", state) if "model" in state and len(state) == 1 else state)
    return net.eval()


# ------------------------------------------------------------------------------------------------ rendering
def plastimatch_view(exe: str, mha: Path, view: str, sad: float, sid: float, size: float, iso, out: Path) -> np.ndarray:
    """One plastimatch DRR (raw line integrals, RENDER_PX^2) in the bundle's display orientation (tests/test_drr.py:
    plastimatch's PA is mirrored left-right, its lateral already displayed as ours)."""
    prefix = out / f"pm_{view}_{sad:g}_{sid:g}_{size:g}_{'_'.join(f'{v:.1f}' for v in iso)}_"
    cmd = [
        exe, "drr", "-t", "pfm", "-n", NORMALS[view], "--sad", f"{sad:g}", "--sid", f"{sid:g}",
        "-r", f"{RENDER_PX} {RENDER_PX}", "-z", f"{size:g} {size:g}",
        "-o", " ".join(f"{v:.6f}" for v in iso), "-I", str(mha), "-O", str(prefix),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"plastimatch failed: {res.stderr[-2000:]}")
    return plastimatch_to_display(read_pfm(Path(f"{prefix}0000.pfm")), view)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma, mode="nearest")


def processed_appearance(raw: np.ndarray, seed: int) -> np.ndarray:
    """A processed-radiograph look on a raw DRR (line integrals, ``(H, W)``), at 320 px over 430 mm (1.34 mm/px).

    Transmission ``exp(-4 p)`` of the max-normalised DRR plus scatter (30 % of a 27 mm Gaussian blur of it, a
    scatter-to-primary ratio of the order measured for chest PA without grid), back to the log domain, unsharp
    masking (gain 0.6, 11 mm), gamma 0.8, Gaussian noise (1 % of the range). Independent of the training's own
    appearance model (not the same code or parameters)."""
    p = raw / max(float(raw.max()), 1e-6)
    t = np.exp(-4.0 * p)
    t = t + 0.3 * _blur(t, 20.0)
    q = -np.log(t)
    q = (q - q.min()) / max(float(np.ptp(q)), 1e-6)
    q = q + 0.6 * (q - _blur(q, 8.0))
    q = np.clip(q, 0.0, 1.0) ** 0.8
    q = q + np.random.default_rng(seed).normal(0.0, 0.01, q.shape)
    return np.clip(q, 0.0, None).astype(np.float32)


def setup_geometry(setup: dict) -> ProjectionGeometry:
    """The true geometry of a set-up (each view's own acquisition; the patient's shift is not part of it)."""
    g = TRAINING
    for view in ("pa", "lateral"):
        sad, sid, size = setup[view]
        if (sad, sid, size) != (TRAINING.sad_mm, TRAINING.sid_mm, TRAINING.detector_size_mm[0]):
            g = g.with_view(view, sad_mm=sad, sid_mm=sid, detector_size_mm=(size, size))
    return g


def network_inputs(raws: dict[str, np.ndarray], setup: dict, with_geometry: bool) -> torch.Tensor:
    """``(2, 128, 128)`` network inputs from the raw renders: the whole detector (with geometry) or placed on the
    training detector by pixel spacing (without), through the bundle's loading steps (process_radiograph)."""
    views = []
    for view in ("pa", "lateral"):
        size = setup[view][2]
        spacing = None if with_geometry else (size / RENDER_PX, size / RENDER_PX)
        views.append(process_radiograph(raws[view], spacing, (128, 128), TRAINING, True, True, name=view))
    return torch.from_numpy(np.stack(views))


def target_cube(arr, spacing, origin, centre) -> np.ndarray:
    """The CT resampled (trilinear, -1024 HU outside) into the output frame centred on ``centre``: target scale."""
    from scipy.ndimage import map_coordinates

    mm = FRAME.voxel_to_mm(np.arange(FRAME.shape, dtype=np.float64))
    grid = np.stack(np.meshgrid(mm, mm, mm, indexing="ij")) + np.asarray(centre)[:, None, None, None]
    vox = (grid - np.asarray(origin)[:, None, None, None]) / np.asarray(spacing)[:, None, None, None]
    hu = map_coordinates(arr, vox, order=1, cval=-1024.0).astype(np.float32)
    return FRAME.hu_to_target(torch.from_numpy(hu)).numpy()


# ------------------------------------------------------------------------------------------------ non-chest inputs
def non_chest_inputs(geometry: ProjectionGeometry) -> dict[str, torch.Tensor]:
    """Pairs of non-chest 'radiographs' (``(2, 128, 128)``), all made here: a limb phantom's DRRs through
    ``geometry``, scikit-image's Shepp-Logan phantom (a head slice) and its bundled 'camera' photograph."""
    from skimage import data as skdata
    from skimage.transform import resize

    n = 160
    c = (np.arange(n) - (n - 1) / 2) * 2.0  # 2 mm voxels, 320 mm
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    hu = np.full((n, n, n), -1000.0, dtype=np.float32)
    leg = ((x + 40) ** 2 + y**2 < 55**2) | ((x - 60) ** 2 + y**2 < 50**2)  # two limbs (legs) along z
    hu[leg] = 40.0
    bone = ((x + 40) ** 2 + (y - 5) ** 2 < 14**2) | ((x - 60) ** 2 + (y - 5) ** 2 < 13**2)
    hu[bone] = 1200.0
    hu[((x + 40) ** 2 + (y - 5) ** 2 < 7**2) | ((x - 60) ** 2 + (y - 5) ** 2 < 6**2)] = 100.0  # marrow
    origin = [float(c[0])] * 3
    raw = project_hu(torch.from_numpy(hu)[None, None], [2.0] * 3, origin, geometry.centred())[0]
    out = {"limb phantom DRR": torch.stack([postprocess_radiograph(r) for r in raw])}
    for name, img in (("Shepp-Logan phantom", skdata.shepp_logan_phantom()), ("camera photograph", skdata.camera())):
        img = resize(np.asarray(img, dtype=np.float64), (128, 128), anti_aliasing=True)
        img = torch.from_numpy(img.astype(np.float32))
        out[name] = torch.stack([postprocess_radiograph(img), postprocess_radiograph(img.T.flip(-1))])
    return out


# ------------------------------------------------------------------------------------------------ evaluation
def reconstruct(net, images: torch.Tensor, geometry: ProjectionGeometry | None) -> torch.Tensor:
    """The axial reconstruction ``(X, Y, Z)`` in the target scale."""
    kwargs = {} if geometry is None else {"camera": net.sampler.camera(geometry)}
    with torch.no_grad():
        return net.reconstruct(images[None].float(), axes=[0], **kwargs)[0, 0].clamp(0.0, 1.0)


def check(vol: torch.Tensor, images: torch.Tensor, geometry: ProjectionGeometry) -> dict:
    r = self_check(FRAME.target_to_hu(vol), images, geometry)
    r.pop("images")
    return r


def perturbations(images: torch.Tensor) -> dict[str, torch.Tensor]:
    pa, lat = images[0], images[1]
    return {
        "swapped": torch.stack([lat, pa]),
        "PA mirrored": torch.stack([pa.flip(-1), lat]),
        "lateral mirrored": torch.stack([pa, lat.flip(-1)]),
        "PA rotated 90": torch.stack([torch.rot90(pa, 1, (0, 1)), lat]),
    }


def rates(rows: list[dict]) -> tuple[list[str], dict]:
    """Detection / false-alarm tables of the bundle's rule and of each score's best single threshold."""
    normal = [r for r in rows if r["kind"] == "unperturbed"]
    kinds = sorted({r["kind"] for r in rows if r["kind"] != "unperturbed"})
    lines = ["| rule | false alarms (unperturbed) | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 2) + "|"]
    summary: dict = {}

    def frac(sel, flag):
        return sum(flag(r) for r in sel) / max(len(sel), 1)

    def line(name, flag):
        fa = frac(normal, flag)
        det = {k: frac([r for r in rows if r["kind"] == k], flag) for k in kinds}
        summary[name] = {"false_alarm": fa, "detection": det, "n_unperturbed": len(normal)}
        lines.append(f"| {name} | {fa:.0%} of {len(normal)} | " + " | ".join(f"{det[k]:.0%}" for k in kinds) + " |")

    rule = " and ".join(f"{k} >= {v:g}" for k, v in THRESHOLDS.items()) + " and plausible views"
    line(f"bundle rule: {rule}", lambda r: not r["consistent"])
    for key in SCORE_KEYS:
        vals = sorted(r["score"][key] for r in normal if np.isfinite(r["score"][key]))
        if not vals:
            continue
        k = int(np.floor(FALSE_ALARM_TARGET * len(vals)))  # flag at most 5 % of the unperturbed
        thr = vals[k] if k < len(vals) else vals[-1]
        line(f"{key} < {thr:.3f}", lambda r, key=key, thr=thr: not (r["score"][key] >= thr))
    return lines, summary


def spearman(rows: list[dict]) -> list[str]:
    from scipy.stats import spearmanr

    out = ["| score | over | n | rho with PSNR | rho with MAE |", "|---|---|---|---|---|"]
    groups = {
        "unperturbed inputs (with and without geometry)": [
            r for r in rows if r["kind"] in ("unperturbed", "wrong geometry")
        ],
        "all inputs of test CTs (perturbed too)": [r for r in rows if "psnr" in r],
    }
    for key in SCORE_KEYS:
        for name, sel in groups.items():
            sel = [r for r in sel if np.isfinite(r["score"][key])]
            if len(sel) < 4:
                continue
            s = [r["score"][key] for r in sel]
            rp = spearmanr(s, [r["psnr"] for r in sel]).statistic
            rm = spearmanr(s, [r["mae"] for r in sel]).statistic
            out.append(f"| {key} | {name} | {len(sel)} | {rp:+.2f} | {rm:+.2f} |")
    return out


def render_all(exe: str, folders: dict[str, Path], test_cases: list[str], work: Path):
    """plastimatch renders ``{(case, setup): {view: raw}}`` of every test CT at every set-up, and the targets
    ``{(case, setup): (X, Y, Z)}`` (the CT around the beams' centre, target scale)."""
    renders: dict[tuple[str, str], dict] = {}
    targets: dict[tuple[str, str], np.ndarray] = {}
    for case in test_cases:
        arr, affine, _ = load_ct_array(folders[case])
        spacing, origin = affine_to_lps_grid(affine)
        iso = np.asarray(volume_centre_mm(arr.shape, spacing, origin), dtype=np.float64)
        mha = work / "renders" / f"{case}.mha"
        mha.parent.mkdir(parents=True, exist_ok=True)
        if not mha.is_file():
            write_mha(arr, spacing, origin, mha)
        for name, setup in SETUPS.items():
            centre = iso + np.asarray(setup.get("shift", (0.0, 0.0, 0.0)))
            raws = {}
            for view in ("pa", "lateral"):
                sad, sid, size = setup[view]
                raw = plastimatch_view(exe, mha, view, sad, sid, size, centre, mha.parent)
                raws[view] = processed_appearance(raw, seed=len(view)) if setup.get("processed") else raw
            renders[(case, name)] = raws
            targets[(case, name)] = target_cube(arr, spacing, origin, centre)
        print(f"rendered {case} at {len(SETUPS)} set-ups", flush=True)
    return renders, targets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument(
        "--clinical_iterations",
        type=int,
        default=0,
        help="iterations of the clinical model (0: --iterations); its iterations cost more (views rendered per "
        "sample): fewer of them give it the same CPU time",
    )
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--modes", default="fixed,clinical")
    ap.add_argument("--work", default=str(REPO / "runs" / "bench_real_radiographs"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--max_test_cases", type=int, default=0, help="at most this many test CTs (0: all; a quick look)")
    ap.add_argument("--setups", default="", help="comma-separated indices into SETUPS (default: all)")
    ap.add_argument(
        "--from_results",
        action="store_true",
        help="reprint the tables of WORK/results.json, the current "
        "self-check rule applied to its stored scores (nothing trained or rendered)",
    )
    ap.add_argument(
        "--perturb_setups", type=int, default=2, help="perturbed inputs at the first N set-ups (training, clinical)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    exe = shutil.which("plastimatch")
    if exe is None:
        sys.exit("plastimatch not found: install the Debian package plastimatch (apt-get install plastimatch)")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.from_results:
        saved = json.loads((work / "results.json").read_text())
        for r in saved["rows"]:
            r["consistent"] = is_consistent(r["score"])
        report(saved["rows"], saved["header"], saved["modes"], work)
        return
    if args.setups:
        for i, name in enumerate(list(SETUPS)):
            if str(i) not in args.setups.split(","):
                SETUPS.pop(name)
    folders = ct_folders()
    train_cases, test_cases = split(folders)
    test_cases = test_cases[: args.max_test_cases or None]
    print(
        f"training CTs ({len(train_cases)}): {', '.join(train_cases)}; test CTs ({len(test_cases)}): {', '.join(test_cases)}"
    )
    t_start, load0 = time.time(), os.getloadavg()[0]
    models = {m: train(m, train_cases, folders, work, args) for m in args.modes.split(",") if m}
    nets = {m: load_network(p) for m, p in models.items() if p is not None}
    if not nets:
        sys.exit("no model trained")
    # reconstructions
    rows: list[dict] = []
    perturbed_setups = list(SETUPS)[: args.perturb_setups]
    non_chest = {n: non_chest_inputs(setup_geometry(SETUPS[n])) for n in perturbed_setups}
    renders: dict | None = None
    for mode, net in nets.items():
        saved = work / f"rows_{mode}.json"
        if saved.is_file() and not args.retrain:
            rows += json.loads(saved.read_text())
            print(f"[{mode}] reusing the measurements of {saved}")
            continue
        first = len(rows)
        if renders is None:
            renders, targets = render_all(exe, folders, test_cases, work)
        for (case, name), raws in renders.items():
            setup, target = SETUPS[name], targets[(case, name)]
            true_g = setup_geometry(setup)
            variants = [(True, true_g)] + ([(False, TRAINING)] if true_g.has_view_overrides else [])
            for with_g, g in variants:
                images = network_inputs(raws, setup, with_g)
                vol = reconstruct(net, images, g if with_g else None)
                vol_np = vol.numpy()
                row = {
                    "mode": mode, "case": case, "setup": name, "with_geometry": with_g,
                    "kind": "unperturbed" if with_g else "wrong geometry",
                    "psnr": psnr_true(vol_np, target), "ssim": ssim_true(vol_np, target), "mae": mae_hu(vol_np, target),
                }  # fmt: skip
                r = check(vol, images, g)
                row.update(consistent=r["consistent"], score=r["scores"])
                rows.append(row)
                if not with_g:
                    continue
                # the training set-up's images given with a clinical geometry: a wrong geometry too
                if not true_g.has_view_overrides:
                    wrong = setup_geometry(SETUPS["clinical PA 1800, LAT 1800"])
                    v2 = reconstruct(net, images, wrong)
                    r = check(v2, images, wrong)
                    rows.append(
                        {"mode": mode, "case": case, "setup": name, "with_geometry": False, "kind": "wrong geometry",
                         "psnr": psnr_true(v2.numpy(), target), "ssim": ssim_true(v2.numpy(), target),
                         "mae": mae_hu(v2.numpy(), target), "consistent": r["consistent"], "score": r["scores"]}
                    )  # fmt: skip
                if name not in perturbed_setups:
                    continue
                for kind, bad in perturbations(images).items():
                    v2 = reconstruct(net, bad, g)
                    r = check(v2, bad, g)
                    rows.append(
                        {"mode": mode, "case": case, "setup": name, "with_geometry": True, "kind": kind,
                         "psnr": psnr_true(v2.numpy(), target), "mae": mae_hu(v2.numpy(), target),
                         "consistent": r["consistent"], "score": r["scores"]}
                    )  # fmt: skip
            print(f"[{mode}] {case} / {name} done", flush=True)
        for name, pairs in non_chest.items():
            g = setup_geometry(SETUPS[name])
            for kind, images in pairs.items():
                v2 = reconstruct(net, images, g if g.has_view_overrides else None)
                r = check(v2, images, g)
                rows.append(
                    {"mode": mode, "case": "-", "setup": name, "with_geometry": True, "kind": "non-chest",
                     "what": kind, "consistent": r["consistent"], "score": r["scores"]}
                )  # fmt: skip
        saved.write_text(json.dumps(rows[first:]))
    report(rows, header(models, train_cases, test_cases, args, t_start, load0), list(nets), work)


def header(models, train_cases, test_cases, args, t_start, load0) -> list[str]:
    """The run's conditions: date, machine, load, budget, data, training times."""
    lines = [
        f"Date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine {platform.machine()} "
        f"{os.cpu_count()} cores ({platform.processor() or platform.platform()}); load average at start {load0:.1f}, "
        f"at end {os.getloadavg()[0]:.1f}; torch threads {args.threads}; training CTs {len(train_cases)} "
        f"({', '.join(train_cases)}), test CTs "
        f"{len(test_cases)} ({', '.join(test_cases)}); whole run {time.time() - t_start:.0f} s.",
        "",
    ]
    for mode, p in models.items():
        meta = p and (p.parent / "bench_training.json")
        info = json.loads(meta.read_text()) if meta and meta.is_file() else {}
        lines.append(
            f"- `{mode}`: "
            + (
                f"{info.get('iterations', '?')} iterations x {info.get('batch_size', '?')} slices, trained in "
                f"{info.get('seconds', float('nan')):.0f} s (load average {info.get('load', float('nan')):.1f} at "
                "its start)"
                if p
                else "not available"
            )
        )
    return lines


def report(rows: list[dict], head: list[str], nets: list[str], work: Path) -> None:
    """Print the tables and write them (with every row) to ``work``/results.json and table.md."""
    lines = list(head)
    lines += ["", "Honest metrics (mean over the test CTs; axial reconstruction):", ""]
    lines += [
        "| set-up | model | geometry given | PSNR (dB) | SSIM | MAE (HU) | self-check min NCC | consistent |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = {}
    for name in SETUPS:
        for mode in nets:
            for with_g in (True, False):
                sel = [
                    r
                    for r in rows
                    if r["mode"] == mode
                    and r["setup"] == name
                    and r["with_geometry"] == with_g
                    and "ssim" in r
                    and (r["kind"] == "unperturbed" or (not with_g and r["kind"] == "wrong geometry"))
                ]
                if not with_g and name.startswith("training"):
                    continue
                if not sel:
                    continue
                psnr = float(np.mean([r["psnr"] for r in sel]))
                if name.startswith("training"):
                    base[mode] = psnr
                lines.append(
                    f"| {name} | {mode} | {'yes' if with_g else 'no (training geometry)'} | {psnr:.2f} "
                    f"({psnr - base.get(mode, psnr):+.2f}) | {np.mean([r['ssim'] for r in sel]):.3f} | "
                    f"{np.mean([r['mae'] for r in sel]):.0f} | {np.mean([r['score']['ncc_min'] for r in sel]):.3f} | "
                    f"{sum(r['consistent'] for r in sel)}/{len(sel)} |"
                )
    lines += ["", "(in brackets: the change from the same model at the training set-up)", ""]
    for mode in nets:
        for with_g in (True, False):
            clinical = [
                r["psnr"]
                for r in rows
                if r["mode"] == mode
                and r["with_geometry"] == with_g
                and not r["setup"].startswith("training")
                and r["kind"] in ("unperturbed", "wrong geometry")
                and "ssim" in r
            ]
            if clinical and mode in base:
                lines.append(
                    f"- `{mode}`, geometry {'given' if with_g else 'not given'}: clinical set-ups "
                    f"{np.mean(clinical) - base[mode]:+.2f} dB from the training set-up (target: no worse than -0.5 dB)"
                )
    lines.append("")
    rate_lines, summary = rates(rows)
    lines += ["Self-check: flagged share per kind of input (all models, test CTs and set-ups):", ""] + rate_lines
    lines += ["", "Self-check scores against the true 3D error (Spearman):", ""] + spearman(rows)
    text = "\n".join(lines)
    print("\n" + text)
    saved = {"rows": rows, "rates": summary, "table": text, "header": head, "modes": nets}
    (work / "results.json").write_text(json.dumps(saved, indent=1))
    (work / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
