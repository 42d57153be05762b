"""plastimatch (the DRR oracle, Debian package) as the tests and benchmarks call it: its detector normals, its PFM
output, its image orientation against the bundle's display convention, and the MHA volumes it reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["NORMALS", "read_pfm", "plastimatch_to_display", "write_mha"]

#: ``plastimatch drr -n``: the detector normal of each view (LPS).
NORMALS = {"pa": "0 1 0", "lateral": "1 0 0"}


def read_pfm(path: Path) -> np.ndarray:
    """A greyscale PFM as stored: rows in file order (PFM stores the image bottom-up)."""
    with open(path, "rb") as f:
        if f.readline().strip() != b"Pf":
            raise ValueError(f"{path}: not a greyscale PFM")
        w, h = (int(v) for v in f.readline().split())
        scale = float(f.readline())
        data = np.frombuffer(f.read(4 * w * h), dtype="<f4" if scale < 0 else ">f4")
    return data.reshape(h, w).astype(np.float32)


def plastimatch_to_display(pfm_rows: np.ndarray, view: str) -> np.ndarray:
    """plastimatch 1.9.4's DRR (rows as stored in the PFM file) -> our display orientation.

    Worked out once with beads (and pinned by ``tests/test_drr.py::test_plastimatch_orientation``): read in file
    order, plastimatch's lateral (``-n "1 0 0"``) is already in our orientation (rows head to feet, anterior on the
    left); its PA (``-n "0 1 0"``) is mirrored left-right (patient's left on the left), so its columns are reversed.
    """
    return np.ascontiguousarray(pfm_rows[:, ::-1] if view == "pa" else pfm_rows)


def write_mha(volume_xyz: np.ndarray, spacing, origin, path: Path) -> None:
    """LPS axis-aligned volume -> MHA with identity direction (ITK array order is z, y, x)."""
    import itk

    img = itk.image_from_array(np.ascontiguousarray(volume_xyz.transpose(2, 1, 0).astype(np.float32)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    itk.imwrite(img, str(path))
