"""Compatibility of MONAI Label 0.8.5 with pydicom 3 (the bundle pins pydicom 3.0.2).

MONAI Label imports ``pydicom_seg`` (0.4.1) at start-up, which imports ``pydicom._storage_sopclass_uids``,
a private module that pydicom 3 removed (its UIDs moved to ``pydicom.uid``). Without help the server
dies before loading any app. :func:`install` registers an alias module that forwards to ``pydicom.uid``;
it must run before ``monailabel.app`` is imported, which is why the launcher
``python -m bundle.monailabel_app start_server ...`` calls it and then runs MONAI Label's own CLI.
Only the import is repaired: DICOM SEG output (unused by a reconstruction model) is not supported.
"""

from __future__ import annotations

import importlib
import sys
import types

_MISSING = "pydicom._storage_sopclass_uids"


def install() -> bool:
    """Register the alias if pydicom lacks the private module; returns whether it was needed."""
    try:
        importlib.import_module(_MISSING)
        return False
    except ImportError:
        pass
    import pydicom.uid

    alias = types.ModuleType(_MISSING, "alias of pydicom.uid for pydicom_seg 0.4.1 under pydicom 3")

    def __getattr__(name: str):  # PEP 562: forwards SegmentationStorage & co.
        try:
            return getattr(pydicom.uid, name)
        except AttributeError:
            raise AttributeError(f"module {_MISSING!r} (alias of pydicom.uid) has no attribute {name!r}") from None

    alias.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules[_MISSING] = alias
    return True
