"""Tests of the prepare workflow (configs/prepare.json, scripts/prepare/workflow.py) with the real transforms.

Most cases are tiny synthetic NIfTI CTs (64^3 voxels at 5 mm, about 4 s each through the chain);
the bad DICOM inputs are made from the shared LungDx-A0002-8mm series (30 slices), which is also
prepared end to end once. Every workflow run is ``python -m monai.bundle run`` in a subprocess from
the repository root, as a user runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scripts.data.case_discovery import DiscoveryError, discover_cases
from scripts.data.datalist import SplitError, assign_split, read_split_file, split_counts
from scripts.prepare.case_writer import CASE_FILES, complete_cases, is_case_complete

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/prepare.json"
TIMEOUT_S = 300

# a NIfTI affine with a flipped axis and an offset origin (RAS, 5 mm voxels)
AFFINE = np.array([[-5.0, 0, 0, 150.0], [0, 5.0, 0, -140.0], [0, 0, 5.0, -100.0], [0, 0, 0, 1]])
BEAD_VOX = (20, 30, 40)  # voxel index of a small dense bead (the landmark)

GOOD = ("case_a", "case_b")
BAD_REASONS = {
    # case id -> words the failure reason must contain
    "bad_empty": ("no DICOM files found",),
    "bad_single_slice": ("1 slice", "3D CT"),
    "bad_truncated": ("truncated",),
    "bad_mr": ("MR", "need CT"),
    "bad_nan": ("NaN",),
    "bad_missing_slices": ("missing slices",),
}


# ------------------------------------------------------------------------------------ helpers
def write_ct(path: Path, seed: int = 0, nan: bool = False) -> None:
    """A 64^3 5 mm chest-like phantom in HU: air, a water body, a bone block at the head end, a bead."""
    rng = np.random.default_rng(seed)
    a = np.full((64, 64, 64), -1000.0, np.float32)
    a[12:52, 16:48, 6:58] = 20.0 + rng.normal(0, 5, (40, 32, 52))  # body
    a[24:40, 36:44, 42:54] = 700.0  # bone, superior (high k = superior in this RAS affine)
    i, j, k = BEAD_VOX
    a[i - 1 : i + 2, j - 1 : j + 2, k - 1 : k + 2] = 3000.0
    if nan:
        a[30:32, 30:32, 30:32] = np.nan
    img = nib.Nifti1Image(a, AFFINE)
    img.set_qform(AFFINE, code=1)
    img.set_sform(AFFINE, code=1)
    nib.save(img, str(path))


def copy_series(src: Path, dst: Path) -> list[Path]:
    dst.mkdir(parents=True)
    files = sorted(src.glob("*.dcm"))
    for f in files:
        shutil.copyfile(f, dst / f.name)
    return sorted(dst.glob("*.dcm"))


def make_raw(root: Path, series: Path) -> Path:
    """RAW with the two good NIfTI cases and one of each bad input (plus things discovery ignores)."""
    import pydicom

    raw = root / "raw"
    raw.mkdir()
    for n, cid in enumerate(GOOD):
        write_ct(raw / f"{cid}.nii.gz", seed=n)
    (raw / "bad_empty").mkdir()
    one = raw / "bad_single_slice"
    one.mkdir()
    first = sorted(series.glob("*.dcm"))[14]
    shutil.copyfile(first, one / first.name)
    files = copy_series(series, raw / "bad_truncated")
    with open(files[10], "r+b") as f:
        f.truncate(os.path.getsize(files[10]) // 2)
    for f in copy_series(series, raw / "bad_mr"):
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(f)
    files = copy_series(series, raw / "bad_missing_slices")
    files[14].unlink()
    write_ct(raw / "bad_nan.nii", nan=True)
    (raw / "README.md").write_text("not a case")
    (raw / ".hidden").mkdir()
    return raw


def run_prepare(
    raw: Path,
    out: Path,
    *args: str,
    torchrun: int = 0,
    popen: bool = False,
    log: Path | None = None,
    new_session: bool = False,
    wrapper: list[str] | None = None,
):
    """``python -m monai.bundle run`` on ``raw``; with ``popen``, started in the background (output to ``log``,
    in a process group of its own with ``new_session``), otherwise run to its end; ``wrapper``: a command line the
    command is handed to (e.g. :data:`_PEAK_WRAPPER`)."""
    cmd = [*(wrapper or []), sys.executable]
    if torchrun:
        cmd += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(torchrun)]
    cmd += [
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        CONFIG,
        "--dataset_dir",
        str(raw),
        "--output_dir",
        str(out),
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if popen:
        fh = open(log, "w")  # noqa: SIM115 - closed by the caller through the process
        return subprocess.Popen(
            cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=new_session, env=env
        )
    return subprocess.run(
        cmd, cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=TIMEOUT_S, env=env
    )


#: Runs the command in argv[2:] and writes the peak resident memory (KiB) of it and its workers to argv[1]: a small
#: process of its own, because Linux carries a parent's high-water RSS into its child across fork/vfork and exec, so
#: a child started from pytest directly reports pytest's own peak whenever that is larger.
_PEAK_WRAPPER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_prepare_measured(raw: Path, out: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """``run_prepare`` to its end, with the peak resident memory (GiB) of the largest process of that run, measured
    by :data:`_PEAK_WRAPPER` (``getrusage(RUSAGE_CHILDREN)`` or ``os.wait4`` in pytest would report pytest's own
    peak, or an earlier test's server, whenever larger)."""
    log, peak = out.parent / f"{out.name}.log", out.parent / f"{out.name}.peak_kib"
    proc = run_prepare(raw, out, *args, popen=True, log=log, wrapper=[sys.executable, "-c", _PEAK_WRAPPER, str(peak)])
    try:
        proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    text = log.read_text(encoding="utf-8", errors="replace")
    peak_gb = int(peak.read_text()) / 2**20 if peak.is_file() else float("nan")  # KiB -> GiB
    return subprocess.CompletedProcess(proc.args, proc.returncode, text, ""), peak_gb


def output_text(p: subprocess.CompletedProcess) -> str:
    return p.stdout + p.stderr


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def all_ids(datalist: dict) -> list[str]:
    return [e["case_id"] for name in ("training", "validation", "test") for e in datalist[name]]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def lungdx(example_lungdx) -> Path:
    """A small real DICOM series: the example download's LungDx-A0001 (64 slices)."""
    return example_lungdx


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, lungdx):
    """RAW of good and bad cases, prepared once without interruption: (raw, out, process)."""
    root = tmp_path_factory.mktemp("mixed")
    raw = make_raw(root, lungdx)
    out = root / "out_ref"
    proc = run_prepare(raw, out)
    return raw, out, proc


# ------------------------------------------------------------------------------------ pure functions
def test_discover_cases(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_ct(raw / "b case.nii.gz")
    (raw / "a.mha").write_bytes(b"x")
    (raw / "a.raw").write_bytes(b"x")  # companion of an .mhd: not a case
    (raw / "LIDC-IDRI-0001").mkdir()
    (raw / "notes.txt").write_text("x")
    (raw / ".cache").mkdir()
    (raw / ".x.nii").write_bytes(b"x")
    (raw / "prepared").mkdir()
    cases = discover_cases(raw, exclude=[raw / "prepared"])
    assert [c for c, _ in cases] == ["LIDC-IDRI-0001", "a", "b_case"]
    assert cases[2][1] == str(raw / "b case.nii.gz")
    (raw / "a").mkdir()
    with pytest.raises(DiscoveryError, match="unique"):
        discover_cases(raw)
    with pytest.raises(DiscoveryError, match="not a folder"):
        discover_cases(tmp_path / "nope")


def test_discovery_skips_bad_links_with_a_reason(tmp_path):
    from scripts.ct.dicom_series import find_dicom_series
    from scripts.data.case_discovery import scan_dataset

    raw = tmp_path / "raw"
    (raw / "case_a").mkdir(parents=True)
    write_ct(raw / "b.nii.gz")
    os.symlink("loop.nii.gz", raw / "loop.nii.gz")  # loops on itself
    os.symlink("gone.nii.gz", raw / "dangling.nii.gz")
    os.symlink(".", raw / "self", target_is_directory=True)
    os.symlink("..", raw / "up", target_is_directory=True)
    os.symlink("case_a", raw / "again", target_is_directory=True)
    os.symlink(raw / "b.nii.gz", raw / "b_link.nii.gz")  # a file link to a volume is a case like any file
    os.symlink("..", raw / "case_a" / "parent", target_is_directory=True)  # inside a case: never rescanned
    cases, skipped = scan_dataset(raw)
    assert [c for c, _ in cases] == ["b", "b_link", "case_a"]
    got = {s.case_id: (s.error, s.reason) for s in skipped}
    assert {k: v[0] for k, v in got.items()} == {
        "again": "LinkIntoDataset",
        "dangling": "BrokenLink",
        "loop": "LoopingLink",
        "self": "LinkIntoDataset",
        "up": "LinkIntoDataset",
    }
    assert "symbolic link loops" in got["loop"][1] and "points to nothing" in got["dangling"][1]
    assert "another entry of the dataset" in got["again"][1] and "dataset folder or one above it" in got["self"][1]
    assert find_dicom_series(raw / "case_a") == []  # the link to the parent is not followed into visited folders


def test_training_on_an_interrupted_prepare_says_so(tmp_path):
    from scripts.data.datasets import DatasetError, load_datalist

    out = tmp_path / "prepared"
    (out / "case_a").mkdir(parents=True)
    (out / "case_a" / "case.json").write_text("{}")
    (out / ".tmp-case_b-123").mkdir()
    with pytest.raises(DatasetError) as e:
        load_datalist(str(out))
    msg = str(e.value)
    assert "no datalist.json: prepare was interrupted" in msg and "case_a" in msg
    assert f"configs/prepare.json --dataset_dir RAW --output_dir {out}" in msg


def test_split_rules(tmp_path):
    ids = [f"c{i:02d}" for i in range(23)]
    assert split_counts(23, [0.8, 0.1, 0.1]) == (19, 2, 2)  # 18.4, 2.3, 2.3: the leftover goes to training
    assert split_counts(2, [0.8, 0.1, 0.1]) == (2, 0, 0)
    assert split_counts(10, "[1,1,2]") == (3, 2, 5)  # 2.5, 2.5, 5 -> tie broken toward training
    assert split_counts(7, [0, 0, 1]) == (0, 0, 7)
    with pytest.raises(SplitError):
        split_counts(3, [0.5, -0.1, 0.6])
    s = assign_split(ids, [0.8, 0.1, 0.1], seed=3)
    assert sorted(all_ids({k: [{"case_id": c} for c in v] for k, v in s.items()})) == ids  # exactly one list each
    assert assign_split(list(reversed(ids)), [0.8, 0.1, 0.1], seed=3) == s  # input order does not matter
    assert assign_split(ids, [0.8, 0.1, 0.1], seed=4) != s
    assert assign_split(ids, [0, 0, 1]) == {"training": [], "validation": [], "test": ids}
    f = tmp_path / "split.json"
    f.write_text(
        json.dumps({"_comment": "x", "training": ["c01", "c02", "gone"], "validation": ["c03"], "test": ["c03"]})
    )
    assert assign_split(ids, split_file=str(f)) == {"training": ["c01", "c02"], "validation": ["c03"], "test": ["c03"]}
    f.write_text(json.dumps({"train": ["c01"]}))
    with pytest.raises(SplitError, match="unknown keys"):
        read_split_file(f)
    f.write_text(json.dumps({"training": ["x"]}))
    with pytest.raises(SplitError, match="names none"):
        assign_split(ids, split_file=str(f))


# ------------------------------------------------------------------------------------ workflow
@pytest.mark.slow
def test_bad_cases_are_recorded_and_the_batch_carries_on(mixed):
    raw, out, proc = mixed
    text = output_text(proc)
    assert proc.returncode == 0, text
    assert re.search(r"prepared 2, skipped 0 \(already done\), failed 6 \(see .*failures\.json\)", proc.stdout), text
    assert complete_cases(out) == list(GOOD)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]

    failures = read_json(out / "failures.json")
    by_id = {f["case_id"]: f for f in failures}
    assert set(by_id) == set(BAD_REASONS)
    for cid, words in BAD_REASONS.items():
        assert by_id[cid]["error"] == "CTLoadError", by_id[cid]
        assert Path(by_id[cid]["source"]).name.startswith(cid)
        for w in words:
            assert w in by_id[cid]["reason"], (cid, by_id[cid]["reason"])

    datalist = read_json(out / "datalist.json")
    assert sorted(all_ids(datalist)) == list(GOOD)
    for entry in datalist["training"] + datalist["validation"] + datalist["test"]:
        assert set(entry) == {"case_id", "pa", "lateral", "ct", "ct_1mm"}
        for key in ("pa", "lateral", "ct", "ct_1mm"):
            assert not Path(entry[key]).is_absolute() and (out / entry[key]).is_file()

    for cid in GOOD:
        case = out / cid
        assert sorted(p.name for p in case.iterdir()) == sorted(CASE_FILES)
        img = nib.load(str(case / "ct.nii.gz"))
        ct = np.asarray(img.dataobj)
        assert ct.shape == (128, 128, 128) and ct.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(img.affine[:3, :3], axis=0), 2.5, atol=1e-6)
        # intensity: the phantom's HU levels on the target scale (HU + 1024) / 2500, read at the world position of
        # a raw voxel deep inside each region; the 3000 HU bead is the top of the scale
        for raw_vox, hu in (((32, 40, 48), 700.0), ((4, 4, 4), -1000.0)):  # bone block centre, air in the scan
            out_vox = np.linalg.solve(img.affine, AFFINE @ np.array([*raw_vox, 1.0]))[:3]
            got = float(ct[tuple(np.round(out_vox).astype(int))])
            assert abs(got - (hu + 1024.0) / 2500.0) < 1e-3, (cid, raw_vox, got)
        assert ct.max() == 1.0, (cid, ct.max())
        assert img.header.get_sform(coded=True)[1] == 1 and img.header.get_qform(coded=True)[1] == 1
        # landmark: the bead is where the raw NIfTI put it, in RAS world mm
        bead_ras = (AFFINE @ np.array([*BEAD_VOX, 1.0]))[:3]
        peak = np.argwhere(ct >= 0.99).mean(axis=0)  # centre of the clipped (1.0) bead, output voxels
        found = (img.affine @ np.array([*peak, 1.0]))[:3]
        assert np.linalg.norm(found - bead_ras) < 2.5, (found, bead_ras)
        for view in ("pa", "lateral"):
            png = Image.open(case / f"{view}.png")
            assert png.mode == "L" and png.size == (128, 128)
            a = np.asarray(png, dtype=np.float32)
            assert a.max() > 200
            # rows run head to feet: the bone block sits at the head end of the body
            body_rows = np.nonzero(a.mean(axis=1) > 10)[0]
            mid = (body_rows[0] + body_rows[-1]) // 2
            assert a[body_rows[0] : mid].mean() > a[mid : body_rows[-1] + 1].mean(), view
        info = read_json(case / "case.json")
        assert info["case_id"] == cid and Path(info["source"]).name == f"{cid}.nii.gz"
        assert info["original"]["shape"] == [64, 64, 64]
        np.testing.assert_allclose(info["original"]["spacing_mm"], 5.0)
        assert info["geometry"]["sad_mm"] == 700.0 and info["geometry"]["detector_shape"] == [128, 128]
        # the isocentre is the centre of the normalised cube, in LPS mm: the raw volume's centre
        centre_ras = (AFFINE @ np.array([31.5, 31.5, 31.5, 1.0]))[:3]
        np.testing.assert_allclose(info["isocentre_mm"], centre_ras * [-1, -1, 1], atol=1.0)
        assert info["isocentre_mm"] == info["geometry"]["isocentre_mm"]
        assert {"monai", "torch", "itk"} <= set(info["versions"])


@pytest.mark.slow
def test_only_bad_cases_exit_non_zero(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "empty").mkdir()
    write_ct(raw / "nan.nii.gz", nan=True)
    out = tmp_path / "out"
    proc = run_prepare(raw, out, "--num_workers", "2")  # also the worker-process path
    assert proc.returncode != 0
    assert "no case succeeded out of 2" in proc.stderr and "failures.json" in proc.stderr, output_text(proc)
    assert [f["case_id"] for f in read_json(out / "failures.json")] == ["empty", "nan"]
    # the user fixes one case: the rerun prepares it and it leaves failures.json
    write_ct(raw / "nan.nii.gz")
    proc = run_prepare(raw, out)
    assert proc.returncode == 0, output_text(proc)
    assert "prepared 1, skipped 0 (already done), failed 1" in proc.stdout
    assert [f["case_id"] for f in read_json(out / "failures.json")] == ["empty"]
    assert all_ids(read_json(out / "datalist.json")) == ["nan"]


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_datalist(mixed, tmp_path):
    raw, ref, _ = mixed
    out = tmp_path / "out"
    log = tmp_path / "killed.log"
    p = run_prepare(raw, out, popen=True, log=log)
    try:
        t0 = time.time()
        while not complete_cases(out):
            assert p.poll() is None, log.read_text()
            assert time.time() - t0 < TIMEOUT_S, "no case finished in time"
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the next case (several seconds)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL
    assert complete_cases(out) == ["case_a"]
    left = [e.name for e in out.iterdir()]
    assert any(n.startswith(".tmp-case_b-") for n in left), left  # killed mid-case
    assert not (out / "datalist.json").exists()
    # outputs appear only complete: no visible folder without all files
    assert all(is_case_complete(out / n) for n in left if not n.startswith(".") and (out / n).is_dir())

    proc = run_prepare(raw, out)
    assert proc.returncode == 0, output_text(proc)
    assert "prepared 1, skipped 1 (already done), failed 6" in proc.stdout
    assert not [e.name for e in out.iterdir() if e.name.startswith(".")]
    assert read_json(out / "datalist.json") == read_json(ref / "datalist.json")
    assert read_json(out / "failures.json") == read_json(ref / "failures.json")


@pytest.mark.slow
def test_split_options(mixed, tmp_path):
    _, ref, _ = mixed
    raw = ref.parent / "raw"
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    proc = run_prepare(raw, out, "--split", "[0,0,1]")
    assert proc.returncode == 0, output_text(proc)
    assert "prepared 0, skipped 2 (already done), failed 6" in proc.stdout
    datalist = read_json(out / "datalist.json")
    assert datalist["training"] == [] and datalist["validation"] == [] and all_ids(datalist) == list(GOOD)

    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"training": ["case_b"], "validation": [], "test": ["case_a", "not_prepared"]}))
    proc = run_prepare(raw, out, "--split_file", str(split_file))
    assert proc.returncode == 0, output_text(proc)
    assert "not_prepared" in proc.stdout + proc.stderr  # reported (logging.conf sends logs to stdout)
    datalist = read_json(out / "datalist.json")
    assert [e["case_id"] for e in datalist["training"]] == ["case_b"]
    assert [e["case_id"] for e in datalist["test"]] == ["case_a"]
    assert datalist["validation"] == []


@pytest.mark.slow
def test_torchrun_shards_the_cases(mixed, tmp_path):
    raw, ref, _ = mixed
    out = tmp_path / "out"
    proc = run_prepare(raw, out, torchrun=2)
    text = output_text(proc)
    assert proc.returncode == 0, text
    done: dict[str, list[int]] = {}
    for rank, cid in re.findall(r"\[rank (\d)\] (\S+): (?:prepared in|FAILED)", text):
        done.setdefault(cid, []).append(int(rank))
    cases = [c for c, _ in discover_cases(raw)]
    assert sorted(done) == cases and all(len(r) == 1 for r in done.values()), done  # each case once
    for i, cid in enumerate(cases):
        assert done[cid] == [i % 2], (cid, done[cid])  # rank r takes every 2nd case from r
    assert len(re.findall(r"^prepared 2, skipped 0 \(already done\), failed 6", proc.stdout, re.M)) == 1  # rank 0 only
    assert read_json(out / "datalist.json") == read_json(ref / "datalist.json")
    assert read_json(out / "failures.json") == read_json(ref / "failures.json")
    assert sorted(e.name for e in out.iterdir()) == sorted([*GOOD, "datalist.json", "failures.json"])


@pytest.mark.slow
def test_real_dicom_case(real_series, tmp_path):
    """Every real series at hand (the example download's, plus ../shared/data's where present) prepares,
    with the slice count and spacing its DICOM headers state (read with pydicom)."""
    import pydicom

    series, folder = real_series
    files = sorted(folder.rglob("*.dcm"))
    headers = sorted(
        (pydicom.dcmread(f, stop_before_pixels=True) for f in files), key=lambda d: float(d.ImagePositionPatient[2])
    )
    dz = float(headers[1].ImagePositionPatient[2]) - float(headers[0].ImagePositionPatient[2])
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / series.name).symlink_to(folder, target_is_directory=True)
    out = tmp_path / "out"
    t0 = time.time()
    proc = run_prepare(raw, out, "--split", "[0,1,0]")
    assert proc.returncode == 0, output_text(proc)
    print(
        f"real DICOM case {series.name} ({series.slices} slices) prepared in {time.time() - t0:.1f} s including start-up"
    )
    assert read_json(out / "failures.json") == []
    assert [e["case_id"] for e in read_json(out / "datalist.json")["validation"]] == [series.name]
    img = nib.load(str(out / series.name / "ct.nii.gz"))
    assert img.shape == (128, 128, 128)
    np.testing.assert_allclose(np.linalg.norm(img.affine[:3, :3], axis=0), 2.5, atol=1e-6)
    info = read_json(out / series.name / "case.json")
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    assert info["original"]["num_slices"] == series.slices == len(files)
    assert info["original"]["shape"] == [cols, rows, series.slices]
    np.testing.assert_allclose(info["original"]["spacing_mm"][2], abs(dz), atol=1e-3)
    for view in ("pa", "lateral"):
        assert Image.open(out / series.name / f"{view}.png").size == (128, 128)


# ------------------------------------------------------------------------------------ a messy real-world folder
def _dicom_copy(files: list[Path], dst: Path, **tags) -> Path:
    import pydicom

    dst.mkdir(parents=True)
    for f in files:
        ds = pydicom.dcmread(f)
        for k, v in tags.items():
            setattr(ds, k, v)
        ds.save_as(dst / f.name)
    return dst


@pytest.fixture(scope="module")
def messy(tmp_path_factory, example_lungdx):
    """One good case beside a mixed-series folder, a 5-slice series, 10 mm and 2 mm pixel series, a looping
    link, a folder link to ".", an empty folder and a non-CT series; prepared once with 2 workers."""
    from pydicom.uid import generate_uid

    root = tmp_path_factory.mktemp("messy")
    raw = root / "raw"
    raw.mkdir()
    write_ct(raw / "good.nii.gz")
    files = sorted(example_lungdx.glob("*.dcm"))
    mixed_dir = _dicom_copy(files, raw / "mixed_series")
    second = _dicom_copy(
        files[10:40], root / "second", SeriesInstanceUID=generate_uid(), SeriesDescription="second stack"
    )
    for f in second.iterdir():  # the second series lies in the same folder, with its own file names
        shutil.move(f, mixed_dir / f"b_{f.name}")
    _dicom_copy(files[20:25], raw / "five_slices")
    _dicom_copy(files, raw / "pixel_10mm", PixelSpacing=[10.0, 10.0])
    _dicom_copy(files, raw / "pixel_2mm", PixelSpacing=[2.0, 2.0])
    _dicom_copy(files[:25], raw / "not_ct", Modality="MR")
    (raw / "empty").mkdir()
    os.symlink("loop.nii.gz", raw / "loop.nii.gz")
    os.symlink(".", raw / "self", target_is_directory=True)
    out = root / "out"
    proc, peak_gb = run_prepare_measured(raw, out, "--num_workers", "2", "--split", "[1,0,0]")
    return raw, out, proc, peak_gb


MESSY_REASONS = {
    "empty": ("no DICOM files found",),
    "five_slices": ("not a plausible chest CT", "5 slices", "at least 20"),
    "loop": ("symbolic link loops",),
    "not_ct": ("MR", "need CT"),
    "pixel_10mm": ("not a plausible chest CT", "pixel spacing 10 mm", "0.2 to 5 mm"),
    "self": ("folder link", "dataset folder"),
}


@pytest.mark.slow
def test_messy_folder_prepares_the_good_cases_and_says_why_not_the_others(messy):
    raw, out, proc, peak_gb = messy
    text = output_text(proc)
    assert proc.returncode == 0, text
    assert "Traceback" not in text
    assert complete_cases(out) == ["good", "mixed_series", "pixel_2mm"]
    failures = {f["case_id"]: f for f in read_json(out / "failures.json")}
    assert set(failures) == set(MESSY_REASONS), failures
    for cid, words in MESSY_REASONS.items():
        assert "\n" not in failures[cid]["reason"], failures[cid]
        for w in words:
            assert w in failures[cid]["reason"], (cid, failures[cid]["reason"])
    assert peak_gb < 4.0, f"peak resident memory {peak_gb:.2f} GB"
    print(f"messy folder: peak resident memory of the largest process {peak_gb:.2f} GB")


@pytest.mark.slow
def test_mixed_series_folder_records_the_series_left_out(messy):
    raw, out, proc, _ = messy
    info = read_json(out / "mixed_series" / "case.json")["original"]
    assert info["series"]["slices"] == 64 and info["num_slices"] == 64
    (left,) = info["series_left_out"]
    assert left["slices"] == 30 and left["description"] == "second stack" and left["modality"] == "CT"
    assert left["uid"] != info["series"]["uid"]
    assert re.search(
        r"mixed_series: used CT series .* left out: CT series " + re.escape(left["uid"]), output_text(proc)
    )


@pytest.mark.slow
def test_ct_1mm_is_the_cube_the_target_was_sampled_from(messy):
    """ct_1mm.nii.gz (int16 HU, 1 mm, 320 mm) point-sampled at the 128 voxel centres gives ct.nii.gz."""
    import torch
    from monai.data import MetaTensor
    from scripts.frame import FRAME
    from scripts.transforms.target import point_downsample

    _, out, _, _ = messy
    case = out / "pixel_2mm"
    fine = nib.load(str(case / "ct_1mm.nii.gz"))
    target = nib.load(str(case / "ct.nii.gz"))
    assert fine.shape == (320, 320, 320) and fine.get_data_dtype() == np.int16
    np.testing.assert_allclose(np.linalg.norm(fine.affine[:3, :3], axis=0), 1.0)
    np.testing.assert_allclose(fine.affine @ [159.5, 159.5, 159.5, 1], target.affine @ [63.5, 63.5, 63.5, 1], atol=1e-6)
    hu = MetaTensor(
        torch.as_tensor(np.asarray(fine.dataobj), dtype=torch.float32)[None], affine=torch.as_tensor(fine.affine)
    )
    resampled = FRAME.hu_to_target(point_downsample(hu, (128,) * 3).numpy()[0])
    np.testing.assert_allclose(resampled, np.asarray(target.dataobj), atol=0.51 / FRAME.hu_range)  # int16 rounding
    info = read_json(case / "case.json")
    np.testing.assert_allclose(info["original"]["spacing_mm"][:2], 2.0)
    assert info["original"]["normalization"]["crop"] == "symmetric"
    assert info["original"]["normalization"]["target_resampling"] == "point"
    assert info["ct_1mm"]["intensity"] == "HU (int16)"


# ------------------------------------------------------------------------------------ kill -9 and Ctrl-C
def _descendants(pid: int) -> set[int]:
    """Live (non-zombie) processes descending from ``pid``."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(d))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for p in pids:
        try:
            if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.add(p)
        except OSError:
            pass
    return alive


@pytest.fixture(scope="module")
def three_cases(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("three") / "raw"
    raw.mkdir()
    for i in range(3):
        write_ct(raw / f"c{i}.nii.gz", seed=i)
    return raw


def _start_busy(raw: Path, out: Path, log: Path) -> tuple[subprocess.Popen, set[int]]:
    """A 2-worker prepare in its own process group, returned once a worker is writing a case."""
    p = run_prepare(raw, out, "--num_workers", "2", popen=True, log=log, new_session=True)
    t0 = time.time()
    while not (out.is_dir() and any(e.name.startswith(".tmp-") for e in out.iterdir())):
        assert p.poll() is None, log.read_text()
        assert time.time() - t0 < TIMEOUT_S, "no worker started a case in time"
        time.sleep(0.1)
    return p, _descendants(p.pid)


@pytest.mark.slow
def test_kill_9_leaves_no_worker_behind(three_cases, tmp_path):
    p, workers = _start_busy(three_cases, tmp_path / "out", tmp_path / "log")
    try:
        assert len(workers) >= 2, workers  # the workers (and multiprocessing's helper) are running
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
        t0 = time.time()
        # 2 s: far less than the case each worker had just started (the DRRs alone take longer), so only a
        # worker that watches its parent is gone in time
        while _alive(workers) and time.time() - t0 < 2:
            time.sleep(0.05)
        assert not _alive(workers), f"left behind: {_alive(workers)}"
    finally:
        for q in _alive(workers):
            os.kill(q, signal.SIGKILL)


@pytest.mark.slow
def test_ctrl_c_stops_everything_with_one_line(three_cases, tmp_path):
    out = tmp_path / "out"
    p, workers = _start_busy(three_cases, out, tmp_path / "log")
    try:
        os.killpg(p.pid, signal.SIGINT)  # what a terminal sends to the foreground process group
        assert p.wait(60) == 130  # scripts.errors.Interrupted: a clean stop
        text = (tmp_path / "log").read_text()
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
        lines = [ln for ln in text.splitlines() if "interrupted" in ln]
        assert len(lines) == 1 and lines[0].startswith("prepare: interrupted;") and "run the same command" in lines[0]
        assert not [e.name for e in out.iterdir() if e.name.startswith(".")]  # no partial case
        assert all(is_case_complete(e) for e in out.iterdir() if e.is_dir())
        # the workers are gone within the same 2 s window as after kill -9 (the main process can return a few
        # milliseconds before the last worker has been reaped)
        t0 = time.time()
        while _alive(workers) and time.time() - t0 < 2:
            time.sleep(0.05)
        assert not _alive(workers), f"left behind: {_alive(workers)}"
    finally:
        if p.poll() is None:
            p.kill()
        for q in _alive(workers):
            os.kill(q, signal.SIGKILL)
