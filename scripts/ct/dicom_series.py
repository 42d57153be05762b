"""Which DICOM series of a folder is the CT: discovery and selection of series, from headers alone.

* :func:`find_dicom_series` - every DICOM series under a folder (a series folder, or a patient folder in TCIA
  layout ``patient/study/series/*.dcm``), from headers only (pydicom, no pixels): non-DICOM files (e.g. the
  LIDC ``*.xml`` annotations), unreadable files and DICOMDIR files are ignored. Files are grouped by
  ``SeriesInstanceUID`` and ordered by ``ImagePositionPatient`` (IPP) projected on the slice normal (the cross
  product of the two ``ImageOrientationPatient`` vectors), in mm, never by file name, file order or
  ``InstanceNumber``.
* :func:`choose_ct_series` / :func:`select_ct_series` - one series per case: in a folder with several series,
  the CT series with the most slices is used (ties: the longer coverage, then the smaller
  ``SeriesInstanceUID``); the others are returned as left out (:func:`scripts.ct.loader.load_ct` records the chosen
  series and every series left out in its meta, ``series`` and ``series_left_out``, and logs them).
* :func:`series_of_file` - the series a single DICOM file belongs to, from the files in its folder.
* :class:`DicomSeries` - one series found: its files in slice order, positions along the normal (mm), headers.

Reading a series' pixels at the header's geometry is :mod:`scripts.ct.dicom_reader`'s. A folder without DICOM or
without a CT series raises :class:`~scripts.errors.CTLoadError` naming the folder and the fix.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from scripts.errors import CTLoadError

__all__ = [
    "DicomSeries",
    "find_dicom_series",
    "select_ct_series",
    "choose_ct_series",
    "series_of_file",
    "instance_number_direction",
]

logger = logging.getLogger(__name__)


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

    @property
    def coverage_mm(self) -> float:
        """Distance between the first and last slice positions along the normal, mm (0 if unknown)."""
        pos = self.positions_mm
        return float(pos[-1] - pos[0]) if len(pos) > 1 and np.all(np.isfinite(pos)) else 0.0

    def describe(self) -> dict[str, Any]:
        """``{"uid", "modality", "description", "slices", "kernel", "coverage_mm", "folder"}`` (JSON-ready)."""
        h = self.headers[0] if self.headers else None
        kernel = getattr(h, "ConvolutionKernel", "") if h is not None else ""
        if not isinstance(kernel, str):  # multi-valued (e.g. Siemens ["B40f", ...])
            kernel = "\\".join(str(k) for k in kernel)
        return {
            "uid": self.series_uid,
            "modality": self.modality,
            "description": str(getattr(h, "SeriesDescription", "") or "") if h is not None else "",
            "slices": self.num_slices,
            "kernel": str(kernel or ""),
            "coverage_mm": round(self.coverage_mm, 2),
            "folder": self.folder,
        }


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


def find_dicom_series(
    folder: str | os.PathLike, modality: str | None = "CT", recursive: bool = True, unreadable: list[str] | None = None
) -> list[DicomSeries]:
    """All DICOM series under ``folder``, most slices first.

    Reads headers only (pydicom, ``stop_before_pixels=True``, ``force=False``); files that are not
    DICOM or cannot be read are ignored, as are DICOMDIR files. Files are grouped by
    ``SeriesInstanceUID`` and ordered by ``ImagePositionPatient`` along the slice normal (files
    without position or orientation keep their name order and are rejected at load time).

    Args:
        folder: a series folder or a patient / study folder (searched recursively by default).
        modality: keep only series of this modality (``None``: all).
        recursive: search sub-folders (folder links are followed, never into a folder already visited).
        unreadable: if given, ``"path: reason"`` of every folder or entry that could not be read is appended.

    Returns:
        list of :class:`DicomSeries`, sorted by number of slices (descending), then series UID.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CTLoadError(f"{folder}: not a folder; give a DICOM series folder, a patient folder or a volume file")
    paths = _list_files(folder, recursive, unreadable if unreadable is not None else [])
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
    series.sort(key=lambda s: (-s.num_slices, -s.coverage_mm, s.series_uid))
    return series


def _list_files(folder: Path, recursive: bool, unreadable: list[str]) -> list[str]:
    """Files under ``folder`` (sorted per folder). Folder links are followed, but never into a folder
    already visited (a link to ``.`` or to a parent is skipped); unreadable folders, broken or looping
    links are skipped with a debug line."""
    paths: list[str] = []
    visited: set[str] = set()
    stack = [str(folder)]
    while stack:
        d = stack.pop()
        real = os.path.realpath(d)
        if real in visited:
            logger.debug("skipping %s: folder already visited (link to %s)", d, real)
            continue
        visited.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            logger.debug("skipping unreadable folder %s (%s)", d, e.strerror or e)
            unreadable.append(f"{d}: {e.strerror or e}")
            continue
        subdirs = []
        for e in entries:
            try:
                if e.is_dir():
                    subdirs.append(e.path)
                elif e.is_file():
                    paths.append(e.path)
            except OSError as err:  # looping link, permission
                logger.debug("skipping %s (%s)", e.path, err.strerror or err)
                unreadable.append(f"{e.path}: {err.strerror or err}")
        if recursive:
            stack.extend(reversed(subdirs))
    return paths


def select_ct_series(folder: str | os.PathLike, recursive: bool = True) -> DicomSeries:
    """The CT series with the most slices under ``folder`` (see :func:`choose_ct_series`)."""
    return choose_ct_series(folder, recursive)[0]


def choose_ct_series(folder: str | os.PathLike, recursive: bool = True) -> tuple[DicomSeries, list[DicomSeries]]:
    """``(chosen, left_out)``: the CT series with the most slices under ``folder`` (ties: the longer
    coverage, then the smaller UID) and every other series found (any modality), in that order.

    Raises :class:`CTLoadError` with the reason (no DICOM at all, or only other modalities)."""
    unreadable: list[str] = []
    everything = find_dicom_series(folder, modality=None, recursive=recursive, unreadable=unreadable)
    if not everything and unreadable:
        raise CTLoadError(
            f"{folder}: no DICOM files found; {len(unreadable)} entries could not be read (first: "
            f"{unreadable[0]}); fix their permissions or links"
        )
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
    return cts[0], [x for x in everything if x is not cts[0]]


def series_of_file(path: str | os.PathLike) -> tuple[DicomSeries, list[DicomSeries]] | None:
    """``(series, others)``: the series the DICOM file ``path`` belongs to, found among the files of its folder
    (not its sub-folders), and every other series there (any modality); ``None`` when ``path`` is not DICOM."""
    hdr = _read_header(str(path))
    if hdr is None:
        return None
    uid = str(hdr[0].SeriesInstanceUID)
    everything = find_dicom_series(Path(path).parent, modality=None, recursive=False)
    series = [s for s in everything if s.series_uid == uid][0]
    return series, [s for s in everything if s is not series]


def instance_number_direction(series: DicomSeries) -> str:
    """``"S"`` or ``"I"``: toward which end (LPS z) ``InstanceNumber`` increases; ``""`` if unknown."""
    try:
        inst = [int(ds.InstanceNumber) for ds in (series.headers[0], series.headers[-1])]
        z = [float(ds.ImagePositionPatient[2]) for ds in (series.headers[0], series.headers[-1])]
    except (AttributeError, TypeError, ValueError):
        return ""
    if inst[0] == inst[1] or z[0] == z[1]:
        return ""
    return "S" if (inst[1] - inst[0]) * (z[1] - z[0]) > 0 else "I"
