"""What a checkpoint holds: a JSON sidecar that records how to rebuild the network of a weights file.

``models/model.pt`` stays a plain state dict (the Model Zoo's convention: it loads into ``network_def``);
beside it, ``models/model.json`` says which network those weights belong to::

    {
      "format": "perx2ct-checkpoint/1",
      "model_preset": "paper",            # a key of scripts.networks.MODEL_PRESETS
      "model_overrides": {},              # fields replacing the preset's (build_perx2ct(**overrides))
      "geometry_preset": "perx2ct",       # a key of scripts.geometry.GEOMETRY_PRESETS
      "bundle_version": "0.2.0",
      "source": "training",               # or "import_official", ...
      ...                                 # free extra keys (e.g. the run, the imported file's hash)
    }

The sidecar of ``X.pt`` is ``X.json`` (:func:`info_path`). Writers call :func:`write_info`; readers
(evaluation, inference, export, MONAI Label, ``bundle verify``) call :func:`read_info`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from scripts.atomic import write_json_atomic

__all__ = ["FORMAT", "CheckpointInfoError", "info_path", "write_info", "read_info", "bundle_version"]

#: Identifies the sidecar layout; bump the number when a key changes meaning.
FORMAT = "perx2ct-checkpoint/1"
_REQUIRED = ("model_preset", "geometry_preset")


class CheckpointInfoError(ValueError):
    """A checkpoint sidecar that cannot be read or does not describe a network."""


def bundle_version() -> str:
    """The bundle version of ``configs/metadata.json`` beside this package ("unknown" if unreadable)."""
    meta = Path(__file__).resolve().parents[1] / "configs" / "metadata.json"
    try:
        return str(json.loads(meta.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


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
        raise CheckpointInfoError(f"{path}: unreadable checkpoint description ({e}); delete it or re-save the checkpoint") from e
    if not isinstance(info, dict) or any(k not in info for k in _REQUIRED):
        raise CheckpointInfoError(f"{path}: not a checkpoint description (needs {list(_REQUIRED)})")
    return info
