"""Where the bundle is: the configs' ``bundle_root`` when none is given.

MONAI's bundles conventionally say ``"bundle_root": "."``, the working directory. That is right for
``python -m monai.bundle run ...`` started in the bundle's folder and wrong everywhere else: ``monai.bundle.load``
from another folder then misses ``./models/model.pt``'s sidecar, builds the default preset, and MONAI's
``copy_model_state`` silently copies only the weights whose shapes happen to fit. The bundle's own ``scripts``
package knows where it is (every config imports it): its parent folder is the bundle. ``--bundle_root`` still
overrides.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["bundle_root"]


def bundle_root() -> str:
    """``"."`` when the working directory is the bundle (paths in logs and printed commands stay short), else the
    bundle's absolute path (the parent of this package)."""
    root = Path(__file__).resolve().parents[1]
    return "." if Path.cwd().resolve() == root else str(root)
