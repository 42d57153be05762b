"""Find and load a chest CT as an axis-aligned LPS volume in Hounsfield units.

Accepted inputs (:func:`load_ct`):

* a DICOM series folder, or a patient folder in TCIA layout (``patient/study/series/*.dcm``):
  the CT series with the most slices is chosen; non-DICOM files (e.g. the LIDC ``*.xml``
  annotations) and unreadable files are ignored;
* a single DICOM file: the series it belongs to, from the files in its folder;
* a NIfTI (``.nii``, ``.nii.gz``), MetaImage (``.mha``, ``.mhd``) or NRRD (``.nrrd``, ``.nhdr``) file.

Geometry comes from the DICOM header, always: every voxel is placed where its slice's
``ImagePositionPatient`` (IPP), ``ImageOrientationPatient`` (IOP) and ``PixelSpacing`` put it.
Slices are ordered by IPP projected on the slice normal (the cross product of the two IOP vectors),
never by file name, file order or ``InstanceNumber``; the slice step is the vector from the first
to the last IPP divided by ``slices - 1`` (so ``SpacingBetweenSlices`` is never read: negative,
absent or wrong, it changes nothing; head-first and feet-first series alike). Pixels are read by ITK
(``ImageSeriesReader`` + ``GDCMImageIO``, so compressed transfer syntaxes read like uncompressed
ones; GDCM applies ``RescaleSlope``/``RescaleIntercept``), then the image's origin, spacing and
direction are set from the header; when ITK/GDCM had placed the series differently, a warning says
so and ``meta["geometry_note"]`` records it. A gantry-tilted series (slice step not along the normal)
is a sheared grid: it is resampled like any oblique image (below), at the header's positions.

One series per case: in a folder with several series, the CT series with the most slices is used
(ties: the longer coverage, then the smaller ``SeriesInstanceUID``); the chosen series
(``meta["series"]``: UID, description, slices, kernel) and every series left out
(``meta["series_left_out"]``) are recorded and the left-out CT series logged.

Plausibility (:class:`ChestCTCheck`, used by ``LoadCT``): before any pixel is read, a CT that
cannot be a chest CT is refused with what was found and what is expected (too few slices, too
short a z extent, too small an in-plane field of view, pixel or slice spacing outside a plausible
range). :func:`load_ct` alone does not check (``check=None``).

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
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scripts.frame import LPS_TO_RAS

__all__ = [
    "CTLoadError",
    "ChestCTCheck",
    "series_geometry",
    "DicomSeries",
    "find_dicom_series",
    "select_ct_series",
    "choose_ct_series",
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
logger = logging.getLogger(__name__)


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


@dataclasses.dataclass(frozen=True)
class ChestCTCheck:
    """Plausibility limits of a chest CT, checked from the header before any pixel is read.

    Args:
        min_slices: fewest slices (default 20).
        min_z_extent_mm: shortest coverage along the body axis (slices x slice spacing), mm (default 150:
            a chest is about 300 mm long; 150 mm is half of it).
        min_fov_mm: smallest in-plane field of view (rows x row spacing and columns x column spacing), mm
            (default 200).
        pixel_spacing_mm: accepted in-plane pixel spacing range, mm (default 0.2 to 5).
        slice_spacing_mm: accepted slice spacing range, mm (default 0.2 to 10).

    Raises (:meth:`__call__`): :class:`CTLoadError` naming what was found, what is expected, and the fix.
    """

    min_slices: int = 20
    min_z_extent_mm: float = 150.0
    min_fov_mm: float = 200.0
    pixel_spacing_mm: tuple[float, float] = (0.2, 5.0)
    slice_spacing_mm: tuple[float, float] = (0.2, 10.0)

    def __call__(self, shape_xyz: Sequence[int], spacing_xyz_mm: Sequence[float], source: str) -> None:
        """Check a volume of ``shape_xyz`` voxels (x, y in-plane; z along the body axis) and spacing, mm."""
        nx, ny, nz = (int(n) for n in shape_xyz)
        sx, sy, sz = (float(v) for v in spacing_xyz_mm)
        what = f"{source}: not a plausible chest CT:"
        fix = "give the full chest CT series (or change LoadCTd's check limits in configs/prepare.json)"
        lo, hi = self.pixel_spacing_mm
        for name, v in (("pixel spacing", sx), ("pixel spacing", sy)):
            if not lo <= v <= hi:
                raise CTLoadError(f"{what} {name} {v:.3g} mm, expected {lo:g} to {hi:g} mm; {fix}")
        lo, hi = self.slice_spacing_mm
        if not lo <= sz <= hi:
            raise CTLoadError(f"{what} slice spacing {sz:.3g} mm, expected {lo:g} to {hi:g} mm; {fix}")
        if nz < self.min_slices:
            raise CTLoadError(f"{what} {nz} slices, expected at least {self.min_slices}; {fix}")
        if nz * sz < self.min_z_extent_mm:
            raise CTLoadError(
                f"{what} z extent {nz * sz:.1f} mm ({nz} slices x {sz:.3g} mm), expected at least "
                f"{self.min_z_extent_mm:g} mm to cover a chest; {fix}"
            )
        fov = min(nx * sx, ny * sy)
        if fov < self.min_fov_mm:
            raise CTLoadError(
                f"{what} in-plane field of view {nx * sx:.0f} x {ny * sy:.0f} mm, expected at least "
                f"{self.min_fov_mm:g} mm; {fix}"
            )


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
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)


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
    image_type = itk.Image[itk.F, 3]
    io = itk.GDCMImageIO.New()
    reader = itk.ImageSeriesReader[image_type].New(ImageIO=io)
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
        np.asarray(itk.array_from_matrix(image.GetDirection()), dtype=np.float64),
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
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction)))
    return image, note


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


def _check_volume_file(p: Path, check: ChestCTCheck) -> None:
    """Apply ``check`` to a volume file's header (ITK reads the header only)."""
    import itk

    try:
        reader = itk.ImageFileReader[itk.Image[itk.F, 3]].New(FileName=str(p))
        reader.UpdateOutputInformation()
    except Exception:  # noqa: BLE001 - the full read reports the problem with its own message
        return
    image = reader.GetOutput()
    size = np.asarray(image.GetLargestPossibleRegion().GetSize(), dtype=np.int64)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    d = np.abs(np.asarray(itk.array_from_matrix(image.GetDirection()), dtype=np.float64))
    axis = np.argmax(d, axis=1)  # image axis nearest to each world axis (L, P, S)
    if sorted(axis.tolist()) != [0, 1, 2]:
        return
    check(size[axis], spacing[axis], str(p))


def _instance_number_direction(series: DicomSeries) -> str:
    """``"S"`` or ``"I"``: toward which end (LPS z) ``InstanceNumber`` increases; ``""`` if unknown."""
    try:
        inst = [int(ds.InstanceNumber) for ds in (series.headers[0], series.headers[-1])]
        z = [float(ds.ImagePositionPatient[2]) for ds in (series.headers[0], series.headers[-1])]
    except (AttributeError, TypeError, ValueError):
        return ""
    if inst[0] == inst[1] or z[0] == z[1]:
        return ""
    return "S" if (inst[1] - inst[0]) * (z[1] - z[0]) > 0 else "I"


def load_ct(path: str | os.PathLike, check: ChestCTCheck | None = None):
    """Load a CT (DICOM series/patient folder, DICOM file, NIfTI, MHA/MHD, NRRD) as an LPS HU volume.

    Args:
        path: see the module docstring for what is accepted.
        check: plausibility limits (:class:`ChestCTCheck`) applied to the header before the pixels
            are read; ``None`` (default): no check.

    Returns:
        ``MetaTensor`` of shape ``(1, X, Y, Z)``, float32 HU, axes toward Left, Posterior, Superior,
        ``affine`` in MONAI's RAS convention (float64, 4x4). Meta: ``filename_or_obj`` (the given path),
        ``case_id`` (the file or folder name without extension), ``spacing`` (mm, x y z),
        ``original_affine``, ``space`` (``"RAS"``), ``axcodes`` (``"LPS"``), and for DICOM
        ``series_dir``, ``series_uid``, ``patient_id``, ``num_slices``, ``transfer_syntax``, ``series``
        (the chosen series, :meth:`DicomSeries.describe`), ``series_left_out`` (the others),
        ``tilt_deg`` (angle between the slice step and the normal), ``geometry_note`` (non-empty when
        ITK/GDCM's own placement differed from the header's) and ``instance_number_increases_toward``
        (``"S"``, ``"I"`` or ``""``).

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
        if check is not None:
            _check_volume_file(p, check)
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
        everything = find_dicom_series(p.parent, modality=None, recursive=False)
        series = [s for s in everything if s.series_uid == uid][0]
        left_out = [s for s in everything if s is not series]
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
    d = np.asarray(itk.array_from_matrix(image.GetDirection()), dtype=np.float64)
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
        instance_number_increases_toward=_instance_number_direction(series),
    )
    return _itk_to_metatensor(image, str(p), extra, series.folder)
