"""Where the bundle is: the configs' ``bundle_root`` when none is given.

MONAI's bundles conventionally say ``"bundle_root": "."``, the working directory. That is right for
``python -m monai.bundle run ...`` started in the bundle's folder and wrong everywhere else: ``monai.bundle.load``
from another folder then misses ``./models/model.pt``'s sidecar, builds the default preset, and MONAI's
``copy_model_state`` silently copies only the weights whose shapes happen to fit. The bundle's own ``scripts``
package knows where it is (every config imports it): its parent folder is the bundle. ``--bundle_root`` still
overrides.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["bundle_root", "bundle_version"]

#: The bundle folder: scripts/utils/bundle_paths.py -> scripts -> the bundle.
_BUNDLE = Path(__file__).resolve().parents[2]


def bundle_root() -> str:
    """``"."`` when the working directory is the bundle (paths in logs and printed commands stay short), else the
    bundle's absolute path (the parent of this package)."""
    return "." if Path.cwd().resolve() == _BUNDLE else str(_BUNDLE)


def bundle_version() -> str:
    """The bundle version of ``configs/metadata.json`` in the bundle ("unknown" if unreadable)."""
    try:
        return str(json.loads((_BUNDLE / "configs" / "metadata.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"
