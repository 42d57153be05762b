"""Lazy re-exports of a subpackage's public names (PEP 562).

Each subpackage of ``scripts`` names its public classes and functions in its ``__init__`` (so configs and users
write ``scripts.transforms.LoadCTd``), but imports the module that defines one only when it is first used. Importing
one module of a subpackage therefore never imports its siblings: no import cycle between subpackages through
their ``__init__``, and a command that needs one module (``python -m scripts drr``) loads only what it uses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public ``name`` lives in ``package.<exports[name]>``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(set(exports) | set(globals()))

    return __getattr__, __dir__
