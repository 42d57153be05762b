"""Data preparation: raw chest CTs -> prepared cases (CT target, PA and lateral DRRs) + ``datalist.json``.

The workflow behind ``configs/prepare.json``::

    python -m monai.bundle run --config_file configs/prepare.json --dataset_dir RAW --output_dir OUT \\
        [--split "[0.8,0.1,0.1]"] [--split_file FILE] [--seed 0] [--num_workers 2]

    torchrun --standalone --nproc_per_node N -m monai.bundle run --config_file configs/prepare.json ...

Cases (:func:`discover_cases`), sorted by case id:

* a NIfTI / MHA / MHD / NRRD file directly under ``RAW`` (case id = file name without extensions);
* a sub-folder of ``RAW`` (case id = folder name): its whole subtree goes to the loader
  (``LoadCTd``), which picks the CT series with most slices of a TCIA patient folder. Empty folders
  are cases too: they fail with the loader's message.

Hidden files and folders (name starting with ``.``), other files (README, ``.raw`` companions of
``.mhd``) and the output folder itself are ignored. Characters other than letters, digits, ``.``,
``_`` and ``-`` in a case id become ``_``; two sources with the same case id stop the run before any
work, naming both (rename one).

Per case, the transform chain ``preprocessing`` of prepare.json (LoadCTd -> NormalizeCTd -> DRRd ->
CTTargetd) runs on ``{"case_id": id, "ct": path}`` and :func:`save_case` writes, into
``OUT/.tmp-<case_id>-<pid>/`` renamed to ``OUT/<case_id>/`` when complete:

* ``ct.nii.gz``: the ``(128, 128, 128)`` float32 target in [0, 1], array axes LPS, NIfTI affine =
  the MetaTensor's (RAS, 2.5 mm voxels), qform/sform code 1 (scanner);
* ``pa.png``, ``lateral.png``: 8-bit grey 128 x 128, row 0 = head (the DRRs' 8-bit levels x 255);
* ``case.json``: source path, geometry (``ProjectionGeometry.to_dict()`` with the isocentre in LPS mm,
  also as ``isocentre_mm``), original shape and spacing, output description, package versions.

A finished case folder always holds all four files (:data:`CASE_FILES`); on a rerun such a folder is
skipped (delete it to prepare the case again), and stale ``.tmp-*`` folders are removed at start. A failing case never stops the batch:
``OUT/failures.json`` (a list of ``{"case_id", "source", "reason", "error"}``, sorted by case id) lists
the cases of the last run that are not prepared; a case that succeeds on a rerun leaves it.

``OUT/datalist.json`` (:func:`build_datalist`) is written from every complete case folder in ``OUT``
with lists ``training``, ``validation``, ``test`` of ``{"case_id", "pa", "lateral", "ct"}`` (paths
relative to ``OUT``); see :func:`assign_split` for the split rules.

Under ``torchrun`` (``WORLD_SIZE`` > 1) rank ``r`` prepares ``cases[r::world_size]``, writes its
results to ``OUT/failures.rank<r>.json``; after a gloo barrier rank 0 merges them into
``failures.json`` and writes ``datalist.json``. The exit status is non-zero only when no case is
prepared at the end (none succeeded and none was already done).
"""

from __future__ import annotations

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import datetime
import json
import logging
import math
import os
import platform
import random
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scripts.atomic import write_json_atomic

__all__ = [
    "CASE_FILES",
    "VOLUME_SUFFIXES",
    "PrepareError",
    "safe_case_id",
    "discover_cases",
    "is_case_complete",
    "complete_cases",
    "split_counts",
    "assign_split",
    "read_split_file",
    "build_datalist",
    "run_chain",
    "save_case",
    "prepare_case",
    "write_json_atomic",
    "PrepareWorkflow",
]

logger = logging.getLogger(__name__)

#: Files of a complete prepared case folder.
CASE_FILES = ("ct.nii.gz", "pa.png", "lateral.png", "case.json")
#: Volume files that are cases when they lie directly under the raw folder (longest suffix first).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
SPLIT_NAMES = ("training", "validation", "test")
_TMP_PREFIX = ".tmp-"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class PrepareError(ValueError):
    """A problem with the whole preparation run (not one case), with what to do about it."""


# ------------------------------------------------------------------------------------ case discovery
def safe_case_id(name: str) -> str:
    """``name`` with every character other than letters, digits, ``.``, ``_``, ``-`` replaced by ``_``
    (no leading dot, so a case folder is never hidden)."""
    cid = _UNSAFE.sub("_", name)
    if cid.startswith("."):
        cid = "_" + cid[1:]
    return cid or "_"


def _volume_stem(name: str) -> str | None:
    low = name.lower()
    for s in VOLUME_SUFFIXES:
        if low.endswith(s) and len(name) > len(s):
            return name[: -len(s)]
    return None


def discover_cases(raw_dir: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> list[tuple[str, str]]:
    """The cases under ``raw_dir`` as ``[(case_id, path), ...]`` sorted by case id (see the module doc).

    Args:
        raw_dir: the folder of raw CTs.
        exclude: folders to ignore (e.g. the output folder when it lies inside ``raw_dir``).

    Raises:
        PrepareError: ``raw_dir`` is not a folder, or two entries give the same case id.
    """
    root = Path(raw_dir)
    if not root.is_dir():
        raise PrepareError(f"dataset_dir {root} is not a folder: pass --dataset_dir with a folder of CTs "
                           "(DICOM series folders, TCIA patient folders, NIfTI/MHA files)")
    skip = {os.path.realpath(p) for p in exclude}
    found: dict[str, list[str]] = {}
    loose_dicom = 0
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if os.path.realpath(entry.path) in skip:
            continue
        if entry.is_dir():
            cid = safe_case_id(entry.name)
        elif entry.is_file():
            stem = _volume_stem(entry.name)
            if stem is None:
                logger.debug("ignoring %s: not a volume file or a folder", entry.path)
                loose_dicom += entry.name.lower().endswith(".dcm")
                continue
            cid = safe_case_id(stem)
        else:
            continue
        found.setdefault(cid, []).append(str(root / entry.name))
    if loose_dicom:
        logger.warning("%s holds %d DICOM file(s) directly, which are ignored: put each CT series (or patient) "
                       "in its own sub-folder, one folder per case", root, loose_dicom)
    dups = {c: p for c, p in found.items() if len(p) > 1}
    if dups:
        lines = "; ".join(f"{c!r} from {', '.join(p)}" for c, p in sorted(dups.items()))
        raise PrepareError(f"case ids must be unique, but {lines}: rename one of each so that names differ")
    return sorted((c, p[0]) for c, p in found.items())


def is_case_complete(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds every file of :data:`CASE_FILES` (non-empty)."""
    f = Path(folder)
    return all((f / name).is_file() and (f / name).stat().st_size > 0 for name in CASE_FILES)


def complete_cases(output_dir: str | os.PathLike) -> list[str]:
    """Sorted ids of the complete case folders in ``output_dir`` (hidden folders ignored)."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    return sorted(e.name for e in os.scandir(out) if e.is_dir() and not e.name.startswith(".") and is_case_complete(e.path))


# ------------------------------------------------------------------------------------ split
def _fractions(split: Any) -> tuple[float, float, float]:
    if isinstance(split, str):
        text = split.strip()
        try:
            split = json.loads(text)
        except json.JSONDecodeError:
            split = [s for s in text.strip("[]()").split(",") if s.strip()]
    try:
        fr = tuple(float(x) for x in split)
    except (TypeError, ValueError):
        raise PrepareError(f"split must be three numbers (training, validation, test), got {split!r}") from None
    if len(fr) != 3 or not all(math.isfinite(x) and x >= 0 for x in fr) or sum(fr) <= 0:
        raise PrepareError(f"split must be three non-negative numbers with a positive sum, e.g. [0.8,0.1,0.1]; got {split!r}")
    total = sum(fr)
    return tuple(x / total for x in fr)  # type: ignore[return-value]


def split_counts(n: int, split: Any) -> tuple[int, int, int]:
    """How many of ``n`` cases go to training, validation and test.

    Fractions are normalised to sum 1, then the largest-remainder rule applies: each list gets
    ``floor(fraction * n)`` and the cases left over go, one each, to the lists with the largest
    fractional parts (ties: training, then validation, then test). So the counts sum to ``n``, each
    is within one of ``fraction * n``, and a zero fraction gets no case (``[0,0,1]`` -> all test).
    """
    fr = _fractions(split)
    exact = [f * n for f in fr]
    counts = [int(math.floor(x + 1e-9)) for x in exact]
    left = n - sum(counts)
    order = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return tuple(counts)  # type: ignore[return-value]


def read_split_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """A split file ``{"training": [ids], "validation": [ids], "test": [ids]}`` (missing lists are empty;
    keys starting with ``_`` such as ``_comment`` are ignored). Raises :class:`PrepareError` if malformed."""
    p = Path(path)
    if not p.is_file():
        raise PrepareError(f"split_file {p} not found: give a JSON file {{\"training\": [...], \"validation\": [...], \"test\": [...]}}")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PrepareError(f"split_file {p} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise PrepareError(f"split_file {p} must hold a JSON object with lists {list(SPLIT_NAMES)}")
    unknown = sorted(k for k in data if k not in SPLIT_NAMES and not str(k).startswith("_"))
    if unknown:
        raise PrepareError(f"split_file {p}: unknown keys {unknown}; expected {list(SPLIT_NAMES)}")
    out = {}
    for name in SPLIT_NAMES:
        ids = data.get(name, [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise PrepareError(f"split_file {p}: {name!r} must be a list of case ids (strings)")
        out[name] = list(dict.fromkeys(ids))
    return out


def assign_split(
    case_ids: Sequence[str], split: Any = (0.8, 0.1, 0.1), split_file: str | os.PathLike | None = None, seed: int = 0
) -> dict[str, list[str]]:
    """Assign case ids to ``training`` / ``validation`` / ``test`` (each list sorted).

    Without ``split_file``: the ids are sorted, shuffled with ``random.Random(seed)`` and cut in that
    order by :func:`split_counts` (training first); every case lands in exactly one list, and the same
    ids with the same seed give the same lists, whatever their input order.

    With ``split_file`` (``split`` and ``seed`` ignored): membership is taken from the file by case id.
    Ids of the file that are not among ``case_ids`` are reported (warning) and left out; ``case_ids``
    that the file does not name are reported and put in *no* list (so a file can select a subset).
    The file's lists may overlap (e.g. the same cases for validation and test), as given. A file that
    names none of ``case_ids`` raises :class:`PrepareError`.
    """
    ids = sorted(dict.fromkeys(case_ids))
    if split_file:
        wanted = read_split_file(split_file)
        have = set(ids)
        named = {i for lst in wanted.values() for i in lst}
        unknown = sorted(named - have)
        if unknown:
            logger.warning("split_file %s names %d case(s) that are not prepared, left out: %s",
                           split_file, len(unknown), ", ".join(unknown))
        unnamed = sorted(have - named)
        if unnamed:
            logger.warning("split_file %s does not name %d prepared case(s), put in no list: %s",
                           split_file, len(unnamed), ", ".join(unnamed))
        if ids and not (named & have):
            raise PrepareError(f"split_file {split_file} names none of the {len(ids)} prepared cases "
                               f"(e.g. {', '.join(ids[:3])}); fix the ids or drop --split_file")
        return {name: sorted(i for i in wanted[name] if i in have) for name in SPLIT_NAMES}
    n_train, n_val, _ = split_counts(len(ids), split)
    order = list(ids)
    random.Random(seed).shuffle(order)
    return {
        "training": sorted(order[:n_train]),
        "validation": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def build_datalist(
    output_dir: str | os.PathLike, split: Any = (0.8, 0.1, 0.1), split_file: str | os.PathLike | None = None, seed: int = 0
) -> dict[str, list[dict[str, str]]]:
    """The datalist of every complete case folder of ``output_dir`` (see :func:`assign_split`), with
    entries ``{"case_id", "pa", "lateral", "ct"}`` whose paths are relative to ``output_dir``."""
    lists = assign_split(complete_cases(output_dir), split=split, split_file=split_file, seed=seed)
    return {
        name: [{"case_id": c, "pa": f"{c}/pa.png", "lateral": f"{c}/lateral.png", "ct": f"{c}/ct.nii.gz"} for c in ids]
        for name, ids in lists.items()
    }


# ------------------------------------------------------------------------------------ files
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
    meta = Path(__file__).resolve().parents[1] / "configs" / "metadata.json"
    if meta.is_file():
        try:
            out["bundle"] = str(json.loads(meta.read_text()).get("version", "unknown"))
        except (json.JSONDecodeError, OSError):
            pass
    return out


def _spacing(affine) -> list[float]:
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return [float(s) for s in np.linalg.norm(a, axis=0)]


def _root_cause(e: BaseException) -> BaseException:
    """MONAI wraps transform errors in ``RuntimeError('applying transform ...')``: the cause is the reason."""
    while isinstance(e, RuntimeError) and e.__cause__ is not None and str(e).startswith("applying transform"):
        e = e.__cause__
    return e


# ------------------------------------------------------------------------------------ one case
def run_chain(preprocessing: Callable, data: dict, ct_key: str = "ct") -> tuple[dict, dict[str, Any]]:
    """Apply ``preprocessing`` (a ``Compose`` is applied one transform at a time, so errors keep their
    type and message) and return ``(result, original)``, where ``original`` describes the CT right after
    it was loaded (``shape``, ``spacing_mm`` and the loader's DICOM meta) and holds ``seconds`` per step."""
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
            original = {"shape": [int(s) for s in ct.shape[1:]], "spacing_mm": _spacing(ct.affine), "axcodes": meta.get("axcodes", "")}
            for k in ("series_dir", "series_uid", "patient_id", "num_slices", "transfer_syntax"):
                if k in meta:
                    original[k] = _jsonable(meta[k])
    original["seconds"] = timings
    return data, original


def save_case(folder: str | os.PathLike, data: Mapping, info: dict[str, Any], ct_key: str = "ct",
              view_keys: Sequence[str] = ("pa", "lateral")) -> None:
    """Write ``ct.nii.gz``, one ``<view>.png`` per view key and ``case.json`` into ``folder``.

    ``data[ct_key]``: ``(1, X, Y, Z)`` MetaTensor (affine RAS, array LPS); ``data[view]``: ``(1, H, W)``
    in [0, 1] on 8-bit levels (written as ``round(x * 255)``, row 0 at the top)."""
    import nibabel as nib
    from PIL import Image

    folder = Path(folder)
    ct = data[ct_key]
    arr = np.ascontiguousarray(ct.detach().cpu().numpy()[0].astype(np.float32))
    affine = np.asarray(ct.affine, dtype=np.float64)
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(folder / "ct.nii.gz"))
    geometry = None
    for key in view_keys:
        x = data[key]
        a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)
        a = a[0] if a.ndim == 3 else a
        Image.fromarray(np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8), mode="L").save(folder / f"{key}.png")
        geometry = geometry or getattr(x, "meta", {}).get("geometry")
    info = dict(info)
    if geometry is not None:
        info["geometry"] = _jsonable(geometry)
        info["isocentre_mm"] = _jsonable(geometry.get("isocentre_mm"))
    info["ct"] = {
        "file": "ct.nii.gz",
        "shape": [int(s) for s in arr.shape],
        "spacing_mm": _spacing(affine),
        "affine_ras": _jsonable(affine),
        "array_axes": "LPS",
        "intensity": str(getattr(ct, "meta", {}).get("intensity", "")),
    }
    info["views"] = {k: f"{k}.png" for k in view_keys}
    write_json_atomic(folder / "case.json", _jsonable(info))


def prepare_case(case_id: str, source: str, output_dir: str | os.PathLike, preprocessing: Callable,
                 ct_key: str = "ct", view_keys: Sequence[str] = ("pa", "lateral")) -> dict[str, Any]:
    """Prepare one case into ``output_dir/<case_id>`` atomically (temporary folder, then rename).

    Returns ``{"case_id", "source", "status": "prepared"|"skipped"|"failed", "seconds"[, "reason", "error"]}``;
    never raises for a failing case (the reason is the exception's message, ``error`` its type).
    """
    out = Path(output_dir)
    final = out / case_id
    result: dict[str, Any] = {"case_id": case_id, "source": str(source)}
    if is_case_complete(final):
        return {**result, "status": "skipped", "seconds": 0.0}
    tmp = out / f"{_TMP_PREFIX}{case_id}-{os.getpid()}"
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
        if final.exists():  # an incomplete folder (not written by prepare): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
    except Exception as e:  # noqa: BLE001 - one case must never stop the batch
        shutil.rmtree(tmp, ignore_errors=True)
        cause = _root_cause(e)
        from scripts.ct_io import CTLoadError

        result.update(status="failed", reason=str(cause) or repr(cause), error=type(cause).__name__)
        if not isinstance(cause, CTLoadError):
            result["traceback"] = traceback.format_exception(type(cause), cause, cause.__traceback__)[-3:]
    else:
        result["status"] = "prepared"
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


# ------------------------------------------------------------------------------------ worker processes
_WORKER: dict[str, Any] = {}


def _init_worker(preprocessing: Callable, output_dir: str, ct_key: str, view_keys: tuple, threads: int, sys_path: list) -> None:
    for p in sys_path:
        if p not in sys.path:
            sys.path.append(p)
    _limit_threads(threads)
    _WORKER.update(preprocessing=preprocessing, output_dir=output_dir, ct_key=ct_key, view_keys=view_keys)


def _worker_case(case_id: str, source: str) -> dict[str, Any]:
    w = _WORKER
    return prepare_case(case_id, source, w["output_dir"], w["preprocessing"], w["ct_key"], w["view_keys"])


def _limit_threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(n)))
    try:
        import itk

        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(max(1, int(n)))
    except Exception:  # noqa: BLE001 - thread limits are an optimisation
        pass


# ------------------------------------------------------------------------------------ workflow
class PrepareWorkflow:
    """The runner of ``configs/prepare.json``: ``initialize()``, ``run()``, ``finalize()``.

    Args:
        dataset_dir: folder of raw CTs (see :func:`discover_cases`).
        output_dir: folder of prepared cases (created).
        preprocessing: the transform chain applied to ``{"case_id", ct_key: path}``.
        split: training / validation / test fractions (see :func:`split_counts`).
        split_file: JSON file fixing the split by case id (see :func:`assign_split`), or ``None``.
        seed: seed of the split shuffle.
        num_workers: worker processes per rank (``0``: prepare in this process).
        ct_key, view_keys: keys of the target volume and of the DRRs in the chain's output.
        progress: show a tqdm progress bar (automatically off when stderr is not a terminal).
        dist_timeout_s: timeout of the gloo barriers under torchrun (ranks wait for the slowest one).

    ``run()`` returns the summary ``{"prepared", "skipped", "failed", "cases"}`` (counts over all ranks
    on rank 0, this rank's counts elsewhere); ``finalize()`` logs it and raises ``SystemExit`` with a
    one-line message when no case is prepared at the end.
    """

    def __init__(
        self,
        dataset_dir: str,
        output_dir: str,
        preprocessing: Callable,
        split: Any = (0.8, 0.1, 0.1),
        split_file: str | None = None,
        seed: int = 0,
        num_workers: int = 0,
        ct_key: str = "ct",
        view_keys: Sequence[str] = ("pa", "lateral"),
        progress: bool = True,
        dist_timeout_s: float = 48 * 3600,
    ) -> None:
        self.dataset_dir = str(dataset_dir)
        self.output_dir = str(output_dir)
        self.preprocessing = preprocessing
        self.split = split
        self.split_file = split_file or None
        self.seed = int(seed)
        self.num_workers = max(0, int(num_workers))
        self.ct_key = ct_key
        self.view_keys = tuple(view_keys)
        self.progress = progress
        self.dist_timeout_s = float(dist_timeout_s)
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.cases: list[tuple[str, str]] = []
        self.summary: dict[str, Any] = {}
        self._own_process_group = False
        self._initialized = False

    # ---------------------------------------------------------------- distributed helpers
    def _barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def _setup_logging(self) -> None:
        if not logging.getLogger().hasHandlers() and not logger.handlers:
            h = logging.StreamHandler(sys.stderr)
            h.setFormatter(logging.Formatter("%(asctime)s prepare %(levelname)s: %(message)s", "%H:%M:%S"))
            logger.addHandler(h)
            logger.propagate = False
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)

    def initialize(self) -> None:
        """Check the arguments, find the cases, join the process group under torchrun, and (rank 0)
        remove stale temporary folders and rank files of an interrupted run."""
        self._setup_logging()
        out = Path(self.output_dir)
        if os.path.realpath(self.output_dir) == os.path.realpath(self.dataset_dir):
            raise PrepareError(f"output_dir {out} is the dataset_dir: give a separate --output_dir")
        _fractions(self.split)
        if self.split_file:
            read_split_file(self.split_file)
        self.cases = discover_cases(self.dataset_dir, exclude=[self.output_dir])
        if self.world_size > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=self.dist_timeout_s))
                self._own_process_group = True
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if self.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            for e in os.scandir(out):
                if e.name.startswith(_TMP_PREFIX) and e.is_dir():
                    logger.info("removing %s left by an interrupted run", e.path)
                    shutil.rmtree(e.path, ignore_errors=True)
                elif re.fullmatch(r"failures\.rank\d+\.json", e.name) or (e.name.startswith(".") and e.name.endswith(".tmp")):
                    os.remove(e.path)
        self._barrier()
        self._initialized = True

    def run(self) -> dict[str, Any]:
        """Prepare this rank's cases, then (rank 0, after all ranks) write failures.json and datalist.json."""
        if not self._initialized:
            self.initialize()
        out = Path(self.output_dir)
        mine = self.cases[self.rank :: self.world_size]
        logger.info("%d case(s) in %s; this process prepares %d into %s (%d worker(s))",
                    len(self.cases), self.dataset_dir, len(mine), out, self.num_workers)
        results = self._process(mine)
        if self.world_size > 1:
            write_json_atomic(out / f"failures.rank{self.rank}.json", {"rank": self.rank, "results": results})
        self._barrier()
        if self.rank == 0:
            if self.world_size > 1:
                results = []
                for r in range(self.world_size):
                    f = out / f"failures.rank{r}.json"
                    results.extend(json.loads(f.read_text())["results"])
                    f.unlink()
            self.summary = self._merge(results)
        else:
            self.summary = self._count(results)
        self._barrier()
        return self.summary

    def finalize(self) -> dict[str, Any]:
        """Leave the process group (if this workflow joined it), log the summary, and raise
        ``SystemExit`` when no case is prepared."""
        if self._own_process_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._own_process_group = False
        ok = complete_cases(self.output_dir)
        ids = {c for c, _ in self.cases}
        n_ok = len(ids.intersection(ok))
        failures = Path(self.output_dir) / "failures.json"
        if n_ok == 0:
            what = f"no case succeeded out of {len(self.cases)}" if self.cases else f"no CT found in {self.dataset_dir}"
            raise SystemExit(f"prepare: {what} (see {failures})")
        if self.rank == 0 and self.summary:
            s = self.summary
            print(f"prepared {s['prepared']}, skipped {s['skipped']} (already done), failed {s['failed']} (see {failures})", flush=True)
        return self.summary

    # ---------------------------------------------------------------- internals
    def _log_result(self, r: dict[str, Any]) -> None:
        # under torchrun every line names its rank, whatever logging configuration is in force
        case = f"[rank {self.rank}] {r['case_id']}" if self.world_size > 1 else r["case_id"]
        if r["status"] == "failed":
            logger.warning("%s: FAILED (%s): %s", case, r.get("error"), r.get("reason"))
            if "traceback" in r:
                logger.warning("%s: %s", case, "".join(r["traceback"]).rstrip())
        elif r["status"] == "skipped":
            logger.info("%s: already prepared, skipped", case)
        else:
            logger.info("%s: prepared in %.1f s", case, r["seconds"])

    def _process(self, cases: list[tuple[str, str]]) -> list[dict[str, Any]]:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        out = Path(self.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        results: list[dict[str, Any]] = []
        todo = []
        for cid, src in cases:  # finished cases are skipped without starting a worker
            if is_case_complete(out / cid):
                results.append({"case_id": cid, "source": src, "status": "skipped", "seconds": 0.0})
            else:
                todo.append((cid, src))
        desc = f"prepare rank {self.rank}" if self.world_size > 1 else "prepare"
        # route log lines through the progress bar on the logger that owns the console handler (the root
        # logger under configs/logging.conf): redirecting a propagating logger would print every line twice
        console = logging.getLogger() if logger.propagate else logger
        with tqdm(total=len(cases), desc=desc, unit="case", disable=None if self.progress else True,
                  position=self.rank if self.world_size > 1 else None) as bar, logging_redirect_tqdm(loggers=[console]):
            for r in results:
                self._log_result(r)
                bar.update(1)

            def done(r):
                results.append(r)
                self._log_result(r)
                bar.update(1)
                bar.set_postfix(failed=sum(x["status"] == "failed" for x in results))

            if self.num_workers == 0 or len(todo) <= 1:
                for cid, src in todo:
                    done(prepare_case(cid, src, out, self.preprocessing, self.ct_key, self.view_keys))
            else:
                self._process_parallel(todo, done)
        return sorted(results, key=lambda r: r["case_id"])

    def _process_parallel(self, todo: list[tuple[str, str]], done: Callable) -> None:
        import multiprocessing as mp

        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size if self.world_size > 1 else 1))
        threads = max(1, (os.cpu_count() or 1) // (self.num_workers * max(1, local)))
        initargs = (self.preprocessing, self.output_dir, self.ct_key, self.view_keys, threads, list(sys.path))
        pending = list(todo)
        ctx = mp.get_context("spawn")  # no fork after torch/gloo threads started
        while pending:
            with cf.ProcessPoolExecutor(self.num_workers, mp_context=ctx, initializer=_init_worker, initargs=initargs) as ex:
                in_flight: dict[cf.Future, tuple[str, str]] = {}
                broken = False
                while (pending or in_flight) and not broken:
                    while pending and len(in_flight) < self.num_workers:
                        cid, src = pending.pop(0)
                        in_flight[ex.submit(_worker_case, cid, src)] = (cid, src)
                    finished, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                    for fut in finished:
                        cid, src = in_flight.pop(fut)
                        try:
                            done(fut.result())
                        except BrokenProcessPool:
                            broken = True
                            done({"case_id": cid, "source": src, "status": "failed", "seconds": 0.0, "error": "BrokenProcessPool",
                                  "reason": "the worker process died while preparing this case (crash or out of memory); "
                                            "rerun to retry, or run with --num_workers 0 to see the error"})
                if broken:  # every case in flight died with the pool; start a new pool for the rest
                    for fut, (cid, src) in in_flight.items():
                        done({"case_id": cid, "source": src, "status": "failed", "seconds": 0.0, "error": "BrokenProcessPool",
                              "reason": "the worker process died while preparing this case (crash or out of memory); "
                                        "rerun to retry, or run with --num_workers 0 to see the error"})
                    in_flight.clear()

    @staticmethod
    def _count(results: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "prepared": sum(r["status"] == "prepared" for r in results),
            "skipped": sum(r["status"] == "skipped" for r in results),
            "failed": sum(r["status"] == "failed" for r in results),
            "cases": len(results),
        }

    def _merge(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        """Rank 0: failures.json of this run's failed cases, and datalist.json of every complete case."""
        out = Path(self.output_dir)
        failures = [{k: r[k] for k in ("case_id", "source", "reason", "error", "traceback") if k in r}
                    for r in sorted(results, key=lambda r: r["case_id"]) if r["status"] == "failed"]
        write_json_atomic(out / "failures.json", failures)
        datalist = build_datalist(out, split=self.split, split_file=self.split_file, seed=self.seed)
        write_json_atomic(out / "datalist.json", datalist)
        logger.info("datalist %s: %d training / %d validation / %d test", out / "datalist.json",
                    *(len(datalist[k]) for k in SPLIT_NAMES))
        return self._count(results)
