"""Case writing: one raw CT through the preprocessing chain into a complete prepared case folder.

:func:`prepare_case` runs the chain (``preprocessing`` of ``configs/prepare.json``: LoadCTd ->
NormalizeCTd -> HUToInt16d -> DRRd -> CTTargetd) on ``{"case_id": id, "ct": path}`` and
:func:`save_case` writes, into ``OUT/.tmp-<case_id>-<pid>/`` renamed to ``OUT/<case_id>/`` when complete:

* ``ct.nii.gz``: the ``(128, 128, 128)`` float32 target in [0, 1], array axes LPS, NIfTI affine =
  the MetaTensor's (RAS, 2.5 mm voxels), qform/sform code 1 (scanner);
* ``ct_1mm.nii.gz``: the 1 mm, 320 mm cube it was made from, int16 HU (same centre, 1 mm voxels);
* ``pa.png``, ``lateral.png``: 8-bit grey 128 x 128, row 0 = head (the DRRs' 8-bit levels x 255);
* ``case.json``: source path, the DICOM series used and those left out, geometry
  (``ProjectionGeometry.to_dict()`` with the isocentre in LPS mm, also as ``isocentre_mm``), original
  shape and spacing, the crop rule and the target's resampling, output description, package versions.

A finished case folder always holds every file of :data:`CASE_FILES`; a failing case never raises
(:func:`prepare_case` returns the reason), and an interrupted one leaves no visible folder.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scripts.errors import CTLoadError
from scripts.utils.atomic import save_grey_png, write_json_atomic
from scripts.utils.bundle_paths import bundle_version

__all__ = ["CASE_FILES", "TMP_PREFIX", "is_case_complete", "complete_cases", "run_chain", "save_case", "prepare_case"]

#: Files of a complete prepared case folder.
CASE_FILES = ("ct.nii.gz", "ct_1mm.nii.gz", "pa.png", "lateral.png", "case.json")
#: Prefix of the temporary folder a case is written into (``.tmp-<case_id>-<pid>``).
TMP_PREFIX = ".tmp-"
#: Meta of the loaded CT recorded in ``case.json["original"]``.
_SOURCE_META = (
    "series_dir",
    "series_uid",
    "patient_id",
    "num_slices",
    "transfer_syntax",
    "series",
    "series_left_out",
    "tilt_deg",
    "geometry_note",
    "instance_number_increases_toward",
)


def is_case_complete(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds every file of :data:`CASE_FILES` (non-empty)."""
    f = Path(folder)
    return all((f / name).is_file() and (f / name).stat().st_size > 0 for name in CASE_FILES)


def complete_cases(output_dir: str | os.PathLike) -> list[str]:
    """Sorted ids of the complete case folders in ``output_dir`` (hidden folders ignored)."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    return sorted(
        e.name for e in os.scandir(out) if e.is_dir() and not e.name.startswith(".") and is_case_complete(e.path)
    )


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return _jsonable(x.tolist())
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("scripts", "monai", "torch", "itk", "numpy", "nibabel", "pydicom"):
        m = sys.modules.get(mod)
        if m is None:
            try:
                m = __import__(mod)
            except Exception:  # noqa: BLE001 - a version is informative only
                continue
        out[mod] = str(getattr(m, "__version__", "unknown"))
    out["bundle"] = bundle_version()
    return out


def _spacing(affine) -> list[float]:
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return [float(s) for s in np.linalg.norm(a, axis=0)]


def _volume_entry(file: str, arr: np.ndarray, affine: np.ndarray, intensity: str) -> dict[str, Any]:
    """``case.json``'s entry of a volume saved to ``file`` (``arr`` in LPS order, ``affine`` its RAS affine)."""
    return {
        "file": file,
        "shape": [int(s) for s in arr.shape],
        "spacing_mm": _spacing(affine),
        "affine_ras": _jsonable(affine),
        "array_axes": "LPS",
        "intensity": intensity,
    }


def _root_cause(e: BaseException) -> BaseException:
    """MONAI wraps transform errors in ``RuntimeError('applying transform ...')``: the cause is the reason."""
    while isinstance(e, RuntimeError) and e.__cause__ is not None and str(e).startswith("applying transform"):
        e = e.__cause__
    return e


# ------------------------------------------------------------------------------------ one case
def run_chain(preprocessing: Callable, data: dict, ct_key: str = "ct") -> tuple[dict, dict[str, Any]]:
    """Apply ``preprocessing`` (a ``Compose`` is applied one transform at a time, so errors keep their
    type and message) and return ``(result, original)``, where ``original`` describes the CT right after
    it was loaded (``shape``, ``spacing_mm``, the loader's DICOM meta: series used and left out, tilt,
    geometry note), ``normalization`` (the crop rule and the cube's centre, the target's resampling) and
    ``seconds`` per step."""
    from monai.data import MetaTensor

    transforms = getattr(preprocessing, "transforms", None)
    steps = list(transforms) if transforms is not None else [preprocessing]
    original: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for t in steps:
        t0 = time.perf_counter()
        data = t(data)
        timings[type(t).__name__] = round(time.perf_counter() - t0, 3)
        ct = data.get(ct_key) if isinstance(data, Mapping) else None
        if not original and isinstance(ct, MetaTensor):
            meta = ct.meta
            original = {
                "shape": [int(s) for s in ct.shape[1:]],
                "spacing_mm": _spacing(ct.affine),
                "axcodes": meta.get("axcodes", ""),
            }
            for k in _SOURCE_META:
                if k in meta:
                    original[k] = _jsonable(meta[k])
    ct = data.get(ct_key) if isinstance(data, Mapping) else None
    meta = getattr(ct, "meta", {})
    original["normalization"] = {
        k: _jsonable(meta[k]) for k in ("crop", "cube_centre_lps_mm", "target_resampling") if k in meta
    }
    original["seconds"] = timings
    return data, original


def _save_volume(x, path: Path, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Write a ``(1, X, Y, Z)`` MetaTensor as NIfTI (its RAS affine, qform/sform code 1); ``(array, affine)``."""
    import nibabel as nib

    arr = np.ascontiguousarray(x.detach().cpu().numpy()[0].astype(dtype))
    affine = np.asarray(x.affine, dtype=np.float64)
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return arr, affine


def save_case(
    folder: str | os.PathLike,
    data: Mapping,
    info: dict[str, Any],
    ct_key: str = "ct",
    view_keys: Sequence[str] = ("pa", "lateral"),
    hu_key: str = "ct_1mm",
) -> None:
    """Write ``ct.nii.gz``, ``ct_1mm.nii.gz``, one ``<view>.png`` per view key and ``case.json`` into ``folder``.

    ``data[ct_key]``: ``(1, X, Y, Z)`` MetaTensor (affine RAS, array LPS); ``data[hu_key]``: the 1 mm HU
    cube (int16); ``data[view]``: ``(1, H, W)`` in [0, 1] on 8-bit levels (written by
    :func:`scripts.utils.atomic.save_grey_png`, row 0 at the top)."""
    folder = Path(folder)
    ct = data[ct_key]
    arr, affine = _save_volume(ct, folder / "ct.nii.gz", np.float32)
    if hu_key not in data:
        raise KeyError(
            f"the preprocessing chain gave no {hu_key!r} (the 1 mm HU cube): add HUToInt16d after NormalizeCTd"
        )
    hu, hu_affine = _save_volume(data[hu_key], folder / "ct_1mm.nii.gz", np.int16)
    geometry = None
    for key in view_keys:
        x = data[key]
        a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)
        save_grey_png(a[0] if a.ndim == 3 else a, folder / f"{key}.png")
        geometry = geometry or getattr(x, "meta", {}).get("geometry")
    info = dict(info)
    if geometry is not None:
        info["geometry"] = _jsonable(geometry)
        info["isocentre_mm"] = _jsonable(geometry.get("isocentre_mm"))
    info["ct"] = _volume_entry("ct.nii.gz", arr, affine, str(getattr(ct, "meta", {}).get("intensity", "")))
    info["ct_1mm"] = _volume_entry("ct_1mm.nii.gz", hu, hu_affine, "HU (int16)")
    info["views"] = {k: f"{k}.png" for k in view_keys}
    write_json_atomic(folder / "case.json", _jsonable(info))


def _notes(original: Mapping[str, Any]) -> list[str]:
    """Lines worth a warning in the log: series left out, a geometry that ITK/GDCM read differently."""
    notes = []
    left = original.get("series_left_out") or []
    if left:
        used = original.get("series", {})
        notes.append(
            f"used {used.get('modality', 'CT')} series {used.get('uid', '?')} ({used.get('slices', '?')} slices, "
            f"{used.get('description', '') or 'no description'}); left out: "
            + "; ".join(
                f"{s.get('modality')} series {s.get('uid')} ({s.get('slices')} slices, "
                f"{s.get('description', '') or 'no description'})"
                for s in left
            )
            + " (see case.json)"
        )
    if original.get("geometry_note"):
        notes.append(str(original["geometry_note"]))
    return notes


def prepare_case(
    case_id: str,
    source: str,
    output_dir: str | os.PathLike,
    preprocessing: Callable,
    ct_key: str = "ct",
    view_keys: Sequence[str] = ("pa", "lateral"),
) -> dict[str, Any]:
    """Prepare one case into ``output_dir/<case_id>`` atomically (temporary folder, then rename).

    Returns ``{"case_id", "source", "status": "prepared"|"skipped"|"failed", "seconds"[, "reason", "error",
    "notes"]}``; never raises for a failing case (the reason is the exception's message, ``error`` its
    type). An interrupt (``KeyboardInterrupt``, ``SystemExit``) removes the temporary folder and propagates.
    """
    out = Path(output_dir)
    final = out / case_id
    result: dict[str, Any] = {"case_id": case_id, "source": str(source)}
    if is_case_complete(final):
        return {**result, "status": "skipped", "seconds": 0.0}
    tmp = out / f"{TMP_PREFIX}{case_id}-{os.getpid()}"
    t0 = time.perf_counter()
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        data, original = run_chain(preprocessing, {"case_id": case_id, ct_key: str(source)}, ct_key=ct_key)
        seconds = original.pop("seconds", {})
        info = {
            "case_id": case_id,
            "source": os.path.abspath(source),
            "original": original,
            "seconds": seconds,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(),
        }
        save_case(tmp, data, info, ct_key=ct_key, view_keys=view_keys)
        result["notes"] = _notes(original)
        if final.exists():  # an incomplete folder (not written by prepare): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
    except Exception as e:  # noqa: BLE001 - one case must never stop the batch
        shutil.rmtree(tmp, ignore_errors=True)
        cause = _root_cause(e)
        result.update(status="failed", reason=str(cause) or repr(cause), error=type(cause).__name__)
        if not isinstance(cause, CTLoadError):
            result["traceback"] = traceback.format_exception(type(cause), cause, cause.__traceback__)[-3:]
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    else:
        result["status"] = "prepared"
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result
