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
(evaluation, inference, export, MONAI Label, ``bundle verify``) call :func:`read_info`, or
:func:`resolve_network`, which merges the sidecar with what the command line asked for (``null`` = take
the checkpoint's) and refuses a contradiction in one line naming both. :func:`require_checkpoint`
checks that a checkpoint file exists and is a readable ``torch.save`` archive before anything loads it,
and :func:`check_resume` that ``latest.pt`` belongs to the run being resumed.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from scripts.atomic import write_json_atomic

__all__ = [
    "FORMAT",
    "CheckpointInfoError",
    "CheckpointError",
    "info_path",
    "write_info",
    "read_info",
    "bundle_version",
    "require_checkpoint",
    "resolve_network",
    "check_resume",
    "export_ckpt_file",
]

#: Identifies the sidecar layout; bump the number when a key changes meaning.
FORMAT = "perx2ct-checkpoint/1"
_REQUIRED = ("model_preset", "geometry_preset")


class CheckpointInfoError(ValueError):
    """A checkpoint sidecar that cannot be read or does not describe a network."""


class CheckpointError(ValueError):
    """A checkpoint file that is missing, empty, corrupt, or belongs to another network or run."""


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


def export_ckpt_file(default: str) -> str:
    """The checkpoint whose network ``python -m monai.bundle ckpt_export ... --ckpt_file FILE`` exports.

    ``ckpt_export`` passes ``--ckpt_file`` to itself, not to the config, so a config that builds its network
    from the checkpoint's sidecar (``ckpt_path``) reads it here; any other command gets ``default``.
    """
    import sys

    argv = sys.argv[1:]
    if "ckpt_export" in argv[:2] and "--ckpt_file" in argv[:-1]:
        return argv[argv.index("--ckpt_file") + 1]
    return default


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
    if run is not None and info.get("run") not in (None, str(run)):
        raise CheckpointError(
            f"cannot resume from {ckpt_path}: it belongs to the run in {info.get('run')}, not {run}; "
            f"pass the --output_dir of that run or train into another --ckpt_dir"
        )
    return str(ckpt_path)
