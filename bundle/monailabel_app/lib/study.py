"""The MONAI Label datastore items of this app: a *study* = one 2-frame NIfTI file, or DICOM radiographs.

:func:`resolve_study` turns whatever a client sent into the two radiograph files the bundle reads:

* ``<id>.nii.gz`` / ``<id>.nii``: the 2-frame NIfTI below (:func:`make_study`);
* ``<id>.zip``, a folder, or one ``.dcm`` file: DICOM DX/CR radiographs, paired by view
  (:mod:`lib.dicom_study`: ``ViewPosition``, then ``ViewCodeSequence``, then "the other one");
* anything else (a PNG, one 2D image, a CT, a NIfTI that is not (W, H, 2)) raises
  :class:`lib.dicom_study.StudyError` with the HTTP status and the message the client receives.

The 2-frame NIfTI:

Layout: ``STUDIES/<study_id>.nii.gz`` holds an array of shape (W, H, 2): frame 0 is the PA radiograph,
frame 1 the lateral one, and its header says so: ``descrip`` is :data:`VIEW_ORDER` (written by :func:`make_study`).
A 2-frame NIfTI without it is refused (422): nothing else tells its frames apart, and a NIfTI stacked by other tools
has its own order (MONAI Label's DICOMweb datastore with ``CONVERT_TO_NIFTI`` stacks a one-series study's two images
lateral first; read by frame order it gave a wrong, confident CT). Each frame is stored the way MONAI's
``LoadImage`` returns a 2D image: the first array axis runs along image columns (left to right as displayed), the
second along rows (top to bottom). 8-bit grey images keep their raw ``uint8`` pixels (the PNGs the prepare workflow writes);
anything else is stored as the network input the bundle's loader makes of it (``float32`` in [0, 1],
128 x 128). The affine is a plain
in-plane pixel-spacing diagonal (1 mm unless given); it is informative only, the bundle's loader
resizes the radiographs anyway.

Why one file: MONAI Label's ``LocalDatastore`` maps *one file* to *one image id* (``<id>.<ext>``), and
every endpoint (``/datastore`` upload, ``/infer/{model}?image=<id>``, ``/infer/{model}`` with a file
upload, labels) passes one file per image. A naming convention (``<id>_pa.png`` + ``<id>_lateral.png``)
would appear as two unrelated images and need a custom datastore; a study folder is not listed by
``LocalDatastore`` at all. A 2-frame NIfTI keeps the pair together with no datastore code.

At inference the infer task splits a study back into two files the bundle's own preprocessing reads
(``pa.png`` / ``lateral.png`` for 8-bit frames, byte for byte what ``make_study`` read; 2D NIfTI
otherwise), so the model sees exactly what ``python -m monai.bundle run`` would give it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scripts.utils.atomic import save_nifti_atomic

from .dicom_study import StudyError, pair_views, scan_dicom

__all__ = [
    "FRAMES",
    "VIEW_ORDER",
    "StudyError",
    "make_study",
    "read_radiograph",
    "read_study",
    "resolve_study",
    "split_study",
]

FRAMES = ("pa", "lateral")  # frame order along the last axis of a study
#: NIfTI header ``descrip`` of a study made by :func:`make_study`: the view order of its frames (79 bytes at most)
VIEW_ORDER = "PerX2CT study: frame 0 PA, frame 1 lateral"


def _read_8bit(path: Path) -> np.ndarray | None:
    """An 8-bit grey PNG/JPEG/BMP/TIFF as its raw (W, H) ``uint8`` pixels; None for anything else."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode != "L":
                return None
            return np.ascontiguousarray(np.asarray(img).T)  # PIL (rows, cols) -> MONAI's (W, H)
    except Exception:  # noqa: BLE001 - not a Pillow image (NIfTI, DICOM): the bundle's reader handles it
        return None


def read_radiograph(path: str | os.PathLike, view: str, detector_shape: tuple[int, int] | None = None) -> np.ndarray:
    """One radiograph as a (W, H) frame: raw ``uint8`` for 8-bit grey images, else the network input.

    ``detector_shape`` defaults to the network input's (``scripts.transforms.radiograph.VIEW_SHAPE``, 128 x 128).

    Anything that is not an 8-bit grey image (16-bit PNG, colour, NIfTI, DICOM DX/CR with its pixel
    spacing) goes through the bundle's own ``scripts.transforms.radiograph.load_radiograph`` (crop/pad to the
    detector, normalise, resize to ``detector_shape``, quantise) and is stored as float32 in [0, 1];
    reading it back through the same loader changes nothing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{view} radiograph not found: {path}")
    raw = _read_8bit(path)
    if raw is not None:
        return raw
    from scripts.transforms.radiograph import (  # the bundle's reader (monai, torch): only for non-8-bit files
        VIEW_SHAPE,
        load_radiograph,
    )

    img = load_radiograph(path, view, detector_shape=VIEW_SHAPE if detector_shape is None else detector_shape)
    return np.ascontiguousarray(img[0].numpy().astype(np.float32).T)


def make_study(pa: str, lateral: str, output: str, pixel_spacing_mm: float = 1.0) -> str:
    """Write the study ``output`` (``<study_id>.nii.gz``) from a PA and a lateral radiograph file.

    Args:
        pa: the PA (posterior-anterior) radiograph, as displayed (PNG/JPEG, NIfTI or DICOM).
        lateral: the lateral radiograph, as displayed.
        output: the study file to write, usually ``STUDIES/<study_id>.nii.gz`` (the id is the file name).
        pixel_spacing_mm: in-plane spacing written to the NIfTI header (informative only).
    """
    frames = [read_radiograph(pa, "pa"), read_radiograph(lateral, "lateral")]
    if frames[0].shape != frames[1].shape or frames[0].dtype != frames[1].dtype:
        # mixed sizes or formats: store both as the network input (same size by construction)
        frames = [f if f.dtype == np.float32 else _as_network_input(f) for f in frames]
    data = np.stack(frames, axis=-1)
    affine = np.diag([pixel_spacing_mm, pixel_spacing_mm, 1.0, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header["descrip"] = VIEW_ORDER.encode()
    if not str(output).endswith((".nii.gz", ".nii")):
        raise ValueError(f"study file must end with .nii.gz (or .nii): {output}")
    return str(save_nifti_atomic(img, output))


def _as_network_input(frame: np.ndarray) -> np.ndarray:
    from scripts.transforms.radiograph import LoadRadiograph  # monai and torch: only for non-8-bit frames

    return np.ascontiguousarray(LoadRadiograph()(frame.T.astype(np.float64) / 255.0)[0].numpy().astype(np.float32).T)


def read_study(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The two frames of a study: ``{"pa": (W, H), "lateral": (W, H)}``; :class:`StudyError` otherwise."""
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as e:  # noqa: BLE001 - nibabel's many error types
        raise StudyError(f"{Path(path).name}: not a readable NIfTI file ({e})") from None
    if data.ndim == 4 and data.shape[2] == 1:  # (W, H, 1, 2): tolerate an explicit singleton z
        data = data[:, :, 0, :]
    if data.ndim == 2 or (data.ndim == 3 and data.shape[-1] == 1):
        raise StudyError(
            f"{Path(path).name}: one 2D image {data.shape} is one view; a study needs a PA and a lateral radiograph "
            "(a (W, H, 2) NIfTI: `python -m bundle make_study --pa PA --lateral LATERAL --output STUDY.nii.gz`)"
        )
    if data.ndim != 3 or data.shape[-1] != 2:
        what = "a CT volume" if data.ndim == 3 and min(data.shape) > 2 else "not a study"
        raise StudyError(
            f"{Path(path).name}: {what} of shape {data.shape}; a PerX2CT study is a (W, H, 2) NIfTI (frame 0 PA, "
            "frame 1 lateral) or DICOM PA + lateral radiographs; make one with "
            "`python -m bundle make_study --pa PA --lateral LATERAL --output STUDY.nii.gz`"
        )
    descrip = bytes(np.asarray(img.header.get("descrip", b""), dtype="S80").item()).rstrip(b"\0").decode("latin-1")
    if descrip.strip() != VIEW_ORDER:
        raise StudyError(
            f"{Path(path).name}: a 2-frame NIfTI whose header does not say which frame is the PA and which the lateral "
            f"(descrip {descrip.strip()!r}, expected {VIEW_ORDER!r}); frames are never paired by their order. Make the "
            "study with `python -m bundle make_study --pa PA --lateral LATERAL --output STUDY.nii.gz`, or send the "
            "DICOM radiographs (paired by ViewPosition)"
        )
    return {name: data[..., i] for i, name in enumerate(FRAMES)}


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")


def _unzip(path: Path, folder: Path) -> list[str]:
    """Extract a study archive (names kept inside ``folder``); returns the extracted files."""
    import zipfile

    out = folder / "dicom"
    files = []
    try:
        with zipfile.ZipFile(path) as zf:
            for i, info in enumerate(zf.infolist()):
                if info.is_dir():
                    continue
                target = out / f"{i:05d}_{Path(info.filename).name}"  # flat: no path from the archive is trusted
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(info))
                files.append(str(target))
    except zipfile.BadZipFile as e:
        raise StudyError(f"{path.name}: not a readable zip archive ({e})") from None
    return files


def resolve_study(path: str | os.PathLike, folder: str | os.PathLike) -> dict[str, Any]:
    """The two radiograph files of a study, written into ``folder`` when they must be extracted.

    Returns ``{"pa": file, "lateral": file, "layout": "nifti" | "dicom"}``; raises :class:`StudyError`
    (with the HTTP status for the client) for anything that is not one PA and one lateral view.
    """
    path, folder = Path(path), Path(folder)
    name = path.name.lower()
    if path.is_dir():
        return {**pair_views(scan_dicom([str(p) for p in sorted(path.rglob("*")) if p.is_file()]), path.name),
                "layout": "dicom"}  # fmt: skip
    if not path.is_file():
        raise StudyError(f"study not found: {path}", status_code=404)
    if name.endswith((".nii.gz", ".nii")):
        return {**split_study(path, folder), "layout": "nifti"}
    if name.endswith(".zip"):
        return {**pair_views(scan_dicom(_unzip(path, folder)), path.name), "layout": "dicom"}
    with open(path, "rb") as f:
        head = f.read(132)
    if name.endswith((".dcm", ".dicom")) or head[128:132] == b"DICM":
        return {**pair_views(scan_dicom([str(path)]), path.name), "layout": "dicom"}
    if name.endswith(_IMAGE_SUFFIXES) or _read_8bit(path) is not None or head[:8] == b"\x89PNG\r\n\x1a\n":
        raise StudyError(
            f"{path.name}: a single 2D image ({path.suffix.lstrip('.').upper() or 'image'}) is one radiograph; a study "
            "needs a PA and a lateral view: a 2-frame NIfTI (`python -m bundle make_study --pa PA --lateral LATERAL "
            "--output STUDY.nii.gz`) or the two DICOM DX/CR radiographs (a .zip or a folder)",
            status_code=415,
        )
    raise StudyError(
        f"{path.name}: unknown study format; send a 2-frame NIfTI (.nii.gz), or PA + lateral DICOM DX/CR "
        "radiographs as a .zip, a folder or .dcm files",
        status_code=415,
    )


def split_study(path: str | os.PathLike, folder: str | os.PathLike) -> dict[str, Any]:
    """Write the frames of study ``path`` into ``folder`` as files the bundle's loader reads.

    Returns ``{"pa": file, "lateral": file}``: ``pa.png`` / ``lateral.png`` for 8-bit frames, 2D
    ``pa.nii.gz`` / ``lateral.nii.gz`` (float32) otherwise.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for name, frame in read_study(path).items():
        if frame.dtype == np.uint8:
            from PIL import Image

            file = folder / f"{name}.png"
            Image.fromarray(np.ascontiguousarray(frame.T)).save(file)
        else:
            file = folder / f"{name}.nii.gz"
            nib.save(nib.Nifti1Image(frame.astype(np.float32), np.eye(4)), str(file))
        out[name] = str(file)
    return out
