"""Find and load a chest CT as an axis-aligned LPS volume in Hounsfield units.

Accepted inputs (:func:`load_ct`):

* a DICOM series folder, or a patient folder in TCIA layout (``patient/study/series/*.dcm``):
  the CT series with the most slices is chosen; non-DICOM files (e.g. the LIDC ``*.xml``
  annotations) and unreadable files are ignored;
* a single DICOM file: the series it belongs to, from the files in its folder;
* a NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``, ``.mhd``) or NRRD (``.nrrd``, ``.nhdr``) file.

Slices are ordered by ``ImagePositionPatient`` projected on the slice normal (the cross product of
the two ``ImageOrientationPatient`` vectors), never by file name. Pixels are read by ITK
(``ImageSeriesReader`` + ``GDCMImageIO``), so compressed transfer syntaxes (JPEG lossless,
JPEG-LS, JPEG 2000) read like uncompressed ones; GDCM applies ``RescaleSlope``/``RescaleIntercept``.

Output convention (:func:`load_ct`): a MONAI :class:`~monai.data.MetaTensor` of shape
``(1, X, Y, Z)``, float32 HU, array axes toward the patient's Left, Posterior, Superior
(nibabel axcodes ``"LPS"``), voxel ``[0, 0, 0]`` at the right-anterior-inferior corner, identity
direction cosines in LPS. ``affine`` follows MONAI's convention (RAS world, what
``monai.data.ITKReader(affine_lps_to_ras=True)`` gives): ``affine = diag(-1, -1, 1, 1) @ affine_lps``.
Values at or below -2000 HU (padding outside the scan circle, e.g. -2048 or -3024) become -1024.

Orientation: when the direction matrix is a signed permutation (within 1e-3; the usual axial,
coronal or sagittal acquisitions, any flips), the array is permuted/flipped, which is exact.
Otherwise (oblique or tilted acquisitions) the volume is resampled by ITK (linear) onto an
axis-aligned LPS grid that covers it, with the smallest input spacing kept per axis nearest to it;
new voxels outside the scan read -1024 HU.

Every problem with the input raises :class:`CTLoadError` (a ``ValueError``) naming the path and the fix.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CTLoadError",
    "DicomSeries",
    "find_dicom_series",
    "select_ct_series",
    "read_dicom_series",
    "load_ct",
    "to_lps_axis_aligned",
    "lps_affine",
    "lps_to_ras",
    "affine_to_lps_grid",
    "PADDING_THRESHOLD_HU",
    "AIR_HU",
]

#: Voxels at or below this value are padding outside the scan circle.
PADDING_THRESHOLD_HU = -2000.0
#: Value given to padding voxels and to voxels created by resampling outside the scan.
AIR_HU = -1024.0

_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")
# transfer syntaxes whose pixel data is stored uncompressed (length can be checked from the header)
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class CTLoadError(ValueError):
    """A CT could not be found or loaded; the message names the path and the fix."""


@dataclasses.dataclass
class DicomSeries:
    """One DICOM series found on disk (headers only).

    Attributes:
        series_uid: ``SeriesInstanceUID``.
        modality: ``Modality`` (e.g. ``"CT"``).
        files: file paths ordered by position along the slice normal (inferior to superior for axial).
        positions_mm: position of each slice along the normal, mm, ascending, same order as ``files``.
        folder: the folder holding the first file.
        patient_id: ``PatientID`` (may be empty).
        transfer_syntax: transfer syntax UID of the first file.
        headers: the pydicom datasets (without pixel data), same order as ``files``.
        pixel_offsets: byte offset of each file's pixel data element (-1 if none).
    """

    series_uid: str
    modality: str
    files: list[str]
    positions_mm: np.ndarray
    folder: str
    patient_id: str = ""
    transfer_syntax: str = ""
    headers: list[Any] = dataclasses.field(default_factory=list, repr=False)
    pixel_offsets: list[int] = dataclasses.field(default_factory=list, repr=False)

    @property
    def num_slices(self) -> int:
        return len(self.files)


# ---------------------------------------------------------------------------------------- affines
def lps_affine(spacing_mm: Sequence[float], origin_mm: Sequence[float], direction=None) -> np.ndarray:
    """4x4 voxel-index -> LPS mm affine from ITK-style spacing, origin and direction (identity default)."""
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64).reshape(3, 3)
    a = np.eye(4)
    a[:3, :3] = d @ np.diag(np.asarray(spacing_mm, dtype=np.float64))
    a[:3, 3] = np.asarray(origin_mm, dtype=np.float64)
    return a


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """Convert a 4x4 affine between LPS and RAS world (the same operation both ways)."""
    return _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


def affine_to_lps_grid(affine_ras, tol: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """``(spacing_mm, origin_mm)`` of an LPS axis-aligned grid from a MONAI (RAS) affine.

    Raises:
        ValueError: when the affine is not axis-aligned with positive steps toward L, P, S
            (load the CT with :func:`load_ct` / ``LoadCT`` first).
    """
    a = lps_to_ras(np.asarray(affine_ras, dtype=np.float64)[:4, :4])
    m = a[:3, :3]
    spacing = np.diag(m).copy()
    off = m - np.diag(spacing)
    if np.any(spacing <= 0) or np.abs(off).max() > tol * spacing.max():
        raise ValueError(
            "the volume is not axis-aligned in LPS (array axes toward Left, Posterior, Superior with identity "
            f"direction); its LPS affine is\n{np.round(a, 4)}\nload it with scripts.ct_io.load_ct / LoadCT first"
        )
    return spacing, a[:3, 3].copy()


def _signed_permutation(direction: np.ndarray, tol: float = 1e-3) -> tuple[np.ndarray, np.ndarray] | None:
    """For a direction matrix (columns = image axes in LPS) close to a signed permutation, return
    ``(axis_of_world, sign_of_world)``: world axis ``w`` is image axis ``axis[w]`` with sign ``sign[w]``."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    axis = np.argmax(np.abs(d), axis=1)
    if sorted(axis.tolist()) != [0, 1, 2]:
        return None
    signs = np.sign(d[np.arange(3), axis])
    perm = np.zeros((3, 3))
    perm[np.arange(3), axis] = signs
    if np.abs(d - perm).max() > tol:
        return None
    return axis, signs


def to_lps_axis_aligned(
    array_ijk: np.ndarray, spacing_mm, origin_mm, direction, source: str = "volume"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-orient an image whose direction matrix is a signed permutation to the LPS axis-aligned grid.

    Args:
        array_ijk: array indexed ``[i, j, k]`` along the image's own axes (ITK order reversed).
        spacing_mm, origin_mm, direction: ITK geometry (direction columns = image axes in LPS).
        source: name used in error messages.

    Returns:
        ``(array_xyz, spacing_mm, origin_mm)``: array indexed ``[x, y, z]`` (L, P, S), positive
        spacing, LPS position of voxel ``[0, 0, 0]``; exact (no interpolation).

    Raises:
        CTLoadError: when the direction is not a signed permutation (see :func:`load_ct`, which resamples).
    """
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    origin = np.asarray(origin_mm, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    sp = _signed_permutation(d)
    if sp is None:
        raise CTLoadError(f"{source}: direction cosines {np.round(d, 4).tolist()} are oblique; resample it first")
    axis, signs = sp
    out = np.transpose(array_ijk, axis)
    first_index = np.zeros(3)
    for w in range(3):
        if signs[w] < 0:
            out = np.flip(out, axis=w)
            first_index[axis[w]] = array_ijk.shape[axis[w]] - 1
    new_origin = origin + d @ (spacing * first_index)
    return np.ascontiguousarray(out), spacing[axis].copy(), new_origin


# ---------------------------------------------------------------------------------------- DICOM discovery
def _read_header(path: str):
    """pydicom header (no pixels) and the byte offset of the pixel data element; None if not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=False)
            offset = fp.tell()
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError, AttributeError):
        return None
    except Exception:  # noqa: BLE001 - any unreadable file is skipped, as documented
        return None
    if "SeriesInstanceUID" not in ds:
        return None
    return ds, offset


def _slice_normal(ds) -> np.ndarray:
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
    n = np.cross(iop[:3], iop[3:])
    return n / np.linalg.norm(n)


def find_dicom_series(folder: str | os.PathLike, modality: str | None = "CT", recursive: bool = True) -> list[DicomSeries]:
    """All DICOM series under ``folder``, most slices first.

    Reads headers only (pydicom, ``stop_before_pixels=True``, ``force=False``); files that are not
    DICOM or cannot be read are ignored, as are DICOMDIR files. Files are grouped by
    ``SeriesInstanceUID`` and ordered by ``ImagePositionPatient`` along the slice normal (files
    without position or orientation keep their name order and are rejected at load time).

    Args:
        folder: a series folder or a patient / study folder (searched recursively by default).
        modality: keep only series of this modality (``None``: all).
        recursive: search sub-folders.

    Returns:
        list of :class:`DicomSeries`, sorted by number of slices (descending), then series UID.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CTLoadError(f"{folder}: not a folder; give a DICOM series folder, a patient folder or a volume file")
    paths: list[str] = []
    if recursive:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            paths.extend(os.path.join(root, f) for f in sorted(files))
    else:
        paths = [str(p) for p in sorted(folder.iterdir()) if p.is_file()]
    groups: dict[str, list[tuple[str, Any, int]]] = {}
    for p in paths:
        if os.path.basename(p).upper() == "DICOMDIR":
            continue
        hdr = _read_header(p)
        if hdr is None:
            continue
        ds, offset = hdr
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((p, ds, offset))
    series = []
    for uid, items in groups.items():
        ds0 = items[0][1]
        mod = str(getattr(ds0, "Modality", "") or "")
        if modality is not None and mod.upper() != modality.upper():
            continue
        try:
            normal = _slice_normal(ds0)
            pos = np.asarray([np.dot(normal, [float(v) for v in ds.ImagePositionPatient]) for _, ds, _ in items])
            order = np.argsort(pos, kind="stable")
        except (AttributeError, TypeError, ValueError):
            pos = np.full(len(items), np.nan)
            order = np.arange(len(items))
        items = [items[i] for i in order]
        series.append(
            DicomSeries(
                series_uid=uid,
                modality=mod,
                files=[it[0] for it in items],
                positions_mm=pos[order],
                folder=os.path.dirname(items[0][0]),
                patient_id=str(getattr(ds0, "PatientID", "") or ""),
                transfer_syntax=str(getattr(getattr(ds0, "file_meta", None), "TransferSyntaxUID", "") or ""),
                headers=[it[1] for it in items],
                pixel_offsets=[it[2] for it in items],
            )
        )
    series.sort(key=lambda s: (-s.num_slices, s.series_uid))
    return series


def select_ct_series(folder: str | os.PathLike, recursive: bool = True) -> DicomSeries:
    """The CT series with the most slices under ``folder``; raises :class:`CTLoadError` with the reason
    (no DICOM at all, or only other modalities)."""
    everything = find_dicom_series(folder, modality=None, recursive=recursive)
    if not everything:
        raise CTLoadError(
            f"{folder}: no DICOM files found (empty folder or only non-DICOM files); "
            "point to the folder that holds the CT's .dcm slices, or to a NIfTI/MHA file"
        )
    cts = [s for s in everything if s.modality.upper() == "CT"]
    if not cts:
        mods = sorted({s.modality or "unknown" for s in everything})
        raise CTLoadError(
            f"{folder}: series is {'/'.join(mods)}, need CT (Modality of {len(everything)} series found: "
            f"{', '.join(mods)}); point to a CT series"
        )
    return cts[0]


def _validate_series(s: DicomSeries) -> None:
    where = s.folder
    if s.num_slices == 1:
        raise CTLoadError(f"{s.files[0]}: series has 1 slice; need a 3D CT (a folder with all slices of the series)")
    if s.modality.upper() != "CT":
        raise CTLoadError(f"{where}: series is {s.modality or 'of unknown modality'}, need CT")
    h0 = s.headers[0]
    for f, ds in zip(s.files, s.headers):
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            if tag not in ds:
                raise CTLoadError(f"{f}: DICOM tag {tag} missing; cannot place the slice in 3D, need a standard CT series")
        if (ds.Rows, ds.Columns) != (h0.Rows, h0.Columns):
            raise CTLoadError(
                f"{f}: slice size {ds.Rows}x{ds.Columns} differs from {h0.Rows}x{h0.Columns} of {s.files[0]}; "
                "the folder mixes series, keep one series per folder"
            )
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        if np.abs(iop - np.asarray([float(v) for v in h0.ImageOrientationPatient])).max() > 1e-3:
            raise CTLoadError(f"{f}: ImageOrientationPatient differs from the first slice; need one stack of parallel slices")
    # truncated files: uncompressed pixel data must be complete
    for f, ds, off in zip(s.files, s.headers, s.pixel_offsets):
        ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        size = os.path.getsize(f)
        expected = int(ds.Rows) * int(ds.Columns) * int(getattr(ds, "BitsAllocated", 16)) // 8
        expected *= int(getattr(ds, "SamplesPerPixel", 1)) * int(getattr(ds, "NumberOfFrames", 1) or 1)
        remaining = size - off
        if ts in _NATIVE_SYNTAXES and remaining < expected + 8:
            raise CTLoadError(
                f"{f}: truncated DICOM file: pixel data short ({max(remaining - 8, 0)} of {expected} bytes); "
                "re-download or re-export the series"
            )
        if remaining <= 8:
            raise CTLoadError(f"{f}: truncated DICOM file: no pixel data; re-download or re-export the series")
    pos = s.positions_mm
    if not np.all(np.isfinite(pos)):
        raise CTLoadError(f"{where}: slice positions could not be read; need ImagePositionPatient on every slice")
    gaps = np.diff(pos)
    if np.any(gaps < 1e-3):
        i = int(np.argmin(gaps))
        raise CTLoadError(
            f"{where}: two slices at the same position {pos[i]:.2f} mm ({s.files[i]}, {s.files[i + 1]}); "
            "the folder holds duplicate slices or several series with one UID; keep one copy of each slice"
        )
    med = float(np.median(gaps))
    big = np.nonzero(gaps > 1.5 * med)[0]
    if big.size:
        i = int(big[0])
        n_missing = int(round(gaps[i] / med)) - 1
        raise CTLoadError(
            f"{where}: missing slices: gap of {gaps[i]:.2f} mm between slice positions {pos[i]:.2f} and "
            f"{pos[i + 1]:.2f} mm ({os.path.basename(s.files[i])} and {os.path.basename(s.files[i + 1])}), "
            f"median spacing {med:.2f} mm (about {n_missing} slice(s) missing); restore the full series"
        )
    if np.abs(gaps - med).max() > max(0.1 * med, 0.01):
        i = int(np.argmax(np.abs(gaps - med)))
        raise CTLoadError(
            f"{where}: non-uniform slice spacing: {gaps[i]:.3f} mm between {os.path.basename(s.files[i])} and "
            f"{os.path.basename(s.files[i + 1])}, median {med:.3f} mm; resample the series to uniform spacing "
            "(e.g. save it as NIfTI) first"
        )


def read_dicom_series(series: DicomSeries):
    """ITK float image of a validated, sorted series (ITK ``ImageSeriesReader`` + ``GDCMImageIO``).

    Spacing along the normal is the median distance between slice positions. Raises
    :class:`CTLoadError` when the series fails the checks of :func:`load_ct`.
    """
    import itk

    _validate_series(series)
    image_type = itk.Image[itk.F, 3]
    io = itk.GDCMImageIO.New()
    reader = itk.ImageSeriesReader[image_type].New(ImageIO=io)
    reader.SetFileNames([str(f) for f in series.files])
    reader.SetMetaDataDictionaryArrayUpdate(False)
    try:
        reader.Update()
    except RuntimeError as e:
        raise CTLoadError(f"{series.folder}: ITK/GDCM could not read the series pixels ({str(e).strip()[-300:]}); "
                          "check the files are complete") from e
    image = reader.GetOutput()
    # GDCM's slice spacing can come from SpacingBetweenSlices/SliceThickness; the positions are the truth
    sp = list(image.GetSpacing())
    sp[2] = float(np.median(np.diff(series.positions_mm)))
    image.SetSpacing(sp)
    return image


# ---------------------------------------------------------------------------------------- loading
def _is_volume_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in _VOLUME_SUFFIXES)


def _resample_axis_aligned(image, source: str):
    """Resample an oblique ITK image onto an LPS axis-aligned grid covering it (linear, -1024 outside)."""
    import itk

    size = np.asarray(image.GetLargestPossibleRegion().GetSize(), dtype=np.int64)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    d = np.asarray(itk.array_from_matrix(image.GetDirection()), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=np.float64) * (size - 1)
    world = origin + (d @ (corners * spacing).T).T
    lo, hi = world.min(axis=0), world.max(axis=0)
    # each world axis keeps the spacing of the image axis closest to it
    new_spacing = spacing[np.argmax(np.abs(d), axis=1)]
    new_size = np.ceil((hi - lo) / new_spacing - 1e-6).astype(int) + 1
    image_type = type(image)
    f = itk.ResampleImageFilter[image_type, image_type].New(Input=image)
    f.SetInterpolator(itk.LinearInterpolateImageFunction[image_type, itk.D].New())
    f.SetOutputOrigin(lo.tolist())
    f.SetOutputSpacing(new_spacing.tolist())
    f.SetSize([int(s) for s in new_size])
    f.SetOutputDirection(itk.matrix_from_array(np.eye(3)))
    f.SetDefaultPixelValue(AIR_HU)
    f.Update()
    return f.GetOutput()


def _itk_to_metatensor(image, filename_or_obj: str, extra_meta: dict[str, Any], source: str):
    import itk
    import torch
    from monai.data import MetaTensor

    d = np.asarray(itk.array_from_matrix(image.GetDirection()), dtype=np.float64)
    if _signed_permutation(d) is None:
        image = _resample_axis_aligned(image, source)
        d = np.eye(3)
    arr_kji = itk.array_view_from_image(image)
    arr, spacing, origin = to_lps_axis_aligned(
        np.transpose(arr_kji, (2, 1, 0)), image.GetSpacing(), image.GetOrigin(), d, source=source
    )
    arr = arr.astype(np.float32, copy=True)
    if not np.all(np.isfinite(arr)):
        n_bad = int((~np.isfinite(arr)).sum())
        raise CTLoadError(f"{source}: {n_bad} voxels are NaN or inf; fix or mask them (e.g. set them to -1024 HU) and save again")
    arr[arr <= PADDING_THRESHOLD_HU] = AIR_HU
    affine_lps = lps_affine(spacing, origin)
    affine = lps_to_ras(affine_lps)
    meta = {
        "filename_or_obj": filename_or_obj,
        "spacing": spacing.copy(),
        "original_affine": affine.copy(),
        "space": "RAS",
        "original_channel_dim": float("nan"),
        "spatial_shape": np.asarray(arr.shape),
        "axcodes": "LPS",
        **extra_meta,
    }
    return MetaTensor(torch.from_numpy(arr[None]), affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def _check_nifti_finite(path: Path) -> None:
    """ITK's NIfTI reader silently turns NaN/inf into 0, so float NIfTI data are checked with nibabel."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as e:  # noqa: BLE001 - nibabel raises several types
        raise CTLoadError(f"{path}: not a readable NIfTI file ({e}); check the file") from e
    if img.get_data_dtype().kind != "f":
        return
    data = np.asanyarray(img.dataobj)
    bad = ~np.isfinite(data)
    if bad.any():
        raise CTLoadError(
            f"{path}: {int(bad.sum())} voxels are NaN or inf; fix or mask them (e.g. set them to -1024 HU) and save again"
        )


def _case_id(path: Path) -> str:
    name = path.name
    for s in _VOLUME_SUFFIXES + (".dcm",):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def load_ct(path: str | os.PathLike):
    """Load a CT (DICOM series/patient folder, DICOM file, NIfTI, MHA/MHD, NRRD) as an LPS HU volume.

    Args:
        path: see the module docstring for what is accepted.

    Returns:
        ``MetaTensor`` of shape ``(1, X, Y, Z)``, float32 HU, axes toward Left, Posterior, Superior,
        ``affine`` in MONAI's RAS convention (float64, 4x4). Meta: ``filename_or_obj`` (the given path),
        ``case_id`` (the file or folder name without extension), ``spacing`` (mm, x y z),
        ``original_affine``, ``space`` (``"RAS"``), ``axcodes`` (``"LPS"``), and for DICOM
        ``series_dir``, ``series_uid``, ``patient_id``, ``num_slices``, ``transfer_syntax``.

    Raises:
        CTLoadError: with the path, the problem and the fix (missing path, no DICOM, 1 slice,
            truncated file, non-CT modality, missing slices, non-uniform spacing, NaN/inf values,
            not a 3D volume).
    """
    import itk

    p = Path(path)
    if not p.exists():
        raise CTLoadError(f"{p}: no such file or folder; give a DICOM folder, a patient folder or a NIfTI/MHA file")
    extra: dict[str, Any] = {"case_id": _case_id(p.resolve())}
    if p.is_file() and _is_volume_file(p):
        if p.name.lower().endswith((".nii", ".nii.gz")):
            _check_nifti_finite(p)
        try:
            image = itk.imread(str(p), itk.F)
        except Exception as e:  # noqa: BLE001 - ITK raises several types
            msg = str(e).strip()[-300:]
            if "Image dimension" in msg or "dimension" in msg.lower():
                raise CTLoadError(f"{p}: not a 3D volume ({msg}); need a 3D CT") from e
            raise CTLoadError(f"{p}: ITK could not read the file ({msg}); check it is a valid 3D image") from e
        ndim = image.GetImageDimension()
        if ndim != 3:
            raise CTLoadError(f"{p}: image has {ndim} dimensions; need a 3D CT volume")
        return _itk_to_metatensor(image, str(p), extra, str(p))
    if p.is_file():
        hdr = _read_header(str(p))
        if hdr is None:
            raise CTLoadError(
                f"{p}: neither DICOM nor a known volume format ({', '.join(_VOLUME_SUFFIXES)}); give a CT file or folder"
            )
        uid = str(hdr[0].SeriesInstanceUID)
        matches = [s for s in find_dicom_series(p.parent, modality=None, recursive=False) if s.series_uid == uid]
        series = matches[0]
    else:
        series = select_ct_series(p)
    image = read_dicom_series(series)
    extra.update(
        series_dir=series.folder,
        series_uid=series.series_uid,
        patient_id=series.patient_id,
        num_slices=series.num_slices,
        transfer_syntax=series.transfer_syntax,
    )
    return _itk_to_metatensor(image, str(p), extra, series.folder)
