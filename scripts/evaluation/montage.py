"""Labelled PNG montages of reconstructions: what a person needs to read them without the code.

:func:`reconstruction_montage` lays out the central planes of :meth:`scripts.frame.VolumeFrame.display_planes`
(one row per plane: axial, coronal, sagittal) with one column per volume (e.g. ground truth, prediction,
error), and writes a title (case, HU window, metrics), the column names and the plane names on the
image itself. Grey levels go through the one PNG quantiser, :func:`scripts.utils.atomic.to_uint8`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from scripts.frame import FRAME
from scripts.utils.atomic import save_grey_png, to_uint8

__all__ = ["PLANES", "label_grid", "reconstruction_montage"]

#: Row names of :meth:`scripts.frame.VolumeFrame.display_planes`, in its order.
PLANES = ("axial", "coronal", "sagittal")
_TEXT_H = 14  # pixels per text line (PIL's default bitmap font is ~11 px high)
_MARGIN = 64  # left column for the plane names
_BG = 0
_FG = 255


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def label_grid(
    tiles: Sequence[Sequence[np.ndarray]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: Sequence[str] = (),
) -> np.ndarray:
    """A uint8 image: ``title`` lines on top, then ``col_labels`` over the columns and ``row_labels`` left
    of the rows of ``tiles`` (uint8 2D arrays; a row's tiles are padded to the tallest, columns to the widest)."""
    from PIL import Image, ImageDraw

    if len(tiles) != len(row_labels) or any(len(r) != len(col_labels) for r in tiles):
        raise ValueError(
            f"label_grid: {len(tiles)} rows x {[len(r) for r in tiles]} tiles for "
            f"{len(row_labels)} row and {len(col_labels)} column labels"
        )
    heights = [max(t.shape[0] for t in row) for row in tiles]
    widths = [max(row[c].shape[1] for row in tiles) for c in range(len(col_labels))]
    top = _TEXT_H * (len(title) + 1) + 4
    font = _font()
    text_w = max([int(font.getlength(str(t))) + 4 for t in title] or [0])
    canvas = np.full((top + sum(heights), max(_MARGIN + sum(widths), text_w)), _BG, dtype=np.uint8)
    y = top
    for r, row in enumerate(tiles):
        x = _MARGIN
        for c, tile in enumerate(row):
            canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
            x += widths[c]
        y += heights[r]
    img = Image.fromarray(canvas, mode="L")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(title):
        draw.text((2, 2 + i * _TEXT_H), str(line), fill=_FG, font=font)
    x = _MARGIN
    for c, name in enumerate(col_labels):
        draw.text((x + 2, 2 + len(title) * _TEXT_H), str(name), fill=_FG, font=font)
        x += widths[c]
    y = top
    for r, name in enumerate(row_labels):
        draw.text((2, y + heights[r] // 2 - _TEXT_H // 2), str(name), fill=_FG, font=font)
        y += heights[r]
    return np.asarray(img)


def reconstruction_montage(
    path: str | os.PathLike,
    volumes: Mapping[str, np.ndarray],
    case_id: str,
    metrics: Mapping[str, float] | None = None,
    error_max_hu: float = 500.0,
) -> np.ndarray:
    """Write (atomically) and return a labelled montage of LPS-ordered (X, Y, Z) volumes in the target scale.

    ``volumes`` maps a column name to a volume, e.g. ``{"ground truth": t, "prediction": p}``; when both
    of those names are present an ``|error|`` column is added, shown from 0 to ``error_max_hu`` HU.
    The title names the case, the HU window of the grey levels and the ``metrics`` (name -> value).
    """
    cols = dict(volumes)
    if "ground truth" in cols and "prediction" in cols:
        cols[f"|error| 0-{error_max_hu:g} HU"] = np.abs(cols["prediction"] - cols["ground truth"])
    planes = {name: FRAME.display_planes(np.asarray(v, dtype=np.float32)) for name, v in cols.items()}
    err_hi = error_max_hu / FRAME.hu_range
    tiles = [
        [to_uint8(planes[name][p], 0.0, err_hi if name.startswith("|error|") else 1.0) for name in cols]
        for p in range(len(PLANES))
    ]
    lo_hu, hi_hu = FRAME.target_to_hu(0.0), FRAME.target_to_hu(1.0)
    title = [f"case {case_id}", f"grey: {lo_hu:g} to {hi_hu:g} HU"]
    if metrics:
        title.append(", ".join(f"{k} {float(v):.4g}" for k, v in metrics.items()))
    image = label_grid(tiles, PLANES, list(cols), title)
    save_grey_png(image, path)
    return image
