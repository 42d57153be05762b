"""What a checkpoint holds: a JSON sidecar that records how to rebuild the network of a weights file.

``models/model.pt`` stays a plain state dict (the Model Zoo's convention: it loads into ``network_def``);
beside it, ``models/model.json`` says which network those weights belong to::

    {
      "format": "perx2ct-checkpoint/1",
      "model_preset": "paper",            # a key of scripts.networks.MODEL_PRESETS
      "model_overrides": {},              # fields replacing the preset's (build_perx2ct(**overrides))
      "geometry_preset": "perx2ct",       # a key of scripts.projection.geometry.GEOMETRY_PRESETS
      "bundle_version": "0.3.0",
      "source": "training",               # or "import_official", ...
      "recipe": {...},                    # training: loss, encoder init, precision, views (scripts.training.recipe)
      "selection": "best val_loss ...",   # training: how these weights were chosen ("final ..." without validation)
      ...                                 # free extra keys (e.g. the run, the imported file's hash)
    }

A training state (``latest.pt``: ``{"network", "optimizer", "trainer", "lr_scheduler"}``) has the same
sidecar; evaluation and inference load its ``network`` entry (MONAI ``CheckpointLoader`` with
``load_dict {"network": ...}``: a plain state dict is loaded whole, a training state by that key).

The sidecar of ``X.pt`` is ``X.json`` (:func:`info_path`). Writers call :func:`write_info`; readers
(evaluation, inference, export, MONAI Label, ``bundle verify``) call :func:`read_info`, or
:func:`resolve_network`, which merges the sidecar with what the command line asked for (``null`` = take
the checkpoint's) and refuses a contradiction in one line naming both. :func:`require_checkpoint`
checks that a checkpoint file exists and is a readable ``torch.save`` archive before anything loads it,
and :func:`check_resume` that ``latest.pt`` belongs to the run being resumed. :func:`load_init_checkpoint`
starts a training run from another checkpoint's weights (``--init_ckpt``). :func:`recipe_line` is the line
that evaluation, inference and ``bundle verify`` log about the checkpoint they use.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from scripts.networks import presets
from scripts.utils.atomic import write_json_atomic
from scripts.utils.bundle_paths import bundle_version

__all__ = [
    "load_init_checkpoint",
    "FORMAT",
    "CheckpointInfoError",
    "CheckpointError",
    "info_path",
    "write_info",
    "read_info",
    "require_checkpoint",
    "resolve_network",
    "check_resume",
    "recipe_line",
]

logger = logging.getLogger(__name__)

#: Identifies the sidecar layout; bump the number when a key changes meaning.
FORMAT = "perx2ct-checkpoint/1"
_REQUIRED = ("model_preset", "geometry_preset")


class CheckpointInfoError(ValueError):
    """A checkpoint sidecar that cannot be read or does not describe a network."""


class CheckpointError(ValueError):
    """A checkpoint file that is missing, empty, corrupt, or belongs to another network or run."""


def info_path(ckpt_path: str | os.PathLike) -> Path:
    """The sidecar of a checkpoint: ``models/model.pt`` -> ``models/model.json``."""
    p = Path(ckpt_path)
    return p.with_suffix(".json") if p.suffix else p.with_name(p.name + ".json")


def write_info(
    ckpt_path: str | os.PathLike,
    model_preset: str,
    geometry_preset: str,
    model_overrides: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write (atomically) the sidecar of ``ckpt_path`` and return what was written."""
    info: dict[str, Any] = {
        "format": FORMAT,
        "model_preset": str(model_preset),
        "model_overrides": dict(model_overrides or {}),
        "geometry_preset": str(geometry_preset),
        "bundle_version": bundle_version(),
        **extra,
    }
    write_json_atomic(info_path(ckpt_path), info)
    return info


def read_info(ckpt_path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of ``ckpt_path`` as a dict, or None when there is none (e.g. a bare state dict).

    Raises :class:`CheckpointInfoError` (naming the file) for a sidecar that is not valid JSON or lacks
    ``model_preset`` / ``geometry_preset``.
    """
    path = info_path(ckpt_path)
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointInfoError(
            f"{path}: unreadable checkpoint description ({e}); delete it or re-save the checkpoint"
        ) from e
    if not isinstance(info, dict) or any(k not in info for k in _REQUIRED):
        raise CheckpointInfoError(f"{path}: not a checkpoint description (needs {list(_REQUIRED)})")
    return info


def require_checkpoint(ckpt_path: str | os.PathLike, what: str = "checkpoint (--ckpt_path)") -> str:
    """Return ``ckpt_path`` if it is a non-empty, complete ``torch.save`` archive; else raise
    :class:`CheckpointError` (or ``FileNotFoundError``) naming the file and what to do.

    Only the zip directory is read (cheap): a truncated file has none, so it is caught here instead of
    deep inside ``torch.load`` with a message that does not name the file.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} (train first, or pass --ckpt_path FILE)")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{what} {path} is empty (0 bytes): a write was cut short; delete it and train again "
            f"or point --ckpt_path at another checkpoint"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(
            f"{what} {path} is corrupt or truncated ({e}); delete it and train again, "
            f"or point --ckpt_path at another checkpoint"
        ) from e
    if not any(n.endswith("data.pkl") for n in names):
        raise CheckpointError(f"{what} {path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
    return str(path)


def resolve_network(
    ckpt_path: str | os.PathLike | None,
    model_preset: str | None = None,
    geometry_preset: str | None = None,
    default_model_preset: str = "paper",
    default_geometry_preset: str = "perx2ct",
) -> dict[str, Any]:
    """What network to build for ``ckpt_path``: ``{"model_preset", "geometry_preset", "model_overrides", "info"}``.

    A preset given as ``None`` (the configs' default ``null``) is the checkpoint's (its sidecar), else the
    default (a bare state dict without sidecar, e.g. an old ``model.pt``). A preset given explicitly must
    equal the sidecar's: a contradiction raises :class:`CheckpointError` naming both.
    """
    info = read_info(ckpt_path) if ckpt_path else None
    if ckpt_path and os.path.isfile(ckpt_path):
        logger.info("%s", recipe_line(info, ckpt_path))
    out: dict[str, Any] = {"info": info, "model_overrides": dict((info or {}).get("model_overrides") or {})}
    for key, asked, default in (
        ("model_preset", model_preset, default_model_preset),
        ("geometry_preset", geometry_preset, default_geometry_preset),
    ):
        saved = None if info is None else info.get(key)
        if asked not in (None, "", "null") and saved is not None and str(asked) != str(saved):
            raise CheckpointError(
                f"--{key} {asked} contradicts the checkpoint {ckpt_path}, which holds a {key} {saved!r} network "
                f"(see {info_path(ckpt_path)}): drop --{key}, or pass --ckpt_path of a {asked!r} checkpoint"
            )
        out[key] = str(saved if asked in (None, "", "null") and saved is not None else (asked or default))
    return out


def recipe_line(info: dict[str, Any] | None, ckpt_path: str | os.PathLike | None = None) -> str:
    """One line describing a checkpoint from its sidecar ``info``: the training recipe it records
    (:mod:`scripts.training.recipe`) and how its weights were chosen (``selection``)."""
    name = str(ckpt_path) if ckpt_path else "checkpoint"
    if not info:
        return f"{name}: no sidecar ({info_path(name)}): recipe unknown"
    recipe = info.get("recipe")
    text = str(recipe.get("summary", "?")) if isinstance(recipe, dict) else "recipe not recorded (an older checkpoint)"
    selection = info.get("selection")
    return f"{name}: recipe {text}" + (f"; weights: {selection}" if selection else "")


def check_resume(
    ckpt_path: str | os.PathLike,
    model_preset: str,
    geometry_preset: str,
    model_overrides: dict[str, Any] | None = None,
    run: str | None = None,
) -> str:
    """Return ``ckpt_path`` (the run's ``latest.pt``) if resuming from it continues this run; else raise.

    Checks that the file is a readable checkpoint (:func:`require_checkpoint`) and that its sidecar names
    the same network (preset, overrides, geometry) and, when both record one, the same run folder.
    """
    require_checkpoint(ckpt_path, "checkpoint to resume (latest.pt)")
    info = read_info(ckpt_path)
    if info is None:
        return str(ckpt_path)  # written before sidecars existed: the state dict load checks the shapes
    want = {
        "model_preset": str(model_preset),
        "geometry_preset": str(geometry_preset),
        "model_overrides": dict(model_overrides or {}),
    }
    for key, value in want.items():
        if info.get(key, {} if key == "model_overrides" else None) != value:
            raise CheckpointError(
                f"cannot resume from {ckpt_path}: it belongs to a run with {key} {info.get(key)!r}, this run has "
                f"{value!r}; resume with the settings of that run, or train into another --ckpt_dir"
            )
    saved_run = info.get("run")
    if run is not None and saved_run is not None and os.path.abspath(str(saved_run)) != os.path.abspath(str(run)):
        raise CheckpointError(
            f"cannot resume from {ckpt_path}: it belongs to the run in {info.get('run')}, not {run}; "
            f"pass the --output_dir of that run or train into another --ckpt_dir"
        )
    return str(ckpt_path)


def _legacy_presets() -> dict[str, str]:
    return dict(getattr(presets, "LEGACY_PRESETS", {}))


def load_init_checkpoint(
    network: torch.nn.Module,
    ckpt_path: str | None,
    model_preset: str,
    geometry_preset: str,
    device: str | torch.device = "cpu",
) -> dict[str, Any] | None:
    """Start training from the weights of ``ckpt_path`` (``--init_ckpt``): an imported official checkpoint
    (``python -m scripts import_official``) or a previous run's ``models/model.pt``.

    The file is a plain state dict (or a dict with one of ``model``, ``network``, ``state_dict``); its sidecar
    (:func:`read_info`) must name the run's ``model_preset``, or its legacy form (an imported
    ``paper_official`` checkpoint may start a ``paper`` run). Two ways to fine-tune imported weights:

    * legacy mode: ``--model_preset paper_official --geometry_preset perx2ct_official`` (the conventions the
      weights were trained with; training continues where the authors stopped);
    * corrected geometry: ``--model_preset paper --geometry_preset perx2ct`` (the same weights in the bundle's
      cone-beam geometry and conventions; logged, and fine-tuning has to adapt them).

    Loading weights into another geometry than theirs is allowed and logged. Returns the sidecar
    (or None without one); does nothing when ``ckpt_path`` is empty.
    """
    if not ckpt_path:
        return None
    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(f"--init_ckpt {ckpt_path}: no such file")
    info = read_info(ckpt_path)
    legacy_of = {v: k for k, v in _legacy_presets().items()}  # paper_official -> paper, ...
    if info is not None and info["model_preset"] != model_preset:
        if legacy_of.get(info["model_preset"]) == model_preset:
            logger.warning(
                "--init_ckpt %s holds %r weights (the official code's conventions); this run trains them as %r "
                "(the bundle's positional encoding, slice layout, image orientation and geometry): the first "
                "iterations unlearn the old conventions",
                ckpt_path,
                info["model_preset"],
                model_preset,
            )
        else:
            raise ValueError(
                f"--init_ckpt {ckpt_path} holds a {info['model_preset']!r} network but this run builds "
                f"{model_preset!r}: add --model_preset {info['model_preset']}"
            )
    try:
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - one clear line naming the file
        raise ValueError(f"--init_ckpt {ckpt_path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    for key in ("model", "network", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    net = getattr(network, "module", network)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"--init_ckpt {ckpt_path} does not fit the {model_preset!r} network: {first}") from e
    if info is None:
        logger.warning(
            "--init_ckpt %s has no sidecar (%s): cannot check which network and geometry it was trained " "with",
            ckpt_path,
            os.path.splitext(ckpt_path)[0] + ".json",
        )
    else:
        src_geometry = info["geometry_preset"]
        overrides = info.get("model_overrides") or {}
        if src_geometry != geometry_preset:
            logger.warning(
                "--init_ckpt %s was trained with geometry %r; this run samples with %r: the weights start in a new "
                "geometry and fine-tuning adapts them (pass --geometry_preset %s to keep the original one)",
                ckpt_path,
                src_geometry,
                geometry_preset,
                src_geometry,
            )
        if overrides:
            logger.warning(
                "--init_ckpt %s records model overrides %s; make sure this run builds the network with "
                "the same settings unless changing them is intended",
                ckpt_path,
                overrides,
            )
    logger.info("initialised %s from %s", type(net).__name__, ckpt_path)
    return info
