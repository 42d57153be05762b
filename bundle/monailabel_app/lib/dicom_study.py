"""A study sent the way PACS sends chest X-rays: DICOM DX/CR instances, one per view, paired by view.

A study is a set of DICOM files (two series of one image each, or one series of two images; in a
folder, a ``.zip`` or one file): exactly one frontal (PA or AP) and one lateral radiograph. Each
file's view is decided by, in this order (the first that answers wins):

1. ``ViewPosition`` (0018,5101): ``PA``/``AP`` -> frontal; ``LL``/``RL``/``LAT``/``LATERAL`` -> lateral.
2. ``ViewCodeSequence`` (0054,0220) ``CodeMeaning``: "postero-anterior"/"antero-posterior" -> frontal;
   any meaning containing "lateral" -> lateral.
3. When exactly one of the two images is still unknown, it is the view the other one is not.

Files are ordered neither by series number nor by name: a lateral-first study gives the same pair as
a PA-first one. Anything else is refused with :class:`StudyError` naming what was found and what to send:
one image, two of the same view, two images of unknown view, more than two images, or images that are
not radiographs (a CT, an MR, ...). Non-image DICOM objects (``DICOMDIR``, reports) are ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["StudyError", "DicomImage", "FRONTAL", "LATERAL", "RADIOGRAPH_MODALITIES", "pair_views", "scan_dicom"]

FRONTAL = {"PA", "AP"}
LATERAL = {"LL", "RL", "LAT", "LATERAL", "LLAT", "RLAT"}
RADIOGRAPH_MODALITIES = {"DX", "CR", "RG", "DR", "OT"}  # OT: secondary capture of a radiograph
_DICOMDIR_UID = "1.2.840.10008.1.3.10"


class StudyError(ValueError):
    """A study the app cannot reconstruct; ``status_code`` is the HTTP status the client receives."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message, status_code)
        self.status_code = status_code

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class DicomImage:
    path: str
    modality: str
    view_position: str
    view_code: str
    series: str
    rows: int
    columns: int
    frames: int

    def view(self) -> str | None:
        """``"pa"``, ``"lateral"`` or None (unknown) from ``ViewPosition``, then ``ViewCodeSequence``."""
        vp = self.view_position.strip().upper()
        if vp in FRONTAL:
            return "pa"
        if vp in LATERAL:
            return "lateral"
        code = self.view_code.lower()
        if "postero-anterior" in code or "antero-posterior" in code:
            return "pa"
        if "lateral" in code:
            return "lateral"
        return None

    def label(self) -> str:
        return f"{Path(self.path).name} ({self.modality}, ViewPosition {self.view_position or 'missing'})"


def scan_dicom(files: list[str]) -> list[DicomImage]:
    """Headers of the DICOM image objects among ``files`` (pixel data not read); others are skipped."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    images = []
    for f in sorted(files):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue
        sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
        if sop == _DICOMDIR_UID or "Rows" not in ds:
            continue  # DICOMDIR, structured reports, presentation states: not images
        codes = ds.get("ViewCodeSequence") or []
        images.append(
            DicomImage(
                path=f,
                modality=str(ds.get("Modality", "") or "").upper(),
                view_position=str(ds.get("ViewPosition", "") or ""),
                view_code=str(codes[0].get("CodeMeaning", "")) if len(codes) else "",
                series=str(ds.get("SeriesInstanceUID", "")),
                rows=int(ds.get("Rows", 0)),
                columns=int(ds.get("Columns", 0)),
                frames=int(ds.get("NumberOfFrames", 1) or 1),
            )
        )
    return images


def pair_views(images: list[DicomImage], source: str | os.PathLike) -> dict[str, str]:
    """``{"pa": file, "lateral": file}`` for a study's images, or :class:`StudyError` saying why not."""
    if not images:
        raise StudyError(f"{source}: no DICOM image found; send a PA and a lateral chest radiograph (DICOM DX/CR)")
    not_xr = [i for i in images if i.modality not in RADIOGRAPH_MODALITIES]
    if not_xr:
        modalities = sorted({i.modality or "missing" for i in not_xr})
        what = "a CT" if "CT" in modalities else f"Modality {', '.join(modalities)}"
        raise StudyError(
            f"{source}: {what} ({len(not_xr)} image(s)) is not an input of PerX2CT, which reconstructs a CT from two "
            "chest radiographs; send a PA and a lateral radiograph (DICOM DX/CR)"
        )
    multi = [i for i in images if i.frames > 1]
    if multi:
        raise StudyError(f"{source}: {multi[0].label()} has {multi[0].frames} frames; send one 2D radiograph per view")
    if len(images) == 1:
        view = images[0].view() or "unknown view"
        raise StudyError(
            f"{source}: one radiograph only ({images[0].label()}, {view}); PerX2CT needs two views of the chest, "
            "a PA (or AP) and a lateral: send both in one study"
        )
    if len(images) > 2:
        raise StudyError(
            f"{source}: {len(images)} radiographs ({'; '.join(i.label() for i in images[:4])}); send exactly two, "
            "one PA (or AP) and one lateral"
        )
    views = [i.view() for i in images]
    if views[0] is None and views[1] is None:
        raise StudyError(
            f"{source}: cannot tell the PA from the lateral radiograph: neither {images[0].label()} nor "
            f"{images[1].label()} has a ViewPosition (PA/AP or LL/RL) or a ViewCodeSequence; set ViewPosition"
        )
    if None in views:  # rule 3: the unknown one is the other view
        known = views[0] or views[1]
        views = [v or ("lateral" if known == "pa" else "pa") for v in views]
    if views[0] == views[1]:
        raise StudyError(
            f"{source}: two {'PA/AP' if views[0] == 'pa' else 'lateral'} radiographs ({images[0].label()}; "
            f"{images[1].label()}); PerX2CT needs one PA (or AP) and one lateral"
        )
    return {view: image.path for view, image in zip(views, images)}
