"""Single-case and batch inference: the items to reconstruct and the writer of the reconstructions.

Output frame (stated in every NIfTI written here): the cube of :data:`scripts.frame.FRAME` (128^3 voxels of
2.5 mm, 320 mm side) centred on the X-ray isocentre, array axes (x, y, z) toward the patient's Left,
Posterior, Superior (DICOM LPS), NIfTI affine in RAS (:meth:`~scripts.frame.VolumeFrame.ras_affine`). For a
prepared case the isocentre is the one its DRRs were made with (read from ``case.json``), so the
reconstruction overlays the source CT; for a pair of radiographs the isocentre is unknown and taken as the origin.

Outputs are named by case id (:func:`inference_items`): ``<case_id>.nii.gz`` plus a labelled
``<case_id>.png`` (:mod:`scripts.evaluation.montage`); a zoomed slice is ``<case_id>_zoom``. Zoom requests outside the
grid are refused with the valid range (:func:`check_zoom`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scripts.evaluation.montage import label_grid, reconstruction_montage
from scripts.frame import FRAME, LPS_TO_RAS, VolumeFrame
from scripts.slicing import AXES, axis_code, slice_positions
from scripts.utils.atomic import save_grey_png, save_nifti_atomic, to_uint8

__all__ = ["inference_items", "reconstruction_affine", "zoom_affine", "check_zoom", "SaveReconstructiond"]

logger = logging.getLogger(__name__)

# file stems that name a view, not a case: a case read from ``<case>/pa.png`` is called ``<case>``
_VIEW_STEMS = {"pa", "ap", "frontal", "lateral", "lat", "image", "xray", "x-ray", "radiograph"}


def reconstruction_affine(
    isocentre_lps_mm: Sequence[float] = (0.0, 0.0, 0.0), frame: VolumeFrame = FRAME
) -> np.ndarray:
    """4x4 RAS affine (NIfTI) of a reconstruction whose array axes are LPS-ordered (see module doc)."""
    return frame.ras_affine(isocentre_lps_mm)


def check_zoom(zoom: Mapping[str, Any] | None, frame: VolumeFrame = FRAME) -> dict[str, Any] | None:
    """``zoom`` (``{"axis", "index", "box": [row0, col0, size]}`` in voxels of the grid) if it lies inside
    the grid; else ``ValueError`` stating the valid ranges. ``None`` passes through."""
    if zoom is None:
        return None
    n = frame.shape
    if (
        not isinstance(zoom, Mapping)
        or set(zoom) - {"axis", "index", "box"}
        or not {"axis", "index", "box"} <= set(zoom)
    ):
        raise ValueError(
            f"--zoom must be {{'axis': one of {list(AXES)}, 'index': 0..{n - 1}, 'box': [row0, col0, size]}}, "
            f"got {zoom!r}"
        )
    axis_code(zoom["axis"])
    index, box = float(zoom["index"]), [float(v) for v in zoom["box"]]
    if not 0 <= index <= n - 1:
        raise ValueError(f"--zoom index {index:g} is outside the {n}-voxel grid: use 0..{n - 1}")
    if len(box) != 3:
        raise ValueError(f"--zoom box must be [row0, col0, size], got {zoom['box']!r}")
    row0, col0, size = box
    if not 0 < size <= n:
        raise ValueError(f"--zoom box size {size:g} must be in (0, {n}] voxels")
    for name, v in (("row0", row0), ("col0", col0)):
        if not 0 <= v <= n - size:
            raise ValueError(
                f"--zoom box {name} {v:g} puts the box (size {size:g}) outside the {n}-voxel grid: "
                f"use 0..{n - size:g}"
            )
    return {"axis": zoom["axis"], "index": index, "box": box}


def zoom_affine(
    zoom: dict,
    isocentre_lps_mm: Sequence[float] = (0.0, 0.0, 0.0),
    pixels: int | None = None,
    frame: VolumeFrame = FRAME,
) -> np.ndarray:
    """4x4 RAS affine of a zoomed slice stored as a (pixels, pixels, 1) array (rows, columns, 1).

    ``pixels`` defaults to ``frame.shape`` (the decoder renders a slice at the cube's side).

    ``zoom`` is ``{"axis", "index", "box"}`` as :class:`scripts.inference.inferers.ZoomInferer` takes it; the pixel
    positions are those of :func:`scripts.slicing.slice_positions`, so the image lies where it was rendered.
    """
    axis = torch.tensor([axis_code(zoom["axis"])])
    box = torch.tensor([[float(v) for v in zoom["box"]]])
    pixels = frame.shape if pixels is None else int(pixels)
    pos = slice_positions(axis, torch.tensor([float(zoom["index"])]), box, pixels, frame.shape)[0]
    pos = pos.double().numpy()  # (pixels, pixels, 3) voxel coordinates of the grid
    spacing = frame.spacing_mm
    origin = np.asarray(isocentre_lps_mm, dtype=np.float64) + frame.voxel_to_mm(pos[0, 0])
    d_row = (pos[1, 0] - pos[0, 0]) * spacing
    d_col = (pos[0, 1] - pos[0, 0]) * spacing
    normal = np.zeros(3)
    normal[(2, 1, 0)[int(axis)]] = spacing  # the fixed axis: one volume voxel thick
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = d_row, d_col, normal, origin
    return LPS_TO_RAS @ lps


def _case_from_prepared(folder: Path) -> dict[str, Any]:
    item: dict[str, Any] = {
        "case_id": folder.name,
        "pa": str(folder / "pa.png"),
        "lateral": str(folder / "lateral.png"),
    }
    meta = folder / "case.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        iso = info.get("isocentre_mm") or info.get("geometry", {}).get("isocentre_mm")
        if iso is not None:
            item["isocentre_mm"] = [float(v) for v in iso]
    return item


def _case_name(pa: str) -> str:
    """A case id for a radiograph path: its stem, or its folder's name when the stem names a view (``pa.png``)."""
    path = Path(str(pa))
    stem = path.name.split(".")[0]
    return path.parent.name if stem.lower() in _VIEW_STEMS and path.parent.name not in ("", ".") else stem


def _unique_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Make case ids unique (``<id>``, ``<id>_2``, ...) so that no output overwrites another."""
    seen: dict[str, int] = {}
    for item in items:
        cid = str(item["case_id"])
        seen[cid] = seen.get(cid, 0) + 1
        if seen[cid] > 1:
            item["case_id"] = f"{cid}_{seen[cid]}"
    return items


def inference_items(
    pa: str | None = None, lateral: str | None = None, datalist: str | None = None, case_id: str | None = None
) -> list[dict[str, Any]]:
    """What to reconstruct, as items ``{"case_id", "pa", "lateral"[, "isocentre_mm"]}``, case ids unique.

    * ``pa`` and ``lateral``: two radiograph files (PNG/JPEG, NIfTI, DICOM DX/CR), or ``pa`` alone
      pointing at a prepared case folder (with ``pa.png``, ``lateral.png``, ``case.json``). The case id is
      ``case_id`` if given, else the file's stem, or its folder's name for view-named files
      (``LungDx-A0001/pa.png`` -> ``LungDx-A0001``). Two files of one prepared case folder also take the
      isocentre of its ``case.json``, as ``--pa`` of the folder does.
    * ``datalist``: a prepare ``datalist.json`` (every case of every list) or a JSON list of items; case ids
      from the entries, else from the folders.
    """
    if datalist:
        path = Path(datalist)
        if not path.is_file():
            raise FileNotFoundError(f"datalist not found: {datalist}")
        try:
            data = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"datalist {datalist} is not valid JSON ({e})") from e
        entries = (
            data if isinstance(data, list) else [e for k in ("training", "validation", "test") for e in data.get(k, [])]
        )
        items = []
        for e in entries:
            if not isinstance(e, Mapping) or "pa" not in e or "lateral" not in e:
                raise ValueError(f"{datalist}: entry {e} needs 'pa' and 'lateral'")
            item = {k: v for k, v in e.items() if k in ("case_id", "isocentre_mm")}
            item["pa"], item["lateral"] = str(path.parent / e["pa"]), str(path.parent / e["lateral"])
            item.setdefault("case_id", _case_name(item["pa"]))
            case_json = Path(item["pa"]).parent / "case.json"
            if "isocentre_mm" not in item and case_json.is_file():
                item.update({k: v for k, v in _case_from_prepared(case_json.parent).items() if k == "isocentre_mm"})
            items.append(item)
        if not items:
            raise ValueError(f"datalist {datalist} lists no case")
        return _unique_ids(items)
    if pa and Path(pa).is_dir() and lateral is None:
        item = _case_from_prepared(Path(pa))
        for view in ("pa", "lateral"):
            if not Path(item[view]).is_file():
                raise FileNotFoundError(
                    f"{pa} is not a prepared case: {item[view]} not found "
                    f"(pass --pa IMG --lateral IMG for two radiograph files)"
                )
        if case_id:
            item["case_id"] = case_id
        return [item]
    missing = [name for name, value in (("PA (--pa)", pa), ("lateral (--lateral)", lateral)) if not value]
    if missing:
        raise ValueError(
            f"missing {' and '.join(missing)} image: pass --pa IMG --lateral IMG, --pa PREPARED_CASE_DIR, "
            f"or --datalist FILE"
        )
    for name, value in (("--pa", pa), ("--lateral", lateral)):
        if not Path(str(value)).exists():
            raise FileNotFoundError(f"{name} image not found: {value}")
    item: dict[str, Any] = {"case_id": case_id or _case_name(str(pa)), "pa": str(pa), "lateral": str(lateral)}
    folder = Path(str(pa)).parent
    if folder == Path(str(lateral)).parent and (folder / "case.json").is_file():  # the two views of a prepared case
        item.update({k: v for k, v in _case_from_prepared(folder).items() if k == "isocentre_mm"})
    return [item]


class SaveReconstructiond(MapTransform):
    """Write each reconstruction as NIfTI (float32, HU or the target scale [0, 1]) plus a labelled PNG.

    Args:
        keys: the prediction key, (1, X, Y, Z) or (X, Y, Z) per item, values in the target scale.
        output_dir: where ``<case_id>.nii.gz`` and ``<case_id>.png`` go (atomic writes).
        output_hu: write Hounsfield units (:meth:`~scripts.frame.VolumeFrame.target_to_hu`) instead of the
            [0, 1] scale.
        zoom: the zoom spec of :class:`scripts.inference.inferers.ZoomInferer` when the prediction is a zoomed slice
            (1, h, w): it is written as an (h, w, 1) NIfTI at its place in the volume, ``<case_id>_zoom``.
        label_key: optional ground truth (1, X, Y, Z) or (X, Y, Z) in the target scale; when an item has
            it, the PNG shows ground truth, prediction and error columns. Nothing is measured here: metrics are
            the evaluation's (:mod:`scripts.evaluation.metric_handler`).
        frame: the output volume's frame (:data:`scripts.frame.FRAME`).

    The PNG is labelled (case, planes, columns, HU window; a zoom preview names the plane, slice and box).
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dir: str = "eval/inference",
        output_hu: bool = True,
        zoom: dict | None = None,
        label_key: str = "label",
        frame: VolumeFrame = FRAME,
    ) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.output_hu = output_hu
        self.zoom = check_zoom(zoom, frame)
        self.label_key = label_key
        self.frame = frame

    def _preview(self, name: str, case_id: str, vol: np.ndarray, label: Any) -> None:
        path = self.output_dir / f"{name}.png"
        if self.zoom is not None:
            z = self.zoom
            row0, col0, size = z["box"]
            hu = (self.frame.target_to_hu(0.0), self.frame.target_to_hu(1.0))
            title = [
                f"case {case_id}",
                f"{z['axis']} slice {z['index']:g}",
                f"box rows {row0:g}-{row0 + size:g}, cols {col0:g}-{col0 + size:g}",
                f"grey: {hu[0]:g} to {hu[1]:g} HU",
            ]
            save_grey_png(label_grid([[to_uint8(vol[:, :, 0])]], [""], ["prediction (zoom)"], title), path)
            return
        volumes: dict[str, np.ndarray] = {}
        if label is not None:
            gt = torch.as_tensor(label).detach().float().cpu().numpy()
            gt = gt[0] if gt.ndim == 4 else gt
            if gt.shape == vol.shape:
                volumes["ground truth"] = gt
        volumes["prediction"] = vol
        reconstruction_montage(path, volumes, case_id)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        case_id = str(d.get("case_id", "reconstruction"))
        for key in self.key_iterator(d):
            vol = torch.as_tensor(d[key]).detach().float().cpu().numpy()
            iso = d.get("isocentre_mm", (0.0, 0.0, 0.0))
            iso = [float(v) for v in (iso.tolist() if hasattr(iso, "tolist") else iso)]
            if self.zoom is not None:  # one zoomed slice (1, h, w) -> (h, w, 1) at its place in the volume
                vol = vol.reshape(vol.shape[-2], vol.shape[-1], 1)
                affine = zoom_affine(self.zoom, iso, vol.shape[0], self.frame)
                name = f"{case_id}_zoom"
            else:
                vol = vol[0] if vol.ndim == 4 else vol
                if vol.ndim != 3:
                    raise ValueError(f"reconstruction {key!r} must be 3D, got shape {vol.shape}")
                affine = reconstruction_affine(iso, self.frame)
                name = case_id
            if self.output_hu:
                data_out = self.frame.target_to_hu(np.clip(vol, 0, 1)).astype(np.float32)
            else:
                data_out = vol.astype(np.float32)
            img = nib.Nifti1Image(data_out, affine)
            img.header.set_xyzt_units("mm")
            img.header["descrip"] = b"PerX2CT: LPS-ordered axes, centre = isocentre"[:79]
            out = save_nifti_atomic(img, self.output_dir / f"{name}.nii.gz")
            self._preview(name, case_id, vol, d.get(self.label_key))
            d[f"{key}_path"] = str(out)
            logger.info("wrote %s", out)
        return d
