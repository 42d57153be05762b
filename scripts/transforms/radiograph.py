"""Read a chest radiograph (or a DRR) into the network's input convention.

Output of :func:`load_radiograph`: a ``MetaTensor`` of shape ``(1, H, W)`` = ``(1, *detector_shape)``,
float32 in [0, 1], rows top to bottom = head to feet, columns as displayed (see the display
convention of :mod:`scripts.projection.geometry`: PA viewed from the front, the patient's right on the image's
left; lateral with anterior on the left). Images are *not* flipped: give them as displayed.

Processing, the same steps the training DRRs went through:

1. read the file (formats below) into a 2D grey array, rows first;
2. DICOM with ``ImagerPixelSpacing`` (else ``PixelSpacing``), or an explicit ``pixel_spacing_mm``:
   crop or zero-pad centrally, in mm, to the geometry's physical detector (500 x 500 mm by default),
   so a pixel of the result covers the same detector area as a DRR pixel. Without a spacing the whole
   image is taken as the whole detector;
3. steps 3 to 6 are :func:`postprocess_radiograph`, the very function the DRR transform ends with
   (:class:`scripts.transforms.drr.DRR`), so a radiograph and a DRR go through the same code: divide by the
   image's own maximum when ``normalize``;
4. quantise to 8-bit levels (``round(x * 255) / 255``) when ``quantize``, as a saved 8-bit image;
5. resize to ``detector_shape`` (bilinear with anti-aliasing, ``torch.nn.functional.interpolate``);
6. quantise again when ``quantize`` (the resized 8-bit image is 8-bit again).

``pipeline="official"`` (:data:`RADIOGRAPH_PIPELINES`) replaces steps 4 to 6 by what the official PerX2CT
preprocessing (dek924/PerX2CT @ be4c354) did to its DRRs, for the authors' weights: 8 bits by *truncation*
(``(x / max * 255).astype(np.uint8)``, ``data_preprocessing/2_xraypro.py:44-45``), matplotlib's grey colormap
(``plt.imsave(cmap=gray)`` re-read by OpenCV, ``2_xraypro.py:53-57``: the image min..max stretched over the 256
levels, and 24 of the 256 levels come back one lower, see :func:`matplotlib_gray_levels`), then a Lanczos resize of
the 8-bit image with Pillow (``Image.ANTIALIAS`` = ``LANCZOS``, ``3_make_h5_dataset.py:105-108``). Its
``hu_offset`` (24 HU: ``plastimatch adjust --pw-linear "0, -1000"`` on the HU + 1024 volume, ``2_xraypro.py:83``)
is applied by the DRR transform before ray casting (:class:`scripts.transforms.drr.DRR`).

An image that already *is* a network input (8-bit levels, exactly ``detector_shape``, no pixel spacing:
e.g. a prepared case's ``pa.png``) is taken as it is (``x / 255``): re-normalising it by its maximum would
change it, and training reads prepared PNGs exactly so. A prepared PNG therefore reaches the network as the
same tensor in training and in inference (tested).

Formats:

* PNG / JPEG / BMP / TIFF (Pillow): 8-bit grey / 255, 16-bit grey / 65535, colour -> grey (ITU-R 601 luma).
* NIfTI (``.nii``, ``.nii.gz``, nibabel): a 2D array or ``(X, Y, 1)``. The array is read as MONAI and
  ITK store 2D images: nibabel axis 0 = image column (x, left to right), axis 1 = image row (y, top to
  bottom); so the image is ``data.T``. The affine and spacing are ignored (the whole array is the
  detector). Writing ``image.T`` with nibabel and reading it back gives ``image`` (tested).
* DICOM (DX, CR, or any single-frame 2D image; pydicom): modality LUT applied; ``MONOCHROME1``
  (bright = low signal) inverted so bone is bright as in a DRR; the darkest pixel is then set to 0
  (raw detector values carry an arbitrary offset, DRR air is 0). ``ImagerPixelSpacing`` is at the
  detector plane as the geometry's detector; ``PixelSpacing`` may be calibrated to the patient
  plane and is used as given.

Real radiographs differ from the DRRs the network learnt from (source distance often 1800 mm against
the paper's 949 mm, scatter, post-processing, no VOI LUT applied here): expect a domain gap.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from scripts.projection.acquisition import Acquisition, is_dicom_file

__all__ = [
    "RadiographError",
    "MIN_SIZE_PX",
    "DEFAULT_DETECTOR_SIZE_MM",
    "VIEW_SHAPE",
    "read_radiograph_array",
    "quantize",
    "RADIOGRAPH_PIPELINES",
    "matplotlib_gray_levels",
    "postprocess_radiograph",
    "is_network_input",
    "load_radiograph",
    "LoadRadiograph",
    "LoadRadiographsd",
]

logger = logging.getLogger(__name__)

#: Smallest accepted side of an input image, pixels.
MIN_SIZE_PX = 32
#: Physical detector ``(height, width)`` used when no geometry is given (the paper's DRRs).
DEFAULT_DETECTOR_SIZE_MM = (500.0, 500.0)
#: Pixels ``(rows, columns)`` of a network input view (the paper's 128 x 128 radiographs): the input grid,
#: not the output cube's (:data:`scripts.frame.FRAME`).
VIEW_SHAPE: tuple[int, int] = (128, 128)

_PIL_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
_VOLUME_MODALITIES = {"CT", "MR", "PT", "NM"}


class RadiographError(ValueError):
    """A radiograph could not be used: the message names the file (or view) and what is wrong."""


# ---------------------------------------------------------------------------------------- readers
def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _not_2d(path: Path | str, shape: Sequence[int]) -> RadiographError:
    return RadiographError(
        f"{path} is 3D (shape {tuple(int(s) for s in shape)}), a radiograph must be a single 2D image"
    )


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise _not_2d(path, (frames, im.height, im.width))
            im.load()
            mode = im.mode
            if mode in ("L", "1", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "PA", "RGBX"):
                grey = im.convert("L") if mode not in ("L",) else im
                return np.asarray(grey, dtype=np.float64) / 255.0
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise RadiographError(f"{path} could not be read as an image (PNG/JPEG/BMP/TIFF): {e}") from e
    if mode.startswith("I;16") or arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    if mode == "I":  # 32-bit integers: Pillow's container for 16-bit data in some files
        a = arr.astype(np.float64)
        return a / 65535.0 if a.max() <= 65535 else a / a.max()
    return arr.astype(np.float64)  # "F": float32 as stored


def _read_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    try:
        data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)
    except Exception as e:  # noqa: BLE001 - nibabel raises several types for bad files
        raise RadiographError(f"{path} could not be read as NIfTI: {e}") from e
    shape = data.shape
    while data.ndim > 2 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 2:
        raise _not_2d(path, shape)
    return data.T  # nibabel (x = column, y = row) -> (rows, columns)


def _read_dicom(path: Path) -> tuple[np.ndarray, tuple[float, float] | None]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path), force=True)
    except (InvalidDicomError, OSError, ValueError, TypeError, EOFError) as e:
        raise RadiographError(f"{path} could not be read as DICOM: {e}") from e
    if "PixelData" not in ds:
        raise RadiographError(f"{path} could not be read as a DICOM image: it holds no pixel data")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise _not_2d(path, (frames, int(ds.Rows), int(ds.Columns)))
    modality = str(getattr(ds, "Modality", "")).upper()
    if modality in _VOLUME_MODALITIES:
        raise RadiographError(
            f"{path} is a {modality} slice (part of a 3D image), a radiograph must be a single 2D image (DX, CR)"
        )
    try:
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - missing codecs and corrupt data raise various types
        raise RadiographError(f"{path}: the DICOM pixel data could not be decoded: {e}") from e
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if samples > 1:
        from pydicom.pixels import convert_color_space

        photometric = str(getattr(ds, "PhotometricInterpretation", "RGB"))
        if photometric.startswith("YBR"):
            arr = convert_color_space(arr, photometric, "RGB")
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    else:
        from pydicom.pixels import apply_modality_lut

        arr = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if arr.ndim != 2:
        raise _not_2d(path, arr.shape)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = arr.max() - arr  # low values are bright in MONOCHROME1: make bone bright
    arr = arr - arr.min()
    spacing = None
    for tag in ("ImagerPixelSpacing", "PixelSpacing"):
        value = getattr(ds, tag, None)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            spacing = (float(value[0]), float(value[1]))  # (row spacing, column spacing) mm
            break
    return arr, spacing


def read_radiograph_array(path: str | Path, view: str = "radiograph") -> tuple[np.ndarray, tuple[float, float] | None]:
    """Read a radiograph file into ``(image, spacing)``.

    Returns:
        ``image``: 2D float64 ``(rows, columns)``, rows top to bottom, unnormalised (8/16-bit files
        scaled to [0, 1]); ``spacing``: ``(row, column)`` pixel spacing in mm from DICOM, else None.

    Raises:
        RadiographError: missing or unreadable file, not a 2D image.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise RadiographError(f"{view} image not found: {p}")
    if p.is_dir():
        raise RadiographError(f"{view} image {p} is a directory, a radiograph must be a single 2D image file")
    suffix = p.suffix.lower()
    if _is_nifti(p):
        return _read_nifti(p), None
    if is_dicom_file(p):
        return _read_dicom(p)
    if suffix in _PIL_SUFFIXES:
        return _read_pil(p), None
    try:  # unknown suffix: an image Pillow knows, else a DICOM file without the preamble
        return _read_pil(p), None
    except RadiographError:
        pass
    try:
        return _read_dicom(p)
    except RadiographError:
        raise RadiographError(
            f"{p} could not be read: unknown format {suffix!r}; use PNG/JPEG, NIfTI (.nii/.nii.gz) or DICOM (.dcm)"
        ) from None


# ---------------------------------------------------------------------------------------- processing
def _detector_size_mm(geometry: Any) -> tuple[float, float]:
    if geometry is None:
        return DEFAULT_DETECTOR_SIZE_MM
    size = (
        geometry.get("detector_size_mm")
        if isinstance(geometry, Mapping)
        else getattr(geometry, "detector_size_mm", None)
    )
    if size is None or len(size) != 2:
        raise ValueError(f"geometry must have detector_size_mm = (height, width) in mm, got {geometry!r}")
    return float(size[0]), float(size[1])


def _fit_to_detector(img: np.ndarray, spacing: tuple[float, float], size_mm: tuple[float, float]) -> np.ndarray:
    """Crop or zero-pad centrally so the image spans ``size_mm`` exactly (to half a source pixel)."""
    out = img
    for axis in (0, 1):
        n = out.shape[axis]
        want = max(1, int(round(size_mm[axis] / spacing[axis])))
        if want < n:  # crop
            start = (n - want) // 2
            out = np.take(out, np.arange(start, start + want), axis=axis)
        elif want > n:  # pad with zeros (no signal, as air in a DRR)
            before = (want - n) // 2
            pad = [(0, 0), (0, 0)]
            pad[axis] = (before, want - n - before)
            out = np.pad(out, pad)
    return out


def quantize(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Round values in [0, 1] to ``2**bits`` levels: ``round(clip(x, 0, 1) * (2**bits - 1)) / (2**bits - 1)``
    (what saving as an 8-bit image and reading back as ``x / 255`` does)."""
    levels = float(2 ** int(bits) - 1)
    return torch.round(x.clamp(0.0, 1.0) * levels) / levels


#: Post-processing pipelines of DRRs, as data. ``bundle``: this bundle's (HU as loaded, rounding to 8 bits,
#: antialiased bilinear resize, rounding again). ``official``: the official PerX2CT preprocessing's (module
#: docstring): HU + 24 before ray casting, truncation to 8 bits, matplotlib's grey colormap, Pillow Lanczos resize.
RADIOGRAPH_PIPELINES: dict[str, dict[str, Any]] = {
    "bundle": {"hu_offset": 0.0, "quantize": "round", "display_lut": False, "resize": "bilinear_antialias"},
    "official": {"hu_offset": 24.0, "quantize": "truncate", "display_lut": True, "resize": "lanczos"},
}


def matplotlib_gray_levels(levels: np.ndarray) -> np.ndarray:
    """8-bit levels (any integer array) -> what ``plt.imsave(f, levels, cmap=plt.cm.gray)`` stores in each RGB
    channel (``vmin``/``vmax`` unset: the array's own min..max), uint8, same shape.

    matplotlib normalises in float32 (``(v - min) / (max - min)``), takes the colormap index ``int(x * 256)``
    (256 -> 255), and its 256-entry grey table is ``np.linspace(0, 1, 256)`` converted to bytes by
    ``(lut * 255).astype(np.uint8)``: truncation, so float rounding sends 24 levels (33, 37, 41, ..., 244) one
    level down. Checked against matplotlib 3.11 in the tests; the official oracle (matplotlib 3.5.1) lists the
    same 24 levels.
    """
    v = np.asarray(levels)
    lo, hi = float(v.min()), float(v.max())
    if hi > lo:
        x = (v.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
    else:  # matplotlib maps a constant image to 0
        x = np.zeros(v.shape, dtype=np.float32)
    idx = np.clip((x * np.float32(256)).astype(np.int64), 0, 255)
    lut = (np.linspace(0.0, 1.0, 256) * 255).astype(np.uint8)
    return lut[idx]


def _official_8bit(x: torch.Tensor, output_shape: Sequence[int] | None) -> torch.Tensor:
    """Steps 4-6 of the ``official`` pipeline on ``x`` in [0, 1] (already divided by its maximum)."""
    from PIL import Image

    levels = (x.clamp(0.0, 1.0).numpy().astype(np.float32) * np.float32(255)).astype(np.uint8)  # truncation
    levels = matplotlib_gray_levels(levels)
    if output_shape is not None and tuple(levels.shape) != tuple(int(s) for s in output_shape):
        rows, cols = (int(s) for s in output_shape)
        levels = np.asarray(Image.fromarray(levels).resize((cols, rows), Image.Resampling.LANCZOS))
    return torch.from_numpy(levels.astype(np.float32) / np.float32(255))


def postprocess_radiograph(
    img: np.ndarray | torch.Tensor,
    output_shape: Sequence[int] | None = VIEW_SHAPE,
    normalize: bool = True,
    quantize_bits: int | None = 8,
    pipeline: str = "bundle",
) -> torch.Tensor:
    """The one post-processing of DRRs and radiographs: ``(rows, cols)`` -> ``(H, W)`` float32 in [0, 1].

    Steps: divide by the image's own maximum (``normalize``; an all-zero image stays zero); quantise to
    ``quantize_bits`` levels; resize to ``output_shape`` (bilinear, anti-aliased,
    ``torch.nn.functional.interpolate``; None keeps the shape); quantise again. After a resize the maximum
    may be slightly below 1, as in the paper's 8-bit resized DRRs.

    ``pipeline="official"`` (8 bits only): after the division, truncation to 8 bits, matplotlib's grey colormap
    and a Pillow Lanczos resize of the 8-bit image, as the official preprocessing (module docstring).
    """
    if pipeline not in RADIOGRAPH_PIPELINES:
        raise ValueError(f"unknown radiograph pipeline {pipeline!r}; choose one of {sorted(RADIOGRAPH_PIPELINES)}")
    if pipeline == "official" and quantize_bits != 8:
        raise ValueError(
            f"the official radiograph pipeline writes 8-bit images; quantize_bits must be 8, got {quantize_bits}"
        )
    x = torch.as_tensor(np.asarray(img, dtype=np.float32) if not isinstance(img, torch.Tensor) else img)
    x = x.to(torch.float32)
    if normalize:
        m = float(x.max())
        x = x / m if m > 0 else x
    if pipeline == "official":
        return _official_8bit(x.detach().cpu(), output_shape)
    if quantize_bits is not None:
        x = quantize(x, quantize_bits)
    if output_shape is not None and tuple(x.shape) != tuple(int(s) for s in output_shape):
        size = tuple(int(s) for s in output_shape)
        x = F.interpolate(x[None, None], size=size, mode="bilinear", align_corners=False, antialias=True)[0, 0]
        if quantize_bits is not None:
            x = quantize(x, quantize_bits)
    return x


def is_network_input(img: np.ndarray, detector_shape: Sequence[int]) -> bool:
    """True for an image that already is a network input: ``detector_shape`` pixels on the 8-bit lattice
    (``x * 255`` integral), values in [0, 1] (e.g. a prepared ``pa.png`` read as ``x / 255``)."""
    a = np.asarray(img, dtype=np.float64)
    if a.shape != tuple(int(s) for s in detector_shape) or a.min() < 0 or a.max() > 1:
        return False
    levels = a * 255.0
    return bool(np.all(np.abs(levels - np.round(levels)) < 1e-6))


def process_radiograph(
    img: np.ndarray,
    spacing: tuple[float, float] | None = None,
    detector_shape: Sequence[int] = VIEW_SHAPE,
    geometry: Any = None,
    normalize: bool = True,
    quantize: bool = True,
    name: str = "radiograph",
) -> np.ndarray:
    """Steps 2 to 5 of the module docstring on a 2D ``(rows, columns)`` array; returns float32 ``(H, W)``.

    Raises:
        RadiographError: not 2D, smaller than :data:`MIN_SIZE_PX`, constant, or empty after fitting.
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise _not_2d(name, img.shape)
    if min(img.shape) < MIN_SIZE_PX:
        raise RadiographError(
            f"{name} is too small ({img.shape[0]} x {img.shape[1]} px): need at least {MIN_SIZE_PX} px per side"
        )
    if not np.all(np.isfinite(img)):
        raise RadiographError(f"{name} contains non-finite values (NaN or inf)")
    lo, hi = float(img.min()), float(img.max())
    if hi == lo:
        raise RadiographError(f"{name} is constant (every pixel = {hi:g}): not a radiograph")
    if spacing is not None:
        img = _fit_to_detector(img, (float(spacing[0]), float(spacing[1])), _detector_size_mm(geometry))
    if normalize:
        img = np.clip(img, 0.0, None)
        if float(img.max()) <= 0:
            raise RadiographError(f"{name} has no positive value on the detector: cannot normalise by its maximum")
    out = postprocess_radiograph(img, detector_shape, normalize, 8 if quantize else None)
    img = np.clip(out.numpy(), 0.0, 1.0)
    return img.astype(np.float32)


def load_radiograph(
    path: str | Path,
    view: str,
    detector_shape: Sequence[int] = VIEW_SHAPE,
    geometry: Any = None,
    normalize: bool = True,
    quantize: bool = True,
    pixel_spacing_mm: Sequence[float] | None = None,
    acquisition: Acquisition | None = None,
) -> MetaTensor:
    """Read one radiograph as the network's input, ``(1, *detector_shape)`` float32 in [0, 1].

    Args:
        path: PNG/JPEG/BMP/TIFF, NIfTI or DICOM file (see the module docstring for each format).
        view: ``"pa"`` or ``"lateral"`` (named in error messages and stored in the metadata).
        detector_shape: output ``(rows, columns)``.
        geometry: a :class:`scripts.projection.geometry.ProjectionGeometry` (or a mapping) giving
            ``detector_size_mm``; default 500 x 500 mm.
        normalize: divide by the image's own maximum (as the DRRs); off keeps file values (8-bit / 255).
        quantize: round to 8-bit levels as the training PNGs.
        pixel_spacing_mm: ``(row, column)`` spacing in mm to use instead of the file's (e.g. for a JPEG
            whose spacing is known); None: the DICOM spacing if any, else the image fills the detector.
        acquisition: the view's own acquisition (:func:`scripts.projection.acquisition.read_acquisition`): the
            image is turned into the display convention (PatientOrientation) and, when the view has its own
            detector, taken whole as that detector (no crop or pad to ``geometry``'s).

    Returns:
        a ``MetaTensor`` with meta ``filename_or_obj``, ``view``, ``source_shape`` and, when a spacing
        was used, ``pixel_spacing_mm``.

    Raises:
        RadiographError: "<view> image not found: PATH", unreadable file, 3D input, image smaller than
        32 px, constant image.
    """
    arr, spacing = read_radiograph_array(path, view)
    if acquisition is not None:
        arr = acquisition.orient(arr)
        if acquisition.own_detector:
            spacing = None  # the image is the view's whole detector (its size is in the view's geometry)
    if pixel_spacing_mm is not None:
        if len(pixel_spacing_mm) != 2 or min(float(s) for s in pixel_spacing_mm) <= 0:
            raise ValueError(f"pixel_spacing_mm must be (row, column) > 0 mm, got {pixel_spacing_mm!r}")
        spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    if spacing is None and is_network_input(arr, detector_shape):
        normalize = False  # already the network's input (e.g. a prepared PNG): take it as it is
    img = process_radiograph(arr, spacing, detector_shape, geometry, normalize, quantize, name=f"{view} image {path}")
    meta: dict[str, Any] = {
        "filename_or_obj": str(path),
        "view": view,
        "source_shape": tuple(int(s) for s in arr.shape),
    }
    if spacing is not None:
        meta["pixel_spacing_mm"] = spacing
    return MetaTensor(torch.from_numpy(img)[None], meta=meta)


# ---------------------------------------------------------------------------------------- transforms
class LoadRadiograph(Transform):
    """Array transform: a path (or a 2D array, rows first, already a radiograph) -> ``(1, H, W)``."""

    def __init__(
        self,
        view: str = "radiograph",
        detector_shape: Sequence[int] = VIEW_SHAPE,
        geometry: Any = None,
        normalize: bool = True,
        quantize: bool = True,
    ) -> None:
        self.view, self.detector_shape, self.geometry = view, tuple(detector_shape), geometry
        self.normalize, self.quantize = normalize, quantize

    def __call__(self, src: Any) -> MetaTensor:
        if isinstance(src, (str, Path)):
            return load_radiograph(src, self.view, self.detector_shape, self.geometry, self.normalize, self.quantize)
        if isinstance(src, torch.Tensor):
            src = src.detach().cpu().numpy()
        img = process_radiograph(
            np.asarray(src),
            None,
            self.detector_shape,
            self.geometry,
            self.normalize,
            self.quantize,
            name=f"{self.view} image",
        )
        return MetaTensor(torch.from_numpy(img)[None], meta={"view": self.view})


class LoadRadiographsd(MapTransform):
    """Dictionary transform: the ``pa`` and ``lateral`` radiographs -> ``image`` ``(2, H, W)`` float32.

    Channel ``i`` is ``keys[i]`` (default channel 0 = PA, 1 = lateral, the network's convention). Values
    are file paths (or 2D arrays). An absent or None key raises :class:`RadiographError` naming the view.

    Args:
        keys: the view keys, in channel order.
        output_key: where the stacked image goes.
        detector_shape, geometry, normalize, quantize: as :func:`load_radiograph`.
        acquisition_key: optional key of the views' acquisitions (JSON text or mapping, view ->
            :meth:`scripts.projection.acquisition.Acquisition.to_dict`, written by
            :class:`scripts.transforms.acquisition.ReadAcquisitiond`): each file is read with its view's
            (:func:`load_radiograph`'s ``acquisition``).
    """

    def __init__(
        self,
        keys: KeysCollection = ("pa", "lateral"),
        output_key: str = "image",
        detector_shape: Sequence[int] = VIEW_SHAPE,
        geometry: Any = None,
        normalize: bool = True,
        quantize: bool = True,
        acquisition_key: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys=False)
        self.output_key = output_key
        self.acquisition_key = acquisition_key
        self.loaders = {k: LoadRadiograph(str(k), detector_shape, geometry, normalize, quantize) for k in self.keys}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        channels = []
        acqs = d.get(self.acquisition_key) if self.acquisition_key else None
        acqs = json.loads(acqs) if isinstance(acqs, str) and acqs else (acqs or {})
        for key in self.keys:
            if d.get(key) is None:
                raise RadiographError(
                    f"{key} view missing: the item has no {key!r} radiograph (keys present: {sorted(map(str, d))}); "
                    f"PerX2CT needs one image per view {[str(k) for k in self.keys]}"
                )
            acq = acqs.get(str(key))
            if acq is not None and isinstance(d[key], (str, Path)):
                ld = self.loaders[key]
                channels.append(
                    load_radiograph(
                        d[key],
                        ld.view,
                        ld.detector_shape,
                        ld.geometry,
                        ld.normalize,
                        ld.quantize,
                        acquisition=Acquisition(**acq),
                    )
                )
                continue
            channels.append(self.loaders[key](d[key]))
        image = torch.cat([c.as_tensor() for c in channels], dim=0)
        meta = {
            "filename_or_obj": [c.meta.get("filename_or_obj") for c in channels],
            "views": [str(k) for k in self.keys],
        }
        d[self.output_key] = MetaTensor(image, meta=meta)
        return d
