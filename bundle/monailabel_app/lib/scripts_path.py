"""The one way this project puts a bundle's ``scripts`` package on the import path: :func:`scripts_on_path`.

Configs name their components as ``scripts.<module>.<name>``, so MONAI's config parser needs ``import scripts``
to find the package of the bundle being parsed (``<bundle_root>/scripts``), and not another copy (a second
bundle, the repository while the zoo tree's copy is checked, ...).

Why this module lives in the MONAI Label app's ``lib/`` and has no project import: MONAI Label loads the app
folder by itself (it puts the app folder on ``sys.path`` and imports ``lib`` as a top-level package), and the
served bundle (``--conf bundle_path``) may be an unpacked Model Zoo archive that holds no ``bundle/`` folder.
So the app imports it as ``lib.scripts_path``; the bundle tools (``bundle.tools``, ``python -m bundle``) import
the same file as ``bundle.monailabel_app.lib.scripts_path``. Standard library only.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["scripts_on_path"]


def _scripts_modules() -> list[str]:
    return [k for k in sys.modules if k == "scripts" or k.startswith("scripts.")]


@contextmanager
def scripts_on_path(bundle_root: str | Path, restore: bool = True) -> Iterator[None]:
    """Inside the block, ``import scripts`` resolves to ``bundle_root/scripts``.

    ``bundle_root`` goes first on ``sys.path`` (that entry is removed again on leaving). A ``scripts``
    package already imported from elsewhere (a *foreign* one) is unloaded for the block.

    Args:
        bundle_root: the bundle root folder (holds ``scripts/`` and ``configs/``).
        restore: on leaving, put the foreign ``scripts`` modules back (and drop this bundle's). ``False`` keeps
            this bundle's modules loaded, for a caller that goes on using objects and lazy imports of the bundle
            after the block (MONAI Label's infer task, which serves one bundle; MONAI Label unloads a previous
            app's ``scripts`` the same way).
    """
    root = Path(bundle_root).resolve()
    root_s = str(root)
    saved = {k: sys.modules[k] for k in _scripts_modules()}
    loaded = saved.get("scripts")
    foreign = loaded is not None and Path(str(getattr(loaded, "__file__", ""))).resolve().parent.parent != root
    if foreign:
        for k in saved:
            del sys.modules[k]
    sys.path.insert(0, root_s)
    try:
        yield
    finally:
        sys.path.remove(root_s)  # the entry inserted above (a copy that was there before stays)
        if foreign and restore:
            for k in _scripts_modules():
                del sys.modules[k]
            sys.modules.update(saved)
