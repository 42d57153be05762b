"""Case discovery: which entries of a raw dataset folder are cases, and which are skipped and why.

Cases (:func:`scan_dataset`), sorted by case id:

* a NIfTI / MHA / MHD / NRRD file directly under ``RAW`` (case id = file name without extensions);
* a sub-folder of ``RAW`` (case id = folder name): its whole subtree goes to the loader
  (``LoadCTd``), which picks the CT series with most slices of a TCIA patient folder. Empty folders
  are cases too: they fail with the loader's message.

Hidden files and folders (name starting with ``.``), other files (README, ``.raw`` companions of
``.mhd``) and the output folder itself are ignored. Characters other than letters, digits, ``.``,
``_`` and ``-`` in a case id become ``_``; two sources with the same case id stop the run before any
work, naming both (rename one).

One bad entry never stops discovery: a link that loops or points nowhere, an entry that cannot be
read (permissions), and a folder link that points back into the dataset (to ``.``, to a parent, or to
another entry: it would be prepared twice or rescan the dataset) are *skipped*, each with one line
saying why (:class:`SkippedEntry`); the prepare workflow records them in ``failures.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["VOLUME_SUFFIXES", "DiscoveryError", "SkippedEntry", "safe_case_id", "scan_dataset", "discover_cases"]

logger = logging.getLogger(__name__)

#: Volume files that are cases when they lie directly under the raw folder (longest suffix first).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class DiscoveryError(ValueError):
    """The dataset folder itself cannot be used (not a folder, unreadable, duplicate case ids)."""


@dataclasses.dataclass(frozen=True)
class SkippedEntry:
    """An entry of the dataset folder that is not prepared: ``case_id`` it would have had, its ``source``
    path, the ``reason`` (one line) and an ``error`` label (``"LoopingLink"``, ``"BrokenLink"``,
    ``"LinkIntoDataset"``, ``"Unreadable"``)."""

    case_id: str
    source: str
    reason: str
    error: str

    def as_failure(self) -> dict[str, str]:
        return dataclasses.asdict(self)


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


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _link_problem(entry: os.DirEntry, root_real: str) -> tuple[str, str] | None:
    """``(error, reason)`` for a link that must not be followed, else ``None``."""
    target = os.readlink(entry.path)
    try:
        real = os.path.realpath(entry.path, strict=True)
    except OSError as e:
        import errno

        if e.errno == errno.ELOOP:
            return (
                "LoopingLink",
                f"{entry.path}: symbolic link loops ({entry.name} -> {target}); remove or fix the link",
            )
        return "BrokenLink", f"{entry.path}: symbolic link points to nothing ({entry.name} -> {target}); fix the link"
    if os.path.isdir(real) and (_within(root_real, real) or _within(real, root_real)):
        where = "the dataset folder or one above it" if _within(root_real, real) else "another entry of the dataset"
        return "LinkIntoDataset", (
            f"{entry.path}: folder link to {real}, which is {where}; skipped so that no case is "
            "prepared twice; remove the link"
        )
    return None


def scan_dataset(
    raw_dir: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()
) -> tuple[list[tuple[str, str]], list[SkippedEntry]]:
    """``(cases, skipped)``: the cases under ``raw_dir`` as ``[(case_id, path), ...]`` sorted by case id,
    and the entries skipped with their reasons (see the module doc).

    Args:
        raw_dir: the folder of raw CTs.
        exclude: folders to ignore (e.g. the output folder when it lies inside ``raw_dir``).

    Raises:
        DiscoveryError: ``raw_dir`` is not a readable folder, or two entries give the same case id.
    """
    root = Path(raw_dir)
    if not root.is_dir():
        raise DiscoveryError(
            f"dataset_dir {root} is not a folder: pass --dataset_dir with a folder of CTs "
            "(DICOM series folders, TCIA patient folders, NIfTI/MHA files)"
        )
    skip = {os.path.realpath(p) for p in exclude}
    root_real = os.path.realpath(root)
    found: dict[str, list[str]] = {}
    skipped: list[SkippedEntry] = []
    loose_dicom = 0
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        raise DiscoveryError(f"dataset_dir {root} cannot be read ({e.strerror or e}); check its permissions") from e
    for entry in entries:
        if entry.name.startswith(".") or os.path.realpath(entry.path) in skip:
            continue
        stem = _volume_stem(entry.name)
        cid = safe_case_id(entry.name if stem is None else stem)
        try:
            problem = _link_problem(entry, root_real) if entry.is_symlink() else None
            is_dir = problem is None and entry.is_dir()
            is_file = problem is None and entry.is_file()
        except OSError as e:
            problem = ("Unreadable", f"{entry.path}: cannot be read ({e.strerror or e}); check its permissions")
        if problem is not None:
            if problem[0] == "BrokenLink" and stem is None:
                continue  # a dangling link to a non-volume file is just not a case
            skipped.append(SkippedEntry(cid, str(root / entry.name), problem[1], problem[0]))
            continue
        if is_dir:
            cid = safe_case_id(entry.name)
        elif is_file and stem is not None:
            pass
        else:
            if is_file:
                logger.debug("ignoring %s: not a volume file or a folder", entry.path)
                loose_dicom += entry.name.lower().endswith(".dcm")
            continue
        found.setdefault(cid, []).append(str(root / entry.name))
    if loose_dicom:
        logger.warning(
            "%s holds %d DICOM file(s) directly, which are ignored: put each CT series (or patient) "
            "in its own sub-folder, one folder per case",
            root,
            loose_dicom,
        )
    dups = {c: p for c, p in found.items() if len(p) > 1}
    if dups:
        lines = "; ".join(f"{c!r} from {', '.join(p)}" for c, p in sorted(dups.items()))
        raise DiscoveryError(f"case ids must be unique, but {lines}: rename one of each so that names differ")
    for s in skipped:
        logger.warning("skipping %s", s.reason)
    return sorted((c, p[0]) for c, p in found.items()), sorted(skipped, key=lambda s: s.case_id)


def discover_cases(raw_dir: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> list[tuple[str, str]]:
    """The cases of :func:`scan_dataset` (skipped entries are logged, one line each)."""
    return scan_dataset(raw_dir, exclude)[0]
