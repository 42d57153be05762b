"""Loading CTs (real DICOM series, compressed DICOM, NIfTI/MHA), the errors for bad inputs, and the
normalisation chain keeping world positions."""

from __future__ import annotations

import glob
import random
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from scripts.ct.dicom_series import find_dicom_series
from scripts.ct.loader import load_ct
from scripts.ct.lps import affine_to_lps_grid, lps_to_ras
from scripts.errors import CTLoadError
from scripts.transforms.ct import LoadCT, LoadCTd, NormalizeCT, NormalizeCTd
from scripts.transforms.target import CTTarget, CTTargetd

_LOADED: dict[str, object] = {}


LIDC_SLICES = 133  # LIDC-IDRI-0001 of the example download: 133 axial slices of 512 x 512, 2.5 mm apart


def _lidc_files(patient: Path) -> list[str]:
    return sorted(glob.glob(str(patient / "*" / "*" / "*.dcm")))


def _sorted_by_z(files: list[str]) -> list[str]:
    return sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))


@pytest.fixture(scope="module")
def lidc_patient(example_lidc, tmp_path_factory) -> Path:
    """The example LIDC-IDRI-0001 laid out as a TCIA patient folder (patient/study/series/*.dcm, copies of the
    example's files) with the non-DICOM annotation XML that TCIA downloads carry beside the slices."""
    patient = tmp_path_factory.mktemp("tcia") / "LIDC-IDRI-0001"
    series = patient / "01-01-2000-30178" / "3000566-03192"
    series.mkdir(parents=True)
    for f in sorted(example_lidc.glob("*.dcm")):
        shutil.copyfile(f, series / f.name)
    (series / "069.xml").write_text('<?xml version="1.0"?><LidcReadMessage><ResponseHeader/></LidcReadMessage>\n')
    return patient


@pytest.fixture(scope="module")
def lidc3(lidc_patient):
    if "lidc" not in _LOADED:
        _LOADED["lidc"] = load_ct(lidc_patient)
    return _LOADED["lidc"]


@pytest.fixture(scope="module")
def some_slices(lidc_patient) -> list[str]:
    """Ten consecutive slices (by position) of LIDC-IDRI-0001."""
    return _sorted_by_z(_lidc_files(lidc_patient))[60:70]


def _copy(files, dst: Path, names=None) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        shutil.copy(f, dst / (names[i] if names else Path(f).name))
    return dst


# ------------------------------------------------------------------------------------ real series
def test_patient_folder_picks_ct_series(lidc3, lidc_patient):
    patient = lidc_patient
    assert list(patient.glob("*/*/*.xml")), "the test data should hold the non-DICOM xml"
    series = find_dicom_series(patient)
    assert len(series) == 1 and series[0].num_slices == LIDC_SLICES and series[0].modality == "CT"
    assert lidc3.shape == (1, 512, 512, LIDC_SLICES) and lidc3.dtype == torch.float32
    assert lidc3.meta["case_id"] == "LIDC-IDRI-0001" and lidc3.meta["num_slices"] == LIDC_SLICES
    assert lidc3.meta["filename_or_obj"] == str(patient)


def test_affine_and_spacing_match_dicom_tags(lidc3, lidc_patient):
    files = _sorted_by_z(_lidc_files(lidc_patient))
    first, last = (pydicom.dcmread(f, stop_before_pixels=True) for f in (files[0], files[-1]))
    row_sp, col_sp = (float(v) for v in first.PixelSpacing)
    spacing, origin = affine_to_lps_grid(lidc3.affine)
    np.testing.assert_allclose(spacing, [col_sp, row_sp, 2.5], atol=1e-6)
    np.testing.assert_allclose(lidc3.meta["spacing"], spacing)
    lps = lps_to_ras(lidc3.affine.numpy())
    np.testing.assert_allclose(lps @ [0, 0, 0, 1], [*map(float, first.ImagePositionPatient), 1], atol=1e-4)
    np.testing.assert_allclose(lps @ [0, 0, LIDC_SLICES - 1, 1], [*map(float, last.ImagePositionPatient), 1], atol=1e-3)
    # MONAI's RAS convention: x and y flipped
    assert lidc3.affine[0, 0] == pytest.approx(-col_sp) and lidc3.affine[2, 2] == pytest.approx(2.5)


def test_hu_matches_pydicom_and_padding(lidc3, lidc_patient):
    files = _sorted_by_z(_lidc_files(lidc_patient))
    k = 70
    ds = pydicom.dcmread(files[k])
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert hu.min() <= -2048, "this slice has padding outside the scan circle"
    expected = np.where(hu <= -2000, -1024.0, hu)
    got = lidc3.numpy()[0, :, :, k]  # (x, y) = (column, row)
    np.testing.assert_array_equal(got.T, expected.astype(np.float32))
    assert float(lidc3.min()) > -2000
    assert got[0, 0] == -1024.0


def test_order_independent_of_file_names(tmp_path, some_slices):
    names = [f"img{n:03d}.dcm" for n in random.Random(3).sample(range(100), len(some_slices))]
    shuffled = load_ct(_copy(some_slices, tmp_path / "shuffled", names))
    plain = load_ct(_copy(some_slices, tmp_path / "plain"))
    assert shuffled.shape == (1, 512, 512, 10)
    np.testing.assert_array_equal(shuffled.numpy(), plain.numpy())
    np.testing.assert_allclose(shuffled.affine.numpy(), plain.affine.numpy())
    z = lps_to_ras(shuffled.affine.numpy()) @ [0, 0, 0, 1]
    assert z[2] == pytest.approx(
        float(pydicom.dcmread(some_slices[0], stop_before_pixels=True).ImagePositionPatient[2])
    )


@pytest.mark.parametrize("compression", ["JPEG2000", "JPEG"])
def test_compressed_transfer_syntax(tmp_path, some_slices, compression):
    """Re-encode slices with ITK/GDCM (JPEG 2000 lossless / JPEG lossless): identical HU and geometry."""
    import itk

    files = some_slices[:4]
    src = _copy(files, tmp_path / "raw")
    dst = tmp_path / compression
    dst.mkdir()
    image_type = itk.Image[itk.SS, 2]
    for f in files:
        rio = itk.GDCMImageIO.New()
        reader = itk.ImageFileReader[image_type].New(FileName=f, ImageIO=rio)
        reader.Update()
        img = reader.GetOutput()
        img.SetMetaDataDictionary(rio.GetMetaDataDictionary())
        wio = itk.GDCMImageIO.New()
        wio.SetCompressionType(getattr(itk.GDCMImageIOEnums, f"Compression_{compression}"))
        wio.KeepOriginalUIDOn()
        writer = itk.ImageFileWriter[image_type].New(Input=img, FileName=str(dst / Path(f).name), ImageIO=wio)
        writer.SetUseCompression(True)
        writer.Update()
    ts = pydicom.dcmread(next(dst.iterdir()), stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert ts.is_compressed, f"{compression}: GDCM wrote {ts.name}"
    a, b = load_ct(src), load_ct(dst)
    assert b.meta["transfer_syntax"] == str(ts)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy())


def test_lungdx_5mm_loads_and_normalises(example_lungdx):
    vol = LoadCT()(example_lungdx)  # the example LungDx-A0001: 64 slices 5 mm apart
    assert vol.shape == (1, 512, 512, 64)
    np.testing.assert_allclose(vol.meta["spacing"][2], 5.0)
    centre_in = lps_to_ras(vol.affine.numpy()) @ [255.5, 255.5, 31.5, 1]
    out = NormalizeCT()(vol)
    assert out.shape == (1, 320, 320, 320)
    np.testing.assert_allclose(np.linalg.norm(out.affine.numpy()[:3, :3], axis=0), [1, 1, 1], atol=1e-6)
    centre_out = lps_to_ras(out.affine.numpy()) @ [159.5, 159.5, 159.5, 1]
    assert np.abs(centre_out - centre_in).max() <= 1.0
    # z: 64 x 5 mm of data centred in the 320 mm cube: every plane holds data, body (bone) present
    assert float(out[0, :, :, 160].max()) > 500 and float(out.max()) > 500


# ------------------------------------------------------------------------------------ volumes, landmarks
def _bead_nifti(path: Path, affine_ras: np.ndarray, shape=(150, 130, 60), bead_idx=(100, 40, 45)) -> np.ndarray:
    arr = np.full(shape, -1000.0, np.float32)
    arr[tuple(bead_idx)] = 3000.0
    nib.save(nib.Nifti1Image(arr, affine_ras), str(path))
    return (affine_ras @ [*bead_idx, 1])[:3]  # RAS world


def _find_bead_ras(img, threshold: float) -> np.ndarray:
    a = img.numpy()[0]
    i = np.array(np.unravel_index(np.argmax(a), a.shape))
    lo = np.maximum(i - 3, 0)
    w = a[lo[0] : i[0] + 4, lo[1] : i[1] + 4, lo[2] : i[2] + 4]
    w = np.clip(w - threshold, 0, None)
    g = np.mgrid[tuple(slice(0, s) for s in w.shape)]
    c = lo + np.array([(w * g[k]).sum() / w.sum() for k in range(3)])
    return (img.affine.numpy() @ [*c, 1])[:3]


def test_landmark_keeps_world_position_through_chain(tmp_path):
    # a NIfTI in RAS storage order (flipped x, y relative to LPS), anisotropic, off-centre origin
    affine = np.array([[0.7, 0, 0, -60.0], [0, 0.8, 0, -30.0], [0, 0, 2.5, 40.0], [0, 0, 0, 1]])
    bead_ras = _bead_nifti(tmp_path / "bead.nii.gz", affine)
    d = LoadCTd(keys="ct", check=False)({"ct": str(tmp_path / "bead.nii.gz")})  # a small phantom, not a chest
    vol = d["ct"]
    spacing, _ = affine_to_lps_grid(vol.affine)  # LPS axis-aligned
    np.testing.assert_allclose(spacing, [0.7, 0.8, 2.5], atol=1e-5)
    np.testing.assert_allclose(_find_bead_ras(vol, -1000), bead_ras, atol=1e-4)
    d = NormalizeCTd(keys="ct")(d)
    norm = d["ct"]
    assert norm.shape == (1, 320, 320, 320)
    np.testing.assert_allclose(np.abs(np.diag(norm.affine.numpy())[:3]), [1, 1, 1], atol=1e-6)
    assert np.abs(_find_bead_ras(norm, -1000) - bead_ras).max() <= 1.0
    d = CTTargetd(keys="ct", keep_hu_key="ct_hu")(d)
    tgt = d["ct"]
    assert tgt.shape == (1, 128, 128, 128) and tgt.dtype == torch.float32
    # intensity on the target scale (HU + 1024) / 2500: the phantom's air (-1000 HU) and the padding outside the
    # scan (air, -1024 HU: 0), read at RAS points far from the bead and from the phantom's edges
    to_voxel = np.linalg.inv(tgt.affine.numpy())
    for world, want in (((-46.0, 50.0, 65.0), (-1000 + 1024) / 2500), ((-150.0, 22.0, 115.0), 0.0)):
        vox = tuple(np.round((to_voxel @ [*world, 1.0])[:3]).astype(int))
        assert abs(float(tgt[0][vox]) - want) < 1e-5, (world, vox, float(tgt[0][vox]))
    np.testing.assert_allclose(tgt.meta["spacing"], [2.5, 2.5, 2.5], atol=1e-6)
    assert d["ct_hu"] is norm
    # same centre as the 1 mm cube
    c1 = norm.affine.numpy() @ [159.5, 159.5, 159.5, 1]
    c2 = tgt.affine.numpy() @ [63.5, 63.5, 63.5, 1]
    np.testing.assert_allclose(c1, c2, atol=1e-6)
    assert np.abs(_find_bead_ras(tgt, (-1000 + 1024) / 2500) - bead_ras).max() <= 2.5


def test_ct_target_intensity_mapping():
    from monai.data import MetaTensor

    for hu, expected in [
        (-3000.0, 0.0),
        (-1024.0, 0.0),
        (0.0, 1024 / 2500),
        (476.0, 0.6),
        (1476.0, 1.0),
        (4000.0, 1.0),
    ]:
        y = CTTarget(output_size=4)(MetaTensor(torch.full((1, 10, 10, 10), hu)))
        assert y.shape == (1, 4, 4, 4) and y.dtype == torch.float32
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_mha_matches_monai_itkreader(tmp_path, lidc3):
    """Our affine is what MONAI's ITKReader gives (affine_lps_to_ras=True) for an LPS MHA."""
    import itk
    from monai.transforms import LoadImage

    small = lidc3[:, ::4, ::4, ::4]
    spacing, origin = affine_to_lps_grid(lidc3.affine)
    img = itk.image_from_array(np.ascontiguousarray(small.numpy()[0].transpose(2, 1, 0)))
    img.SetSpacing((spacing * 4).tolist())
    img.SetOrigin(origin.tolist())
    itk.imwrite(img, str(tmp_path / "small.mha"))
    ours = load_ct(tmp_path / "small.mha")
    theirs = LoadImage(reader="ITKReader", image_only=True, ensure_channel_first=True)(str(tmp_path / "small.mha"))
    np.testing.assert_allclose(ours.affine.numpy(), np.asarray(theirs.affine), atol=1e-5)
    np.testing.assert_array_equal(ours.numpy(), np.asarray(theirs))


def test_permuted_and_oblique_volumes(tmp_path):
    # signed permutation (stored as sagittal stack: array axes S, A, L): exact re-orientation
    perm = np.array([[0, 0, -1.5, 50.0], [0, -1.0, 0, 20.0], [2.0, 0, 0, -80.0], [0, 0, 0, 1]])
    bead = _bead_nifti(tmp_path / "perm.nii.gz", perm, shape=(40, 50, 60), bead_idx=(10, 20, 30))
    vol = load_ct(tmp_path / "perm.nii.gz")
    assert vol.shape == (1, 60, 50, 40)
    np.testing.assert_allclose(affine_to_lps_grid(vol.affine)[0], [1.5, 1.0, 2.0])
    np.testing.assert_allclose(_find_bead_ras(vol, -1000), bead, atol=1e-4)
    # oblique (20 degrees about z): resampled onto an axis-aligned grid, bead within a voxel
    t = np.deg2rad(20)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    obl = np.eye(4)
    obl[:3, :3] = rot @ np.diag([1.0, 1.0, 2.0])
    obl[:3, 3] = [-20, 10, 0]
    arr = np.full((40, 40, 20), -1000.0, np.float32)
    arr[18:22, 8:12, 9:12] = 2000.0
    nib.save(nib.Nifti1Image(arr, obl), str(tmp_path / "oblique.nii.gz"))
    vol = load_ct(tmp_path / "oblique.nii.gz")
    affine_to_lps_grid(vol.affine)  # axis-aligned
    bead = (obl @ [19.5, 9.5, 10, 1])[:3]
    assert np.abs(_find_bead_ras(vol, 0) - bead).max() <= 1.0
    assert float(vol.min()) == -1024.0  # new corners outside the scan are air


# ------------------------------------------------------------------------------------ bad inputs
def test_error_empty_and_no_dicom(tmp_path, lidc_patient):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CTLoadError, match="no DICOM files found"):
        load_ct(tmp_path / "empty")
    xml = next(lidc_patient.glob("*/*/*.xml"))
    only_xml = _copy([xml], tmp_path / "xml")
    with pytest.raises(CTLoadError, match=r"no DICOM.*\.dcm"):
        load_ct(only_xml)
    with pytest.raises(CTLoadError, match="no such file"):
        load_ct(tmp_path / "missing")


def test_error_single_slice(tmp_path, some_slices):
    with pytest.raises(CTLoadError, match="series has 1 slice; need a 3D CT"):
        load_ct(_copy(some_slices[:1], tmp_path / "one"))


def test_error_truncated_file(tmp_path, some_slices):
    folder = _copy(some_slices[:5], tmp_path / "trunc")
    victim = folder / Path(some_slices[2]).name
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 20000])
    with pytest.raises(CTLoadError, match=r"truncated DICOM file: pixel data short") as e:
        load_ct(folder)
    assert victim.name in str(e.value)


def test_error_not_ct(tmp_path, some_slices):
    folder = tmp_path / "mr"
    folder.mkdir()
    for f in some_slices[:4]:
        ds = pydicom.dcmread(f)
        ds.Modality = "MR"
        ds.save_as(folder / Path(f).name)
    with pytest.raises(CTLoadError, match="series is MR, need CT"):
        load_ct(folder)


def test_error_missing_slice(tmp_path, some_slices):
    folder = _copy(some_slices[:4] + some_slices[6:], tmp_path / "gap")
    with pytest.raises(CTLoadError, match=r"missing slices: gap of 7.50 mm between slice positions") as e:
        load_ct(folder)
    assert "about 2 slice(s) missing" in str(e.value)


def test_error_non_uniform_spacing(tmp_path, some_slices):
    folder = _copy(some_slices[:6], tmp_path / "nonuni")
    victim = folder / Path(some_slices[3]).name
    ds = pydicom.dcmread(victim)
    ipp = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 0.8]
    ds.save_as(victim)
    with pytest.raises(CTLoadError, match="non-uniform slice spacing"):
        load_ct(folder)


def test_error_nan_in_nifti(tmp_path):
    arr = np.zeros((10, 10, 10), np.float32)
    arr[3, 4, 5] = np.nan
    arr[1, 1, 1] = np.inf
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    with pytest.raises(CTLoadError, match=r"2 voxels are NaN or inf"):
        load_ct(tmp_path / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((10, 10), np.float32), np.eye(4)), str(tmp_path / "flat.nii"))
    with pytest.raises(CTLoadError, match="need a 3D CT"):
        load_ct(tmp_path / "flat.nii")


# ------------------------------------------------------------------------------------ geometry from the header
# Series derived from real data by rewriting DICOM headers with pydicom; each load is compared, at sampled voxels,
# with a world-coordinate reconstruction written here from pydicom alone (every slice at its own
# ImagePositionPatient, in-plane axes from ImageOrientationPatient and PixelSpacing).
N_SLICES = 30
N_SAMPLES = 3000


def _source_slices(folder: Path, first: int) -> list[str]:
    return _sorted_by_z(sorted(glob.glob(str(folder / "*.dcm"))))[first : first + N_SLICES]


@pytest.fixture(scope="module")
def real_sources(example_raw_dir) -> dict[str, list[str]]:
    """30 consecutive slices of the example LIDC-IDRI-0001 and, when ../shared/data is present, of LungDx-A0002."""
    out = {"LIDC-IDRI-0001": _source_slices(example_raw_dir / "LIDC-IDRI-0001", 50)}
    from conftest import SHARED_DATA

    if (SHARED_DATA / "LungDx-A0002-8mm").is_dir():
        out["LungDx-A0002"] = _source_slices(SHARED_DATA / "LungDx-A0002-8mm", 0)
    return out


def _rewrite(files: list[str], dst: Path, variant: str, seed: int = 0) -> Path:
    """A copy of the series (sorted inferior -> superior) rewritten as ``variant``."""
    dst.mkdir(parents=True)
    rng = random.Random(seed)
    order = list(range(len(files)))
    if variant in ("reversed", "head_first_negative_sbs"):
        order = order[::-1]  # stored (names and InstanceNumber) from the head end
    names = [f"{i:04d}.dcm" for i in range(len(files))]
    if variant == "shuffled":
        rng.shuffle(names)
        names = [f"x{rng.randrange(10**6):06d}_{n}" for n in names]
    for n, i in enumerate(order):
        ds = pydicom.dcmread(files[i])
        ds.InstanceNumber = n + 1
        if variant == "head_first_negative_sbs":
            ds.SpacingBetweenSlices = -abs(float(getattr(ds, "SliceThickness", 2.5) or 2.5))
            ds.PatientPosition = "HFS"
        elif variant == "missing_sbs":
            for tag in ("SpacingBetweenSlices", "SliceThickness"):
                if tag in ds:
                    delattr(ds, tag)
        elif variant == "wrong_sbs":
            ds.SpacingBetweenSlices = 7.0
        elif variant == "mirrored_ffs":
            # same anatomy, stored as a feet-first scanner does: rows reversed in x, IOP row vector -x
            ds.PatientPosition = "FFS" if str(getattr(ds, "PatientPosition", "")) != "FFS" else "HFS"
            arr = ds.pixel_array[:, ::-1].copy()
            iop = [float(v) for v in ds.ImageOrientationPatient]
            ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
            ipp = ipp + (ds.Columns - 1) * float(ds.PixelSpacing[1]) * np.asarray(iop[:3])
            ds.ImageOrientationPatient = [-iop[0], -iop[1], -iop[2], *iop[3:]]
            ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
            ds.PixelData = arr.tobytes()
        elif variant == "tilted":
            t = np.deg2rad(15.0)  # gantry tilt: slice planes turned about x, the table still moves along z
            ds.ImageOrientationPatient = [1, 0, 0, 0, f"{np.cos(t):.8f}", f"{np.sin(t):.8f}"]
        ds.save_as(dst / names[n])
    return dst


def _reference(folder: Path):
    """From pydicom alone: ``sample(points_lps) -> HU`` (trilinear between pixel centres of neighbouring slices
    of the sheared grid; exact at pixel centres) and the mask of points inside the data."""
    slices = [pydicom.dcmread(f) for f in glob.glob(str(folder / "*"))]
    iop = np.asarray([float(v) for v in slices[0].ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    slices.sort(key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])))
    ipp = np.asarray([[float(v) for v in ds.ImagePositionPatient] for ds in slices])
    dr, dc = (float(v) for v in slices[0].PixelSpacing)
    hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])  # (k, r, c)
    step = (ipp[-1] - ipp[0]) / (len(ipp) - 1)
    m = np.stack([row * dc, col * dr, step], axis=1)  # (c, r, k) -> mm

    def sample(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        crk = np.linalg.solve(m, (points - ipp[0]).T).T
        crk = np.where(np.abs(crk - np.round(crk)) < 1e-6, np.round(crk), crk)  # at pixel centres: exact
        c, r, k = crk.T
        inside = (
            (c >= 0) & (c <= hu.shape[2] - 1) & (r >= 0) & (r <= hu.shape[1] - 1) & (k >= 0) & (k <= hu.shape[0] - 1)
        )
        dims = (hu.shape[2], hu.shape[1], hu.shape[0])
        c, r, k = (np.clip(v, 0, n - 1) for v, n in zip((c, r, k), dims))
        c0, r0, k0 = (np.minimum(np.floor(v), n - 2).astype(int) for v, n in zip((c, r, k), dims))
        fc, fr, fk = c - c0, r - r0, k - k0
        val = np.zeros(len(points))
        lowest = np.full(len(points), np.inf)
        for dk in (0, 1):
            for dr_ in (0, 1):
                for dc_ in (0, 1):
                    w = (fk if dk else 1 - fk) * (fr if dr_ else 1 - fr) * (fc if dc_ else 1 - fc)
                    v = hu[
                        np.minimum(k0 + dk, hu.shape[0] - 1),
                        np.minimum(r0 + dr_, hu.shape[1] - 1),
                        np.minimum(c0 + dc_, hu.shape[2] - 1),
                    ]
                    val += w * v
                    lowest = np.where(w > 0, np.minimum(lowest, v), lowest)
        return val, inside, lowest > -2000, crk  # padding (<= -2000 HU) is mapped to air by the loader

    return sample


VARIANTS = ["reversed", "head_first_negative_sbs", "missing_sbs", "wrong_sbs", "shuffled", "mirrored_ffs", "tilted"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_voxels_at_their_header_positions(tmp_path, real_sources, variant):
    sources = (
        real_sources
        if variant in ("head_first_negative_sbs", "mirrored_ffs", "tilted")
        else {"LIDC-IDRI-0001": real_sources["LIDC-IDRI-0001"]}
    )
    for name, files in sources.items():
        folder = _rewrite(files, tmp_path / name, variant)
        vol = load_ct(folder)
        stored_from_head = variant in ("reversed", "head_first_negative_sbs")
        assert vol.meta["instance_number_increases_toward"] == ("I" if stored_from_head else "S")  # official crop
        # GDCM turns the slice axis with a negative SpacingBetweenSlices (the Philips Big Bore case) and takes the
        # normal for a tilted stack: the header wins, and the disagreement is said
        note = vol.meta["geometry_note"]
        if variant == "head_first_negative_sbs":
            assert "ITK/GDCM placed the series at" in note and "slice axis [0.0, 0.0, -1.0]" in note, note
        elif variant == "tilted":
            assert "ITK/GDCM placed the series at" in note and note.endswith("(used)"), note
        else:
            assert note == "", note
        a = vol.numpy()[0]
        rng = np.random.default_rng(0)
        idx = np.stack([rng.integers(0, s, N_SAMPLES) for s in a.shape], axis=1)
        lps = (lps_to_ras(vol.affine.numpy()) @ np.c_[idx, np.ones(len(idx))].T).T[:, :3]
        ref, inside, no_padding, crk = _reference(folder)(lps)
        loaded = a[tuple(idx.T)]
        if variant == "tilted":
            assert vol.meta["tilt_deg"] == pytest.approx(15.0, abs=1e-3)
            assert inside.sum() > N_SAMPLES / 3, (name, inside.sum())  # the resampled box holds the tilted stack
            ok = inside & no_padding
            np.testing.assert_allclose(loaded[ok], ref[ok], atol=0.05, err_msg=name)
            assert np.all(loaded[~inside & (np.abs(crk[:, 2] - 14) > 20)] == -1024)  # far beyond the stack: air
        else:
            assert vol.meta["tilt_deg"] == 0.0
            assert inside.all(), name  # axis-aligned: the loaded grid is the DICOM grid
            np.testing.assert_allclose(crk, np.round(crk), atol=1e-3, err_msg=name)  # voxel centres = pixel centres
            np.testing.assert_array_equal(loaded, np.where(ref <= -2000, -1024, ref).astype(np.float32), err_msg=name)
            assert vol.shape[1:] == (512, 512, N_SLICES)
