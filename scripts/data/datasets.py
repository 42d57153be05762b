"""The cases of the training, evaluation and inference workflows: datalists and their checks.

``dataset_dir`` may hold either

* **prepared cases** (the output of ``configs/prepare.json``: ``datalist.json`` plus one folder per case
  with ``ct.nii.gz``, ``pa.png``, ``lateral.png``), or
* **raw CTs** (DICOM series, TCIA patient folders, NIfTI/MHA files): every case then goes through the
  very transform chain that ``configs/prepare.json`` declares (``raw_preprocessing`` in train.json,
  read by :func:`bundle_component` from ``bundle_root``), cached on disk so the DRRs are made once.

train.json declares both loading chains (``case_loading#prepared`` / ``case_loading#raw``) and their common
end (``case_outputs``): items ``image`` (2, 128, 128) float32 [0, 1] (PA, lateral), ``label``
(1, 128, 128, 128) float32 [0, 1] in LPS array order, and ``case_id``.

The example data (``download_example``, true in train.json): when ``dataset_dir`` is missing or empty, the two
example chest CTs are downloaded into it first (:func:`fetch_example`, logged, naming the flag); a folder that
holds the example data is split by ``configs/example_split.json`` unless ``--split_file`` says otherwise
(:func:`example_split`). A folder with data is never downloaded into; ``--download_example false`` stops with an
error on an empty one instead.

:class:`InferenceDataset` is ``inference.json``'s dataset: the cases given by ``--pa/--lateral``, ``--datalist`` or
``--dataset_dir``, checked when it is built (a missing image is one error line before any network is loaded).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser
from monai.data import Dataset
from scripts.assets import example_data
from scripts.data.case_discovery import discover_cases
from scripts.data.datalist import assign_split
from scripts.inference.items import inference_items
from scripts.prepare.case_writer import CASE_FILES, TMP_PREFIX
from scripts.utils.bundle_paths import bundle_root
from scripts.utils.command_line import flag

__all__ = [
    "load_datalist",
    "require_cases",
    "require_file",
    "validation_cases",
    "bundle_component",
    "fetch_example",
    "example_split",
    "InferenceDataset",
]

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset folder, datalist or split that cannot be used, with what to do about it."""


def require_file(path: str, what: str) -> str:
    """Return ``path`` if it is a file, else raise FileNotFoundError naming ``what`` and the path."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def require_cases(items: Sequence[dict], split: str, dataset_dir: str) -> list[dict]:
    """Return ``items`` or raise when the split is empty (e.g. evaluating a dataset without test cases)."""
    if not items:
        raise DatasetError(
            f"no {split!r} cases in {dataset_dir}: prepare with a split that has {split} cases "
            f'(e.g. --split "[0,0,1]") or pass a --split_file'
        )
    return list(items)


def _prepared_datalist(dataset_dir: Path) -> dict[str, Any]:
    path = dataset_dir / "datalist.json"
    try:
        lists = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON ({e}); rerun prepare to rewrite it") from e
    out: dict[str, Any] = {"mode": "prepared"}
    for split in ("training", "validation", "test"):
        items = []
        for entry in lists.get(split, []):
            item = dict(entry)
            for key in ("pa", "lateral", "ct"):
                if key not in item:
                    raise DatasetError(f"{path}: entry {entry} of {split!r} has no {key!r}")
                item[key] = str((dataset_dir / item[key]).resolve())
            if item.get("ct_1mm"):  # optional: the 1 mm cube of point-sampled training targets
                item["ct_1mm"] = str((dataset_dir / item["ct_1mm"]).resolve())
            items.append(item)
        out[split] = items
    return out


def _is_empty(root: Path) -> bool:
    return not root.is_dir() or not any(p for p in root.iterdir() if not p.name.startswith("."))


def fetch_example(dataset_dir: str, download_example: Any = True) -> str:
    """With ``download_example`` and a missing or empty ``dataset_dir``: download the two example chest CTs into it
    (:func:`scripts.assets.example_data.download_example`, hash-checked), saying so. Returns ``dataset_dir``.

    A folder that holds anything is left alone. Without ``download_example`` nothing is fetched (the caller
    reports the empty folder)."""
    root = Path(dataset_dir)
    if _is_empty(root) and flag(download_example, "download_example"):
        logger.info(
            "no data in %s and download_example is true: downloading the example cases (two public chest CTs) "
            "into it (pass --download_example false to stop instead, or --dataset_dir with your data)",
            root,
        )
        example_data.download_example(output_dir=str(root))
    return str(dataset_dir)


def example_split(dataset_dir: str, example_split_file: str | None = None) -> str | None:
    """``example_split_file`` (default: the bundle's ``configs/example_split.json``) when ``dataset_dir`` holds the
    example data (its case folders complete), else None (the dataset is split by fractions and seed, or by
    ``--split_file``)."""
    root = Path(dataset_dir)
    example_split_file = example_split_file or str(Path(bundle_root()) / "configs" / "example_split.json")
    if root.is_dir() and all(example_data.case_is_complete(root, c) for c in example_data.EXAMPLE_CASES):
        logger.info("%s holds the example data: split by %s", root, example_split_file)
        return str(example_split_file)
    return None


def load_datalist(
    dataset_dir: str,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    split_file: str | None = None,
    seed: int = 0,
    download_example: Any = False,
    example_split_file: str | None = None,
) -> dict[str, Any]:
    """The cases of ``dataset_dir`` as ``{"mode": "prepared"|"raw", "training": [...], "validation": [...],
    "test": [...]}``.

    Prepared folders use their ``datalist.json`` as written by prepare (``split`` ignored). Raw folders
    are discovered and split exactly as prepare does (same seed, same fractions, same split file), with
    items ``{"case_id", "ct": <path>}``. With ``download_example`` and a missing or empty folder, the
    example data is downloaded into it first (:func:`fetch_example`); without ``split_file``, the example data
    is split by ``example_split_file`` (:func:`example_split`).
    """
    root = Path(fetch_example(dataset_dir, download_example))
    if not root.is_dir() or _is_empty(root):
        raise DatasetError(
            f"dataset_dir {root} {'is empty' if root.is_dir() else 'does not exist'}: pass --dataset_dir with a folder "
            f"of CTs (DICOM series, NIfTI, MHA) or of prepared cases, or --download_example true to fetch the "
            f"example data into it (`python -m scripts download_example --output_dir {root}` does the same)"
        )
    if (root / "datalist.json").is_file():
        lists = _prepared_datalist(root)
    else:
        split_file = split_file or example_split(str(root), example_split_file)
        made = sorted(
            e.name
            for e in root.iterdir()
            if e.is_dir() and ((e / "case.json").is_file() or e.name.startswith(TMP_PREFIX))
        )
        if made or (root / "failures.json").is_file():
            raise DatasetError(
                f"{root} holds prepared case folders ({len(made)}, e.g. {', '.join(made[:3]) or 'none'}; files "
                f"{', '.join(CASE_FILES)}) but no datalist.json: prepare was interrupted. Finish it with `python -m "
                f"monai.bundle run --config_file configs/prepare.json --dataset_dir RAW --output_dir {root}` (the same "
                "RAW folder; finished cases are kept), then point --dataset_dir at it again"
            )
        cases = discover_cases(str(root))
        if not cases:
            raise DatasetError(f"no CT found in {root}: expected DICOM series folders, NIfTI or MHA files")
        split_lists = assign_split([c for c, _ in cases], split=split, split_file=split_file, seed=seed)
        paths = dict(cases)
        lists = {"mode": "raw"}
        for name in ("training", "validation", "test"):
            lists[name] = [{"case_id": c, "ct": str(paths[c])} for c in split_lists.get(name, [])]
    logger.info(
        "%s: %s data, %d training / %d validation / %d test cases",
        root,
        lists["mode"],
        len(lists["training"]),
        len(lists["validation"]),
        len(lists["test"]),
    )
    return lists


def validation_cases(datalist: dict[str, Any], dataset_dir: str, allow_training: Any = False) -> list[dict]:
    """The validation cases of ``datalist``; with none, an error unless ``allow_training`` (then the
    training cases, with a logged warning: checkpoints are then chosen on data the model was trained on)."""
    if datalist.get("validation"):
        return list(datalist["validation"])
    if not flag(allow_training, "validate_on_training"):
        raise DatasetError(
            f"no validation cases in {dataset_dir}: the best checkpoint is chosen on validation cases. Prepare with a "
            f'split that has validation cases (e.g. --split "[0.8,0.1,0.1]"), pass a --split_file with a '
            f"'validation' list, or accept choosing on training cases with --validate_on_training true"
        )
    logger.warning(
        "no validation cases in %s: validating on the %d TRAINING cases (--validate_on_training true); "
        "models/model.pt is chosen on training data",
        dataset_dir,
        len(datalist["training"]),
    )
    return list(datalist["training"])


def bundle_component(config_file: str, component: str, **overrides: Any) -> Any:
    """Instantiate ``component`` of another bundle config (e.g. ``preprocessing`` of
    ``<bundle_root>/configs/prepare.json``), with ``overrides`` (objects or values) replacing its ids first,
    so a path comes from ``bundle_root`` rather than the working directory and shared objects (the geometry)
    are the caller's."""
    require_file(config_file, "bundle config")
    parser = ConfigParser()
    parser.read_config(config_file)
    for key, value in overrides.items():
        parser[key] = value
    return parser.get_parsed_content(component)


class InferenceDataset(Dataset):
    """The cases ``inference.json`` reconstructs, checked when the dataset is built.

    Items are :func:`scripts.inference.items.inference_items`'s (``{"case_id", "pa", "lateral"[, "isocentre_mm"]}``)
    for ``pa`` / ``lateral`` (two radiographs, or ``pa`` = a prepared case folder), ``datalist`` (a JSON file), or
    ``dataset_dir`` (a prepared dataset: its ``datalist.json``), each item then passed through ``transform``. No input,
    a missing image or a bad datalist raises one clear error here; no input at all raises it in :meth:`require_inputs`,
    the first step of the run (so the config parses without inputs, as MONAI's property check needs).
    """

    def __init__(
        self,
        transform: Any = None,
        pa: str | None = None,
        lateral: str | None = None,
        datalist: str | None = None,
        dataset_dir: str | None = None,
        case_id: str | None = None,
    ) -> None:
        if not datalist and dataset_dir:
            datalist = os.path.join(dataset_dir, "datalist.json")
        self.missing_inputs: str | None = None
        if not (pa or lateral or datalist):
            # nothing to reconstruct: an empty dataset that says so when the run starts (require_inputs), so that
            # the config can still be parsed without inputs (MONAI's check_properties, the Model Zoo's CI)
            try:
                inference_items(pa, lateral, datalist, case_id)
            except ValueError as e:
                self.missing_inputs = str(e)
            super().__init__(data=[], transform=transform)
            return
        super().__init__(data=inference_items(pa, lateral, datalist, case_id), transform=transform)

    def require_inputs(self) -> InferenceDataset:
        """Raise the one clear error when no input was given (the first step of ``inference.json``'s ``run``)."""
        if self.missing_inputs is not None:
            raise ValueError(self.missing_inputs)
        return self
