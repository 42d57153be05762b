"""Single-case and batch inference: the items to reconstruct and the writer of the reconstructions.

Output frame (stated in every NIfTI written here): the reconstruction is a 128^3 cube of 2.5 mm voxels
(320 mm side) centred on the X-ray isocentre. Array axes are (x, y, z) = toward the patient's Left,
Posterior, Superior (DICOM LPS); the NIfTI affine is the RAS form of that: voxel (i, j, k) lies at
LPS ``isocentre + ((i, j, k) - 63.5) * 2.5`` mm. For a prepared case the isocentre is the one its DRRs
were made with (read from ``case.json``), so the reconstruction overlays the source CT; for a pair of
radiographs the isocentre is unknown and taken as the origin.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from scripts.atomic import save_grey_png, save_nifti_atomic

__all__ = ["inference_items", "reconstruction_affine", "zoom_affine", "display_planes", "SaveReconstructiond"]

logger = logging.getLogger(__name__)

# LPS -> RAS flips the first two world axes
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def display_planes(vol: np.ndarray) -> list[np.ndarray]:
    """Central axial, coronal and sagittal planes of an LPS-ordered (X, Y, Z) volume, oriented for
    display as radiologists read them: axial with anterior at the top and the patient's right on the
    image's left; coronal and sagittal with superior at the top."""
    x, y, z = (s // 2 for s in vol.shape)
    axial = vol[:, :, z].T  # rows = y (anterior first), columns = x (toward the patient's left)
    coronal = np.flipud(vol[:, y, :].T)  # rows = z, flipped so superior is at the top
    sagittal = np.flipud(vol[x, :, :].T)  # columns = y (anterior on the left)
    return [axial, coronal, sagittal]


def reconstruction_affine(
    isocentre_lps_mm: Sequence[float] = (0.0, 0.0, 0.0), shape: int = 128, size_mm: float = 320.0
) -> np.ndarray:
    """4x4 RAS affine (NIfTI) of a reconstruction whose array axes are LPS-ordered (see module doc)."""
    spacing = size_mm / shape
    lps = np.eye(4)
    lps[:3, :3] *= spacing
    lps[:3, 3] = np.asarray(isocentre_lps_mm, dtype=np.float64) - (shape - 1) / 2 * spacing
    return _LPS_TO_RAS @ lps


def zoom_affine(
    zoom: dict, isocentre_lps_mm: Sequence[float] = (0.0, 0.0, 0.0), shape: int = 128, size_mm: float = 320.0, pixels: int = 128
) -> np.ndarray:
    """4x4 RAS affine of a zoomed slice stored as a (pixels, pixels, 1) array (rows, columns, 1).

    ``zoom`` is ``{"axis", "index", "box"}`` as :class:`scripts.engine.ZoomInferer` takes it; the pixel
    positions are those of :func:`scripts.slicing.slice_positions`, so the image lies where it was rendered.
    """
    from scripts.slicing import axis_code, slice_positions

    axis = torch.tensor([axis_code(zoom["axis"])])
    pos = slice_positions(axis, torch.tensor([float(zoom["index"])]), torch.tensor([[float(v) for v in zoom["box"]]]), pixels, shape)[0]
    pos = pos.double().numpy()  # (pixels, pixels, 3) voxel coordinates of the 128 grid
    spacing = size_mm / shape
    origin = np.asarray(isocentre_lps_mm, dtype=np.float64) + (pos[0, 0] - (shape - 1) / 2) * spacing
    d_row = (pos[1, 0] - pos[0, 0]) * spacing
    d_col = (pos[0, 1] - pos[0, 0]) * spacing
    normal = np.zeros(3)
    normal[(2, 1, 0)[int(axis)]] = spacing  # the fixed axis: one volume voxel thick
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = d_row, d_col, normal, origin
    return _LPS_TO_RAS @ lps


def _case_from_prepared(folder: Path) -> dict[str, Any]:
    item: dict[str, Any] = {"case_id": folder.name, "pa": str(folder / "pa.png"), "lateral": str(folder / "lateral.png")}
    meta = folder / "case.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        iso = info.get("isocentre_mm") or info.get("geometry", {}).get("isocentre_mm")
        if iso is not None:
            item["isocentre_mm"] = [float(v) for v in iso]
    return item


def inference_items(
    pa: str | None = None, lateral: str | None = None, datalist: str | None = None, case_id: str | None = None
) -> list[dict[str, Any]]:
    """What to reconstruct, as items ``{"case_id", "pa", "lateral"[, "isocentre_mm"]}``.

    * ``pa`` and ``lateral``: two radiograph files (PNG/JPEG, NIfTI, DICOM DX/CR), or ``pa`` alone
      pointing at a prepared case folder (with ``pa.png``, ``lateral.png``, ``case.json``).
    * ``datalist``: a prepare ``datalist.json`` (every case of every list) or a JSON list of items.
    """
    if datalist:
        path = Path(datalist)
        if not path.is_file():
            raise FileNotFoundError(f"datalist not found: {datalist}")
        data = json.loads(path.read_text())
        entries = data if isinstance(data, list) else [e for k in ("training", "validation", "test") for e in data.get(k, [])]
        items = []
        for e in entries:
            if "pa" not in e or "lateral" not in e:
                raise ValueError(f"{datalist}: entry {e} needs 'pa' and 'lateral'")
            item = {k: v for k, v in e.items() if k in ("case_id", "isocentre_mm")}
            item["pa"], item["lateral"] = str(path.parent / e["pa"]), str(path.parent / e["lateral"])
            item.setdefault("case_id", Path(e["pa"]).parent.name or Path(e["pa"]).stem)
            case_json = Path(item["pa"]).parent / "case.json"
            if "isocentre_mm" not in item and case_json.is_file():
                item.update({k: v for k, v in _case_from_prepared(case_json.parent).items() if k == "isocentre_mm"})
            items.append(item)
        return items
    if pa and Path(pa).is_dir() and lateral is None:
        return [_case_from_prepared(Path(pa))]
    missing = [name for name, value in (("PA (--pa)", pa), ("lateral (--lateral)", lateral)) if not value]
    if missing:
        raise ValueError(
            f"missing {' and '.join(missing)} image: pass --pa IMG --lateral IMG, --pa PREPARED_CASE_DIR, "
            f"or --datalist FILE"
        )
    return [{"case_id": case_id or Path(str(pa)).stem.split(".")[0], "pa": str(pa), "lateral": str(lateral)}]


class SaveReconstructiond(MapTransform):
    """Write each reconstruction as NIfTI (float32, target scale [0, 1] or HU) plus a PNG preview.

    Args:
        keys: the prediction key, (1, X, Y, Z) or (X, Y, Z) per item, values in the target scale.
        output_dir: where ``<case_id>.nii.gz`` and ``<case_id>.png`` go (atomic writes).
        output_hu: write Hounsfield units (value * 2500 - 1024) instead of the [0, 1] scale.
        size_mm: side of the reconstructed cube (320 mm).
        zoom: the zoom spec of :class:`scripts.engine.ZoomInferer` when the prediction is a zoomed slice
            (1, h, w): it is written as an (h, w, 1) NIfTI at its place in the volume, ``<case_id>_zoom``.
    """

    def __init__(
        self, keys: KeysCollection = "pred", output_dir: str = "eval/inference", output_hu: bool = True,
        size_mm: float = 320.0, zoom: dict | None = None,
    ) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.output_hu = output_hu
        self.size_mm = size_mm
        self.zoom = zoom

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        case_id = str(d.get("case_id", "reconstruction"))
        for key in self.key_iterator(d):
            vol = torch.as_tensor(d[key]).detach().float().cpu().numpy()
            iso = d.get("isocentre_mm", (0.0, 0.0, 0.0))
            iso = [float(v) for v in (iso.tolist() if hasattr(iso, "tolist") else iso)]
            if self.zoom is not None:  # one zoomed slice (1, h, w) -> (h, w, 1) at its place in the volume
                vol = vol.reshape(vol.shape[-2], vol.shape[-1], 1)
                affine = zoom_affine(self.zoom, iso, 128, self.size_mm, vol.shape[0])
                name = f"{case_id}_zoom"
                preview = vol[:, :, 0]  # rows and columns as rendered
            else:
                vol = vol[0] if vol.ndim == 4 else vol
                if vol.ndim != 3:
                    raise ValueError(f"reconstruction {key!r} must be 3D, got shape {vol.shape}")
                affine = reconstruction_affine(iso, vol.shape[0], self.size_mm)
                name = case_id
                preview = np.concatenate(display_planes(vol), axis=1)
            data_out = (np.clip(vol, 0, 1) * 2500 - 1024).astype(np.float32) if self.output_hu else vol.astype(np.float32)
            img = nib.Nifti1Image(data_out, affine)
            img.header.set_xyzt_units("mm")
            img.header["descrip"] = b"PerX2CT: LPS-ordered axes, centre = isocentre"[:79]
            out = save_nifti_atomic(img, self.output_dir / f"{name}.nii.gz")
            save_grey_png(preview, self.output_dir / f"{name}.png")
            d[f"{key}_path"] = str(out)
            logger.info("wrote %s", out)
        return d
