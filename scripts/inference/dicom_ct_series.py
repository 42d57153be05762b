"""A reconstruction as a DICOM CT series, to be stored back into the radiographs' study (PACS, DICOMweb STOW-RS).

Input: the reconstruction as :class:`scripts.inference.items.SaveReconstructiond` writes it, an ``(X, Y, Z)`` HU
volume and its 4x4 NIfTI affine in RAS (the project's output frame :data:`scripts.frame.FRAME`: array axes toward the
patient's Left, Posterior, Superior, 2.5 mm voxels, centred on the isocentre), and the two source radiographs'
DICOM datasets (headers are enough).

Output (:func:`ct_series`): one CT Image Storage instance (SOP class 1.2.840.10008.5.1.4.1.1.2) per slice along the
third array axis, in a new series of the source study:

* patient and study attributes copied from the first source (same StudyInstanceUID); new SeriesInstanceUID,
  SOPInstanceUIDs and FrameOfReferenceUID (the reconstruction's frame is the X-ray isocentre, not a scanner's);
* geometry from the affine: DICOM patient coordinates are LPS, so the RAS affine is turned into LPS with
  :data:`scripts.frame.LPS_TO_RAS` (its own inverse). Slice ``k`` holds ``volume[:, :, k]`` with DICOM rows along
  array axis 1 and columns along array axis 0 (pixel ``(r, c)`` = voxel ``(c, r, k)``), so ImageOrientationPatient is
  the LPS direction of axis 0 (along a row) then of axis 1 (down a column), PixelSpacing is ``[spacing of axis 1,
  spacing of axis 0]`` (DICOM PS3.3 C.7.6.2.1.1/C.7.6.2.1.3: row spacing first) and ImagePositionPatient is the LPS
  position of voxel ``(0, 0, k)``. Decimal strings are written with :func:`pydicom.valuerep.format_number_as_ds`
  (at most 16 characters, as precise as fits);
* HU as 16-bit unsigned pixels with RescaleSlope 1 and RescaleIntercept the frame's lowest HU, -1024 (or lower when
  the volume holds lower values), rounded to whole HU (half a HU at most; the network's output resolution is far coarser);
* ImageType ``DERIVED\\SECONDARY\\AXIAL``, DerivationDescription, SourceImageSequence naming both radiographs
  (SOP class and instance UIDs), SeriesDescription saying it is a reconstruction from two radiographs.

Why pydicom only, not highdicom: highdicom (ImagingDataCommons/highdicom, ``src/highdicom``) builds Segmentation,
SR, Parametric Map, Secondary Capture, Key Object Selection, Presentation State and annotation objects, and its
``highdicom.legacy`` package only *converts* an existing single-frame CT series into a Legacy Converted Enhanced
(multi-frame) CT image (``legacy/__init__.py``: SOP class 1.2.840.10008.5.1.4.1.1.2.2). It has no constructor for
single-frame CT Image Storage, the object every PACS and viewer (Orthanc, OHIF's MPR) reads, so it would add a
dependency without writing what is needed; pydicom (already pinned) writes the few modules of that IOD directly.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds
from scripts.frame import FRAME, LPS_TO_RAS

__all__ = ["ct_series", "slice_geometry", "write_ct_series", "SERIES_DESCRIPTION"]

SERIES_DESCRIPTION = "PerX2CT CT from PA + lateral radiographs (not a CT scan)"  # LO: 64 characters at most
#: patient, study and equipment-independent attributes copied from the source radiograph (when present)
COPIED = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
#: Type 2 attributes of the CT IOD that must be present (empty allowed) when the source has none
TYPE2_EMPTY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


#: DICOM PS3.10 7.1: the File Preamble's length in bytes, before the "DICM" prefix
_PREAMBLE = 128


def _ds(values) -> list[str]:
    return [format_number_as_ds(float(v)) for v in values]


def slice_geometry(affine_ras: np.ndarray, shape: Sequence[int]) -> dict:
    """DICOM plane geometry of the slices of a volume with NIfTI affine ``affine_ras`` (RAS, mm).

    Returns ``{"orientation": [6 floats], "pixel_spacing": [row, column] mm, "positions": (Z, 3) LPS mm,
    "spacing_between_slices": mm}``. Raises ``ValueError`` for an affine whose axes are not orthogonal (a shear
    has no DICOM CT image-plane representation).
    """
    a = np.asarray(affine_ras, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {a.shape}")
    lps = LPS_TO_RAS @ a  # RAS -> LPS: flip the first two world axes (LPS_TO_RAS is its own inverse)
    axes = lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"affine has a zero-length axis: {spacing}")
    unit = axes / spacing
    gram = unit.T @ unit
    if not np.allclose(gram, np.eye(3), atol=1e-6):
        raise ValueError("affine axes are not orthogonal; a DICOM CT series cannot represent a sheared volume")
    n = int(shape[2])
    positions = np.stack([lps[:3, 3] + k * lps[:3, 2] for k in range(n)])
    return {
        "orientation": [*unit[:, 0], *unit[:, 1]],
        "pixel_spacing": [spacing[1], spacing[0]],
        "positions": positions,
        "spacing_between_slices": float(spacing[2]),
        "normal": unit[:, 2],
    }


def _hu_pixels(volume_hu: np.ndarray) -> tuple[np.ndarray, float]:
    """``(uint16 pixels (X, Y, Z), RescaleIntercept)`` with slope 1: HU = pixel + intercept, rounded to 1 HU.

    The intercept is the output frame's lowest HU (target scale 0: -1024 HU, air), or lower if the volume is."""
    hu = np.asarray(volume_hu, dtype=np.float64)
    if not np.all(np.isfinite(hu)):
        raise ValueError("the reconstruction holds NaN or infinite values")
    low = float(np.floor(hu.min()))
    intercept = min(float(FRAME.target_to_hu(0.0)), low)
    stored = np.rint(hu - intercept)
    if stored.max() > 65535:
        raise ValueError(f"HU range {hu.min():g} to {hu.max():g} does not fit 16 bits with slope 1")
    return stored.astype(np.uint16), intercept


def ct_series(
    volume_hu: np.ndarray,
    affine_ras: np.ndarray,
    sources: Sequence[Dataset],
    series_number: int = 9001,
    series_description: str = SERIES_DESCRIPTION,
    series_uid: str | None = None,
    now: datetime.datetime | None = None,
) -> list[Dataset]:
    """The CT series (one dataset per slice ``k`` of ``volume_hu[:, :, k]``) of a reconstruction; module doc.

    Args:
        volume_hu: ``(X, Y, Z)`` Hounsfield units (float), e.g. 128^3.
        affine_ras: its 4x4 NIfTI affine (RAS, mm), e.g. :func:`scripts.inference.items.reconstruction_affine`.
        sources: the radiographs it was made from (pydicom datasets; pixel data not needed). The first gives the
            patient and study attributes; all must share one StudyInstanceUID.
        series_number: SeriesNumber of the new series.
        series_description: SeriesDescription.
        series_uid: the new SeriesInstanceUID (default: a new one).
        now: the content date and time (default: now, UTC).

    Returns:
        The datasets (``FileDataset`` with a preamble and file meta, explicit VR little endian), InstanceNumber 1..Z,
        so that even a plain ``pydicom.dcmwrite`` (dicomweb_client's STOW-RS encoder) writes DICOM Part 10 files.
    """
    vol = np.asarray(volume_hu)
    if vol.ndim != 3:
        raise ValueError(f"the reconstruction must be (X, Y, Z) HU, got shape {vol.shape}")
    if not sources:
        raise ValueError("a derived CT series needs its source radiographs (SourceImageSequence)")
    studies = {str(s.get("StudyInstanceUID", "")) for s in sources}
    if len(studies) != 1 or "" in studies:
        raise ValueError(f"the source radiographs must belong to one study, got StudyInstanceUIDs {sorted(studies)}")
    geometry = slice_geometry(affine_ras, vol.shape)
    pixels, intercept = _hu_pixels(vol)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    first = sources[0]
    refs = []
    for s in sources:
        item = Dataset()
        item.ReferencedSOPClassUID = s.SOPClassUID
        item.ReferencedSOPInstanceUID = s.SOPInstanceUID
        refs.append(item)
    datasets = []
    for k in range(vol.shape[2]):
        meta = FileMetaDataset()
        ds = FileDataset("", Dataset(), file_meta=meta, preamble=bytes(_PREAMBLE))  # Part 10 from any writer
        for name in COPIED:
            if name in first:
                setattr(ds, name, first.data_element(name).value)
        for name in TYPE2_EMPTY:
            if name not in ds:
                setattr(ds, name, "")
        sop_uid = generate_uid()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.Modality = "CT"
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, int(series_number), series_description
        ds.SeriesDate, ds.SeriesTime, ds.ContentDate, ds.ContentTime = date, time, date, time
        ds.InstanceNumber = k + 1
        ds.Manufacturer = "PerX2CT"
        ds.ManufacturerModelName = "PerX2CT MONAI bundle"
        ds.DerivationDescription = "CT volume reconstructed by PerX2CT from a PA and a lateral chest radiograph"
        ds.SourceImageSequence = DicomSequence([Dataset(r) for r in refs])
        ds.BurnedInAnnotation = "NO"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.ImageOrientationPatient = _ds(geometry["orientation"])
        ds.ImagePositionPatient = _ds(geometry["positions"][k])
        ds.PixelSpacing = _ds(geometry["pixel_spacing"])
        ds.SliceThickness = format_number_as_ds(geometry["spacing_between_slices"])
        ds.SpacingBetweenSlices = format_number_as_ds(geometry["spacing_between_slices"])
        ds.SliceLocation = format_number_as_ds(float(np.dot(geometry["positions"][k], geometry["normal"])))
        ds.KVP, ds.AcquisitionNumber = "", ""  # CT Image module, type 2: no acquisition
        plane = np.ascontiguousarray(pixels[:, :, k].T)  # (rows = axis 1, columns = axis 0)
        ds.Rows, ds.Columns = int(plane.shape[0]), int(plane.shape[1])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = format_number_as_ds(intercept), "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "-600", "1500"  # lung window
        ds.WindowCenterWidthExplanation = "LUNG"
        ds.PixelData = plane.tobytes()
        ds["PixelData"].VR = "OW"
        datasets.append(ds)
    return datasets


def write_ct_series(datasets: Sequence[Dataset], folder: str | Path) -> list[Path]:
    """Write the series as ``folder/CT_<nnnn>.dcm`` (DICOM Part 10 files); returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"CT_{int(ds.InstanceNumber):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
