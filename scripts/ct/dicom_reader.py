"""Reading one DICOM CT series: its checks, its geometry from the header, and its pixels placed there.

Geometry comes from the DICOM header, always (:func:`series_geometry`): every voxel is placed where its slice's
``ImagePositionPatient`` (IPP), ``ImageOrientationPatient`` (IOP) and ``PixelSpacing`` put it, in mm (LPS).
Slices are ordered by IPP projected on the slice normal (the cross product of the two IOP vectors; see
:func:`scripts.ct.dicom_series.find_dicom_series`); the slice step is the vector from the first to the last IPP
divided by ``slices - 1`` (so ``SpacingBetweenSlices`` is never read: negative, absent or wrong, it changes
nothing; head-first and feet-first series alike). A gantry-tilted series (slice step not along the normal) is a
sheared grid (direction matrix not orthogonal); :func:`scripts.ct.loader.load_ct` resamples it like any oblique
image, at the header's positions.

Pixels are read by ITK (:func:`read_dicom_series`: ``ImageSeriesReader`` + ``GDCMImageIO``, so compressed
transfer syntaxes read like uncompressed ones; GDCM applies ``RescaleSlope``/``RescaleIntercept``: HU), then
the image's origin, spacing and direction are set from the header; when ITK/GDCM had placed the series
differently, a warning says so and the returned note records it (``meta["geometry_note"]``).

Before any pixel is read, the series is checked (one stack of parallel slices of one size, the tags that place
a slice, complete uncompressed pixel data, no duplicate or missing slices, uniform spacing) and, if given, a
:class:`~scripts.ct.chest_check.ChestCTCheck` is applied to its header; a failure raises
:class:`~scripts.errors.CTLoadError` naming the file or folder and the fix.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from scripts.ct.chest_check import ChestCTCheck
from scripts.ct.dicom_series import DicomSeries
from scripts.ct.itk_modules import array_to_matrix, itk_class, matrix_to_array
from scripts.errors import CTLoadError

__all__ = ["series_geometry", "read_dicom_series"]

# transfer syntaxes whose pixel data is stored uncompressed (length can be checked from the header)
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
logger = logging.getLogger(__name__)


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
                raise CTLoadError(
                    f"{f}: DICOM tag {tag} missing; cannot place the slice in 3D, need a standard CT series"
                )
        if (ds.Rows, ds.Columns) != (h0.Rows, h0.Columns):
            raise CTLoadError(
                f"{f}: slice size {ds.Rows}x{ds.Columns} differs from {h0.Rows}x{h0.Columns} of {s.files[0]}; "
                "the folder mixes series, keep one series per folder"
            )
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        if np.abs(iop - np.asarray([float(v) for v in h0.ImageOrientationPatient])).max() > 1e-3:
            raise CTLoadError(
                f"{f}: ImageOrientationPatient differs from the first slice; need one stack of parallel slices"
            )
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


def series_geometry(series: DicomSeries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(origin_mm, spacing_mm, direction)`` of a sorted series, from its DICOM header alone (LPS, ITK style).

    * origin: ``ImagePositionPatient`` of the first slice (lowest along the normal);
    * spacing: (column spacing, row spacing) from ``PixelSpacing`` (which is row, column), then the
      length of the slice step;
    * direction (3 x 3, columns = image axes): the IOP row vector, the IOP column vector, and the unit
      slice step ``(IPP_last - IPP_first) / (n - 1)``, which equals the normal unless the gantry was
      tilted (then the grid is sheared and the matrix not orthogonal).

    Raises :class:`CTLoadError` when slice positions do not lie on one line at equal steps.
    """
    h0 = series.headers[0]
    iop = np.asarray([float(v) for v in h0.ImageOrientationPatient], dtype=np.float64)
    row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    ipp = np.asarray([[float(v) for v in ds.ImagePositionPatient] for ds in series.headers], dtype=np.float64)
    n = len(ipp)
    step = (ipp[-1] - ipp[0]) / (n - 1)
    length = float(np.linalg.norm(step))
    drift = np.linalg.norm(ipp - (ipp[0] + np.arange(n)[:, None] * step), axis=1)
    if drift.max() > max(0.1 * length, 0.01):
        i = int(np.argmax(drift))
        raise CTLoadError(
            f"{series.folder}: slice {os.path.basename(series.files[i])} lies {drift[i]:.2f} mm off the line of "
            "the other slices' ImagePositionPatient; the folder mixes stacks, keep one series per folder"
        )
    normal = np.cross(row, col)
    unit = step / length
    if np.linalg.norm(unit - normal * np.sign(unit @ normal)) < 1e-4:
        unit = normal * np.sign(unit @ normal)
    ps = [float(v) for v in h0.PixelSpacing]
    direction = np.stack([row, col, unit], axis=1)
    return ipp[0].copy(), np.asarray([ps[1], ps[0], length]), direction


def _describe_geometry(origin, spacing, direction) -> str:
    return (
        f"origin {np.round(np.asarray(origin), 2).tolist()} mm, spacing {np.round(np.asarray(spacing), 3).tolist()} mm, "
        f"slice axis {np.round(np.asarray(direction)[:, 2], 3).tolist()}"
    )


def read_dicom_series(series: DicomSeries, check: ChestCTCheck | None = None):
    """ITK float image of a validated, sorted series (ITK ``ImageSeriesReader`` + ``GDCMImageIO`` for the
    pixels), with origin, spacing and direction from the header (:func:`series_geometry`).

    Args:
        series: a series from :func:`find_dicom_series`.
        check: plausibility limits applied to the header before the pixels are read (``None``: none).

    Returns ``(image, note)``: ``note`` is empty, or says how ITK/GDCM's own placement differed from the
    header's (the header's is used). Raises :class:`CTLoadError` when the series fails a check.
    """
    import itk

    _validate_series(series)
    origin, spacing, direction = series_geometry(series)
    if check is not None:
        check((series.headers[0].Columns, series.headers[0].Rows, series.num_slices), spacing, series.folder)
    # each class from its own wrapper module (scripts.ct.itk_modules: ITK's lazy loader would load every IO module)
    io = itk_class("itkGDCMImageIOPython", "itkGDCMImageIO", lambda: itk.GDCMImageIO).New()
    reader_type = itk_class(
        "itkImageSeriesReaderPython", "itkImageSeriesReaderIF3", lambda: itk.ImageSeriesReader[itk.Image[itk.F, 3]]
    )
    reader = reader_type.New()
    reader.SetImageIO(io)
    reader.SetFileNames([str(f) for f in series.files])
    reader.SetMetaDataDictionaryArrayUpdate(False)
    try:
        reader.Update()
    except RuntimeError as e:
        raise CTLoadError(
            f"{series.folder}: ITK/GDCM could not read the series pixels ({str(e).strip()[-300:]}); "
            "check the files are complete"
        ) from e
    image = reader.GetOutput()
    size = tuple(int(v) for v in image.GetLargestPossibleRegion().GetSize())
    h0 = series.headers[0]
    if size != (int(h0.Columns), int(h0.Rows), series.num_slices):
        raise CTLoadError(
            f"{series.folder}: ITK read {size[0]}x{size[1]}x{size[2]} voxels, the header says "
            f"{h0.Columns}x{h0.Rows}x{series.num_slices}; re-export the series"
        )
    # the header is the truth: GDCM may take the slice spacing from SpacingBetweenSlices (even negative)
    # and turn the slice axis with it
    itk_geometry = (
        np.asarray(image.GetOrigin()),
        np.asarray(image.GetSpacing()),
        matrix_to_array(image.GetDirection()),
    )
    note = ""
    itk_last = itk_geometry[0] + itk_geometry[2] @ (itk_geometry[1] * (np.asarray(size) - 1))
    ours_last = origin + direction @ (spacing * (np.asarray(size) - 1))
    if np.abs(itk_geometry[0] - origin).max() > 1e-2 or np.abs(itk_last - ours_last).max() > 1e-2:
        note = (
            f"ITK/GDCM placed the series at {_describe_geometry(*itk_geometry)}; its header says "
            f"{_describe_geometry(origin, spacing, direction)} (used)"
        )
        logger.warning("%s: %s", series.folder, note)
    image.SetOrigin(origin.tolist())
    image.SetSpacing(spacing.tolist())
    image.SetDirection(array_to_matrix(direction))
    return image, note
