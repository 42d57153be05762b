"""The training data of PerX2CT as the official code draws it: batches of independent slices.

One training sample is one ``(case, axis, slice index[, zoom box])`` with its own PA/lateral pair and its
ground-truth slice; a batch is ``N`` such samples across cases (the official batch: 20). Four pieces:

* :func:`cache_cases` decodes each case once into an uncompressed ``.npy`` cache (the X-ray pair, and the
  1 mm HU cube ``ct_1mm`` as int16, or the 128^3 target when a case has no 1 mm cube), which
  :class:`SliceDataset` memory-maps: the operating system's page cache keeps hot cases in RAM, shared
  by all loader workers, and a sample reads only the few planes its slice touches.
* :class:`SliceSampler` draws the samples: every epoch a seeded permutation of all ``cases x 3 axes x
  n indices`` slices (the official epoch: every training slice once) and, for the zoom-in variant, one
  zoom box per sample. A ``DistributedSampler`` subclass: MONAI's trainer calls ``set_epoch`` at each
  epoch start, so a resumed run continues with the next epoch's permutation, and under ``torchrun``
  each rank takes its share.
* :class:`SliceDataset` renders a sample: the ground truth is point-sampled (trilinear) from the 1 mm
  cube at the rendered pixels' positions (:func:`scripts.slicing.slice_positions`, mm through
  :data:`scripts.frame.FRAME`), zero (air) outside the cube, as the official ``grid_sample`` does.
* :class:`SliceBatch` (the trainer's ``prepare_batch``) turns a collated batch of samples into the network's
  arguments: B = N cases with S = 1 slice each.

Zoom-in (the global variant, official ``get_p0_zoom_size``): with probability ``1 - zoom_prob`` the full
slice, else a side ``size ~ U(zoom_min, zoom_max)`` (continuous) and a corner ``p0 ~ U(-margin, n + margin
- size)`` per in-plane axis (boxes may leave the volume). The official query grid starts 1.5 voxels inside
``p0`` (``p0 + 1.5 + t * size / 32``); in :mod:`scripts.slicing`'s box convention that grid is the box
``row0 = p0 + n / (2 g) - size / (2 g)`` (``p0 + 2 - size / 64`` for ``n = 128``, ``g = 32``), so the full
slice stays ``(0, 0, n)``.

Deliberate differences from the official ground truth (documented in the model card): the official crop
of a zoomed slice transposes rows and columns when ``p0[0] != p0[1]`` and spans ``p0 .. p0 + size - 1``
(up to 1.5 voxels off its own query grid), and maps 128-grid voxel ``v`` to 1 mm pixel ``v * 319 / 127``;
here the ground truth lies exactly at the rendered pixels (voxel ``v`` at ``2.5 v + 0.75`` mm-pixels).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scripts.errors import check_stop, stop
from scripts.frame import FRAME, VolumeFrame
from scripts.slicing import AXES, axis_code, slice_positions
from scripts.utils.atomic import write_json_atomic
from scripts.utils.command_line import command_line
from scripts.utils.recent import RecentCache
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

__all__ = [
    "CachedCase",
    "cache_cases",
    "SliceDataset",
    "SliceSampler",
    "SliceBatch",
    "official_zoom_box",
    "official_zoom_range",
]

logger = logging.getLogger(__name__)

#: Cases a :class:`SliceDataset` keeps open per process (memory maps and X-ray pairs), least recently used closed
#: first (a reopen costs ~0.3 ms: two .npy headers and the 128 KB X-ray pair, from the page cache).
OPEN_CASES = 64
#: Version of the cache layout; bump when what is written changes meaning.
CACHE_VERSION = "slices/2"
FINE_KEY = "ct_1mm"


# ------------------------------------------------------------------------------------------ cache
class CachedCase(dict):
    """One decoded case on disk: ``{"case_id", "dir", "kind": "1mm" | "target", "volume": file of the ground-truth
    cube, "shape", "size_mm"}``; ``dir`` also holds ``image.npy`` and ``target.npy`` (the 128^3 target)."""


def _stamp(value: Any) -> Any:
    """A file or folder path -> (path, size, mtime) so an edited source invalidates its cache."""
    if isinstance(value, str) and os.path.exists(value):
        st = os.stat(value)
        return [value, st.st_size, st.st_mtime_ns]
    return value


def case_key(item: Mapping[str, Any], mode: str) -> str:
    """Cache key of a datalist item: its fields, the files' sizes and times, the mode and the layout."""
    blob = json.dumps(
        {"v": CACHE_VERSION, "mode": mode, **{str(k): _stamp(v) for k, v in item.items()}}, sort_keys=True, default=str
    )
    name = str(item.get("case_id", "case"))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
    return f"{safe}-{hashlib.sha1(blob.encode()).hexdigest()[:16]}"


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _affine(x: Any) -> np.ndarray | None:
    a = getattr(x, "affine", None)
    return None if a is None else _as_numpy(a).astype(np.float64)


def _fine_cube(item: Mapping[str, Any], out: Mapping[str, Any]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The 1 mm HU cube of a case (X, Y, Z) int16 and its affine, from the transform's output (raw mode)
    or the datalist item's ``ct_1mm`` file (prepared mode); (None, None) when the case has none."""
    if FINE_KEY in out and not isinstance(out[FINE_KEY], str):
        vol = out[FINE_KEY]
        arr = _as_numpy(vol)
        return arr.reshape(arr.shape[-3:]), _affine(vol)
    path = item.get(FINE_KEY)
    if isinstance(path, str) and os.path.isfile(path):
        import nibabel as nib

        img = nib.load(path)
        return np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)
    return None, None


def _fine_is_frame_cube(fine: np.ndarray, fine_affine: np.ndarray | None, label: Any) -> str | None:
    """None if the 1 mm cube covers the same cube as the 128^3 target (same centre and size), else why not."""
    n = fine.shape
    if len(n) != 3 or len(set(n)) != 1:
        return f"1 mm cube has shape {n}, not a cube"
    label_affine = _affine(label)
    if fine_affine is None or label_affine is None:
        return None  # no affines to compare (plain arrays): trust the layout
    m = np.linalg.solve(fine_affine, label_affine)  # target voxel -> fine voxel
    fine_frame = VolumeFrame(shape=n[0], size_mm=FRAME.size_mm)
    expect = np.eye(4)
    expect[:3, :3] *= FRAME.spacing_mm / fine_frame.spacing_mm
    expect[:3, 3] = fine_frame.centre_voxel - FRAME.centre_voxel * FRAME.spacing_mm / fine_frame.spacing_mm
    if not np.allclose(m, expect, atol=1e-2):
        return "1 mm cube and 128^3 target do not cover the same cube (affines differ)"
    return None


def cache_cases(
    items: Sequence[Mapping[str, Any]],
    transform: Callable[[dict], Mapping[str, Any]],
    cache_dir: str | os.PathLike,
    mode: str = "prepared",
    use_fine: bool = True,
) -> list[CachedCase]:
    """Decode every case once into ``<cache_dir>/slices/<key>/`` and return their descriptions.

    Args:
        items: datalist items (``case_id``, ``pa``, ``lateral``, ``ct`` [, ``ct_1mm``] paths, or ``ct`` for raw CTs).
        transform: the case transform (train.json's ``train#preprocessing``: ``case_loading`` + ``case_outputs``) giving
            ``image`` (2, H, W) and ``label`` (1, 128, 128, 128), and in raw mode ``ct_1mm`` (1, 320, 320, 320) HU.
        cache_dir: cache root (the training config's ``cache_dir``).
        mode: the datalist mode (part of the cache key).
        use_fine: use the 1 mm cube when a case has one (False: always the 128^3 target).

    Writes ``image.npy`` (2, H, W) float32, ``target.npy`` (the 128^3 target, float32), ``ct_1mm.npy`` (the 1 mm
    cube as int16 HU, when the case has one) and ``case.json``; a case already cached is not decoded again. A case
    without a usable 1 mm cube falls back to its 128^3 target with a logged note.

    Ctrl-C / SIGTERM (:func:`scripts.errors.listen`): the cases cached so far are kept (``case.json`` is written
    last, so a half-written case is decoded again next time); one line, exit status 130 (:func:`scripts.errors.stop`).
    """
    root = Path(cache_dir) / "slices"
    cases: list[CachedCase] = []
    try:
        _cache_all(items, transform, root, mode, use_fine, cases)
    except KeyboardInterrupt:
        raise stop(
            f"\ninterrupted while building the slice cache ({len(cases)}/{len(items)} cases cached in {root}, kept "
            f"for the next run); run again with: {command_line()}"
        ) from None
    kinds = [c["kind"] for c in cases]
    logger.info(
        "slice cache: %d cases (%d with a 1 mm cube, %d with the 128^3 target only)",
        len(cases),
        kinds.count("1mm"),
        kinds.count("target"),
    )
    return cases


def _cache_all(
    items: Sequence[Mapping[str, Any]],
    transform: Callable[[dict], Mapping[str, Any]],
    root: Path,
    mode: str,
    use_fine: bool,
    cases: list[CachedCase],
) -> None:
    """The loop of :func:`cache_cases`: appends each case to ``cases`` as it is ready."""
    for item in items:
        check_stop()  # a stop request swallowed inside the previous case still stops before the next one
        folder = root / case_key(item, mode)
        info_file = folder / "case.json"
        if info_file.is_file():
            info = CachedCase(json.loads(info_file.read_text()), dir=str(folder))
        else:
            case_id = str(item.get("case_id", folder.name))
            logger.info("caching %s for slice sampling in %s", case_id, folder)
            out = transform(dict(item))
            # a stop swallowed inside the transform (ITK's lazy loading of its compiled modules clears a
            # KeyboardInterrupt raised while they load) stops here, before anything of this case is written
            check_stop()
            image = _as_numpy(out["image"]).astype(np.float32)
            fine, fine_affine = _fine_cube(item, out) if use_fine else (None, None)
            why = None if fine is None else _fine_is_frame_cube(fine, fine_affine, out["label"])
            folder.mkdir(parents=True, exist_ok=True)
            _save_npy(folder / "image.npy", image)
            label = _as_numpy(out["label"]).astype(np.float32)
            _save_npy(folder / "target.npy", label.reshape(label.shape[-3:]))
            if fine is not None and why is None:
                _save_npy(folder / "ct_1mm.npy", np.clip(np.rint(fine), -32768, 32767).astype(np.int16))
                kind, volume, shape = "1mm", "ct_1mm.npy", int(fine.shape[0])
            else:
                if use_fine:
                    logger.warning(
                        "%s: %s; training targets come from the 128^3 target instead (re-prepare the case to add "
                        "ct_1mm.nii.gz for point-sampled 1 mm ground truth)",
                        case_id,
                        why or "no 1 mm cube (ct_1mm)",
                    )
                kind, volume, shape = "target", "target.npy", int(label.shape[-1])
            info = CachedCase(case_id=case_id, kind=kind, volume=volume, shape=shape, size_mm=FRAME.size_mm)
            write_json_atomic(info_file, dict(info))
            info["dir"] = str(folder)
        cases.append(info)


# ------------------------------------------------------------------------------------------ dataset
class SliceDataset(Dataset):
    """Samples ``(case, axis, index, box)`` -> ``{"image", "label", "slice_axis", "slice_index", "zoom_box"}``.

    Args:
        cases: the output of :func:`cache_cases`.
        axes: slicing axes (default all three, as the paper).
        output_size: pixels per side of a rendered slice (the decoder's output, 128).
        volume_shape: voxels per side of the target grid in which slices are given (128).

    Items: ``image`` (2, H, W) float32 (PA, lateral); ``label`` (1, output_size, output_size) float32 in the
    target scale, trilinear from the 1 mm cube (or the 128^3 target) at the rendered pixels, 0 outside;
    ``slice_axis`` int64, ``slice_index`` float32 (voxels of the 128 grid), ``zoom_box`` (3,) float32
    ``(row0, col0, size)``. A key is either an int (slice ``k`` of the flat ``case x axis x index`` list,
    full box) or a tuple ``(k, row0, col0, size)`` from :class:`SliceSampler`. ``len`` = cases x axes x
    ``volume_shape`` slices.
    """

    def __init__(
        self,
        cases: Sequence[Mapping[str, Any]],
        axes: Sequence[str | int] = AXES,
        output_size: int = FRAME.shape,
        volume_shape: int = FRAME.shape,
    ) -> None:
        if not cases:
            raise ValueError("SliceDataset needs at least one case")
        self.cases = [dict(c) for c in cases]
        self.axes = [axis_code(a) for a in axes]
        self.output_size = int(output_size)
        self.volume_shape = int(volume_shape)
        same = self.volume_shape == FRAME.shape
        self.frame = FRAME if same else VolumeFrame(shape=self.volume_shape, size_mm=FRAME.size_mm)
        self._open = RecentCache(OPEN_CASES)  # case -> (X-ray pair, memory-mapped cube), per process

    def __len__(self) -> int:
        return len(self.cases) * len(self.axes) * self.volume_shape

    def locate(self, k: int) -> tuple[int, int, int]:
        """Flat slice number -> (case number, axis code, index)."""
        per_case = len(self.axes) * self.volume_shape
        c, rest = divmod(int(k), per_case)
        a, i = divmod(rest, self.volume_shape)
        return c, self.axes[a], i

    def _arrays(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Case ``c``'s X-ray pair and memory-mapped cube, opened lazily in each worker process; at most
        :data:`OPEN_CASES` stay open (least recently used closed first): each memory map holds a file descriptor
        (CPython's ``mmap`` duplicates it: ``Modules/mmapmodule.c``, ``new_mmap_object``) and its X-ray pair 128 KB,
        so an unbounded set would grow with the number of cases (LIDC-IDRI: ~825 training cases, near a common
        1024-descriptor limit per process)."""

        def open_case() -> tuple[np.ndarray, np.ndarray]:
            case = self.cases[c]
            d = Path(case["dir"])
            volume = case.get("volume", "ct_1mm.npy" if case["kind"] == "1mm" else "target.npy")
            return np.load(d / "image.npy"), np.load(d / volume, mmap_mode="r")

        return self._open.get_or_make(c, open_case)

    def target(self, c: int, positions: torch.Tensor) -> torch.Tensor:
        """Ground truth of case ``c`` at voxel ``positions`` (h, w, 3) of the 128 grid -> (h, w) target scale.

        Trilinear in numpy from the memory-mapped cube: the 8 neighbours of each position are gathered (only
        those pages are read), converted to the target scale (HU clipped as the official 1 mm slices), and
        weighted; neighbours outside the cube count as 0 (air), as ``grid_sample(padding_mode="zeros")``.
        """
        case = self.cases[c]
        _, vol = self._arrays(c)
        n = vol.shape[0]
        pos = positions.detach().cpu().double().numpy().reshape(-1, 3)
        if case["kind"] == "1mm":
            fine = VolumeFrame(shape=n, size_mm=float(case.get("size_mm", FRAME.size_mm)))
            pos = fine.mm_to_voxel(self.frame.voxel_to_mm(pos))
        else:
            pos = pos * (n / self.volume_shape) + (n / self.volume_shape - 1) / 2
        base = np.floor(pos).astype(np.int64).T  # (3, M)
        frac = pos.T - base
        weight = [(1.0 - frac[a], frac[a]) for a in range(3)]  # per axis: weights of the lower, upper neighbour
        inside = [((base[a] >= 0) & (base[a] < n), (base[a] >= -1) & (base[a] < n - 1)) for a in range(3)]
        index = [(np.clip(base[a], 0, n - 1), np.clip(base[a] + 1, 0, n - 1)) for a in range(3)]
        # 3D gathers, never vol.reshape(-1): a cube cached in Fortran order (prepared cases: nibabel's ct_1mm) would be
        # copied whole (65 MB, ~0.15 s) on every sample by a C-order reshape
        out = np.zeros(pos.shape[0], dtype=np.float64)
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    w = weight[0][dx] * weight[1][dy] * weight[2][dz] * (inside[0][dx] & inside[1][dy] & inside[2][dz])
                    v = vol[index[0][dx], index[1][dy], index[2][dz]].astype(np.float64)
                    out += w * (FRAME.hu_to_target(v) if case["kind"] == "1mm" else v)
        return torch.from_numpy(out.reshape(positions.shape[:-1]).astype(np.float32))

    def __getitem__(self, key: Any) -> dict[str, Any]:
        if isinstance(key, (tuple, list)):
            k, box = int(key[0]), [float(v) for v in key[1:4]]
        else:
            k, box = int(key), [0.0, 0.0, float(self.volume_shape)]
        c, axis, index = self.locate(k)
        image, _ = self._arrays(c)
        axis_t = torch.tensor(axis, dtype=torch.long)
        index_t = torch.tensor(float(index))
        box_t = torch.tensor(box, dtype=torch.float32)
        positions = slice_positions(axis_t, index_t, box_t, self.output_size, self.volume_shape)  # (h, w, 3)
        return {
            "image": torch.from_numpy(np.array(image, dtype=np.float32)),
            "label": self.target(c, positions)[None].to(torch.float32),
            "slice_axis": axis_t,
            "slice_index": index_t,
            "zoom_box": box_t,
        }


# ------------------------------------------------------------------------------------------ sampler
def official_zoom_range(
    volume_shape: int, zoom_min: float | None = None, zoom_max: float | None = None, margin: float | None = None
) -> tuple[float, float, float]:
    """``(zoom_min, zoom_max, margin)`` in voxels, each ``None`` replaced by the official value on an ``n``-voxel
    grid: ``n / 4`` (32 on the 128 grid), ``n`` (128) and ``zoom_min / 4`` (8)."""
    n = float(volume_shape)
    lo = n / 4 if zoom_min is None else float(zoom_min)
    return lo, n if zoom_max is None else float(zoom_max), lo / 4 if margin is None else float(margin)


def official_zoom_box(
    u: torch.Tensor,
    volume_shape: int = FRAME.shape,
    query_grid: int = 32,
    zoom_min: float | None = None,
    zoom_max: float | None = None,
    margin: float | None = None,
    zoom_prob: float = 0.5,
) -> torch.Tensor:
    """Zoom boxes drawn as the official ``get_p0_zoom_size`` from uniform numbers ``u`` (M, 4) in [0, 1).

    Defaults: the official values (:func:`official_zoom_range`), as :class:`SliceSampler`.

    ``u[:, 0] < zoom_prob`` zooms (official: full slice when ``random() < use_zoom_ratio`` = 0.5, so the
    two are the same for 0.5); size ``zoom_min + u1 (zoom_max - zoom_min)``; corner ``p0 = -margin + u (n +
    2 margin - size)`` per in-plane axis; box ``(p0 + n/(2g) - size/(2g), ..., size)``. Full slices: ``(0, 0, n)``.
    Returns (M, 3) float32.
    """
    n, g = float(volume_shape), float(query_grid)
    zoom_min, zoom_max, margin = official_zoom_range(volume_shape, zoom_min, zoom_max, margin)
    zoomed = u[:, 0] < zoom_prob
    size = zoom_min + u[:, 1] * (zoom_max - zoom_min)
    p0 = -margin + u[:, 2:4] * (n + 2 * margin - size)[:, None]
    corner = p0 + (n - size)[:, None] / (2 * g)
    box = torch.cat((corner, size[:, None]), dim=1)
    full = torch.tensor([0.0, 0.0, n], dtype=box.dtype).expand_as(box)
    return torch.where(zoomed[:, None], box, full).to(torch.float32)


class SliceSampler(DistributedSampler):
    """Seeded sampler of :class:`SliceDataset` keys: each epoch a permutation of all slices, plus zoom boxes.

    Args:
        dataset: the :class:`SliceDataset`.
        zoom_prob: probability of a zoomed box (0.5 for the global variant, 0 otherwise).
        query_grid: the network's query points per side (32), for the official grid offset.
        zoom_min, zoom_max, zoom_margin: official zoom sides ``U(32, 128)`` and corner margin 8 (128 grid).
        shuffle: permute the slices (training) or keep their order (validation).
        seed: seed of the epoch permutations; epoch ``e`` uses ``seed + e`` (as ``DistributedSampler``).
        num_replicas, rank: default from ``torch.distributed`` when initialised, else 1 and 0.
        drop_last: drop the tail that does not divide evenly among replicas (else pad by repeating).

    Yields ``(k, row0, col0, size)`` tuples. Reproducible: the same seed and epoch give the same keys.
    """

    def __init__(
        self,
        dataset: SliceDataset,
        zoom_prob: float = 0.0,
        query_grid: int = 32,
        zoom_min: float | None = None,
        zoom_max: float | None = None,
        zoom_margin: float | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        num_replicas = num_replicas if num_replicas is not None else (torch.distributed.get_world_size() if dist else 1)
        rank = rank if rank is not None else (torch.distributed.get_rank() if dist else 0)
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=int(seed), drop_last=drop_last
        )
        if not 0.0 <= zoom_prob <= 1.0:
            raise ValueError(f"zoom_prob must be in [0, 1], got {zoom_prob}")
        n = float(getattr(dataset, "volume_shape", FRAME.shape))
        self.zoom_prob = float(zoom_prob)
        self.query_grid = int(query_grid)
        self.zoom_min, self.zoom_max, self.zoom_margin = official_zoom_range(n, zoom_min, zoom_max, zoom_margin)
        if not 0 < self.zoom_min <= self.zoom_max:
            raise ValueError(f"need 0 < zoom_min <= zoom_max, got {self.zoom_min}, {self.zoom_max}")
        self.volume_shape = int(n)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        total = len(self.dataset)
        order = torch.randperm(total, generator=g) if self.shuffle else torch.arange(total)
        u = torch.rand(total, 4, generator=g, dtype=torch.float64)  # one draw per position, same on every rank
        if self.drop_last:
            order, u = order[: self.total_size], u[: self.total_size]
        else:
            pad = self.total_size - total
            reps = math.ceil(pad / total) if pad > 0 else 0
            order = torch.cat([order] + [order] * reps)[: self.total_size]
            u = torch.cat([u] + [u] * reps)[: self.total_size]
        order, u = (
            order[self.rank : self.total_size : self.num_replicas],
            u[self.rank : self.total_size : self.num_replicas],
        )
        boxes = official_zoom_box(
            u, self.volume_shape, self.query_grid, self.zoom_min, self.zoom_max, self.zoom_margin, self.zoom_prob
        )
        for k, box in zip(order.tolist(), boxes.tolist()):
            yield (k, *box)


class SliceBatch:
    """``prepare_batch`` for ``SupervisedTrainer``: a batch of independent slice samples, ready for the network.

    Takes a collated batch of :class:`scripts.data.slice_sampling.SliceDataset` items ``{"image": (N, 2, H, W),
    "label": (N, 1, h, w), "slice_axis": (N,), "slice_index": (N,), "zoom_box": (N, 3)}`` and returns
    ``(image, label, (), kwargs)`` with ``kwargs`` = ``slice_axis`` (N, 1) int64, ``slice_index`` (N, 1) float32,
    ``zoom_box`` (N, 1, 3) float32: the network sees B = N cases with S = 1 slice each, so every sample has its
    own X-ray pair and each view's N images are encoded together (the official batch statistics).
    """

    keys = ("image", "label", "slice_axis", "slice_index", "zoom_box")

    def __call__(
        self, batchdata: dict, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
    ):
        missing = [k for k in self.keys if k not in batchdata]
        if missing:
            raise KeyError(f"a slice batch needs keys {list(self.keys)}; missing {missing} (got {sorted(batchdata)})")

        def to(x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
            return torch.as_tensor(x).to(device=device, dtype=dtype, non_blocking=non_blocking)

        image, label = to(batchdata["image"]), to(batchdata["label"])
        if label.ndim != 4 or image.ndim != 4 or image.shape[0] != label.shape[0]:
            raise ValueError(
                f"need image (N, 2, H, W) and label (N, 1, h, w), got {tuple(image.shape)} and {tuple(label.shape)}"
            )
        n = image.shape[0]
        kw = {
            "slice_axis": to(batchdata["slice_axis"], torch.long).reshape(n, 1),
            "slice_index": to(batchdata["slice_index"], torch.float32).reshape(n, 1),
            "zoom_box": to(batchdata["zoom_box"], torch.float32).reshape(n, 1, 3),
        }
        return image, label, (), kw
