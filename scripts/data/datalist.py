"""Datalist and split: which prepared cases go to ``training``, ``validation`` and ``test``.

Used by the prepare workflow (``datalist.json``) and by training/evaluation on raw folders
(:mod:`scripts.data.datasets`), so both split the same cases the same way.

``OUT/datalist.json`` (:func:`build_datalist`) lists every complete case folder of ``OUT``
(:func:`scripts.prepare.case_writer.complete_cases`) in lists ``training``, ``validation``, ``test`` of
``{"case_id", "pa", "lateral", "ct", "ct_1mm"}`` (paths relative to ``OUT``); see :func:`assign_split`
for the split rules.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripts.prepare.case_writer import CASE_FILES, complete_cases

__all__ = [
    "SPLIT_NAMES",
    "SplitError",
    "check_split",
    "split_counts",
    "read_split_file",
    "assign_split",
    "datalist_entry",
    "build_datalist",
]

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("training", "validation", "test")


class SplitError(ValueError):
    """Split fractions or a split file that cannot be used, with what to do about it."""


def check_split(split: Any) -> tuple[float, float, float]:
    """The three fractions of ``split`` (a sequence or a string such as ``"[0.8,0.1,0.1]"``) normalised to sum 1."""
    if isinstance(split, str):
        text = split.strip()
        try:
            split = json.loads(text)
        except json.JSONDecodeError:
            split = [s for s in text.strip("[]()").split(",") if s.strip()]
    try:
        fr = tuple(float(x) for x in split)
    except (TypeError, ValueError):
        raise SplitError(f"split must be three numbers (training, validation, test), got {split!r}") from None
    if len(fr) != 3 or not all(math.isfinite(x) and x >= 0 for x in fr) or sum(fr) <= 0:
        raise SplitError(
            f"split must be three non-negative numbers with a positive sum, e.g. [0.8,0.1,0.1]; got {split!r}"
        )
    total = sum(fr)
    return tuple(x / total for x in fr)  # type: ignore[return-value]


def split_counts(n: int, split: Any) -> tuple[int, int, int]:
    """How many of ``n`` cases go to training, validation and test.

    Fractions are normalised to sum 1, then the largest-remainder rule applies: each list gets
    ``floor(fraction * n)`` and the cases left over go, one each, to the lists with the largest
    fractional parts (ties: training, then validation, then test). So the counts sum to ``n``, each
    is within one of ``fraction * n``, and a zero fraction gets no case (``[0,0,1]`` -> all test).
    """
    fr = check_split(split)
    exact = [f * n for f in fr]
    counts = [int(math.floor(x + 1e-9)) for x in exact]
    left = n - sum(counts)
    order = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return tuple(counts)  # type: ignore[return-value]


def read_split_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """A split file ``{"training": [ids], "validation": [ids], "test": [ids]}`` (missing lists are empty;
    keys starting with ``_`` such as ``_comment`` are ignored). Raises :class:`SplitError` if malformed."""
    p = Path(path)
    if not p.is_file():
        raise SplitError(
            f"split_file {p} not found: give a JSON file " f'{{"training": [...], "validation": [...], "test": [...]}}'
        )
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SplitError(f"split_file {p} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise SplitError(f"split_file {p} must hold a JSON object with lists {list(SPLIT_NAMES)}")
    unknown = sorted(k for k in data if k not in SPLIT_NAMES and not str(k).startswith("_"))
    if unknown:
        raise SplitError(f"split_file {p}: unknown keys {unknown}; expected {list(SPLIT_NAMES)}")
    out = {}
    for name in SPLIT_NAMES:
        ids = data.get(name, [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise SplitError(f"split_file {p}: {name!r} must be a list of case ids (strings)")
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
    names none of ``case_ids`` raises :class:`SplitError`.
    """
    ids = sorted(dict.fromkeys(case_ids))
    if split_file:
        wanted = read_split_file(split_file)
        have = set(ids)
        named = {i for lst in wanted.values() for i in lst}
        for odd, message in (
            (named - have, "split_file %s names %d case(s) that are not prepared, left out: %s"),
            (have - named, "split_file %s does not name %d prepared case(s), put in no list: %s"),
        ):
            if odd:
                logger.warning(message, split_file, len(odd), ", ".join(sorted(odd)))
        if ids and not (named & have):
            raise SplitError(
                f"split_file {split_file} names none of the {len(ids)} prepared cases "
                f"(e.g. {', '.join(ids[:3])}); fix the ids or drop --split_file"
            )
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
    output_dir: str | os.PathLike,
    split: Any = (0.8, 0.1, 0.1),
    split_file: str | os.PathLike | None = None,
    seed: int = 0,
) -> dict[str, list[dict[str, str]]]:
    """The datalist of every complete case folder of ``output_dir`` (see :func:`assign_split`), with
    entries :func:`datalist_entry` whose paths are relative to ``output_dir``."""
    lists = assign_split(complete_cases(output_dir), split=split, split_file=split_file, seed=seed)
    return {name: [datalist_entry(c) for c in ids] for name, ids in lists.items()}


def datalist_entry(case_id: str) -> dict[str, str]:
    """``{"case_id", "pa", "lateral", "ct", "ct_1mm"}`` of a prepared case, paths relative to the output folder."""
    keys = {"pa.png": "pa", "lateral.png": "lateral", "ct.nii.gz": "ct", "ct_1mm.nii.gz": "ct_1mm"}
    return {"case_id": case_id, **{keys[f]: f"{case_id}/{f}" for f in CASE_FILES if f in keys}}
