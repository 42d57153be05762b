"""Atomic file writes: a file appears complete or not at all (temporary file in the same folder, then
``os.replace``), so an interrupted run never leaves a half-written output behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "write_json_atomic", "save_nifti_atomic", "to_uint8", "save_grey_png"]

_UMASK = os.umask(0)
os.umask(_UMASK)


def _temporary(path: Path, suffix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
    return Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (with a final newline) to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_nifti_atomic(img, path: str | os.PathLike) -> Path:
    """Save a nibabel image to ``path`` (``.nii`` or ``.nii.gz``) atomically; returns the path."""
    import nibabel as nib

    path = Path(path)
    tmp = _temporary(path, suffix=".nii.gz" if path.name.lower().endswith(".gz") else ".nii")
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def to_uint8(image, lo: float = 0.0, hi: float = 1.0):
    """Grey values mapped linearly from [lo, hi] to 0..255 (clipped, rounded) as a uint8 array."""
    import numpy as np

    return (np.clip((np.asarray(image, dtype=np.float64) - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)


def save_grey_png(image, path: str | os.PathLike) -> None:
    """Save a 2D image (uint8 as is; anything else through :func:`to_uint8` on [0, 1]) as PNG atomically."""
    import io

    import numpy as np
    from PIL import Image

    image = np.asarray(image)
    buf = io.BytesIO()
    Image.fromarray(image if image.dtype == np.uint8 else to_uint8(image)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
