"""Load a CT from any source as an axis-aligned LPS volume in Hounsfield units: :func:`load_ct`.

Accepted inputs (:func:`load_ct`):

* a DICOM series folder, or a patient folder in TCIA layout (``patient/study/series/*.dcm``):
  the CT series with the most slices is chosen (:func:`scripts.ct.dicom_series.choose_ct_series`); non-DICOM
  files (e.g. the LIDC ``*.xml`` annotations) and unreadable files are ignored;
* a single DICOM file: the series it belongs to, from the files in its folder;
* a NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``, ``.mhd``) or NRRD (``.nrrd``, ``.nhdr``) file.

A DICOM series is placed by its header (:mod:`scripts.ct.dicom_reader`: ``ImagePositionPatient``,
``ImageOrientationPatient``, ``PixelSpacing``), never by ITK/GDCM's reading of it; the chosen series
(``meta["series"]``: UID, description, slices, kernel) and every series left out (``meta["series_left_out"]``)
are recorded and the left-out series logged.

Plausibility (:class:`~scripts.ct.chest_check.ChestCTCheck`, used by ``LoadCT``): before any pixel is read, a
CT that cannot be a chest CT is refused with what was found and what is expected. :func:`load_ct` alone does
not check (``check=None``).

Output convention (:func:`load_ct`): a MONAI :class:`~monai.data.MetaTensor` of shape
``(1, X, Y, Z)``, float32 HU, array axes toward the patient's Left, Posterior, Superior
(nibabel axcodes ``"LPS"``), voxel ``[0, 0, 0]`` at the right-anterior-inferior corner, identity
direction cosines in LPS. ``affine`` follows MONAI's convention (RAS world, what
``monai.data.ITKReader(affine_lps_to_ras=True)`` gives): ``affine = diag(-1, -1, 1, 1) @ affine_lps``
(:mod:`scripts.ct.lps`). Values at or below -2000 HU (:data:`PADDING_THRESHOLD_HU`: padding outside the scan
circle, e.g. -2048 or -3024) become -1024 (:data:`AIR_HU`).

Orientation: when the direction matrix is a signed permutation (within 1e-3; the usual axial,
coronal or sagittal acquisitions, any flips), the array is permuted/flipped, which is exact
(:func:`scripts.ct.lps.to_lps_axis_aligned`). Otherwise (oblique or gantry-tilted acquisitions) the volume is
resampled by ITK (linear) onto an axis-aligned LPS grid that covers it, with the smallest input spacing kept per
axis nearest to it; new voxels outside the scan read -1024 HU.

Every problem with the input raises :class:`~scripts.errors.CTLoadError` (a ``ValueError``) naming the path
and the fix.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from scripts.ct.chest_check import ChestCTCheck
from scripts.ct.dicom_reader import read_dicom_series
from scripts.ct.dicom_series import choose_ct_series, instance_number_direction, series_of_file
from scripts.ct.itk_modules import array_to_matrix, image_array_view, itk_class, matrix_to_array
from scripts.ct.lps import lps_affine, lps_to_ras, signed_permutation, to_lps_axis_aligned
from scripts.errors import CTLoadError

__all__ = ["load_ct", "load_ct_array", "PADDING_THRESHOLD_HU", "AIR_HU"]

#: Voxels at or below this value are padding outside the scan circle.
PADDING_THRESHOLD_HU = -2000.0
#: Value given to padding voxels and to voxels created by resampling outside the scan.
AIR_HU = -1024.0

_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")
logger = logging.getLogger(__name__)


def _is_volume_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in _VOLUME_SUFFIXES)


def _resample_axis_aligned(image, source: str):
    """Resample an oblique ITK image onto an LPS axis-aligned grid covering it (linear, -1024 outside)."""
    import itk

    size = np.asarray(image.GetLargestPossibleRegion().GetSize(), dtype=np.int64)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    d = matrix_to_array(image.GetDirection())
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
    f.SetOutputDirection(array_to_matrix(np.eye(3)))
    f.SetDefaultPixelValue(AIR_HU)
    f.Update()
    return f.GetOutput()


def _itk_to_array(image, filename_or_obj: str, extra_meta: dict[str, Any], source: str, c_order: bool = True):
    """An ITK image -> ``(array (X, Y, Z) float32 LPS HU, affine (4, 4) RAS float64, meta)``: no torch, no MONAI.
    ``c_order=False``: the array is left in the memory order the re-orientation gives (no transposing copy)."""
    d = matrix_to_array(image.GetDirection())
    if signed_permutation(d) is None:
        image = _resample_axis_aligned(image, source)
        d = np.eye(3)
    arr_kji = image_array_view(image)
    arr, spacing, origin = to_lps_axis_aligned(
        np.transpose(arr_kji, (2, 1, 0)), image.GetSpacing(), image.GetOrigin(), d, source=source, contiguous=False
    )
    # one copy (a buffer of its own, not the ITK image's), transposing into C order only when asked
    arr = np.array(arr, dtype=np.float32, order="C" if c_order else "K")
    if not np.isfinite(arr.sum(dtype=np.float64)):  # one pass; any NaN or inf makes the sum non-finite
        n_bad = int((~np.isfinite(arr)).sum())
        if n_bad:
            raise CTLoadError(
                f"{source}: {n_bad} voxels are NaN or inf; fix or mask them (e.g. set them to -1024 HU) and save again"
            )
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
    return arr, affine, meta


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


#: volume file suffix -> ITK ImageIO (wrapper module, class) that reads it
_VOLUME_IO = {
    ".nii": ("itkNiftiImageIOPython", "itkNiftiImageIO"),
    ".nii.gz": ("itkNiftiImageIOPython", "itkNiftiImageIO"),
    ".mha": ("itkMetaImageIOPython", "itkMetaImageIO"),
    ".mhd": ("itkMetaImageIOPython", "itkMetaImageIO"),
    ".nrrd": ("itkNrrdImageIOPython", "itkNrrdImageIO"),
    ".nhdr": ("itkNrrdImageIOPython", "itkNrrdImageIO"),
}


def _volume_io(path: Path):
    """The ImageIO of a 3D volume file, named up front by its suffix (``itk.imread`` and ``itk.ImageFileReader``
    would load every IO module and factory first: :mod:`scripts.ct.itk_modules`), with the header read; ``None``
    when the file is not 3D, has a zero spacing or that reader cannot take it: the callers then do what they did
    before, through ITK's lazy loader (``itk.imread`` reads the file or says why)."""
    name = path.name.lower()
    module, cls = next(v for k, v in sorted(_VOLUME_IO.items(), key=lambda kv: -len(kv[0])) if name.endswith(k))
    io_type = itk_class(module, cls, lambda: None)
    if io_type is None:
        return None
    io = io_type.New()
    if not io.CanReadFile(str(path)):
        return None
    io.SetFileName(str(path))
    try:
        io.ReadImageInformation()
    except RuntimeError:
        return None
    if io.GetNumberOfDimensions() != 3 or any(io.GetSpacing(i) == 0 for i in range(3)):
        return None
    return io


def _read_3d_volume(path: Path, io):
    """A 3D volume file as a float ITK image, read through ``io`` (:func:`_volume_io`), or ``None``."""
    reader_type = itk_class("itkImageFileReaderPython", "itkImageFileReaderIF3", lambda: None)
    if io is None or reader_type is None:
        return None
    reader = reader_type.New()
    reader.SetImageIO(io)
    reader.SetFileName(str(path))
    reader.Update()
    return reader.GetOutput()


def _case_id(path: Path) -> str:
    name = path.name
    for s in _VOLUME_SUFFIXES + (".dcm",):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return name


def _check_volume_file(p: Path, check: ChestCTCheck, io=None) -> None:
    """Apply ``check`` to a volume file's header (ITK reads the header only): from ``io`` (:func:`_volume_io`) when
    given, as ``ImageFileReader`` would give it (a negative spacing becomes positive, its axis flipped), else
    through ITK's ``ImageFileReader``."""
    if io is not None:
        size = np.asarray([io.GetDimensions(i) for i in range(3)], dtype=np.int64)
        spacing = np.abs(np.asarray([io.GetSpacing(i) for i in range(3)], dtype=np.float64))
        d = np.abs(np.asarray([list(io.GetDirection(i))[:3] for i in range(3)], dtype=np.float64).T)
    else:
        import itk

        try:
            reader = itk.ImageFileReader[itk.Image[itk.F, 3]].New(FileName=str(p))
            reader.UpdateOutputInformation()
        except Exception:  # noqa: BLE001 - the full read reports the problem with its own message
            return
        image = reader.GetOutput()
        size = np.asarray(image.GetLargestPossibleRegion().GetSize(), dtype=np.int64)
        spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
        d = np.abs(matrix_to_array(image.GetDirection()))
    axis = np.argmax(d, axis=1)  # image axis nearest to each world axis (L, P, S)
    if sorted(axis.tolist()) != [0, 1, 2]:
        return
    check(size[axis], spacing[axis], str(p))


def load_ct(path: str | os.PathLike, check: ChestCTCheck | None = None):
    """Load a CT (DICOM series/patient folder, DICOM file, NIfTI, MHA/MHD, NRRD) as an LPS HU volume.

    Args:
        path: see the module docstring for what is accepted.
        check: plausibility limits (:class:`~scripts.ct.chest_check.ChestCTCheck`) applied to the header
            before the pixels are read; ``None`` (default): no check.

    Returns:
        ``MetaTensor`` of shape ``(1, X, Y, Z)``, float32 HU, axes toward Left, Posterior, Superior,
        ``affine`` in MONAI's RAS convention (float64, 4x4). Meta: ``filename_or_obj`` (the given path),
        ``case_id`` (the file or folder name without extension), ``spacing`` (mm, x y z),
        ``original_affine``, ``space`` (``"RAS"``), ``axcodes`` (``"LPS"``), and for DICOM
        ``series_dir``, ``series_uid``, ``patient_id``, ``num_slices``, ``transfer_syntax``, ``series``
        (the chosen series, :meth:`~scripts.ct.dicom_series.DicomSeries.describe`), ``series_left_out`` (the others),
        ``tilt_deg`` (angle between the slice step and the normal), ``geometry_note`` (non-empty when
        ITK/GDCM's own placement differed from the header's) and ``instance_number_increases_toward``
        (``"S"``, ``"I"`` or ``""``).

    Raises:
        CTLoadError: with the path, the problem and the fix (missing path, no DICOM, 1 slice,
            truncated file, non-CT modality, missing slices, non-uniform spacing, NaN/inf values,
            not a 3D volume).
    """
    import torch  # torch and MONAI here, not at the top: load_ct_array (the DRR command) needs neither
    from monai.data import MetaTensor

    arr, affine, meta = load_ct_array(path, check)
    return MetaTensor(torch.from_numpy(arr[None]), affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def load_ct_array(path: str | os.PathLike, check: ChestCTCheck | None = None, *, c_order: bool = True):
    """:func:`load_ct` without torch or MONAI (what ``python -m scripts drr`` needs, and faster to import).

    ``c_order=False`` skips the transposing copy into C order: the ``(X, Y, Z)`` array then usually lies in Fortran
    order (x fastest, ITK's own layout, which the ITK ray caster views without a copy); same values.

    Returns:
        ``(array, affine, meta)``: ``(X, Y, Z)`` float32 HU (no channel axis), axes toward Left, Posterior,
        Superior; ``affine`` the (4, 4) float64 RAS affine; ``meta`` the dict :func:`load_ct` attaches.
        Same inputs, checks and errors as :func:`load_ct`.
    """
    import itk

    p = Path(path)
    if not p.exists():
        raise CTLoadError(f"{p}: no such file or folder; give a DICOM folder, a patient folder or a NIfTI/MHA file")
    extra: dict[str, Any] = {"case_id": _case_id(p.resolve())}
    if p.is_file() and _is_volume_file(p):
        io = _volume_io(p)
        if check is not None:
            _check_volume_file(p, check, io)
        if p.name.lower().endswith((".nii", ".nii.gz")):
            _check_nifti_finite(p)
        try:
            image = _read_3d_volume(p, io)
            if image is None:  # not a plain 3D file of its format's reader: ITK picks the reader (and reports)
                image = itk.imread(str(p), itk.F)
        except Exception as e:  # noqa: BLE001 - ITK raises several types
            msg = str(e).strip()[-300:]
            if "Image dimension" in msg or "dimension" in msg.lower():
                raise CTLoadError(f"{p}: not a 3D volume ({msg}); need a 3D CT") from e
            raise CTLoadError(f"{p}: ITK could not read the file ({msg}); check it is a valid 3D image") from e
        ndim = image.GetImageDimension()
        if ndim != 3:
            raise CTLoadError(f"{p}: image has {ndim} dimensions; need a 3D CT volume")
        return _itk_to_array(image, str(p), extra, str(p), c_order)
    if p.is_file():
        found = series_of_file(p)
        if found is None:
            raise CTLoadError(
                f"{p}: neither DICOM nor a known volume format ({', '.join(_VOLUME_SUFFIXES)}); give a CT file or folder"
            )
        series, left_out = found
    else:
        series, left_out = choose_ct_series(p)
    if left_out:
        logger.info(
            "%s: using CT series %s (%d slices); left out: %s",
            p,
            series.series_uid,
            series.num_slices,
            "; ".join(f"{s.modality} series {s.series_uid} ({s.num_slices} slices)" for s in left_out),
        )
    image, note = read_dicom_series(series, check=check)
    d = matrix_to_array(image.GetDirection())
    normal = np.cross(d[:, 0], d[:, 1])
    extra.update(
        series_dir=series.folder,
        series_uid=series.series_uid,
        patient_id=series.patient_id,
        num_slices=series.num_slices,
        transfer_syntax=series.transfer_syntax,
        series=series.describe(),
        series_left_out=[s.describe() for s in left_out],
        tilt_deg=round(float(np.degrees(np.arccos(min(1.0, abs(float(normal @ d[:, 2])))))), 3),
        geometry_note=note,
        instance_number_increases_toward=instance_number_direction(series),
    )
    return _itk_to_array(image, str(p), extra, series.folder, c_order)
